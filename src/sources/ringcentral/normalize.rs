//! RingCentral audit record → canonical `AuditEvent`.
//!
//! A record is read straight from its JSON text into borrowed, lenient
//! fields (no tree of values is built): a field of an unexpected type is
//! treated as absent, as the API's optional fields are; only a missing
//! `id` or an unreadable `eventTime` rejects the record.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::lenient::{Obj, ObjList, Text};

use crate::model::{event_key, Actor, AuditEvent, Change, EventKind, RawRecord, Target};

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Record<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    event_time: Text<'a>,
    #[serde(borrow)]
    event_type: Text<'a>,
    #[serde(borrow)]
    action_id: Text<'a>,
    #[serde(borrow)]
    client_ip: Text<'a>,
    #[serde(borrow)]
    initiator: Obj<Initiator<'a>>,
    #[serde(borrow)]
    target: Obj<TargetObj<'a>>,
    #[serde(borrow)]
    details: Obj<Details<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Initiator<'a> {
    #[serde(borrow)]
    extension_id: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    role: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct TargetObj<'a> {
    #[serde(borrow)]
    object_id: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    object_type: Text<'a>,
    #[serde(borrow)]
    extension_number: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Details<'a> {
    #[serde(borrow)]
    parameters: ObjList<Param<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Param<'a> {
    #[serde(borrow)]
    key: Text<'a>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

/// A detail parameter's value as text: a string as is, null as absent,
/// anything else as its compact JSON.
fn param_value(v: Option<&RawValue>) -> Option<String> {
    let text = v?.get();
    if text.starts_with('"') {
        return serde_json::from_str::<String>(text).ok();
    }
    if text == "null" {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => Some(v.to_string()),
        Err(_) => Some(text.to_string()),
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
fn changes(params: &[Param<'_>]) -> Vec<Change> {
    let pairs: Vec<(&str, Option<String>)> = params
        .iter()
        .filter_map(|p| Some((p.key.0.as_deref()?, param_value(p.value))))
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

/// Normalises one record, given as the JSON text the API sent. `raw`
/// keeps that text.
pub fn normalize(raw: &RawValue, tenant: &str) -> Result<AuditEvent, String> {
    if !raw.get().starts_with('{') {
        return Err("record is not a JSON object".into());
    }
    let r: Record<'_> =
        serde_json::from_str(raw.get()).map_err(|e| format!("record does not parse: {e}"))?;
    let id = r.id.0.as_deref().ok_or("record has no `id`")?;
    let time_text = r
        .event_time
        .0
        .as_deref()
        .ok_or("record has no `eventTime`")?;
    let time = DateTime::parse_from_rfc3339(time_text)
        .map_err(|e| format!("eventTime `{time_text}` is not RFC 3339: {e}"))?
        .with_timezone(&Utc);
    let action = r.action_id.owned().unwrap_or_else(|| "UNKNOWN".into());
    let kind = r
        .event_type
        .0
        .as_deref()
        .map_or(EventKind::Other, EventKind::from_vendor);
    let init = r.initiator.0.unwrap_or_default();
    let target = r.target.0.unwrap_or_default();
    let details = r.details.0.unwrap_or_default();
    Ok(AuditEvent {
        key: event_key("ringcentral", tenant, id),
        source: "ringcentral".into(),
        tenant: tenant.to_string(),
        stream: super::STREAM.into(),
        time,
        ingested_at: Utc::now(),
        action_label: Some(action_label(&action)),
        action,
        kind,
        actor: Actor {
            id: init.extension_id.owned(),
            name: init.name.owned(),
            email: None,
            role: init.role.owned(),
        },
        target: Target {
            id: target.object_id.owned(),
            name: target.name.owned(),
            kind: target.object_type.owned(),
            extension: target.extension_number.owned(),
        },
        changes: changes(&details.parameters.0),
        client_ip: r.client_ip.owned(),
        raw: RawRecord::from_raw(raw.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: &serde_json::Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(v).expect("json")
    }

    #[test]
    fn sample_record_from_api_facts() {
        let r: serde_json::Value = serde_json::from_str(
            r#"{"id":"4b52af9-beee-7779d1e802c7","eventTime":"2024-08-06T10:50:19.442Z","eventType":"UPDATE",
 "details":{"parameters":[{"key":"oldRoleName","value":"Super Admin"},{"key":"newRoleName","value":"Standard (International)"}]},
 "accountId":"12345678","actionId":"CHANGE_USER_ROLE","clientIp":"218.57.154.108",
 "initiator":{"extensionId":"12345678","extensionNumber":"000","name":"xxxxxx","role":"Standard (International)"},
 "target":{"objectId":"12345678","objectType":"Extension","name":"xxxxxx","extensionNumber":"000"}}"#,
        )
        .expect("json");
        let e = normalize(&raw(&r), "acme").expect("normalises");
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
        let r = serde_json::json!({"id":"1","eventTime":"2025-04-24T14:12:00Z","eventType":"Create","actionId":"CHANGE_USER_INFO",
            "details":{"parameters":[{"key":"settingName","value":"Department"},{"key":"oldValue","value":"Biology"},{"key":"newValue","value":"Mathematics"}]}});
        let e = normalize(&raw(&r), "t").expect("ok");
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
    fn numbers_read_as_text_and_fields_of_the_wrong_type_as_absent() {
        let r = serde_json::json!({"id": 42, "eventTime": "2025-04-24T14:12:00Z",
            "actionId": ["not", "text"], "clientIp": {"v4": "1.2.3.4"},
            "initiator": "someone", "target": {"objectId": 7, "name": null},
            "details": {"parameters": [1, {"key": "oldCount", "value": 3}, {"key": "newCount", "value": {"n": 4}}]}});
        let e = normalize(&raw(&r), "t").expect("ok");
        assert_eq!(e.key, "ringcentral:t:42");
        assert_eq!(e.action, "UNKNOWN");
        assert_eq!(e.client_ip, None);
        assert_eq!(e.actor, Actor::default());
        assert_eq!(e.target.id.as_deref(), Some("7"));
        assert_eq!(e.target.name, None);
        assert_eq!(
            e.changes,
            vec![Change {
                field: "Count".into(),
                old: Some("3".into()),
                new: Some(r#"{"n":4}"#.into())
            }]
        );
    }

    #[test]
    fn missing_id_or_bad_time_is_rejected_with_reason() {
        assert!(normalize(
            &raw(&serde_json::json!({"eventTime":"2025-01-01T00:00:00Z"})),
            "t"
        )
        .unwrap_err()
        .contains("`id`"));
        assert!(normalize(
            &raw(&serde_json::json!({"id":"x","eventTime":"yesterday"})),
            "t"
        )
        .unwrap_err()
        .contains("RFC 3339"));
        assert!(normalize(&raw(&serde_json::json!([1, 2])), "t").is_err());
    }
}
