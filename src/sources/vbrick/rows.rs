//! Rev audit CSV → canonical events.
//!
//! The body is RFC 4180 CSV (CRLF, quoted fields with doubled quotes) with
//! the header row exactly `MessageKey,EntityKey,EntityId,When,Principal,
//! Message,PreviousState,CurrentState`; the last four columns hold JSON
//! objects. A row that cannot be normalised is rejected on its own (it is
//! dead-lettered with its row number and raw text, the rest of the page is
//! kept); a body that cannot be read as a whole (wrong header, cut inside
//! a quoted field) fails the page so it is fetched again and nothing of it
//! is stored.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use crate::journal::RejectedRecord;
use crate::model::{content_id, event_key, Actor, AuditEvent, Change, EventKind, Target};
use crate::util::rfc3339_ms;

/// The header row every audit response starts with.
pub const HEADER: [&str; 8] = [
    "MessageKey",
    "EntityKey",
    "EntityId",
    "When",
    "Principal",
    "Message",
    "PreviousState",
    "CurrentState",
];

/// Where a page sits, for event fields and rejection locations.
pub struct PageContext<'a> {
    pub tenant: &'a str,
    pub stream: &'a str,
    /// `window <from>..<to> page <n>`
    pub location: &'a str,
}

/// The events and rejected rows of one body.
#[derive(Debug, Default)]
pub struct ParsedPage {
    pub events: Vec<AuditEvent>,
    pub rejected: Vec<RejectedRecord>,
}

/// Why a whole body is unusable.
#[derive(Debug, PartialEq, Eq)]
pub struct BodyError(pub String);

/// Parses one response body. `Err` = the body as a whole is unusable
/// (retry the page); row problems land in `rejected`.
pub fn parse_body(body: &[u8], ctx: &PageContext<'_>) -> Result<ParsedPage, BodyError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut out = ParsedPage::default();
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        // No rows and no header: an empty window.
        return Ok(out);
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut rec = csv::ByteRecord::new();
    let mut start = 0usize;
    let mut header_seen = false;
    let mut row = 0usize;
    loop {
        let more = match rdr.read_byte_record(&mut rec) {
            Ok(m) => m,
            Err(e) => {
                return Err(BodyError(format!(
                    "{}: unreadable CSV after row {row}: {e}",
                    ctx.location
                )))
            }
        };
        if !more {
            break;
        }
        let end = (rdr.position().byte() as usize).min(body.len());
        let raw_bytes = &body[start.min(end)..end];
        start = end;
        let raw = String::from_utf8_lossy(raw_bytes)
            .trim_matches(['\r', '\n'])
            .to_string();
        if !header_seen {
            header_seen = true;
            let fields: Vec<&[u8]> = rec.iter().collect();
            let ok = fields.len() == HEADER.len()
                && fields.iter().zip(HEADER).all(|(f, h)| *f == h.as_bytes());
            if !ok {
                return Err(BodyError(format!(
                    "{}: unexpected header row `{}` (expected `{}`)",
                    ctx.location,
                    truncate(&raw, 200),
                    HEADER.join(",")
                )));
            }
            continue;
        }
        row += 1;
        let at_end = end >= body.len();
        if at_end && raw.bytes().filter(|b| *b == b'"').count() % 2 == 1 {
            // A body cut inside a quoted field: the server (or a proxy)
            // stopped mid-row. Fail the page; it is fetched again whole.
            return Err(BodyError(format!(
                "{}: body ends inside a quoted field of row {row} (truncated response)",
                ctx.location
            )));
        }
        match normalise(&rec, ctx) {
            Ok(ev) => out.events.push(ev),
            Err(reason) => out.rejected.push(RejectedRecord {
                location: format!("{} row {row}", ctx.location),
                reason,
                raw,
            }),
        }
    }
    if !header_seen {
        return Err(BodyError(format!("{}: no header row", ctx.location)));
    }
    Ok(out)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// Parses the `When` column: ISO-8601 (with or without zone; none = UTC)
/// or JavaScript `Date.toString()` text such as
/// `Thu Aug 30 2018 13:20:01 GMT+0000 (Coordinated Universal Time)`.
pub fn parse_when(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("When is empty".into());
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Ok(d.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(n.and_utc());
        }
    }
    // JavaScript Date.toString(): drop the "(zone name)" suffix.
    let js = t.split(" (").next().unwrap_or(t).trim();
    if let Ok(d) = DateTime::parse_from_str(js, "%a %b %d %Y %H:%M:%S GMT%z") {
        return Ok(d.with_timezone(&Utc));
    }
    Err(format!(
        "When `{}` is neither ISO-8601 nor JavaScript Date text",
        truncate(t, 80)
    ))
}

