//! RingCentral audit record → canonical `AuditEvent`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::{event_key, Actor, AuditEvent, Change, EventKind, Target};

fn s(v: &Value, k: &str) -> Option<String> {
    match v.get(k) {
        Some(Value::String(x)) if !x.is_empty() => Some(x.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// `CHANGE_USER_INFO` → `Change user info`.
pub fn action_label(action: &str) -> String {
    let lower = action.replace('_', " ").to_lowercase();
    let mut c = lower.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Pairs `oldX`/`newX` detail parameters into changes of field `X`; a
/// generic `oldValue`/`newValue` pair takes its field name from
/// `settingName` (or similar) when present.
fn changes(details: Option<&Value>) -> Vec<Change> {
    let Some(params) = details
        .and_then(|d| d.get("parameters"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let pairs: Vec<(String, Option<String>)> = params
        .iter()
        .filter_map(|p| {
            let key = p.get("key").and_then(Value::as_str)?.to_string();
            let value = match p.get("value") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            };
            Some((key, value))
        })
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .and_then(|(_, v)| v.clone())
    };
    let mut out: Vec<Change> = Vec::new();
    let setting = ["settingName", "fieldName", "elementName", "parameterName"]
        .iter()
        .find_map(|k| get(k));
    for (key, value) in &pairs {
        let (is_old, field) = if let Some(f) = key.strip_prefix("old") {
            (true, f)
        } else if let Some(f) = key.strip_prefix("new") {
            (false, f)
        } else {
            continue;
        };
        if field.is_empty() || !field.starts_with(|c: char| c.is_ascii_uppercase()) {
            continue;
        }
        let name = if field == "Value" {
            setting.clone().unwrap_or_else(|| "Value".into())
        } else {
            field.to_string()
        };
        let idx = match out.iter().position(|c| c.field == name) {
            Some(i) => i,
            None => {
                out.push(Change {
                    field: name,
                    old: None,
                    new: None,
                });
                out.len() - 1
            }
        };
        if is_old {
            out[idx].old = value.clone();
        } else {
            out[idx].new = value.clone();
        }
    }
    out
}

/// Normalises one record. `raw` keeps the record untouched.
pub fn normalize(r: &Value, tenant: &str) -> Result<AuditEvent, String> {
    if !r.is_object() {
        return Err("record is not a JSON object".into());
    }
    let id = s(r, "id").ok_or("record has no `id`")?;
    let time_text = s(r, "eventTime").ok_or("record has no `eventTime`")?;
    let time = DateTime::parse_from_rfc3339(&time_text)
        .map_err(|e| format!("eventTime `{time_text}` is not RFC 3339: {e}"))?
        .with_timezone(&Utc);
    let action = s(r, "actionId").unwrap_or_else(|| "UNKNOWN".into());
    let kind = s(r, "eventType")
        .map(|t| EventKind::from_vendor(&t))
        .unwrap_or(EventKind::Other);
    let init = r.get("initiator").cloned().unwrap_or(Value::Null);
    let target = r.get("target").cloned().unwrap_or(Value::Null);
    Ok(AuditEvent {
        key: event_key("ringcentral", tenant, &id),
        source: "ringcentral".into(),
        tenant: tenant.to_string(),
        stream: super::STREAM.into(),
        time,
        ingested_at: Utc::now(),
        action_label: Some(action_label(&action)),
        action,
        kind,
        actor: Actor {
            id: s(&init, "extensionId"),
            name: s(&init, "name"),
            email: None,
            role: s(&init, "role"),
        },
        target: Target {
            id: s(&target, "objectId"),
            name: s(&target, "name"),
            kind: s(&target, "objectType"),
            extension: s(&target, "extensionNumber"),
        },
        changes: changes(r.get("details")),
        client_ip: s(r, "clientIp"),
        raw: r.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_record_from_api_facts() {
        let r: Value = serde_json::from_str(
            r#"{"id":"4b52af9-beee-7779d1e802c7","eventTime":"2024-08-06T10:50:19.442Z","eventType":"UPDATE",
 "details":{"parameters":[{"key":"oldRoleName","value":"Super Admin"},{"key":"newRoleName","value":"Standard (International)"}]},
 "accountId":"12345678","actionId":"CHANGE_USER_ROLE","clientIp":"218.57.154.108",
 "initiator":{"extensionId":"12345678","extensionNumber":"000","name":"xxxxxx","role":"Standard (International)"},
 "target":{"objectId":"12345678","objectType":"Extension","name":"xxxxxx","extensionNumber":"000"}}"#,
        )
        .expect("json");
        let e = normalize(&r, "acme").expect("normalises");
        assert_eq!(e.key, "ringcentral:acme:4b52af9-beee-7779d1e802c7");
        assert_eq!(e.kind, EventKind::Update);
        assert_eq!(e.action, "CHANGE_USER_ROLE");
        assert_eq!(e.action_label.as_deref(), Some("Change user role"));
        assert_eq!(e.actor.id.as_deref(), Some("12345678"));
        assert_eq!(e.target.kind.as_deref(), Some("Extension"));
        assert_eq!(e.target.extension.as_deref(), Some("000"));
        assert_eq!(
            e.changes,
            vec![Change {
                field: "RoleName".into(),
                old: Some("Super Admin".into()),
                new: Some("Standard (International)".into())
            }]
        );
        assert_eq!(e.client_ip.as_deref(), Some("218.57.154.108"));
        assert_eq!(e.raw, r);
    }

    #[test]
    fn event_type_case_insensitive_and_generic_values() {
        let r: Value = serde_json::json!({"id":"1","eventTime":"2025-04-24T14:12:00Z","eventType":"Create","actionId":"CHANGE_USER_INFO",
            "details":{"parameters":[{"key":"settingName","value":"Department"},{"key":"oldValue","value":"Biology"},{"key":"newValue","value":"Mathematics"}]}});
        let e = normalize(&r, "t").expect("ok");
        assert_eq!(e.kind, EventKind::Create);
        assert_eq!(
            e.changes,
            vec![Change {
                field: "Department".into(),
                old: Some("Biology".into()),
                new: Some("Mathematics".into())
            }]
        );
    }

    #[test]
    fn missing_id_or_bad_time_is_rejected_with_reason() {
        assert!(normalize(
            &serde_json::json!({"eventTime":"2025-01-01T00:00:00Z"}),
            "t"
        )
        .unwrap_err()
        .contains("`id`"));
        assert!(
            normalize(&serde_json::json!({"id":"x","eventTime":"yesterday"}), "t")
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(normalize(&serde_json::json!([1, 2]), "t").is_err());
    }
}
