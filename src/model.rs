//! The canonical audit event every source normalises into, and the names
//! that identify streams and events.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What kind of change an audit record describes. Vendors spell these
/// differently (`UPDATE`, `Update`, `update`), so parsing ignores case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Create,
    Update,
    Delete,
    Login,
    Logout,
    Access,
    Other,
}

impl EventKind {
    pub fn from_vendor(text: &str) -> Self {
        match text.trim().to_ascii_lowercase().as_str() {
            "create" | "created" | "add" | "added" | "insert" => EventKind::Create,
            "update" | "updated" | "change" | "changed" | "modify" | "edit" => EventKind::Update,
            "delete" | "deleted" | "remove" | "removed" => EventKind::Delete,
            "login" | "logon" | "signin" => EventKind::Login,
            "logout" | "logoff" | "signout" => EventKind::Logout,
            "access" | "view" | "read" => EventKind::Access,
            _ => EventKind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
            EventKind::Login => "login",
            EventKind::Logout => "logout",
            EventKind::Access => "access",
            EventKind::Other => "other",
        }
    }
}

/// Who did it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// What it was done to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Phone extension where the vendor has one (RingCentral).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
}

/// One field changed by the event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

/// The canonical audit event. `raw` keeps the vendor record untouched so
/// nothing the vendor said is ever lost by normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// `source:tenant:native-id`: the journal's de-duplication key.
    pub key: String,
    /// Source kind: `ringcentral`, `vbrick`, `symphony`.
    pub source: String,
    /// The configured source name (one per account/pod).
    pub tenant: String,
    /// The stream inside the tenant (`audit-trail`, `userAccess`, ...).
    pub stream: String,
    /// When the audited action happened, as the vendor says.
    pub time: DateTime<Utc>,
    /// When trailkeep pulled it.
    pub ingested_at: DateTime<Utc>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_label: Option<String>,
    pub kind: EventKind,
    #[serde(default)]
    pub actor: Actor,
    #[serde(default)]
    pub target: Target,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    pub raw: RawRecord,
}

/// The vendor's record as JSON text, exactly as received (compacted only if
/// it spanned several lines, since journal payloads and archive lines are
/// one line each). Kept as text so pulling a page never builds, copies and
/// frees a tree of every record; readers that need a field parse it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawRecord(Box<RawValue>);

impl RawRecord {
    /// Takes a record cut from a vendor response.
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        if raw.get().bytes().any(|b| b == b'\n' || b == b'\r') {
            // Raw newlines in JSON text can only be whitespace between
            // tokens: re-encode compactly.
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(raw.get()) {
                return RawRecord::from(&v);
            }
        }
        RawRecord(raw)
    }

    /// The record's JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The record parsed (for readers that need fields; not on the hot path).
    pub fn value(&self) -> serde_json::Value {
        // The text was valid JSON when this was built.
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl From<&serde_json::Value> for RawRecord {
    fn from(v: &serde_json::Value) -> Self {
        // A Value always serialises (its map keys are strings).
        match serde_json::value::to_raw_value(v) {
            Ok(raw) => RawRecord(raw),
            Err(_) => RawRecord(RawValue::NULL.to_owned()),
        }
    }
}

impl From<serde_json::Value> for RawRecord {
    fn from(v: serde_json::Value) -> Self {
        RawRecord::from(&v)
    }
}

/// Equal when the JSON values are equal (whitespace and key order aside).
impl PartialEq for RawRecord {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get() || self.value() == other.value()
    }
}

impl PartialEq<serde_json::Value> for RawRecord {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.value() == *other
    }
}

impl fmt::Display for RawRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl AuditEvent {
    pub fn stream_id(&self) -> StreamId {
        StreamId::new(&self.source, &self.tenant, &self.stream)
    }
}

/// Builds the journal key for an event: `source:tenant:native-id`.
pub fn event_key(source: &str, tenant: &str, native_id: &str) -> String {
    format!("{source}:{tenant}:{native_id}")
}

/// A stable content hash, for vendors whose records carry no id (Vbrick,
/// Symphony). Hex SHA-256 of the parts joined by an unambiguous separator.
pub fn content_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// One incremental feed: (source kind, tenant, endpoint).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    pub source: String,
    pub tenant: String,
    pub stream: String,
}

impl StreamId {
    pub fn new(source: &str, tenant: &str, stream: &str) -> Self {
        StreamId {
            source: source.to_string(),
            tenant: tenant.to_string(),
            stream: stream.to_string(),
        }
    }

    /// Parses the `source/tenant/stream` form used as the journal key.
    pub fn parse(text: &str) -> Option<Self> {
        let mut it = text.splitn(3, '/');
        let source = it.next()?;
        let tenant = it.next()?;
        let stream = it.next()?;
        Some(StreamId::new(source, tenant, stream))
    }

    pub fn labels(&self) -> [&str; 3] {
        [&self.source, &self.tenant, &self.stream]
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.source, self.tenant, self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_ignores_case() {
        assert_eq!(EventKind::from_vendor("UPDATE"), EventKind::Update);
        assert_eq!(EventKind::from_vendor("Create"), EventKind::Create);
        assert_eq!(EventKind::from_vendor("delete"), EventKind::Delete);
        assert_eq!(EventKind::from_vendor("SOMETHING"), EventKind::Other);
    }

    #[test]
    fn stream_id_round_trips() {
        let id = StreamId::new("vbrick", "acme", "principals/42");
        assert_eq!(StreamId::parse(&id.to_string()), Some(id));
    }

    #[test]
    fn raw_record_keeps_text_and_puts_a_multiline_record_on_one_line() {
        let compact = RawRecord::from_raw(
            RawValue::from_string(r#"{"b": 1, "a": "x y"}"#.into()).expect("json"),
        );
        assert_eq!(compact.get(), r#"{"b": 1, "a": "x y"}"#, "kept as sent");
        let pretty = RawRecord::from_raw(
            RawValue::from_string("{\n  \"id\": \"1\",\r\n  \"t\": \"a\\nb\"\n}".into())
                .expect("json"),
        );
        assert!(!pretty.get().contains('\n') && !pretty.get().contains('\r'));
        assert_eq!(pretty, serde_json::json!({"id": "1", "t": "a\nb"}));
    }

    #[test]
    fn content_id_is_unambiguous() {
        assert_ne!(content_id(&["ab", "c"]), content_id(&["a", "bc"]));
        assert_eq!(content_id(&["x", "y"]), content_id(&["x", "y"]));
    }
}