fn field(rec: &csv::ByteRecord, i: usize) -> Result<&str, String> {
    let bytes = rec.get(i).unwrap_or_default();
    std::str::from_utf8(bytes).map_err(|_| format!("{} is not valid UTF-8", HEADER[i]))
}

/// Parses a JSON column; empty text = no object.
fn json_column(rec: &csv::ByteRecord, i: usize) -> Result<Option<Value>, String> {
    let text = field(rec, i)?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_str::<Value>(text)
        .map(|v| if v.is_null() { None } else { Some(v) })
        .map_err(|e| format!("{} is not JSON: {e}", HEADER[i]))
}

/// One CSV row → one canonical event.
pub fn normalise(rec: &csv::ByteRecord, ctx: &PageContext<'_>) -> Result<AuditEvent, String> {
    if rec.len() != HEADER.len() {
        return Err(format!(
            "expected {} columns, found {}",
            HEADER.len(),
            rec.len()
        ));
    }
    let message_key = field(rec, 0)?.trim();
    let entity_key = field(rec, 1)?.trim();
    let entity_id = field(rec, 2)?.trim();
    let when_text = field(rec, 3)?;
    if message_key.is_empty() {
        return Err("MessageKey is empty".into());
    }
    let time = parse_when(when_text)?;
    let principal = json_column(rec, 4)?;
    let message = json_column(rec, 5)?;
    let previous = json_column(rec, 6)?;
    let current = json_column(rec, 7)?;

    let texts: Vec<&str> = (0..HEADER.len())
        .map(|i| field(rec, i))
        .collect::<Result<_, _>>()?;
    let when_norm = rfc3339_ms(time);
    // No row id exists: the native id is a hash of the row's content, with
    // the time normalised so the same row hashes alike in either format.
    let native = content_id(&[
        texts[0], texts[1], texts[2], &when_norm, texts[4], texts[5], texts[6], texts[7],
    ]);
    let mut raw = Map::new();
    for (h, t) in HEADER.iter().zip(&texts) {
        raw.insert((*h).to_string(), Value::String((*t).to_string()));
    }

    let actor = principal.as_ref().map(actor_of).unwrap_or_default();
    let target = Target {
        id: (!entity_id.is_empty()).then(|| entity_id.to_string()),
        name: current
            .as_ref()
            .and_then(name_of)
            .or_else(|| previous.as_ref().and_then(name_of))
            .or_else(|| message.as_ref().and_then(name_of)),
        kind: (!entity_key.is_empty()).then(|| entity_key.to_string()),
        extension: None,
    };
    let changes = diff(previous.as_ref(), current.as_ref());
    Ok(AuditEvent {
        key: event_key("vbrick", ctx.tenant, &native),
        source: "vbrick".into(),
        tenant: ctx.tenant.to_string(),
        stream: ctx.stream.to_string(),
        time,
        ingested_at: Utc::now(),
        action: message_key.to_string(),
        action_label: Some(label_of(message_key)),
        kind: kind_of(
            message_key,
            previous.as_ref(),
            current.as_ref(),
            message.as_ref(),
        ),
        actor,
        target,
        changes,
        client_ip: message.as_ref().and_then(ip_of),
        raw: Value::Object(raw).into(),
    })
}

fn get_ci<'v>(obj: &'v Map<String, Value>, names: &[&str]) -> Option<&'v Value> {
    names.iter().find_map(|n| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v)
    })
}

