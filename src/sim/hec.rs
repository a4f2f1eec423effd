//! Splunk HTTP Event Collector simulator, as `shared/hec-facts.md` describes
//! it: token check (several tokens, some disabled, some with indexer
//! acknowledgement), `/services/collector/event` batches of concatenated
//! JSON validated event by event, `/raw`, `/health`, channels, ackIds per
//! channel, `/ack` that answers true only after an indexing delay and
//! forgets a status once it was read true, every error code with its JSON
//! body, `Content-Encoding: gzip`, `max_content_length` → 413, and fault
//! knobs (busy period, latency, ack loss, dropped connections, poison
//! events).
//!
//! A request with one invalid event is rejected whole (nothing of it is
//! indexed) and the answer names the event with `invalid-event-number`.
//! What was indexed is kept so tests can compare; `/_sim/events` and
//! `/_sim/counters` expose it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::{loopback, serve, SimHandle};

/// One HEC token the simulator knows.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    /// Indexer acknowledgement (`useACK`): sends need a channel and get an ackId.
    #[serde(default)]
    pub use_ack: bool,
    #[serde(default)]
    pub disabled: bool,
    /// Indexes this token may write to; empty = every index that exists.
    #[serde(default)]
    pub indexes: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub tokens: Vec<TokenConfig>,
    /// Indexes that exist; an event naming another one gets code 7.
    pub indexes: Vec<String>,
    /// Index of events that name none.
    pub default_index: String,
    /// Time between accepting a request and its ackId reading true.
    pub indexing_delay_ms: u64,
    /// Largest request body accepted (as sent, i.e. compressed), else 413.
    pub max_content_length: u64,
    /// Pending ackIds one channel may hold before sends get 503 (code 9).
    pub max_pending_acks_per_channel: usize,
    /// Channels the server keeps before new ones get 503 (code 9).
    pub max_channels: usize,
    /// Added to every collector request.
    pub latency_ms: u64,
    /// `Retry-After` seconds sent with 503 Server is busy (None = no header).
    pub busy_retry_after_secs: Option<u64>,
    /// Keep every indexed event (tests); off = count only (benchmarks).
    pub store_events: bool,
    /// Whether error bodies carry `invalid-event-number`.
    pub report_invalid_event_number: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tokens: vec![
                TokenConfig {
                    token: "sim-hec-token".into(),
                    use_ack: true,
                    disabled: false,
                    indexes: Vec::new(),
                },
                TokenConfig {
                    token: "sim-hec-noack".into(),
                    use_ack: false,
                    disabled: false,
                    indexes: Vec::new(),
                },
                TokenConfig {
                    token: "sim-hec-disabled".into(),
                    use_ack: false,
                    disabled: true,
                    indexes: Vec::new(),
                },
            ],
            indexes: vec!["main".into(), "audit".into()],
            default_index: "main".into(),
            indexing_delay_ms: 50,
            max_content_length: 800 * 1024 * 1024,
            max_pending_acks_per_channel: 1_000_000,
            max_channels: 1_000_000,
            latency_ms: 0,
            busy_retry_after_secs: Some(1),
            store_events: true,
            report_invalid_event_number: true,
        }
    }
}

/// An event as the simulated index holds it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IndexedEvent {
    pub index: String,
    pub time: Option<f64>,
    pub host: Option<String>,
    pub source: Option<String>,
    pub sourcetype: Option<String>,
    pub fields: Map<String, Value>,
    pub event: Value,
    pub channel: Option<String>,
    /// The ackId of the request that carried it (None: ack off).
    pub ack_id: Option<u64>,
}

impl IndexedEvent {
    /// `fields.event_id`, which trailkeep sets to the journal's event key.
    pub fn event_id(&self) -> Option<&str> {
        self.fields.get("event_id").and_then(Value::as_str)
    }
}

/// Request and outcome counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    pub event_requests: u64,
    pub raw_requests: u64,
    pub ack_requests: u64,
    pub health_requests: u64,
    pub gzip_requests: u64,
    pub plain_requests: u64,
    pub events_indexed: u64,
    pub acks_issued: u64,
    pub acks_read_true: u64,
    pub too_large: u64,
    pub busy_rejections: u64,
    pub dropped_connections: u64,
    /// Rejections by HEC code.
    pub errors_by_code: BTreeMap<i64, u64>,
    /// Channels seen on `/ack` queries.
    pub ack_channels: BTreeSet<String>,
    /// Pending ackIds over all channels.
    pub pending_acks: u64,
}

