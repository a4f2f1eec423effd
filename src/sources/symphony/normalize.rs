//! One Symphony audit item → `AuditEvent`.
//!
//! The spec types `timestamp` and `initiatorId` as strings while every
//! example sends numbers: both are accepted, and the event key is built from
//! the canonical decimal text so the two forms give the same key. Unknown
//! and action-specific fields stay in `raw`, which is the item untouched.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::{content_id, event_key, Actor, AuditEvent, Change, EventKind, Target};
use crate::util::from_millis;

pub const SOURCE: &str = "symphony";
pub const STREAM: &str = "privilegeduser";

/// A number or a string of digits, as canonical decimal text.
fn id_text(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ok(Some(i.to_string())),
            (None, Some(u)) => Ok(Some(u.to_string())),
            _ => Err(format!("{n} is not an integer")),
        },
        Some(Value::String(s)) => {
            let t = s.trim();
            if t.is_empty() {
                Ok(None)
            } else if let Ok(i) = t.parse::<i64>() {
                Ok(Some(i.to_string()))
            } else {
                // Not numeric: keep the vendor's text as the id.
                Ok(Some(t.to_string()))
            }
        }
        Some(other) => Err(format!("{other} is neither a number nor a string")),
    }
}

fn timestamp(v: Option<&Value>) -> Result<i64, String> {
    let ms = match v {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| format!("timestamp {n} is not a millisecond epoch"))?,
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("timestamp `{s}` is not a millisecond epoch"))?,
        None | Some(Value::Null) => return Err("timestamp is missing".into()),
        Some(other) => return Err(format!("timestamp {other} is not a millisecond epoch")),
    };
    // Before 2000 or after 2200: not a millisecond epoch (seconds, garbage).
    if !(946_684_800_000..=7_258_118_400_000).contains(&ms) {
        return Err(format!(
            "timestamp {ms} is not a plausible millisecond epoch"
        ));
    }
    Ok(ms)
}