fn text_ci(obj: &Map<String, Value>, names: &[&str]) -> Option<String> {
    match get_ci(obj, names)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn actor_of(p: &Value) -> Actor {
    let Value::Object(o) = p else {
        return Actor::default();
    };
    let full = match (text_ci(o, &["FirstName"]), text_ci(o, &["LastName"])) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(f), None) => Some(f),
        (None, Some(l)) => Some(l),
        (None, None) => None,
    };
    Actor {
        id: text_ci(o, &["Id", "UserId", "PrincipalId"]),
        name: text_ci(o, &["Username", "UserName", "Name", "DisplayName"]).or(full),
        email: text_ci(o, &["Email", "EmailAddress"]),
        role: text_ci(o, &["Role", "RoleName"]),
    }
}

fn name_of(v: &Value) -> Option<String> {
    let Value::Object(o) = v else { return None };
    text_ci(o, &["Title", "Name", "Username", "UserName", "DisplayName"]).or_else(|| {
        // Media:SaveVideoSettings nests the settings.
        get_ci(o, &["Settings"]).and_then(name_of)
    })
}

fn ip_of(v: &Value) -> Option<String> {
    let Value::Object(o) = v else { return None };
    text_ci(o, &["IpAddress", "ClientIp", "IPAddress", "Ip"])
}

/// `Media:SaveVideoSettings` → `Save Video Settings`.
pub fn label_of(message_key: &str) -> String {
    let name = message_key.rsplit(':').next().unwrap_or(message_key);
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let boundary = i > 0
            && c.is_uppercase()
            && (chars[i - 1].is_lowercase()
                || chars.get(i + 1).is_some_and(|n| n.is_lowercase())
                    && chars[i - 1].is_uppercase());
        if boundary {
            out.push(' ');
        }
        out.push(*c);
    }
    out
}