#[derive(Default)]
struct Faults {
    busy_until: Option<Instant>,
    lose_acks: u32,
    drop_after_receive: u32,
    latency: Duration,
    poison_ids: HashSet<String>,
    max_content_length: u64,
}

struct PendingAck {
    ready_at: Instant,
    lost: bool,
}

#[derive(Default)]
struct Channel {
    next_ack: u64,
    pending: HashMap<u64, PendingAck>,
}

/// The simulator's state, with in-process admin methods for tests.
pub struct State {
    cfg: Config,
    tokens: Mutex<HashMap<String, TokenConfig>>,
    channels: Mutex<HashMap<String, Channel>>,
    events: Mutex<Vec<IndexedEvent>>,
    faults: Mutex<Faults>,
    counters: Mutex<Counters>,
    /// Event ids of requests whose ack was lost on purpose.
    lost_ack_event_ids: Mutex<Vec<String>>,
    events_indexed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    pub fn new(cfg: Config) -> Self {
        let tokens = cfg
            .tokens
            .iter()
            .map(|t| (t.token.clone(), t.clone()))
            .collect();
        let faults = Faults {
            latency: Duration::from_millis(cfg.latency_ms),
            max_content_length: cfg.max_content_length,
            ..Faults::default()
        };
        State {
            cfg,
            tokens: Mutex::new(tokens),
            channels: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            faults: Mutex::new(faults),
            counters: Mutex::new(Counters::default()),
            lost_ack_event_ids: Mutex::new(Vec::new()),
            events_indexed: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Every indexed event, in arrival order.
    pub fn events(&self) -> Vec<IndexedEvent> {
        lock(&self.events).clone()
    }

    /// `fields.event_id` of every indexed event, in arrival order.
    pub fn event_ids(&self) -> Vec<String> {
        lock(&self.events)
            .iter()
            .filter_map(|e| e.event_id().map(str::to_string))
            .collect()
    }

    pub fn events_indexed(&self) -> u64 {
        self.events_indexed.load(Ordering::Relaxed)
    }

    pub fn counters(&self) -> Counters {
        let mut c = lock(&self.counters).clone();
        c.events_indexed = self.events_indexed();
        c.pending_acks = lock(&self.channels)
            .values()
            .map(|ch| ch.pending.len() as u64)
            .sum();
        c
    }

    /// Answers 503 "Server is busy" to every send for `d`.
    pub fn set_busy(&self, d: Duration) {
        lock(&self.faults).busy_until = Some(Instant::now() + d);
    }

    /// The next `n` ackIds issued never read true (the data is indexed).
    pub fn lose_next_acks(&self, n: u32) {
        lock(&self.faults).lose_acks = n;
    }

    /// Event ids carried by requests whose ack was lost on purpose.
    pub fn lost_ack_event_ids(&self) -> Vec<String> {
        lock(&self.lost_ack_event_ids).clone()
    }

    /// The next `n` sends are indexed, then the connection is broken
    /// before the answer is complete.
    pub fn drop_after_receive(&self, n: u32) {
        lock(&self.faults).drop_after_receive = n;
    }

    pub fn set_latency(&self, d: Duration) {
        lock(&self.faults).latency = d;
    }

    /// Events whose `fields.event_id` is listed are rejected with code 6
    /// (Invalid data format), as a server-side parse failure would be.
    pub fn poison(&self, event_id: &str) {
        lock(&self.faults).poison_ids.insert(event_id.to_string());
    }

    pub fn set_max_content_length(&self, bytes: u64) {
        lock(&self.faults).max_content_length = bytes;
    }

    /// Enables or disables a token (creating it when unknown).
    pub fn set_token_disabled(&self, token: &str, disabled: bool) {
        let mut t = lock(&self.tokens);
        let e = t.entry(token.to_string()).or_insert_with(|| TokenConfig {
            token: token.to_string(),
            use_ack: false,
            disabled,
            indexes: Vec::new(),
        });
        e.disabled = disabled;
    }

    pub fn set_token_ack(&self, token: &str, use_ack: bool) {
        if let Some(t) = lock(&self.tokens).get_mut(token) {
            t.use_ack = use_ack;
        }
    }

    fn count_error(&self, code: i64) {
        *lock(&self.counters).errors_by_code.entry(code).or_default() += 1;
    }
}

/// `{"text": ..., "code": ...}` with the HTTP status HEC uses for it.
fn hec_error(code: i64, invalid_event: Option<usize>) -> Response {
    let (status, text) = match code {
        1 => (StatusCode::FORBIDDEN, "Token disabled"),
        2 => (StatusCode::UNAUTHORIZED, "Token is required"),
        3 => (StatusCode::UNAUTHORIZED, "Invalid authorization"),
        4 => (StatusCode::FORBIDDEN, "Invalid token"),
        5 => (StatusCode::BAD_REQUEST, "No data"),
        6 => (StatusCode::BAD_REQUEST, "Invalid data format"),
        7 => (StatusCode::BAD_REQUEST, "Incorrect index"),
        8 => (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
        9 => (StatusCode::SERVICE_UNAVAILABLE, "Server is busy"),
        10 => (StatusCode::BAD_REQUEST, "Data channel is missing"),
        11 => (StatusCode::BAD_REQUEST, "Invalid data channel"),
        12 => (StatusCode::BAD_REQUEST, "Event field is required"),
        13 => (StatusCode::BAD_REQUEST, "Event field cannot be blank"),
        14 => (StatusCode::BAD_REQUEST, "ACK is disabled"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
    };
    let body = match invalid_event {
        Some(n) => json!({"text": text, "code": code, "invalid-event-number": n}),
        None => json!({"text": text, "code": code}),
    };
    (status, Json(body)).into_response()
}

/// Starts the simulator on 127.0.0.1 (any free port).
pub async fn start(cfg: Config) -> std::io::Result<(Arc<State>, SimHandle)> {
    start_on(cfg, loopback()).await
}

/// Starts the simulator on `addr` (`trailkeep sim`).
pub async fn start_on(
    cfg: Config,
    addr: std::net::SocketAddr,
) -> std::io::Result<(Arc<State>, SimHandle)> {
    let state = Arc::new(State::new(cfg));
    let handle = serve(router(state.clone()), addr).await?;
    Ok((state, handle))
}

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/services/collector", post(event))
        .route("/services/collector/event", post(event))
        .route("/services/collector/event/1.0", post(event))
        .route("/services/collector/raw", post(raw))
        .route("/services/collector/raw/1.0", post(raw))
        .route("/services/collector/ack", post(ack))
        .route("/services/collector/ack/1.0", post(ack))
        .route("/services/collector/health", get(health))
        .route("/services/collector/health/1.0", get(health))
        .route("/_sim/counters", get(admin_counters))
        .route("/_sim/events", get(admin_events))
        .route("/_sim/faults", post(admin_faults))
        .route("/_sim/tokens", post(admin_tokens))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

#[derive(Debug, Default, Deserialize)]
struct CollectorQuery {
    channel: Option<String>,
    index: Option<String>,
    sourcetype: Option<String>,
    source: Option<String>,
    host: Option<String>,
}

/// Token from `Authorization: Splunk <token>`, checked.
/// Err = the HEC code of the refusal.
fn authorize(state: &State, headers: &HeaderMap) -> Result<TokenConfig, i64> {
    let Some(value) = headers.get("authorization") else {
        return Err(2);
    };
    let Some(token) = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Splunk "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Err(3);
    };
    match lock(&state.tokens).get(token) {
        None => Err(4),
        Some(t) if t.disabled => Err(1),
        Some(t) => Ok(t.clone()),
    }
}

/// The channel of a request (header or `?channel=`), validated as a GUID.
fn channel_of(
    headers: &HeaderMap,
    q: &CollectorQuery,
    required: bool,
) -> Result<Option<String>, i64> {
    let given = headers
        .get("x-splunk-request-channel")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.channel.clone());
    match given {
        None if required => Err(10),
        None => Ok(None),
        Some(c) if uuid::Uuid::parse_str(c.trim()).is_err() => Err(11),
        Some(c) => Ok(Some(c.trim().to_ascii_lowercase())),
    }
}

enum Prelude {
    Go {
        token: TokenConfig,
        channel: Option<String>,
        body: Vec<u8>,
        drop_connection: bool,
    },
    Answer(Response),
}

/// What every send does before looking at the events: latency, auth,
/// busy, channel, size, decompression.
async fn prelude(
    state: &State,
    headers: &HeaderMap,
    q: &CollectorQuery,
    body: Bytes,
    raw: bool,
) -> Prelude {
    let latency = lock(&state.faults).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let token = match authorize(state, headers) {
        Ok(t) => t,
        Err(code) => {
            state.count_error(code);
            return Prelude::Answer(hec_error(code, None));
        }
    };
    let busy = lock(&state.faults)
        .busy_until
        .is_some_and(|u| Instant::now() < u);
    if busy {
        lock(&state.counters).busy_rejections += 1;
        state.count_error(9);
        let mut r = hec_error(9, None);
        if let Some(s) = state.cfg.busy_retry_after_secs {
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(s as u32));
        }
        return Prelude::Answer(r);
    }
    let channel = match channel_of(headers, q, token.use_ack || raw) {
        Ok(c) => c,
        Err(code) => {
            state.count_error(code);
            return Prelude::Answer(hec_error(code, None));
        }
    };
    let max = lock(&state.faults).max_content_length;
    if body.len() as u64 > max {
        lock(&state.counters).too_large += 1;
        return Prelude::Answer(
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Content-Length of {} too large (maximum is {max})",
                    body.len()
                ),
            )
                .into_response(),
        );
    }
    let gzip = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = if gzip {
        lock(&state.counters).gzip_requests += 1;
        let mut out = Vec::with_capacity(body.len() * 4);
        if flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            state.count_error(6);
            return Prelude::Answer(hec_error(6, None));
        }
        out
    } else {
        lock(&state.counters).plain_requests += 1;
        body.to_vec()
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        state.count_error(5);
        return Prelude::Answer(hec_error(5, None));
    }
    let drop_connection = {
        let mut f = lock(&state.faults);
        if f.drop_after_receive > 0 {
            f.drop_after_receive -= 1;
            true
        } else {
            false
        }
    };
    Prelude::Go {
        token,
        channel,
        body,
        drop_connection,
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

fn numeric_time(v: &Value) -> Option<Option<f64>> {
    match v {
        Value::Number(n) => Some(n.as_f64()),
        Value::String(s) => s.trim().parse::<f64>().ok().map(Some),
        Value::Null => Some(None),
        _ => None,
    }
}

fn str_field(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Parses and validates every event of a body; the whole request fails on
/// the first invalid one, naming it.
fn parse_events(
    state: &State,
    token: &TokenConfig,
    q: &CollectorQuery,
    body: &[u8],
) -> Result<Vec<IndexedEvent>, (i64, usize)> {
    let poison = lock(&state.faults).poison_ids.clone();
    let mut out = Vec::new();
    for (i, item) in serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .enumerate()
    {
        let Ok(Value::Object(mut m)) = item else {
            return Err((6, i));
        };
        let event = match m.remove("event") {
            None => return Err((12, i)),
            Some(e) if is_blank(&e) => return Err((13, i)),
            Some(e) => e,
        };
        let time = match m.get("time").map(numeric_time) {
            None => None,
            Some(None) => return Err((6, i)),
            Some(Some(t)) => t,
        };
        let index = match m.get("index") {
            None => q
                .index
                .clone()
                .unwrap_or_else(|| state.cfg.default_index.clone()),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err((6, i)),
        };
        let allowed = state.cfg.indexes.contains(&index)
            && (token.indexes.is_empty() || token.indexes.contains(&index));
        if !allowed {
            return Err((7, i));
        }
        let fields = match m.remove("fields") {
            None => Map::new(),
            Some(Value::Object(f)) => {
                // Indexed fields must be flat: strings, numbers or arrays of them.
                if f.values().any(|v| matches!(v, Value::Object(_))) {
                    return Err((6, i));
                }
                f
            }
            Some(_) => return Err((6, i)),
        };
        if fields
            .get("event_id")
            .and_then(Value::as_str)
            .is_some_and(|id| poison.contains(id))
        {
            return Err((6, i));
        }
        out.push(IndexedEvent {
            index,
            time,
            host: str_field(&m, "host").or_else(|| q.host.clone()),
            source: str_field(&m, "source").or_else(|| q.source.clone()),
            sourcetype: str_field(&m, "sourcetype").or_else(|| q.sourcetype.clone()),
            fields,
            event,
            channel: None,
            ack_id: None,
        });
    }
    Ok(out)
}

/// Whether an `event` value is there and not blank, read without building
/// it (benchmarks send a million of them).
#[derive(Default)]
enum EventProbe {
    #[default]
    Missing,
    Blank,
    Present,
}

impl<'de> Deserialize<'de> for EventProbe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EventProbe;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event")
            }
            fn visit_str<E>(self, v: &str) -> Result<EventProbe, E> {
                Ok(if v.trim().is_empty() {
                    EventProbe::Blank
                } else {
                    EventProbe::Present
                })
            }
            fn visit_unit<E>(self) -> Result<EventProbe, E> {
                Ok(EventProbe::Blank)
            }
            fn visit_none<E>(self) -> Result<EventProbe, E> {
                Ok(EventProbe::Blank)
            }
            fn visit_bool<E>(self, _: bool) -> Result<EventProbe, E> {
                Ok(EventProbe::Present)
            }
            fn visit_i64<E>(self, _: i64) -> Result<EventProbe, E> {
                Ok(EventProbe::Present)
            }
            fn visit_u64<E>(self, _: u64) -> Result<EventProbe, E> {
                Ok(EventProbe::Present)
            }
            fn visit_f64<E>(self, _: f64) -> Result<EventProbe, E> {
                Ok(EventProbe::Present)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<EventProbe, A::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(EventProbe::Present)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<EventProbe, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(EventProbe::Present)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct LightEnvelope<'a> {
    #[serde(default)]
    event: EventProbe,
    #[serde(default)]
    time: Option<Value>,
    #[serde(borrow, default)]
    index: Option<std::borrow::Cow<'a, str>>,
    /// Borrowed: the counting path must stay cheap (benchmarks run the
    /// simulator on the same cores as the service).
    #[serde(borrow, default)]
    fields: Option<BTreeMap<std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue>>,
}

/// The same validation as `parse_events`, counting instead of keeping the
/// events (for `store_events = false`).
fn count_events(
    state: &State,
    token: &TokenConfig,
    q: &CollectorQuery,
    body: &[u8],
) -> Result<usize, (i64, usize)> {
    let poison = lock(&state.faults).poison_ids.clone();
    let mut n = 0;
    for (i, item) in serde_json::Deserializer::from_slice(body)
        .into_iter::<LightEnvelope<'_>>()
        .enumerate()
    {
        let Ok(e) = item else {
            return Err((6, i));
        };
        match e.event {
            EventProbe::Missing => return Err((12, i)),
            EventProbe::Blank => return Err((13, i)),
            EventProbe::Present => {}
        }
        if e.time.as_ref().map(numeric_time) == Some(None) {
            return Err((6, i));
        }
        let index = e.index.as_deref().unwrap_or_else(|| {
            q.index
                .as_deref()
                .unwrap_or(state.cfg.default_index.as_str())
        });
        let allowed = state.cfg.indexes.iter().any(|x| x == index)
            && (token.indexes.is_empty() || token.indexes.iter().any(|x| x == index));
        if !allowed {
            return Err((7, i));
        }
        if let Some(f) = &e.fields {
            let nested = f.values().any(|v| v.get().starts_with('{'));
            let poisoned = !poison.is_empty()
                && f.get("event_id").is_some_and(|v| {
                    serde_json::from_str::<String>(v.get()).is_ok_and(|id| poison.contains(&id))
                });
            if nested || poisoned {
                return Err((6, i));
            }
        }
        n += 1;
    }
    Ok(n)
}

/// Issues an ackId on the channel when the token acknowledges.
fn issue_ack(
    state: &State,
    token: &TokenConfig,
    channel: Option<&str>,
) -> Result<Option<(u64, bool)>, i64> {
    let (true, Some(channel)) = (token.use_ack, channel) else {
        return Ok(None);
    };
    let lost = {
        let mut f = lock(&state.faults);
        if f.lose_acks > 0 {
            f.lose_acks -= 1;
            true
        } else {
            false
        }
    };
    let mut channels = lock(&state.channels);
    if !channels.contains_key(channel) && channels.len() >= state.cfg.max_channels {
        state.count_error(9);
        return Err(9);
    }
    let ch = channels.entry(channel.to_string()).or_default();
    if ch.pending.len() >= state.cfg.max_pending_acks_per_channel {
        state.count_error(9);
        return Err(9);
    }
    let id = ch.next_ack;
    ch.next_ack += 1;
    ch.pending.insert(
        id,
        PendingAck {
            ready_at: Instant::now() + Duration::from_millis(state.cfg.indexing_delay_ms),
            lost,
        },
    );
    lock(&state.counters).acks_issued += 1;
    Ok(Some((id, lost)))
}

/// Stores accepted events and builds the success answer.
fn accept(
    state: &State,
    token: &TokenConfig,
    channel: Option<String>,
    mut events: Vec<IndexedEvent>,
    count: usize,
    drop_connection: bool,
) -> Response {
    let ack = match issue_ack(state, token, channel.as_deref()) {
        Ok(a) => a,
        Err(code) => return hec_error(code, None),
    };
    if let Some((_, true)) = ack {
        lock(&state.lost_ack_event_ids).extend(
            events
                .iter()
                .filter_map(|e| e.event_id().map(str::to_string)),
        );
    }
    state
        .events_indexed
        .fetch_add(count as u64, Ordering::Relaxed);
    if state.cfg.store_events {
        for e in &mut events {
            e.channel = channel.clone();
            e.ack_id = ack.map(|a| a.0);
        }
        lock(&state.events).extend(events);
    }
    if drop_connection {
        lock(&state.counters).dropped_connections += 1;
        let broken = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("sim: connection dropped"))
        });
        return (StatusCode::OK, Body::from_stream(broken)).into_response();
    }
    let body = match ack {
        Some((id, _)) => json!({"text": "Success", "code": 0, "ackId": id}),
        None => json!({"text": "Success", "code": 0}),
    };
    (StatusCode::OK, Json(body)).into_response()
}

