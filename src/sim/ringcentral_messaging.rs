//! RingCentral SMS, phone-number list and Team Messaging endpoints of the
//! simulator (used by the alert channels), per `api-facts.md` §1
//! "Notification endpoints":
//!
//! - `POST /restapi/v1.0/account/~/extension/~/sms` (Medium): 200 with a
//!   message record; a from number that is not the extension's → 403
//!   MSG-242, one without the `SmsSender` feature → 403 MSG-304; text over
//!   1000 UTF-16 units → 400; injected 429 MSG-305 / 503 MSG-290 with
//!   Retry-After.
//! - `GET /restapi/v1.0/account/~/extension/~/phone-number` (Light): the
//!   extension's numbers with their `features`, paged.
//! - `GET /team-messaging/v1/chats?type=..&recordCount=..&pageToken=..`
//!   (Medium): records + `navigation.nextPageToken`.
//! - `POST /team-messaging/v1/chats/{chatId}/posts` (Medium): 201 with the
//!   post; unknown chat → 404.
//!
//! Everything received is recorded (`sms_seen`, `posts_seen`) and counted
//! in the RC sim's `Counters` (`sms_sent`, `posts_created`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ringcentral::{api_error, RingCentralSim};
use crate::util::rfc3339_ms;

type Sim = Arc<RingCentralSim>;

/// One of the extension's phone numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhoneNumber {
    pub phone_number: String,
    pub features: Vec<String>,
}

/// A Team Messaging chat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Chat {
    pub id: String,
    /// Team, Group, Personal, Direct, Everyone.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
}

/// An SMS request as received (accepted or not).
#[derive(Clone, Debug, Serialize)]
pub struct SmsSeen {
    pub from: String,
    pub to: Vec<String>,
    pub text: String,
    pub status: u16,
}

/// A post request as received (accepted or not).
#[derive(Clone, Debug, Serialize)]
pub struct PostSeen {
    pub chat_id: String,
    pub text: String,
    pub status: u16,
}

/// An injected answer for the next SMS requests.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct SmsFault {
    /// 429 (MSG-305) or 503 (MSG-290).
    pub status: u16,
    pub retry_after: u64,
}