fn is_empty_state(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

fn kind_of(
    message_key: &str,
    prev: Option<&Value>,
    cur: Option<&Value>,
    message: Option<&Value>,
) -> EventKind {
    let name = message_key.rsplit(':').next().unwrap_or(message_key);
    let lower = name.to_ascii_lowercase();
    let has = |w: &str| lower.contains(w);
    if has("logoff") || has("logout") || has("signout") {
        return EventKind::Logout;
    }
    if has("logon") || has("login") || has("signin") {
        return EventKind::Login;
    }
    if has("delete") || has("remove") {
        return EventKind::Delete;
    }
    for verb in ["add", "create", "upload", "insert", "register"] {
        if lower.starts_with(verb) || lower.starts_with(&format!("record{verb}")) {
            return EventKind::Create;
        }
    }
    for verb in [
        "save", "update", "edit", "set", "change", "modify", "suspend", "activate", "enable",
        "disable", "rename", "move", "assign",
    ] {
        if lower.starts_with(verb) {
            return EventKind::Update;
        }
    }
    if message
        .is_some_and(|m| matches!(m, Value::Object(o) if get_ci(o, &["LogOnSuccessful"]).is_some()))
    {
        return EventKind::Login;
    }
    match (is_empty_state(prev), is_empty_state(cur)) {
        (true, false) => EventKind::Create,
        (false, true) => EventKind::Delete,
        (false, false) => EventKind::Update,
        (true, true) => EventKind::Other,
    }
}

/// Flattens an object to `dotted.path → value` leaves (arrays stay whole).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, child) in o {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, child, out);
            }
        }
        other => {
            if !prefix.is_empty() {
                out.push((prefix.to_string(), other.clone()));
            }
        }
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Field-by-field difference of PreviousState and CurrentState (nested
/// objects by dotted path), in field-name order, then the fields only the
/// previous state had.
pub fn diff(prev: Option<&Value>, cur: Option<&Value>) -> Vec<Change> {
    let mut p = Vec::new();
    let mut c = Vec::new();
    if let Some(v) = prev {
        flatten("", v, &mut p);
    }
    if let Some(v) = cur {
        flatten("", v, &mut c);
    }
    let mut out = Vec::new();
    for (field, new) in &c {
        let old = p.iter().find(|(f, _)| f == field).map(|(_, v)| v);
        if old != Some(new) {
            let old_t = old.and_then(value_text);
            let new_t = value_text(new);
            if old_t != new_t {
                out.push(Change {
                    field: field.clone(),
                    old: old_t,
                    new: new_t,
                });
            }
        }
    }
    for (field, old) in &p {
        if !c.iter().any(|(f, _)| f == field) {
            if let Some(old_t) = value_text(old) {
                out.push(Change {
                    field: field.clone(),
                    old: Some(old_t),
                    new: None,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = "MessageKey,EntityKey,EntityId,When,Principal,Message,PreviousState,CurrentState\r\nNetwork:RecordLdapConnectorUserLogon,Network:UserAccess,00000000-0000-0000-0000-000000000000,2025-06-01T10:00:00.000Z,\"{\"\"Id\"\":\"\"00000000-0000-0000-0000-000000000000\"\"}\",\"{\"\"UserId\"\":\"\"00000000-0000-0000-0000-000000000000\"\",\"\"LogOnSuccessful\"\":true}\",\"{\"\"Status\"\":\"\"Active\"\",\"\"ItemStatus\"\":\"\"Active\"\"}\",\"{\"\"Status\"\":\"\"Active\"\",\"\"ItemStatus\"\":\"\"Active\"\"}\"\r\nMedia:SaveVideoSettings,Media:Video,7f0c0000-0000-0000-0000-000000000000,2025-06-01T10:05:00.000Z,\"{\"\"Id\"\":\"\"5a1e0000-0000-0000-0000-000000000000\"\"}\",\"{\"\"VideoId\"\":\"\"7f0c0000-0000-0000-0000-000000000000\"\",\"\"Settings\"\":{\"\"Title\"\":\"\"Q2 all hands\"\",\"\"Description\"\":\"\"d\"\",\"\"AccessControl\"\":\"\"AllUsers\"\",\"\"OwnerUserId\"\":\"\"00000000-0000-0000-0000-000000000000\"\"}}\",\"{\"\"Title\"\":\"\"Old\"\",\"\"AccessControl\"\":\"\"AllUsers\"\"}\",\"{\"\"Title\"\":\"\"Q2 all hands\"\",\"\"AccessControl\"\":\"\"AllUsers\"\"}\"";

    fn ctx() -> PageContext<'static> {
        PageContext {
            tenant: "acme",
            stream: "videos",
            location: "window a..b page 1",
        }
    }

    #[test]
    fn spec_example_parses() {
        let p = parse_body(SPEC_EXAMPLE.as_bytes(), &ctx()).expect("body");
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(p.events.len(), 2);
        let login = &p.events[0];
        assert_eq!(login.kind, EventKind::Login);
        assert_eq!(login.target.kind.as_deref(), Some("Network:UserAccess"));
        assert!(login.changes.is_empty());
        let v = &p.events[1];
        assert_eq!(v.action, "Media:SaveVideoSettings");
        assert_eq!(v.action_label.as_deref(), Some("Save Video Settings"));
        assert_eq!(v.kind, EventKind::Update);
        assert_eq!(
            v.actor.id.as_deref(),
            Some("5a1e0000-0000-0000-0000-000000000000")
        );
        assert_eq!(v.target.name.as_deref(), Some("Q2 all hands"));
        assert_eq!(
            v.changes,
            vec![Change {
                field: "Title".into(),
                old: Some("Old".into()),
                new: Some("Q2 all hands".into())
            }]
        );
        assert_eq!(rfc3339_ms(v.time), "2025-06-01T10:05:00.000Z");
        assert!(v.key.starts_with("vbrick:acme:"));
        assert_eq!(v.raw.value()["MessageKey"], "Media:SaveVideoSettings");
    }

    #[test]
    fn when_in_both_formats() {
        let iso = parse_when("2018-08-30T13:20:01.000Z").expect("iso");
        let js = parse_when("Thu Aug 30 2018 13:20:01 GMT+0000").expect("js");
        let js_named =
            parse_when("Thu Aug 30 2018 15:20:01 GMT+0200 (Central European Summer Time)")
                .expect("js named");
        assert_eq!(iso, js);
        assert_eq!(iso, js_named);
        assert_eq!(
            parse_when("2018-04-10T16:20:56.829").expect("naive"),
            parse_when("2018-04-10T16:20:56.829Z").expect("z")
        );
        assert!(parse_when("yesterday").is_err());
    }

    #[test]
    fn bad_row_is_rejected_rest_kept() {
        let body = format!(
            "{}\r\nNetwork:SaveUser,Network:User,u1,not-a-date,{{}},{{}},{{}},{{}}\r\nNetwork:SaveUser,Network:User,u2,2025-06-01T10:00:00Z,\"{{\"\"Id\"\":\"\"p\"\"\",{{}},{{}},{{}}",
            SPEC_EXAMPLE
        );
        let p = parse_body(body.as_bytes(), &ctx()).expect("body");
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.rejected.len(), 2);
        assert_eq!(p.rejected[0].location, "window a..b page 1 row 3");
        assert!(p.rejected[0].reason.contains("not-a-date"));
        assert!(p.rejected[0]
            .raw
            .starts_with("Network:SaveUser,Network:User,u1,"));
        assert_eq!(p.rejected[1].location, "window a..b page 1 row 4");
        assert!(
            p.rejected[1].reason.contains("Principal is not JSON"),
            "{}",
            p.rejected[1].reason
        );
    }

    #[test]
    fn truncated_inside_quotes_fails_the_page() {
        let cut = &SPEC_EXAMPLE[..SPEC_EXAMPLE.len() - 40];
        let e = parse_body(cut.as_bytes(), &ctx()).unwrap_err();
        assert!(e.0.contains("truncated"), "{}", e.0);
    }

    #[test]
    fn wrong_header_fails_the_page() {
        let e = parse_body(b"a,b,c\r\n1,2,3", &ctx()).unwrap_err();
        assert!(e.0.contains("unexpected header"), "{}", e.0);
        assert_eq!(parse_body(b"", &ctx()).expect("empty").events.len(), 0);
        assert_eq!(
            parse_body(HEADER.join(",").as_bytes(), &ctx())
                .expect("header only")
                .events
                .len(),
            0
        );
    }

    #[test]
    fn same_row_same_key_in_both_when_formats() {
        let a = "MessageKey,EntityKey,EntityId,When,Principal,Message,PreviousState,CurrentState\r\nNetwork:SaveUser,Network:User,u1,2018-08-30T13:20:01.000Z,{},{},{},{}";
        let b = "MessageKey,EntityKey,EntityId,When,Principal,Message,PreviousState,CurrentState\r\nNetwork:SaveUser,Network:User,u1,Thu Aug 30 2018 13:20:01 GMT+0000,{},{},{},{}";
        let ka = &parse_body(a.as_bytes(), &ctx()).expect("a").events[0].key;
        let kb = &parse_body(b.as_bytes(), &ctx()).expect("b").events[0].key;
        assert_eq!(ka, kb);
    }

    #[test]
    fn diff_nested_and_removed() {
        let prev: Value = serde_json::json!({"Name":"a","Settings":{"X":1,"Y":2},"Gone":"g"});
        let cur: Value = serde_json::json!({"Name":"b","Settings":{"X":1,"Y":3},"New":true});
        let d = diff(Some(&prev), Some(&cur));
        let fields: Vec<&str> = d.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["Name", "New", "Settings.Y", "Gone"]);
        assert_eq!(d[1].new.as_deref(), Some("true"));
        assert_eq!(d[3].new, None);
    }

    #[test]
    fn kinds_from_message_keys() {
        assert_eq!(
            kind_of("Network:AddUser", None, None, None),
            EventKind::Create
        );
        assert_eq!(
            kind_of("Network:DeleteGroup", None, None, None),
            EventKind::Delete
        );
        assert_eq!(
            kind_of("Network:RecordUserLogoff", None, None, None),
            EventKind::Logout
        );
        assert_eq!(label_of("Devices:SaveDmeDevice"), "Save Dme Device");
        assert_eq!(
            label_of("Network:RecordLdapConnectorUserLogon"),
            "Record Ldap Connector User Logon"
        );
    }

    mod props {
        use super::*;
        use crate::sim::vbrick::{Row, WhenStyle, CSV_HEADER};
        use proptest::prelude::*;

        fn row(title_old: &str, title_new: &str, when: DateTime<Utc>, style: WhenStyle) -> Row {
            Row {
                message_key: "Media:SaveVideoSettings".into(),
                entity_key: "Media:Video".into(),
                entity_id: "7f0c".into(),
                when,
                principal: serde_json::json!({"Id": "5a1e", "Username": title_new}),
                message: serde_json::json!({"VideoId": "7f0c", "Settings": {"Title": title_new}}),
                previous_state: serde_json::json!({"Title": title_old}),
                current_state: serde_json::json!({"Title": title_new}),
                when_style: style,
                raw_line: None,
            }
        }

        proptest! {
            /// Whatever the JSON columns hold (quotes, commas, CR/LF,
            /// any Unicode), the simulator's CSV reads back to the same
            /// row: same time, actor, target and field change.
            #[test]
            fn simulator_csv_round_trips(
                old in "\\PC{0,40}",
                new in "[\"',\r\n a-zA-Z0-9éü漢]{0,40}",
                secs in 0i64..4_000_000_000,
                ms in 0i64..1000,
                js in any::<bool>(),
            ) {
                let style = if js { WhenStyle::Js } else { WhenStyle::Iso };
                let when = DateTime::from_timestamp(secs, 0).expect("ts")
                    + chrono::Duration::milliseconds(if js { 0 } else { ms });
                let r = row(&old, &new, when, style);
                let body = format!("{CSV_HEADER}\r\n{}\r\n{}", r.csv_line(), r.csv_line());
                let p = parse_body(body.as_bytes(), &PageContext { tenant: "t", stream: "videos", location: "w" })
                    .expect("body");
                prop_assert!(p.rejected.is_empty(), "{:?}", p.rejected);
                prop_assert_eq!(p.events.len(), 2);
                let e = &p.events[0];
                prop_assert_eq!(e.time, when);
                prop_assert_eq!(&e.key, &p.events[1].key);
                prop_assert_eq!(e.actor.id.as_deref(), Some("5a1e"));
                prop_assert_eq!(e.target.id.as_deref(), Some("7f0c"));
                if old != new {
                    prop_assert_eq!(e.changes.clone(), vec![Change {
                        field: "Title".into(),
                        old: Some(old.clone()),
                        new: Some(new.clone()),
                    }]);
                } else {
                    prop_assert!(e.changes.is_empty());
                }
                prop_assert_eq!(e.raw.value()["CurrentState"].as_str().map(str::to_string),
                    Some(serde_json::json!({"Title": new}).to_string()));
            }
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the CSV reader; every data row ends
        /// up as an event or a dead letter.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_body(&body, &ctx());
        }

        /// The spec's header with mangled rows after it.
        #[test]
        fn mangled_rows_are_rejected_not_lost(rows in proptest::collection::vec("[a-zA-Z0-9:,\"{} -]{0,80}", 1..8)) {
            let mut body = String::from("MessageKey,EntityKey,EntityId,When,Principal,Message,PreviousState,CurrentState\r\n");
            for r in &rows {
                body.push_str(r);
                body.push_str("\r\n");
            }
            if let Ok(page) = parse_body(body.as_bytes(), &ctx()) {
                let non_empty = rows.iter().filter(|r| !r.is_empty()).count();
                proptest::prop_assert!(page.events.len() + page.rejected.len() <= rows.len());
                proptest::prop_assert!(page.events.len() + page.rejected.len() >= non_empty.min(1).saturating_sub(1));
            }
        }
    }
}