async fn event(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<CollectorQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&state.counters).event_requests += 1;
    let (token, channel, body, drop_connection) =
        match prelude(&state, &headers, &q, body, false).await {
            Prelude::Answer(r) => return r,
            Prelude::Go {
                token,
                channel,
                body,
                drop_connection,
            } => (token, channel, body, drop_connection),
        };
    let parsed = if state.cfg.store_events {
        parse_events(&state, &token, &q, &body).map(|evs| (evs.len(), evs))
    } else {
        count_events(&state, &token, &q, &body).map(|n| (n, Vec::new()))
    };
    match parsed {
        Ok((n, events)) => accept(&state, &token, channel, events, n, drop_connection),
        Err((code, i)) => {
            state.count_error(code);
            let n = state.cfg.report_invalid_event_number.then_some(i);
            hec_error(code, n)
        }
    }
}

async fn raw(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<CollectorQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&state.counters).raw_requests += 1;
    let (token, channel, body, drop_connection) =
        match prelude(&state, &headers, &q, body, true).await {
            Prelude::Answer(r) => return r,
            Prelude::Go {
                token,
                channel,
                body,
                drop_connection,
            } => (token, channel, body, drop_connection),
        };
    let index = q
        .index
        .clone()
        .unwrap_or_else(|| state.cfg.default_index.clone());
    if !state.cfg.indexes.contains(&index)
        || !(token.indexes.is_empty() || token.indexes.contains(&index))
    {
        state.count_error(7);
        return hec_error(7, None);
    }
    let text = String::from_utf8_lossy(&body);
    let events = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| IndexedEvent {
            index: index.clone(),
            time: None,
            host: q.host.clone(),
            source: q.source.clone(),
            sourcetype: q.sourcetype.clone(),
            fields: Map::new(),
            event: Value::String(l.to_string()),
            channel: None,
            ack_id: None,
        })
        .collect::<Vec<_>>();
    let n = events.len();
    accept(&state, &token, channel, events, n, drop_connection)
}