pub struct Messaging {
    numbers: Mutex<Vec<PhoneNumber>>,
    chats: Mutex<Vec<Chat>>,
    sms: Mutex<Vec<SmsSeen>>,
    posts: Mutex<Vec<PostSeen>>,
    sms_faults: Mutex<VecDeque<SmsFault>>,
    chat_list_requests: AtomicU64,
    phone_list_requests: AtomicU64,
    next_id: AtomicU64,
    /// Hold: once this many SMS were accepted, further SMS requests wait
    /// (unrecorded) until `release_held`, then answer 503 MSG-290 without
    /// sending. Lets a test kill the client at a known point.
    hold_after: Mutex<Option<u64>>,
    accepted_sms: AtomicU64,
    held: AtomicU64,
    release: tokio::sync::watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The extension's default numbers: one SMS-capable, one voice-only.
pub const SMS_NUMBER: &str = "+16505550100";
pub const VOICE_ONLY_NUMBER: &str = "+16505550101";

impl Default for Messaging {
    fn default() -> Self {
        let numbers = vec![
            PhoneNumber {
                phone_number: SMS_NUMBER.into(),
                features: vec!["SmsSender".into(), "CallerId".into(), "MmsSender".into()],
            },
            PhoneNumber {
                phone_number: VOICE_ONLY_NUMBER.into(),
                features: vec!["CallerId".into()],
            },
        ];
        let chats = [
            ("1001", "Team", "Admin Audit Messages"),
            ("1002", "Group", "New Audit Trail app test group"),
            ("1003", "Team", "IT Operations"),
            ("1004", "Personal", "Personal"),
            ("1005", "Team", "Security"),
            ("1006", "Group", "Helpdesk leads"),
            ("1007", "Direct", "Dana Whitfield"),
            ("1008", "Team", "Compliance"),
        ]
        .iter()
        .map(|(id, kind, name)| Chat {
            id: (*id).into(),
            kind: (*kind).into(),
            name: (*name).into(),
        })
        .collect();
        Messaging {
            numbers: Mutex::new(numbers),
            chats: Mutex::new(chats),
            sms: Mutex::new(Vec::new()),
            posts: Mutex::new(Vec::new()),
            sms_faults: Mutex::new(VecDeque::new()),
            chat_list_requests: AtomicU64::new(0),
            phone_list_requests: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            hold_after: Mutex::new(None),
            accepted_sms: AtomicU64::new(0),
            held: AtomicU64::new(0),
            release: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Messaging {
    pub fn sms_seen(&self) -> Vec<SmsSeen> {
        lock(&self.sms).clone()
    }
    pub fn posts_seen(&self) -> Vec<PostSeen> {
        lock(&self.posts).clone()
    }
    pub fn chats(&self) -> Vec<Chat> {
        lock(&self.chats).clone()
    }
    pub fn add_chat(&self, id: &str, kind: &str, name: &str) {
        lock(&self.chats).push(Chat {
            id: id.into(),
            kind: kind.into(),
            name: name.into(),
        });
    }
    /// Fault: the chat disappears (posts to it answer 404).
    pub fn remove_chat(&self, id: &str) {
        lock(&self.chats).retain(|c| c.id != id);
    }
    pub fn set_phone_numbers(&self, numbers: Vec<PhoneNumber>) {
        *lock(&self.numbers) = numbers;
    }
    /// Fault: the next `n` SMS requests (past auth and the Medium limit)
    /// answer `status` (429 MSG-305 or 503 MSG-290) with Retry-After.
    pub fn fail_next_sms(&self, n: usize, status: u16, retry_after: Duration) {
        let mut q = lock(&self.sms_faults);
        for _ in 0..n {
            q.push_back(SmsFault {
                status,
                retry_after: retry_after.as_secs().max(1),
            });
        }
    }
    /// Fault: once `n` SMS in total were accepted, hold every further SMS
    /// request (see `release_held`).
    pub fn hold_sms_after(&self, n: u64) {
        *lock(&self.hold_after) = Some(n);
    }
    /// How many SMS requests are being held right now.
    pub fn held_sms(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }
    /// Ends the hold: held requests answer 503 MSG-290 (nothing sent),
    /// new requests are served normally.
    pub fn release_held(&self) {
        *lock(&self.hold_after) = None;
        self.release.send_modify(|g| *g += 1);
    }
    pub fn chat_list_requests(&self) -> u64 {
        self.chat_list_requests.load(Ordering::Relaxed)
    }
    pub fn phone_list_requests(&self) -> u64 {
        self.phone_list_requests.load(Ordering::Relaxed)
    }
    fn new_id(&self) -> String {
        (9_000_000_000 + self.next_id.fetch_add(1, Ordering::Relaxed)).to_string()
    }
}

/// E.164: `+`, then 8 to 15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

#[derive(Deserialize)]
struct NumberRef {
    #[serde(rename = "phoneNumber")]
    phone_number: String,
}

#[derive(Deserialize)]
struct SmsBody {
    from: NumberRef,
    to: Vec<NumberRef>,
    text: String,
}

fn put_header(h: &mut HeaderMap, k: &'static str, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(k, v);
    }
}

async fn sms(
    State(sim): State<Sim>,
    Path((account, extension)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Like a real server, a request once received is processed to the end
    // even if the client goes away meanwhile (hyper would otherwise drop
    // this handler with the connection).
    let task = tokio::spawn(async move {
        let (status, resp, seen) = sms_inner(&sim, &account, &extension, &headers, &body).await;
        if let Some(mut s) = seen {
            s.status = status;
            lock(&sim.messaging.sms).push(s);
        }
        if status == 200 {
            sim.bump(|c| c.sms_sent += 1);
        }
        resp
    });
    task.await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn sms_inner(
    sim: &Sim,
    account: &str,
    extension: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> (u16, Response, Option<SmsSeen>) {
    let mut rate_h = match sim.gate(headers, "medium").await {
        Ok(h) => h,
        Err(r) => return (r.status().as_u16(), r, None),
    };
    if account != "~" && account != sim.cfg.account_id || extension != "~" {
        let r = api_error(
            StatusCode::NOT_FOUND,
            "CMN-102",
            "Resource for parameter [accountId] is not found",
            rate_h,
        );
        return (404, r, None);
    }
    let req: SmsBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            let r = api_error(
                StatusCode::BAD_REQUEST,
                "CMN-101",
                &format!("Parameter [body] value is invalid: {e}"),
                rate_h,
            );
            return (400, r, None);
        }
    };
    let seen = SmsSeen {
        from: req.from.phone_number.clone(),
        to: req.to.iter().map(|t| t.phone_number.clone()).collect(),
        text: req.text.clone(),
        status: 0,
    };
    let m = &sim.messaging;
    let hold = lock(&m.hold_after).is_some_and(|n| m.accepted_sms.load(Ordering::SeqCst) >= n);
    if hold {
        let mut rx = m.release.subscribe();
        let generation = *rx.borrow();
        m.held.fetch_add(1, Ordering::SeqCst);
        let _ = rx.wait_for(|g| *g != generation).await;
        m.held.fetch_sub(1, Ordering::SeqCst);
        put_header(&mut rate_h, "retry-after", "1");
        let r = api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "MSG-290",
            "Service temporarily unavailable",
            rate_h,
        );
        return (503, r, None);
    }
    let fault = lock(&sim.messaging.sms_faults).pop_front();
    if let Some(f) = fault {
        put_header(&mut rate_h, "retry-after", &f.retry_after.to_string());
        let (status, code, msg) = if f.status == 503 {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "MSG-290",
                "Service temporarily unavailable",
            )
        } else {
            (
                StatusCode::TOO_MANY_REQUESTS,
                "MSG-305",
                "SMS sending rate exceeded",
            )
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            sim.bump(|c| *c.rate_limited.entry("sms".into()).or_default() += 1);
        }
        return (
            status.as_u16(),
            api_error(status, code, msg, rate_h),
            Some(seen),
        );
    }
    let bad = |code: &str, msg: &str, st: StatusCode, h: HeaderMap| {
        (st.as_u16(), api_error(st, code, msg, h), Some(seen.clone()))
    };
    let number = lock(&sim.messaging.numbers)
        .iter()
        .find(|n| n.phone_number == req.from.phone_number)
        .cloned();
    match number {
        None => {
            return bad(
                "MSG-242",
                "The phone number [from] does not belong to the current extension",
                StatusCode::FORBIDDEN,
                rate_h,
            )
        }
        Some(n) if !n.features.iter().any(|f| f == "SmsSender") => {
            return bad(
                "MSG-304",
                "The phone number [from] is not allowed to send SMS",
                StatusCode::FORBIDDEN,
                rate_h,
            )
        }
        Some(_) => {}
    }
    if req.to.is_empty() || req.to.iter().any(|t| !is_e164(&t.phone_number)) {
        return bad(
            "CMN-101",
            "Parameter [to.phoneNumber] value is invalid",
            StatusCode::BAD_REQUEST,
            rate_h,
        );
    }
    // The error code for an over-long text is UNCONFIRMED: CMN-101 here.
    let units = req.text.encode_utf16().count();
    if req.text.is_empty() || units > 1000 {
        return bad(
            "CMN-101",
            &format!("Parameter [text] value is invalid: {units} UTF-16 units (1..1000 allowed)"),
            StatusCode::BAD_REQUEST,
            rate_h,
        );
    }
    let id = sim.messaging.new_id();
    m.accepted_sms.fetch_add(1, Ordering::SeqCst);
    let now = rfc3339_ms(Utc::now());
    let record = json!({
        "uri": format!("/restapi/v1.0/account/{}/extension/62264425008/message-store/{id}", sim.cfg.account_id),
        "id": id.parse::<u64>().unwrap_or_default(),
        "type": "SMS",
        "direction": "Outbound",
        "messageStatus": "Queued",
        "readStatus": "Read",
        "availability": "Alive",
        "from": {"phoneNumber": req.from.phone_number},
        "to": req.to.iter().map(|t| json!({"phoneNumber": t.phone_number})).collect::<Vec<_>>(),
        "subject": req.text,
        "creationTime": now,
        "lastModifiedTime": now,
    });
    (
        200,
        (StatusCode::OK, rate_h, Json(record)).into_response(),
        Some(seen),
    )
}

fn query_pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref()
        .and_then(|s| serde_urlencoded::from_str::<Vec<(String, String)>>(s).ok())
        .unwrap_or_default()
}

async fn phone_numbers(
    State(sim): State<Sim>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    sim.messaging
        .phone_list_requests
        .fetch_add(1, Ordering::Relaxed);
    let rate_h = match sim.gate(&headers, "light").await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let pairs = query_pairs(&q);
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let page = get("page").unwrap_or(1).max(1);
    let per_page = get("perPage").unwrap_or(100).clamp(1, 1000);
    let numbers = lock(&sim.messaging.numbers).clone();
    let total = numbers.len();
    let records: Vec<Value> = numbers
        .iter()
        .enumerate()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(i, n)| {
            json!({
                "id": 31_000_000 + i,
                "phoneNumber": n.phone_number,
                "paymentType": "Local",
                "type": "VoiceFax",
                "usageType": "DirectNumber",
                "status": "Normal",
                "features": n.features,
            })
        })
        .collect();
    let body = json!({
        "records": records,
        "paging": {"page": page, "perPage": per_page, "totalPages": total.div_ceil(per_page), "totalElements": total},
        "navigation": {},
    });
    (StatusCode::OK, rate_h, Json(body)).into_response()
}