fn text(item: &Value, key: &str) -> Option<String> {
    match item.get(key)? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The kind from the human label (`RSA Key Added`) or the camelCase name
/// (`createServiceAccount`): the first word that says what happened.
fn kind_of(action: Option<&str>, action_name: &str) -> EventKind {
    let mut words: Vec<String> = Vec::new();
    if let Some(a) = action {
        words.extend(
            a.split(|c: char| !c.is_alphanumeric())
                .map(str::to_lowercase),
        );
    }
    // camelCase split of the name.
    let mut cur = String::new();
    for c in action_name.chars() {
        if c.is_uppercase() && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    for w in &words {
        let k = match w.as_str() {
            "enabled" | "disabled" | "activated" | "deactivated" | "reset" | "set" => {
                EventKind::Update
            }
            "revoked" => EventKind::Delete,
            other => EventKind::from_vendor(other),
        };
        if k != EventKind::Other {
            return k;
        }
    }
    EventKind::Other
}

/// Normalises one item. Err = why it cannot be stored as an event.
pub fn normalize(
    tenant: &str,
    item: &Value,
    ingested_at: DateTime<Utc>,
) -> Result<AuditEvent, String> {
    if !item.is_object() {
        return Err("item is not a JSON object".into());
    }
    let ts = timestamp(item.get("timestamp"))?;
    let action_label = text(item, "action");
    let action = text(item, "actionName")
        .or_else(|| action_label.clone())
        .ok_or("neither actionName nor action is present")?;
    let initiator = id_text(item.get("initiatorId")).map_err(|e| format!("initiatorId: {e}"))?;
    let affected = id_text(item.get("affectedId")).map_err(|e| format!("affectedId: {e}"))?;
    let attribute = text(item, "attribute");

    let roles = item
        .get("authorizationRoles")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty());
    let actor = Actor {
        id: initiator.clone(),
        name: text(item, "initiatorUsername"),
        email: text(item, "initiatorEmailAddress"),
        role: roles,
    };
    let target = if affected.is_some()
        || item.get("affectedUsername").is_some()
        || item.get("affectedEmailAddress").is_some()
    {
        Target {
            id: affected.clone(),
            name: text(item, "affectedUsername").or_else(|| text(item, "affectedEmailAddress")),
            kind: Some("user".into()),
            extension: None,
        }
    } else if let Some(thread) = text(item, "threadId") {
        Target {
            id: Some(thread),
            name: None,
            kind: Some(
                text(item, "conversationType")
                    .map_or_else(|| "conversation".into(), |c| c.to_lowercase()),
            ),
            extension: None,
        }
    } else {
        Target::default()
    };
    let old = text(item, "oldValue");
    let new = text(item, "newValue");
    let changes = if old.is_some() || new.is_some() {
        vec![Change {
            field: attribute.clone().unwrap_or_else(|| "value".into()),
            old,
            new,
        }]
    } else {
        Vec::new()
    };

    let ts_text = ts.to_string();
    let native = content_id(&[
        &ts_text,
        &action,
        initiator.as_deref().unwrap_or(""),
        affected.as_deref().unwrap_or(""),
        attribute.as_deref().unwrap_or(""),
    ]);
    Ok(AuditEvent {
        key: event_key(SOURCE, tenant, &native),
        source: SOURCE.into(),
        tenant: tenant.into(),
        stream: STREAM.into(),
        time: from_millis(ts),
        ingested_at,
        kind: kind_of(action_label.as_deref(), &action),
        action,
        action_label,
        actor,
        target,
        changes,
        client_ip: None,
        raw: item.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "action": "Profile info update",
            "actionName": "profileInfoUpdate",
            "attribute": "roles",
            "newValue": "[Individual,Administrator]",
            "oldValue": "[Individual]",
            "initiatorId": 7215545222842u64,
            "initiatorUsername": "bob.smith",
            "initiatorEmailAddress": "bob@example.com",
            "affectedId": 7215545222843u64,
            "affectedUsername": "account.test",
            "affectedEmailAddress": "account.test@example.com",
            "authorizationRoles": ["ADMINISTRATOR"],
            "timestamp": 1555437274937u64,
            "somethingNew": {"x": 1}
        })
    }

    #[test]
    fn maps_the_canonical_fields() {
        let e = normalize("acme", &sample(), Utc::now()).expect("ok");
        assert_eq!(e.action, "profileInfoUpdate");
        assert_eq!(e.action_label.as_deref(), Some("Profile info update"));
        assert_eq!(e.kind, EventKind::Update);
        assert_eq!(e.actor.id.as_deref(), Some("7215545222842"));
        assert_eq!(e.actor.role.as_deref(), Some("ADMINISTRATOR"));
        assert_eq!(e.target.id.as_deref(), Some("7215545222843"));
        assert_eq!(e.target.kind.as_deref(), Some("user"));
        assert_eq!(
            e.changes,
            vec![Change {
                field: "roles".into(),
                old: Some("[Individual]".into()),
                new: Some("[Individual,Administrator]".into())
            }]
        );
        assert_eq!(e.time.timestamp_millis(), 1555437274937);
        assert_eq!(e.raw, sample());
        assert!(e.key.starts_with("symphony:acme:"));
    }

    #[test]
    fn strings_and_numbers_give_the_same_key() {
        let mut s = sample();
        for k in ["timestamp", "initiatorId", "affectedId"] {
            let t = s[k].to_string();
            s[k] = json!(t);
        }
        let a = normalize("acme", &sample(), Utc::now()).expect("numbers");
        let b = normalize("acme", &s, Utc::now()).expect("strings");
        assert_eq!(a.key, b.key);
        assert_eq!(a.time, b.time);
        assert_eq!(b.raw, s, "raw keeps the item as sent");
    }

    #[test]
    fn kinds_from_labels_and_names() {
        assert_eq!(
            kind_of(Some("RSA Key Added"), "rsaKeyAdded"),
            EventKind::Create
        );
        assert_eq!(
            kind_of(Some("Service Account Created"), "createServiceAccount"),
            EventKind::Create
        );
        assert_eq!(
            kind_of(Some("Enabled EF Enforcement"), "enabledEfEnforcement"),
            EventKind::Update
        );
        assert_eq!(kind_of(None, "deleteUser"), EventKind::Delete);
        assert_eq!(kind_of(None, "frobnicate"), EventKind::Other);
    }

    #[test]
    fn bad_items_are_refused_with_a_reason() {
        let mut s = sample();
        s["timestamp"] = json!("yesterday");
        let e = normalize("acme", &s, Utc::now()).unwrap_err();
        assert!(e.contains("timestamp"), "{e}");
        let mut s = sample();
        s.as_object_mut().map(|m| m.remove("timestamp"));
        assert!(normalize("acme", &s, Utc::now())
            .unwrap_err()
            .contains("missing"));
        let mut s = sample();
        s.as_object_mut().map(|m| {
            m.remove("action");
            m.remove("actionName")
        });
        assert!(normalize("acme", &s, Utc::now()).is_err());
        assert!(normalize("acme", &json!([1]), Utc::now()).is_err());
    }

    #[test]
    fn thread_target_when_no_affected_user() {
        let item = json!({"actionName": "x", "timestamp": 1555437274937u64,
                          "threadId": "abc==", "conversationType": "Room"});
        let e = normalize("acme", &item, Utc::now()).expect("ok");
        assert_eq!(e.target.id.as_deref(), Some("abc=="));
        assert_eq!(e.target.kind.as_deref(), Some("room"));
    }
}