#[derive(Deserialize)]
struct AckRequest {
    acks: Vec<u64>,
}

async fn ack(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<CollectorQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&state.counters).ack_requests += 1;
    let token = match authorize(&state, &headers) {
        Ok(t) => t,
        Err(code) => {
            state.count_error(code);
            return hec_error(code, None);
        }
    };
    if !token.use_ack {
        state.count_error(14);
        return hec_error(14, None);
    }
    let channel = match channel_of(&headers, &q, true) {
        Ok(Some(c)) => c,
        Ok(None) => return hec_error(10, None),
        Err(code) => return hec_error(code, None),
    };
    let Ok(req) = serde_json::from_slice::<AckRequest>(&body) else {
        state.count_error(6);
        return hec_error(6, None);
    };
    lock(&state.counters).ack_channels.insert(channel.clone());
    let now = Instant::now();
    let mut answer = Map::new();
    let mut read_true = 0u64;
    {
        let mut channels = lock(&state.channels);
        let ch = channels.get_mut(&channel);
        let mut ch = ch;
        for id in req.acks {
            let ready = ch
                .as_deref_mut()
                .and_then(|c| {
                    let ok = c
                        .pending
                        .get(&id)
                        .is_some_and(|p| !p.lost && now >= p.ready_at);
                    // Read true once, then forgotten.
                    ok.then(|| c.pending.remove(&id))
                })
                .is_some();
            if ready {
                read_true += 1;
            }
            answer.insert(id.to_string(), Value::Bool(ready));
        }
    }
    lock(&state.counters).acks_read_true += read_true;
    Json(json!({ "acks": answer })).into_response()
}