fn page_token(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("off:{offset}"))
}

fn parse_page_token(t: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("off:")?
        .parse()
        .ok()
}

async fn list_chats(State(sim): State<Sim>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    sim.messaging
        .chat_list_requests
        .fetch_add(1, Ordering::Relaxed);
    let rate_h = match sim.gate(&headers, "medium").await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let pairs = query_pairs(&q);
    let types: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "type")
        .map(|(_, v)| v.as_str())
        .collect();
    let count = match pairs.iter().find(|(k, _)| k == "recordCount") {
        None => 30,
        // Above 250 the real error is UNCONFIRMED: CMN-101 here.
        Some((_, v)) => match v.parse::<usize>() {
            Ok(n) if (1..=250).contains(&n) => n,
            _ => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "CMN-101",
                    "Parameter [recordCount] value is invalid (1..250)",
                    rate_h,
                )
            }
        },
    };
    let offset = match pairs.iter().find(|(k, _)| k == "pageToken") {
        None => 0,
        Some((_, t)) => match parse_page_token(t) {
            Some(o) => o,
            None => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "CMN-101",
                    "Parameter [pageToken] value is invalid",
                    rate_h,
                )
            }
        },
    };
    let chats: Vec<Chat> = lock(&sim.messaging.chats)
        .iter()
        .filter(|c| types.is_empty() || types.contains(&c.kind.as_str()))
        .cloned()
        .collect();
    let now = rfc3339_ms(Utc::now());
    let records: Vec<Value> = chats
        .iter()
        .skip(offset)
        .take(count)
        .map(|c| {
            json!({"id": c.id, "type": c.kind, "name": c.name, "status": "Active",
                   "creationTime": now, "lastModifiedTime": now})
        })
        .collect();
    let mut nav = serde_json::Map::new();
    if offset > 0 {
        nav.insert(
            "prevPageToken".into(),
            json!(page_token(offset.saturating_sub(count))),
        );
    }
    if offset + count < chats.len() {
        nav.insert("nextPageToken".into(), json!(page_token(offset + count)));
    }
    (
        StatusCode::OK,
        rate_h,
        Json(json!({"records": records, "navigation": nav})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PostBody {
    text: String,
}

async fn create_post(
    State(sim): State<Sim>,
    Path(chat_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rate_h = match sim.gate(&headers, "medium").await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let req: PostBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "CMN-101",
                &format!("Parameter [body] value is invalid: {e}"),
                rate_h,
            )
        }
    };
    let exists = lock(&sim.messaging.chats).iter().any(|c| c.id == chat_id);
    let record = |status: u16| {
        lock(&sim.messaging.posts).push(PostSeen {
            chat_id: chat_id.clone(),
            text: req.text.clone(),
            status,
        })
    };
    if !exists {
        record(404);
        return api_error(
            StatusCode::NOT_FOUND,
            "CMN-102",
            &format!("Resource for parameter [chatId] is not found: {chat_id}"),
            rate_h,
        );
    }
    if req.text.is_empty() || req.text.chars().count() > 10_000 {
        record(400);
        return api_error(
            StatusCode::BAD_REQUEST,
            "CMN-101",
            "Parameter [text] value is invalid (1..10000 characters)",
            rate_h,
        );
    }
    record(201);
    sim.bump(|c| c.posts_created += 1);
    let now = rfc3339_ms(Utc::now());
    let post = json!({
        "id": sim.messaging.new_id(),
        "groupId": chat_id,
        "type": "TextMessage",
        "text": req.text,
        "creatorId": "62264425008",
        "addedPersonIds": [],
        "creationTime": now,
        "lastModifiedTime": now,
        "attachments": [],
        "mentions": [],
        "activity": null,
        "title": null,
        "iconUri": null,
        "iconEmoji": null,
    });
    (StatusCode::CREATED, rate_h, Json(post)).into_response()
}

