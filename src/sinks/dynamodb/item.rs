//! The item layout: one DynamoDB item per audit event (see docs/dynamodb.md).
//!
//! ```text
//! pk         S  <source>#<tenant>             (or <source>#<tenant>#YYYY-MM)
//! sk         S  <event time RFC 3339 ms>#<native id> (ids > 900 bytes: sha256:<hash>)
//! event_id   S  the journal's event key (source:tenant:native-id)
//! source, tenant, stream, action, action_label, kind            S
//! event_time, ingested_at                                       S (RFC 3339 ms)
//! actor      S  email, else id, else name (GSI `actor-index` hash key)
//! actor_id, actor_name, actor_email, actor_role                 S
//! target_id, target_name, target_type, target_extension         S
//! changes    S  JSON list of {field, old, new} (when any)
//! client_ip  S
//! raw        S  the vendor record, JSON, untouched
//! raw_gz     B  instead of `raw` when the item would exceed 400 KB: gzip of it
//! expires_at N  epoch seconds = event time + retention (TTL attribute)
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Datelike, Utc};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::model::{Actor, AuditEvent, Change, EventKind, Target};
use crate::util::rfc3339_ms;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const ACTOR: &str = "actor";
pub const TTL_ATTR: &str = "expires_at";
pub const ACTOR_INDEX: &str = "actor-index";

/// DynamoDB's item size limit (400 KB, names and values together).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

pub type Item = HashMap<String, AttributeValue>;

/// How items are keyed and when they expire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub partition_by_month: bool,
    /// Seconds after the event time at which the item may be deleted.
    pub retention_secs: Option<u64>,
}

/// The partition key of an event: `source#tenant` (+ `#YYYY-MM`).
pub fn partition_key(
    source: &str,
    tenant: &str,
    time: DateTime<Utc>,
    partition_by_month: bool,
) -> String {
    if partition_by_month {
        format!("{source}#{tenant}#{:04}-{:02}", time.year(), time.month())
    } else {
        format!("{source}#{tenant}")
    }
}

/// The vendor's id: the event key without its `source:tenant:` prefix.
pub fn native_id(ev: &AuditEvent) -> &str {
    ev.key
        .strip_prefix(&ev.source)
        .and_then(|r| r.strip_prefix(':'))
        .and_then(|r| r.strip_prefix(&ev.tenant))
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or(&ev.key)
}

/// Native ids longer than this go into the sort key as a hash (DynamoDB
/// caps a sort key at 1024 bytes; `event_id` keeps the full key).
pub const MAX_NATIVE_ID_IN_KEY: usize = 900;

/// The sort key: time first so a key range is a time range.
pub fn sort_key(ev: &AuditEvent) -> String {
    let id = native_id(ev);
    if id.len() > MAX_NATIVE_ID_IN_KEY {
        format!(
            "{}#sha256:{}",
            rfc3339_ms(ev.time),
            crate::model::content_id(&[id])
        )
    } else {
        format!("{}#{}", rfc3339_ms(ev.time), id)
    }
}

/// The value indexed by `actor-index`: email, else id, else name.
pub fn actor_value(actor: &Actor) -> Option<&str> {
    [&actor.email, &actor.id, &actor.name]
        .into_iter()
        .flatten()
        .map(|s| s.as_str())
        .find(|s| !s.trim().is_empty())
}

/// An item ready to write, or the reason it cannot be.
#[derive(Debug)]
pub struct Encoded {
    pub item: Item,
    pub pk: String,
    pub sk: String,
    /// Estimated stored size.
    pub size: usize,
    /// The raw record had to be compressed to fit.
    pub compressed: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("item_too_large: item is {size} bytes even with the raw record gzip-compressed (DynamoDB limit {limit} bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("compress: {0}")]
    Compress(String),
}

fn put_s(item: &mut Item, name: &str, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        item.insert(name.to_string(), AttributeValue::S(v.to_string()));
    }
}

/// The size DynamoDB counts for an item: attribute names plus values
/// (strings and binaries by length, numbers about one byte per two digits),
/// rounded up a little so an estimate under the limit is really under it.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, v)| name.len() + value_size(v) + 1)
        .sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len() / 2 + 2,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|x| value_size(x) + 1).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| k.len() + value_size(x) + 1)
                .sum::<usize>()
        }
        AttributeValue::Ss(s) => s.iter().map(|x| x.len()).sum(),
        AttributeValue::Ns(s) => s.iter().map(|x| x.len() / 2 + 2).sum(),
        AttributeValue::Bs(s) => s.iter().map(|x| x.as_ref().len()).sum(),
        _ => 16,
    }
}