async fn health(AxState(state): AxState<Arc<State>>) -> Response {
    lock(&state.counters).health_requests += 1;
    let busy = lock(&state.faults)
        .busy_until
        .is_some_and(|u| Instant::now() < u);
    if busy {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"text": "HEC is unhealthy, queues are full", "code": 18})),
        )
            .into_response()
    } else {
        Json(json!({"text": "HEC is healthy", "code": 17})).into_response()
    }
}

async fn admin_counters(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.counters()).into_response()
}

async fn admin_events(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.events()).into_response()
}

/// Body of `POST /_sim/faults`; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    pub busy_secs: Option<f64>,
    pub lose_acks: Option<u32>,
    pub drop_after_receive: Option<u32>,
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub poison_event_ids: Vec<String>,
    pub max_content_length: Option<u64>,
}

async fn admin_faults(
    AxState(state): AxState<Arc<State>>,
    Json(req): Json<FaultRequest>,
) -> Response {
    if let Some(s) = req.busy_secs.filter(|s| s.is_finite() && *s >= 0.0) {
        state.set_busy(Duration::from_secs_f64(s));
    }
    if let Some(n) = req.lose_acks {
        state.lose_next_acks(n);
    }
    if let Some(n) = req.drop_after_receive {
        state.drop_after_receive(n);
    }
    if let Some(ms) = req.latency_ms {
        state.set_latency(Duration::from_millis(ms));
    }
    for id in &req.poison_event_ids {
        state.poison(id);
    }
    if let Some(m) = req.max_content_length {
        state.set_max_content_length(m);
    }
    Json(json!({"ok": true})).into_response()
}

