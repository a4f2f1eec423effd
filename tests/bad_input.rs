//! Bad input: property tests over the parsers and normalisers. Whatever a
//! vendor or an operator sends, trailkeep never panics: it returns a clear
//! error or dead-letters the record.

use proptest::prelude::*;
use serde_json::{json, Value};
use trailkeep::config::Config;
use trailkeep::model::StreamId;
use trailkeep::sources::ringcentral::{normalize, parse_page};
use trailkeep::sources::Window;
use trailkeep::util::parse_duration;

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        // Strings that look like what the fields expect.
        prop_oneof![
            Just("2024-08-06T10:50:19.442Z"),
            Just("UPDATE"),
            Just("CHANGE_USER_INFO"),
            Just("oldValue")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("eventTime".to_string()),
                    Just("eventType".to_string()),
                    Just("actionId".to_string()),
                    Just("initiator".to_string()),
                    Just("target".to_string()),
                    Just("details".to_string()),
                    Just("parameters".to_string()),
                    Just("key".to_string()),
                    Just("value".to_string()),
                    Just("records".to_string()),
                    Just("paging".to_string()),
                    Just("total".to_string()),
                    Just("totalFound".to_string()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn window() -> Window {
    let now = chrono::Utc::now();
    Window {
        from: now - chrono::Duration::days(1),
        to: now,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn ringcentral_record_never_panics(v in any_json()) {
        let raw = serde_json::value::to_raw_value(&v).expect("json");
        let _ = normalize(&raw, "t");
    }

    #[test]
    fn ringcentral_response_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let id = StreamId::new("ringcentral", "t", "audit-trail");
        let _ = parse_page(&body, &id, 1, 1000, &window());
    }

    #[test]
    fn ringcentral_page_never_panics_and_keeps_every_record(v in any_json()) {
        let id = StreamId::new("ringcentral", "t", "audit-trail");
        if let Ok(page) = parse_page(v.to_string().as_bytes(), &id, 1, 1000, &window()) {
            let n = v["records"].as_array().map_or(0, Vec::len);
            // Every record is either an event or a dead letter: none vanish.
            prop_assert_eq!(page.events.len() + page.rejected.len(), n);
        }
    }

    #[test]
    fn symphony_item_never_panics(v in any_json()) {
        let _ = trailkeep::sources::symphony::normalize::normalize("t", &v, chrono::Utc::now());
    }

    #[test]
    fn symphony_item_with_string_or_number_fields(ts in prop_oneof![any::<i64>().prop_map(|n| json!(n)), ".{0,16}".prop_map(|s| json!(s))],
                                                   id in prop_oneof![any::<i64>().prop_map(|n| json!(n)), ".{0,16}".prop_map(|s| json!(s)), Just(Value::Null)]) {
        let item = json!({"timestamp": ts, "actionName": "x", "initiatorId": id, "affectedId": id});
        let _ = trailkeep::sources::symphony::normalize::normalize("t", &item, chrono::Utc::now());
    }

    #[test]
    fn durations_never_panic(s in ".{0,24}") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn config_text_never_panics(s in "[\\[\\]a-z_=\"{} .0-9\\n]{0,200}") {
        let _ = Config::from_toml_str(&s);
    }

    #[test]
    fn config_values_of_wrong_type_give_key_paths(v in any_json()) {
        let tree = json!({
            "journal": {"path": "/tmp/x.db"},
            "sources": [{"kind": "ringcentral", "name": "a", "poll_interval": v.clone()}],
        });
        if let Err(e) = Config::from_value(tree) {
            for issue in &e.0 {
                prop_assert!(!issue.path.is_empty() || issue.message.contains("configuration"), "issue without a path: {}", issue);
            }
        }
    }
}

#[test]
fn ringcentral_page_without_records_is_malformed_not_empty() {
    let id = StreamId::new("ringcentral", "t", "audit-trail");
    let body = json!({"paging": {"total": 3}}).to_string();
    let e = parse_page(body.as_bytes(), &id, 1, 1000, &window()).unwrap_err();
    assert!(e.to_string().contains("no `records`"), "{e}");
}

#[test]
fn ringcentral_bad_record_is_dead_lettered_with_location() {
    let id = StreamId::new("ringcentral", "t", "audit-trail");
    let resp = json!({"records": [
        {"id": "ok-1", "eventTime": "2025-01-01T00:00:00Z", "actionId": "X"},
        {"id": "bad-1", "eventTime": "not a time"}
    ], "paging": {"page": 2, "total": 2, "totalFound": 1002}});
    let page = parse_page(resp.to_string().as_bytes(), &id, 2, 1000, &window()).expect("page");
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.rejected.len(), 1);
    assert!(
        page.rejected[0].location.contains("page 2 record 2"),
        "{}",
        page.rejected[0].location
    );
    assert!(page.rejected[0].reason.contains("RFC 3339"));
    assert!(page.rejected[0].raw.contains("bad-1"));
    assert!(page.next.is_none());
}