pub fn gzip(data: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 4), Compression::new(6));
    enc.write_all(data)
        .map_err(|e| EncodeError::Compress(e.to_string()))?;
    enc.finish()
        .map_err(|e| EncodeError::Compress(e.to_string()))
}

/// Builds the item for one event.
pub fn encode(ev: &AuditEvent, layout: Layout) -> Result<Encoded, EncodeError> {
    let pk = partition_key(&ev.source, &ev.tenant, ev.time, layout.partition_by_month);
    let sk = sort_key(ev);
    let mut item = Item::new();
    item.insert(PK.into(), AttributeValue::S(pk.clone()));
    item.insert(SK.into(), AttributeValue::S(sk.clone()));
    put_s(&mut item, "event_id", Some(&ev.key));
    put_s(&mut item, "source", Some(&ev.source));
    put_s(&mut item, "tenant", Some(&ev.tenant));
    put_s(&mut item, "stream", Some(&ev.stream));
    put_s(&mut item, "event_time", Some(&rfc3339_ms(ev.time)));
    put_s(&mut item, "ingested_at", Some(&rfc3339_ms(ev.ingested_at)));
    put_s(&mut item, "action", Some(&ev.action));
    put_s(&mut item, "action_label", ev.action_label.as_deref());
    put_s(&mut item, "kind", Some(ev.kind.as_str()));
    put_s(&mut item, ACTOR, actor_value(&ev.actor));
    put_s(&mut item, "actor_id", ev.actor.id.as_deref());
    put_s(&mut item, "actor_name", ev.actor.name.as_deref());
    put_s(&mut item, "actor_email", ev.actor.email.as_deref());
    put_s(&mut item, "actor_role", ev.actor.role.as_deref());
    put_s(&mut item, "target_id", ev.target.id.as_deref());
    put_s(&mut item, "target_name", ev.target.name.as_deref());
    put_s(&mut item, "target_type", ev.target.kind.as_deref());
    put_s(
        &mut item,
        "target_extension",
        ev.target.extension.as_deref(),
    );
    put_s(&mut item, "client_ip", ev.client_ip.as_deref());
    if !ev.changes.is_empty() {
        // Serializing plain strings cannot fail.
        let changes = serde_json::to_string(&ev.changes).unwrap_or_default();
        put_s(&mut item, "changes", Some(&changes));
    }
    if let Some(secs) = layout.retention_secs {
        let expires = ev
            .time
            .timestamp()
            .saturating_add(i64::try_from(secs).unwrap_or(i64::MAX));
        item.insert(TTL_ATTR.into(), AttributeValue::N(expires.to_string()));
    }
    let raw = ev.raw.to_string();
    let base = item_size(&item);
    let plain = base + "raw".len() + raw.len() + 1;
    if plain <= MAX_ITEM_BYTES {
        item.insert("raw".into(), AttributeValue::S(raw));
        return Ok(Encoded {
            item,
            pk,
            sk,
            size: plain,
            compressed: false,
        });
    }
    let gz = gzip(raw.as_bytes())?;
    let size = base + "raw_gz".len() + gz.len() + 1;
    if size > MAX_ITEM_BYTES {
        return Err(EncodeError::TooLarge {
            size,
            limit: MAX_ITEM_BYTES,
        });
    }
    item.insert("raw_gz".into(), AttributeValue::B(Blob::new(gz)));
    Ok(Encoded {
        item,
        pk,
        sk,
        size,
        compressed: true,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("item {pk}/{sk}: {detail}")]
pub struct DecodeError {
    pub pk: String,
    pub sk: String,
    pub detail: String,
}

fn get_s(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Rebuilds the canonical event from an item (what `query` prints).
pub fn decode(item: &Item) -> Result<AuditEvent, DecodeError> {
    let pk = get_s(item, PK).unwrap_or_default();
    let sk = get_s(item, SK).unwrap_or_default();
    let err = |detail: String| DecodeError {
        pk: pk.clone(),
        sk: sk.clone(),
        detail,
    };
    let need = |name: &str| get_s(item, name).ok_or_else(|| err(format!("missing `{name}`")));
    let time = |name: &str| -> Result<DateTime<Utc>, DecodeError> {
        let text = need(name)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| err(format!("`{name}` is not RFC 3339: {e}")))
    };
    let raw_text = match (item.get("raw"), item.get("raw_gz")) {
        (Some(AttributeValue::S(s)), _) => s.clone(),
        (_, Some(AttributeValue::B(b))) => {
            let mut out = String::new();
            GzDecoder::new(b.as_ref())
                .read_to_string(&mut out)
                .map_err(|e| err(format!("`raw_gz` does not decompress: {e}")))?;
            out
        }
        _ => return Err(err("neither `raw` nor `raw_gz`".into())),
    };
    let raw =
        serde_json::from_str(&raw_text).map_err(|e| err(format!("raw record is not JSON: {e}")))?;
    let changes: Vec<Change> = match get_s(item, "changes") {
        Some(c) => {
            serde_json::from_str(&c).map_err(|e| err(format!("`changes` is not JSON: {e}")))?
        }
        None => Vec::new(),
    };
    Ok(AuditEvent {
        key: need("event_id")?,
        source: need("source")?,
        tenant: need("tenant")?,
        stream: need("stream")?,
        time: time("event_time")?,
        ingested_at: time("ingested_at")?,
        action: need("action")?,
        action_label: get_s(item, "action_label"),
        kind: EventKind::from_vendor(&get_s(item, "kind").unwrap_or_default()),
        actor: Actor {
            id: get_s(item, "actor_id"),
            name: get_s(item, "actor_name"),
            email: get_s(item, "actor_email"),
            role: get_s(item, "actor_role"),
        },
        target: Target {
            id: get_s(item, "target_id"),
            name: get_s(item, "target_name"),
            kind: get_s(item, "target_type"),
            extension: get_s(item, "target_extension"),
        },
        changes,
        client_ip: get_s(item, "client_ip"),
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn event(raw: serde_json::Value) -> AuditEvent {
        AuditEvent {
            key: "ringcentral:acme:123".into(),
            source: "ringcentral".into(),
            tenant: "acme".into(),
            stream: "audit-trail".into(),
            time: Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap(),
            ingested_at: Utc.with_ymd_and_hms(2024, 6, 1, 12, 5, 0).unwrap(),
            action: "UPDATE_USER".into(),
            action_label: Some("Update user".into()),
            kind: EventKind::Update,
            actor: Actor {
                id: Some("42".into()),
                email: Some("admin@acme.test".into()),
                ..Actor::default()
            },
            target: Target {
                id: Some("7".into()),
                kind: Some("user".into()),
                ..Target::default()
            },
            changes: vec![Change {
                field: "role".into(),
                old: Some("user".into()),
                new: Some("admin".into()),
            }],
            client_ip: Some("10.0.0.1".into()),
            raw: raw.into(),
        }
    }

    #[test]
    fn keys_and_round_trip() {
        let ev = event(serde_json::json!({"id": "123", "n": 1}));
        let layout = Layout {
            partition_by_month: true,
            retention_secs: Some(86_400),
        };
        let enc = encode(&ev, layout).unwrap();
        assert_eq!(enc.pk, "ringcentral#acme#2024-06");
        assert_eq!(enc.sk, "2024-06-01T12:00:00.000Z#123");
        assert!(!enc.compressed);
        assert_eq!(
            enc.item.get(TTL_ATTR),
            Some(&AttributeValue::N(
                (ev.time.timestamp() + 86_400).to_string()
            ))
        );
        assert_eq!(
            enc.item.get(ACTOR),
            Some(&AttributeValue::S("admin@acme.test".into()))
        );
        assert_eq!(decode(&enc.item).unwrap(), ev);
    }

    #[test]
    fn large_raw_is_compressed_and_round_trips() {
        let big = "abc ".repeat(150_000);
        let ev = event(serde_json::json!({ "blob": big }));
        let enc = encode(&ev, Layout::default()).unwrap();
        assert!(enc.compressed);
        assert!(enc.item.contains_key("raw_gz") && !enc.item.contains_key("raw"));
        assert_eq!(decode(&enc.item).unwrap(), ev);
    }

    #[test]
    fn incompressible_raw_is_refused() {
        // A pseudo-random string gzip cannot shrink below the limit.
        let mut x: u64 = 88172645463325252;
        let noise: String = (0..600_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect();
        let ev = event(serde_json::json!({ "blob": noise }));
        let e = encode(&ev, Layout::default()).unwrap_err();
        assert!(matches!(e, EncodeError::TooLarge { .. }), "{e}");
        assert!(e.to_string().starts_with("item_too_large:"));
    }

    #[test]
    fn long_native_ids_are_hashed_into_the_sort_key() {
        let mut ev = event(serde_json::json!({}));
        ev.key = format!("ringcentral:acme:{}", "x".repeat(2000));
        let sk = sort_key(&ev);
        assert!(sk.starts_with("2024-06-01T12:00:00.000Z#sha256:"), "{sk}");
        assert!(sk.len() < 100);
        let enc = encode(&ev, Layout::default()).unwrap();
        assert_eq!(decode(&enc.item).unwrap().key, ev.key);
    }

    #[test]
    fn native_id_falls_back_to_the_whole_key() {
        let mut ev = event(serde_json::json!({}));
        ev.key = "other-key".into();
        assert_eq!(native_id(&ev), "other-key");
    }
}