/// Body of `POST /_sim/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub token: String,
    pub disabled: Option<bool>,
    pub use_ack: Option<bool>,
}

async fn admin_tokens(
    AxState(state): AxState<Arc<State>>,
    Json(req): Json<TokenRequest>,
) -> Response {
    if let Some(d) = req.disabled {
        state.set_token_disabled(&req.token, d);
    }
    if let Some(a) = req.use_ack {
        state.set_token_ack(&req.token, a);
    }
    Json(json!({"ok": true})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(
        url: &str,
        token: Option<&str>,
        channel: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new().post(url).body(body.to_string());
        if let Some(t) = token {
            req = req.header("Authorization", format!("Splunk {t}"));
        }
        if let Some(c) = channel {
            req = req.header("X-Splunk-Request-Channel", c);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    const CH: &str = "0aeeac95-ac74-4aa9-b30d-6c4c0ac581ba";

    #[tokio::test]
    async fn error_bodies_match_hec() {
        let (state, h) = start(Config::default()).await.expect("start");
        let ev = format!("{}/services/collector/event", h.url());
        let ok = r#"{"event":{"a":1},"time":1.5}"#;
        assert_eq!(
            post(&ev, None, None, ok).await,
            (401, json!({"text":"Token is required","code":2}))
        );
        assert_eq!(
            post(&ev, Some("nope"), None, ok).await,
            (403, json!({"text":"Invalid token","code":4}))
        );
        assert_eq!(
            post(&ev, Some("sim-hec-disabled"), None, ok).await,
            (403, json!({"text":"Token disabled","code":1}))
        );
        assert_eq!(
            post(&ev, Some("sim-hec-token"), None, ok).await,
            (400, json!({"text":"Data channel is missing","code":10}))
        );
        assert_eq!(
            post(&ev, Some("sim-hec-token"), Some("x"), ok).await,
            (400, json!({"text":"Invalid data channel","code":11}))
        );
        assert_eq!(
            post(&ev, Some("sim-hec-token"), Some(CH), "").await,
            (400, json!({"text":"No data","code":5}))
        );
        let two_bad = format!("{ok}\n{{\"time\":2}}");
        assert_eq!(
            post(&ev, Some("sim-hec-token"), Some(CH), &two_bad).await,
            (
                400,
                json!({"text":"Event field is required","code":12,"invalid-event-number":1})
            )
        );
        let blank = format!("{ok}{ok}{{\"event\":\"  \"}}");
        assert_eq!(
            post(&ev, Some("sim-hec-token"), Some(CH), &blank).await.1["code"],
            13
        );
        let bad_index = r#"{"event":"x","index":"secret"}"#;
        assert_eq!(
            post(&ev, Some("sim-hec-token"), Some(CH), bad_index).await,
            (
                400,
                json!({"text":"Incorrect index","code":7,"invalid-event-number":0})
            )
        );
        assert_eq!(state.events_indexed(), 0, "rejected requests index nothing");
        let ack = format!("{}/services/collector/ack", h.url());
        assert_eq!(
            post(&ack, Some("sim-hec-noack"), Some(CH), r#"{"acks":[0]}"#).await,
            (400, json!({"text":"ACK is disabled","code":14}))
        );
    }

    #[test]
    fn light_and_full_validation_agree() {
        let state = State::new(Config::default());
        state.poison("bad-id");
        let token = state.cfg.tokens[0].clone();
        let q = CollectorQuery::default();
        let ok =
            r#"{"event":{"a":[1,{"b":2}]},"time":1.5,"index":"audit","fields":{"event_id":"x"}}"#;
        let bodies = [
            format!("{ok}\n{ok}"),
            format!("{ok}{{\"time\":2}}"),
            format!("{ok}{{\"event\":\" \"}}"),
            format!("{ok}{{\"event\":null}}"),
            format!("{ok}{{\"event\":0}}"),
            format!("{ok}{{\"event\":\"x\",\"time\":\"soon\"}}"),
            format!("{ok}{{\"event\":\"x\",\"time\":\"12.5\"}}"),
            format!("{ok}{{\"event\":\"x\",\"index\":\"nope\"}}"),
            format!("{ok}{{\"event\":\"x\",\"index\":5}}"),
            format!("{ok}{{\"event\":\"x\",\"fields\":{{\"a\":{{\"b\":1}}}}}}"),
            format!("{ok}{{\"event\":\"x\",\"fields\":{{\"event_id\":\"bad-id\"}}}}"),
            format!("{ok} not json"),
        ];
        for body in &bodies {
            let full = parse_events(&state, &token, &q, body.as_bytes()).map(|v| v.len());
            let light = count_events(&state, &token, &q, body.as_bytes());
            assert_eq!(full, light, "{body}");
        }
    }

    #[tokio::test]
    async fn raw_lines_need_a_channel_and_are_indexed() {
        let (state, h) = start(Config::default()).await.expect("start");
        let raw = format!("{}/services/collector/raw?sourcetype=syslog", h.url());
        assert_eq!(
            post(&raw, Some("sim-hec-noack"), None, "a\nb\n").await,
            (400, json!({"text":"Data channel is missing","code":10}))
        );
        let (status, body) = post(
            &raw,
            Some("sim-hec-token"),
            Some(CH),
            "line one\n\nline two\n",
        )
        .await;
        assert_eq!((status, &body["ackId"]), (200, &json!(0)));
        let evs = state.events();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1].event, json!("line two"));
        assert_eq!(evs[0].sourcetype.as_deref(), Some("syslog"));
        let health = reqwest::get(format!("{}/services/collector/health", h.url()))
            .await
            .expect("health");
        assert_eq!(health.status().as_u16(), 200);
        assert_eq!(
            health.json::<Value>().await.expect("json"),
            json!({"text":"HEC is healthy","code":17})
        );
    }

    async fn query_acks(state: &Arc<State>, ids: &str) -> Value {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Splunk sim-hec-token"),
        );
        headers.insert("x-splunk-request-channel", HeaderValue::from_static(CH));
        let r = ack(
            AxState(state.clone()),
            Query(CollectorQuery::default()),
            headers,
            Bytes::from(format!("{{\"acks\":{ids}}}")),
        )
        .await;
        let body = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        serde_json::from_slice(&body).expect("json")
    }

    #[tokio::test(start_paused = true)]
    async fn acks_true_after_delay_then_forgotten() {
        let cfg = Config {
            indexing_delay_ms: 1_000,
            ..Config::default()
        };
        let state = Arc::new(State::new(cfg));
        let token = state.cfg.tokens[0].clone();
        state.lose_next_acks(1);
        assert_eq!(
            issue_ack(&state, &token, Some(CH)).expect("ack"),
            Some((0, true))
        );
        assert_eq!(
            issue_ack(&state, &token, Some(CH)).expect("ack"),
            Some((1, false))
        );
        assert_eq!(
            query_acks(&state, "[0,1,7]").await,
            json!({"acks": {"0": false, "1": false, "7": false}})
        );
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert_eq!(
            query_acks(&state, "[0,1]").await,
            json!({"acks": {"0": false, "1": true}}),
            "a lost ack never reads true"
        );
        assert_eq!(
            query_acks(&state, "[1]").await,
            json!({"acks": {"1": false}}),
            "a status read true is forgotten"
        );
    }
}