async fn admin_messaging(State(sim): State<Sim>) -> Response {
    Json(json!({
        "sms": sim.messaging.sms_seen(),
        "posts": sim.messaging.posts_seen(),
        "chats": sim.messaging.chats(),
        "phone_numbers": lock(&sim.messaging.numbers).clone(),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagingFaults {
    #[serde(default)]
    sms_fail_next: usize,
    #[serde(default = "default_fault_status")]
    sms_fail_status: u16,
    #[serde(default = "default_retry_after")]
    sms_retry_after: u64,
    #[serde(default)]
    remove_chats: Vec<String>,
    #[serde(default)]
    add_chats: Vec<Chat>,
    #[serde(default)]
    phone_numbers: Option<Vec<PhoneNumber>>,
}

fn default_fault_status() -> u16 {
    429
}
fn default_retry_after() -> u64 {
    1
}

async fn admin_messaging_faults(
    State(sim): State<Sim>,
    Json(b): Json<MessagingFaults>,
) -> Response {
    let m = &sim.messaging;
    m.fail_next_sms(
        b.sms_fail_next,
        b.sms_fail_status,
        Duration::from_secs(b.sms_retry_after),
    );
    for id in &b.remove_chats {
        m.remove_chat(id);
    }
    for c in b.add_chats {
        lock(&m.chats).push(c);
    }
    if let Some(n) = b.phone_numbers {
        m.set_phone_numbers(n);
    }
    Json(json!({"ok": true})).into_response()
}

pub fn routes() -> Router<Sim> {
    Router::new()
        .route(
            "/restapi/v1.0/account/{account}/extension/{extension}/sms",
            post(sms),
        )
        .route(
            "/restapi/v1.0/account/{account}/extension/{extension}/phone-number",
            get(phone_numbers),
        )
        .route("/team-messaging/v1/chats", get(list_chats))
        .route("/team-messaging/v1/chats/{chat}/posts", post(create_post))
        .route("/_sim/messaging", get(admin_messaging))
        .route("/_sim/messaging/faults", post(admin_messaging_faults))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164() {
        assert!(is_e164("+16505550100"));
        assert!(!is_e164("16505550100"));
        assert!(!is_e164("+0650555"));
        assert!(!is_e164("+1650-555-0100"));
    }

    #[test]
    fn page_tokens_round_trip() {
        assert_eq!(parse_page_token(&page_token(40)), Some(40));
        assert_eq!(parse_page_token("garbage!"), None);
    }
}
