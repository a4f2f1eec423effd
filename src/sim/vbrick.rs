//! Vbrick Rev audit simulator (api-facts §2).
//!
//! - Login with `POST /api/v2/authenticate {"apiKey","secret"}` or
//!   `POST /api/v2/user/login {"username","password"}` →
//!   `{"token","issuer":"VBrick","expiration"}` (+ user fields for the
//!   latter); a token lives `session_timeout` (the tenant's inactivity
//!   timeout) unless `POST /api/v2/user/extend-session` pushes it on.
//!   Audit calls do not extend it unless `activity_extends_session`.
//! - 401 with an EMPTY body for a bad, unknown or expired token and for
//!   refused credentials; other errors are `{"code","detail"}` JSON.
//! - The 13 audit routes under `/network/audit/accounts/{accountId}/`:
//!   `fromDate`/`toDate` required (ISO-8601, toDate > fromDate), at most
//!   `page_size` (100) CSV rows per response; when more remain, the
//!   headers `totalRecords` (counted from the request's fromDate),
//!   `nextFromDate` and `nextContinuationToken`. The next call keeps
//!   toDate, sends fromDate=nextFromDate and the token. Tokens stay valid
//!   for `continuation_ttl` (a retried page may resend one); an unknown or
//!   expired token answers 400 `InvalidContinuationToken`.
//! - CSV exactly as the spec's example: header row, CRLF between rows (no
//!   terminator after the last), JSON columns quoted with doubled quotes.
//! - Rate limit per (credential, endpoint): `rate_limit` per
//!   `rate_window`; over it, 429 with the plain-text body
//!   `Too Many Requests` (and `Retry-After` unless `retry_after = false`).
//! - Fault knobs (`Faults`): truncated bodies (connection cut mid-row, or a
//!   clean short body), 5xx, 429 bursts, latency, forced login refusals,
//!   session expiry after N requests, stalling requests (crash tests),
//!   malformed rows (inject a row with `raw_line`).
//! - Admin: `/_sim/rows` (GET all, POST inject), `/_sim/seed`,
//!   `/_sim/faults`, `/_sim/counters`, `/_sim/requests`,
//!   `/_sim/expire-sessions`, `/_sim/release`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::limiter::{SlidingLimiter, Verdict};
use super::{loopback, SimHandle};
use crate::util::{rfc3339_ms, HumanDuration};

/// Request records kept for `requests()` / `/_sim/requests`.
const MAX_LOG: usize = 100_000;

/// The header row of every audit response.
pub const CSV_HEADER: &str =
    "MessageKey,EntityKey,EntityId,When,Principal,Message,PreviousState,CurrentState";

/// The audit collections and the EntityKey prefixes each one holds.
pub const COLLECTIONS: [(&str, &[&str]); 6] = [
    ("userAccess", &["Network:UserAccess"]),
    ("users", &["Network:User"]),
    ("groups", &["Network:Group"]),
    ("devices", &["Devices:"]),
    ("videos", &["Media:Video"]),
    ("scheduledEvents", &["ScheduledEvents:"]),
];

/// Every EntityKey Rev writes.
pub const ENTITY_KEYS: [&str; 10] = [
    "Network:UserAccess",
    "Network:User",
    "Network:Group",
    "Devices:DmeDevice",
    "Devices:EncoderDevice",
    "Devices:CustomDevice",
    "Devices:LdapConnectorDevice",
    "Devices:AkamaiDevice",
    "Media:Video",
    "ScheduledEvents:Webcast",
];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub account_id: String,
    pub api_key: String,
    pub secret: String,
    pub username: String,
    pub password: String,
    /// Inactivity timeout of a session.
    #[serde(with = "human")]
    pub session_timeout: Duration,
    /// Whether each audit call pushes the session's expiry on.
    pub activity_extends_session: bool,
    /// Rows per response (Rev: 100).
    pub page_size: usize,
    /// Requests per `rate_window` per (credential, endpoint).
    pub rate_limit: u32,
    #[serde(with = "human")]
    pub rate_window: Duration,
    /// Whether a 429 carries `Retry-After`.
    pub retry_after: bool,
    /// Logins per `rate_window` per credential.
    pub login_rate_limit: u32,
    #[serde(with = "human")]
    pub continuation_ttl: Duration,
    /// Send an empty `nextContinuationToken` header on the last page
    /// instead of omitting the three headers.
    pub empty_token_on_last_page: bool,
    /// Rows seeded at start, spread over `seed_span` before now less
    /// `seed_settle`.
    pub seed_rows: usize,
    pub seed: u64,
    #[serde(with = "human")]
    pub seed_span: Duration,
    #[serde(with = "human")]
    pub seed_settle: Duration,
    /// Share of seeded rows whose `When` is JavaScript `Date.toString()`
    /// text instead of ISO-8601 (0.0..=1.0).
    pub js_when_share: f64,
    /// New rows per second written at the current time while running
    /// (live traffic for the demo; 0 = none).
    pub live_per_second: f64,
    /// Fault knobs in force at start.
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            account_id: "2abf4d7b-a22e-460b-b991-57a377a45cab".into(),
            api_key: "sim-api-key".into(),
            secret: "sim-secret".into(),
            username: "audit.admin".into(),
            password: "sim-password".into(),
            session_timeout: Duration::from_secs(600),
            activity_extends_session: false,
            page_size: 100,
            rate_limit: 60,
            rate_window: Duration::from_secs(60),
            retry_after: true,
            login_rate_limit: 10,
            continuation_ttl: Duration::from_secs(600),
            empty_token_on_last_page: false,
            seed_rows: 0,
            seed: 42,
            seed_span: Duration::from_secs(2 * 86_400),
            seed_settle: Duration::from_secs(600),
            js_when_share: 0.0,
            live_per_second: 0.0,
            faults: Faults::default(),
        }
    }
}

mod human {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::util::format_duration(*d))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HumanDuration::deserialize(d).map(|h| h.0)
    }
}

/// How a truncated body is cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncateMode {
    /// Send part of the body, then drop the connection (chunked body never
    /// finished): the client sees a transport error.
    #[default]
    Abort,
    /// Send a complete HTTP response whose CSV stops inside a quoted field.
    Clean,
}

/// Fault injection; counts apply to audit requests only and count down.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// The next N audit responses with rows are cut mid-row...
    pub truncate_next: u32,
    /// ...after letting this many such responses through whole.
    pub truncate_after: u32,
    pub truncate_mode: TruncateMode,
    /// The next N audit requests answer `fail_status` (default 500).
    pub fail_next: u32,
    pub fail_status: Option<u16>,
    /// The next N audit requests answer 429 regardless of the budget.
    pub throttle_next: u32,
    /// Added to every request.
    pub latency_ms: u64,
    /// After N more audit requests, every session expires (the next call
    /// answers 401).
    pub expire_sessions_after: Option<u32>,
    /// Every login answers this status (401 or 429 to test lock-out care).
    pub login_status: Option<u16>,
    /// After N more audit requests, further audit requests hang until
    /// `release` (to freeze a walk mid-window).
    pub stall_after: Option<u32>,
}

/// Which form `When` is written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenStyle {
    #[default]
    Iso,
    /// `Thu Aug 30 2018 13:20:01 GMT+0000 (Coordinated Universal Time)`
    Js,
}

/// One audit row as the simulator stores it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Row {
    #[serde(rename = "MessageKey")]
    pub message_key: String,
    #[serde(rename = "EntityKey")]
    pub entity_key: String,
    #[serde(rename = "EntityId")]
    pub entity_id: String,
    #[serde(rename = "When")]
    pub when: DateTime<Utc>,
    #[serde(rename = "Principal", default)]
    pub principal: Value,
    #[serde(rename = "Message", default)]
    pub message: Value,
    #[serde(rename = "PreviousState", default)]
    pub previous_state: Value,
    #[serde(rename = "CurrentState", default)]
    pub current_state: Value,
    #[serde(default)]
    pub when_style: WhenStyle,
    /// Sent verbatim instead of the rendered row (malformed-row faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_line: Option<String>,
}

impl Row {
    fn principal_id(&self) -> Option<&str> {
        self.principal.get("Id").and_then(Value::as_str)
    }

    /// The `When` text as sent.
    pub fn when_text(&self) -> String {
        match self.when_style {
            WhenStyle::Iso => rfc3339_ms(self.when),
            WhenStyle::Js => self
                .when
                .format("%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)")
                .to_string(),
        }
    }

    /// The CSV line (no terminator).
    pub fn csv_line(&self) -> String {
        if let Some(raw) = &self.raw_line {
            return raw.clone();
        }
        let json_text = |v: &Value| match v {
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let fields = [
            self.message_key.clone(),
            self.entity_key.clone(),
            self.entity_id.clone(),
            self.when_text(),
            json_text(&self.principal),
            json_text(&self.message),
            json_text(&self.previous_state),
            json_text(&self.current_state),
        ];
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(Vec::new());
        // Writing to a Vec cannot fail.
        let _ = w.write_record(&fields);
        let bytes = w.into_inner().unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }

    fn in_collection(&self, collection: &str) -> bool {
        COLLECTIONS
            .iter()
            .find(|(c, _)| *c == collection)
            .is_some_and(|(_, prefixes)| {
                prefixes.iter().any(|p| {
                    if p.ends_with(':') {
                        self.entity_key.starts_with(p)
                    } else {
                        self.entity_key == *p
                    }
                })
            })
    }
}

/// One audit request as served (for tests: pages per window, resumes).
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    /// `userAccess`, `users`, ..., `principals`.
    pub route: String,
    /// The `{id}` of single-entity and principal routes.
    pub entity: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub token: Option<String>,
    pub status: u16,
    pub rows: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    /// Successful logins by route (`authenticate`, `user_login`).
    pub logins: BTreeMap<String, u64>,
    /// Login attempts answered with an error.
    pub logins_refused: u64,
    pub extend_session: u64,
    pub extend_session_refused: u64,
    /// Audit requests by route (every status).
    pub requests: BTreeMap<String, u64>,
    /// Audit responses by status.
    pub statuses: BTreeMap<u16, u64>,
    pub rows_served: u64,
    pub truncated: u64,
}

impl Counters {
    pub fn login_total(&self) -> u64 {
        self.logins.values().sum::<u64>() + self.logins_refused
    }
    pub fn audit_total(&self) -> u64 {
        self.requests.values().sum()
    }
    pub fn status(&self, s: u16) -> u64 {
        self.statuses.get(&s).copied().unwrap_or(0)
    }
}

struct SessionRec {
    user: String,
    expires: DateTime<Utc>,
}

struct Continuation {
    key: String,
    to: DateTime<Utc>,
    from: DateTime<Utc>,
    skip: usize,
    expires: Instant,
}

struct Inner {
    rows: Vec<Row>,
    sessions: HashMap<String, SessionRec>,
    continuations: HashMap<String, Continuation>,
    faults: Faults,
    log: Vec<RequestRecord>,
    counters: Counters,
    rng: StdRng,
    gen: Generator,
}

pub struct State {
    cfg: Config,
    inner: Mutex<Inner>,
    limiter: SlidingLimiter,
    login_limiter: SlidingLimiter,
    stalled: watch::Sender<bool>,
}

impl State {
    pub fn new(cfg: Config) -> Arc<State> {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let gen = Generator::new(&mut rng);
        let limiter = SlidingLimiter::new(cfg.rate_limit, cfg.rate_window, cfg.rate_window, false);
        let login_limiter = SlidingLimiter::new(
            cfg.login_rate_limit,
            cfg.rate_window,
            cfg.rate_window,
            false,
        );
        let (stalled, _) = watch::channel(false);
        let st = Arc::new(State {
            inner: Mutex::new(Inner {
                rows: Vec::new(),
                sessions: HashMap::new(),
                continuations: HashMap::new(),
                faults: cfg.faults.clone(),
                log: Vec::new(),
                counters: Counters::default(),
                rng,
                gen,
            }),
            limiter,
            login_limiter,
            stalled,
            cfg,
        });
        if st.cfg.seed_rows > 0 {
            let end = Utc::now() - chrono_d(st.cfg.seed_settle);
            st.seed(st.cfg.seed_rows, end - chrono_d(st.cfg.seed_span), end);
        }
        st
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Adds rows (kept sorted by time, at the precision their `When` text
    /// carries: milliseconds, or whole seconds for JavaScript text).
    pub fn inject(&self, rows: impl IntoIterator<Item = Row>) {
        let mut inner = self.lock();
        for mut r in rows {
            normalise(&mut r);
            inner.rows.push(r);
        }
        // Stable: rows at the same instant keep their insertion order. The
        // sort is linear on already-sorted input plus a sorted tail.
        inner.rows.sort_by_key(|r| r.when);
    }

    /// Generates `n` realistic rows of every EntityKey type spread over
    /// `[from, to)`, and returns them.
    pub fn seed(&self, n: usize, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Row> {
        let rows = {
            let mut inner = self.lock();
            let Inner { rng, gen, .. } = &mut *inner;
            (0..n)
                .map(|i| {
                    let mut r = gen.row(rng, i, from, to);
                    if self.cfg.js_when_share > 0.0
                        && rng.random_bool(self.cfg.js_when_share.clamp(0.0, 1.0))
                    {
                        r.when_style = WhenStyle::Js;
                    }
                    normalise(&mut r);
                    r
                })
                .collect::<Vec<_>>()
        };
        self.inject(rows.clone());
        rows
    }

    /// Builds (without storing) one realistic row of `entity_key` at `when`.
    pub fn make_row(&self, entity_key: &str, when: DateTime<Utc>) -> Row {
        let mut inner = self.lock();
        let Inner { rng, gen, .. } = &mut *inner;
        let mut r = gen.row_of(rng, entity_key, when);
        normalise(&mut r);
        r
    }

    pub fn rows(&self) -> Vec<Row> {
        self.lock().rows.clone()
    }

    /// The rows an audit route serves in `[from, to)`.
    pub fn rows_in(&self, route: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Row> {
        self.lock()
            .rows
            .iter()
            .filter(|r| r.when >= from && r.when < to && r.in_collection(route))
            .cloned()
            .collect()
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    pub fn update_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.lock().faults);
    }

    /// Expires every session now.
    pub fn expire_sessions(&self) {
        let past = Utc::now() - chrono::Duration::seconds(1);
        for s in self.lock().sessions.values_mut() {
            s.expires = past;
        }
    }

    /// True while audit requests are being held (`stall_after`).
    pub fn is_stalled(&self) -> bool {
        *self.stalled.borrow()
    }

    /// Lets held requests go and stops stalling.
    pub fn release(&self) {
        let mut inner = self.lock();
        inner.faults.stall_after = None;
        self.stalled.send_replace(false);
    }

    fn count_audit(&self, route: &str) {
        *self
            .lock()
            .counters
            .requests
            .entry(route.to_string())
            .or_default() += 1;
    }

    fn finish(&self, rec: RequestRecord) {
        let mut inner = self.lock();
        *inner.counters.statuses.entry(rec.status).or_default() += 1;
        inner.counters.rows_served += rec.rows as u64;
        // Bounded for long `trailkeep sim` runs: the oldest entries go.
        if inner.log.len() >= MAX_LOG {
            inner.log.drain(..MAX_LOG / 10);
        }
        inner.log.push(rec);
    }

    /// The user behind a valid token.
    fn check_token(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers.get("authorization")?.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("vbrick") {
            return None;
        }
        let token = token.trim();
        let now = Utc::now();
        let mut inner = self.lock();
        let s = inner.sessions.get_mut(token)?;
        if s.expires <= now {
            return None;
        }
        if self.cfg.activity_extends_session {
            s.expires = now + chrono_d(self.cfg.session_timeout);
        }
        Some(s.user.clone())
    }

    fn new_session(&self, user: &str) -> (String, DateTime<Utc>) {
        let mut inner = self.lock();
        let token = random_token(&mut inner.rng);
        let expires = Utc::now() + chrono_d(self.cfg.session_timeout);
        inner.sessions.insert(
            token.clone(),
            SessionRec {
                user: user.to_string(),
                expires,
            },
        );
        (token, expires)
    }
}

fn chrono_d(d: Duration) -> chrono::Duration {
    crate::util::chrono_duration(d)
}

/// Keeps `when` at the precision its text carries.
fn normalise(r: &mut Row) {
    r.when = match r.when_style {
        WhenStyle::Iso => DateTime::from_timestamp_millis(r.when.timestamp_millis()),
        WhenStyle::Js => DateTime::from_timestamp(r.when.timestamp(), 0),
    }
    .unwrap_or(r.when);
}

fn random_token(rng: &mut StdRng) -> String {
    let a: u128 = rng.random();
    format!("{a:032x}")
}

fn uuid_from(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

// ---------------------------------------------------------------- routes

/// The simulator's router (Rev API + `/_sim` admin).
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/api/v2/authenticate", post(authenticate))
        .route("/api/v2/user/login", post(user_login))
        .route("/api/v2/user/extend-session", post(extend_session))
        .route("/api/v2/user/session", get(check_session))
        .route(
            "/network/audit/accounts/{account}/{collection}",
            get(audit_all),
        )
        .route(
            "/network/audit/accounts/{account}/{collection}/{id}",
            get(audit_one),
        )
        .route("/_sim/rows", get(admin_rows).post(admin_inject))
        .route("/_sim/seed", post(admin_seed))
        .route("/_sim/faults", get(admin_faults).post(admin_set_faults))
        .route("/_sim/counters", get(admin_counters))
        .route("/_sim/requests", get(admin_requests))
        .route("/_sim/expire-sessions", post(admin_expire))
        .route("/_sim/release", post(admin_release))
        .with_state(state)
}

/// Starts the simulator on 127.0.0.1 (a free port).
pub async fn start(cfg: Config) -> std::io::Result<(Arc<State>, SimHandle)> {
    start_on(cfg, loopback()).await
}

/// Starts the simulator on a given address (for `trailkeep sim`/`demo`).
pub async fn start_on(
    cfg: Config,
    addr: std::net::SocketAddr,
) -> std::io::Result<(Arc<State>, SimHandle)> {
    let live = cfg.live_per_second;
    let state = State::new(cfg);
    let handle = serve_mixed_case(router(state.clone()), addr).await?;
    if live > 0.0 && live.is_finite() {
        let weak = Arc::downgrade(&state);
        let stop = handle.stop.clone();
        let every = Duration::from_secs_f64(1.0 / live.min(1_000.0));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut i = 0usize;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let Some(st) = weak.upgrade() else { return };
                let now = Utc::now();
                let row = {
                    let mut inner = st.lock();
                    let Inner { rng, gen, .. } = &mut *inner;
                    gen.row(rng, i, now, now + chrono::Duration::milliseconds(1))
                };
                st.inject([row]);
                i += 1;
            }
        });
    }
    Ok((state, handle))
}

/// Like `sim::serve`, but header names go on the wire in mixed case
/// (`Totalrecords`, `Nextcontinuationtoken`, `Content-Type`) instead of
/// the lower case axum writes, so clients that compare header names
/// case-sensitively fail here as they would against Rev. (hyper cannot
/// write arbitrary camel case such as `nextContinuationToken`; title case
/// is the mixed case it can write.)
pub async fn serve_mixed_case(
    router: Router,
    addr: std::net::SocketAddr,
) -> std::io::Result<SimHandle> {
    use tokio_util::sync::CancellationToken;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors or similar: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = s.cancelled() => break,
            };
            let svc = hyper_util::service::TowerToHyperService::new(router.clone());
            let s2 = s.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .title_case_headers(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = s2.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    Ok(SimHandle { addr: local, stop })
}

fn error(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({"code": code, "detail": detail}))).into_response()
}

/// 401 with an empty body, as Rev answers.
fn unauthorized() -> Response {
    StatusCode::UNAUTHORIZED.into_response()
}

fn too_many(state: &State, retry_after: Duration) -> Response {
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        [("content-type", "text/plain")],
        "Too Many Requests",
    )
        .into_response();
    if state.cfg.retry_after {
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert("retry-after", v);
        }
    }
    resp
}

async fn latency(state: &State) {
    let ms = state.lock().faults.latency_ms;
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn do_login(state: &State, route: &str, body: &Bytes, api_key: bool) -> Response {
    latency(state).await;
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let Ok(Value::Object(obj)) = parsed else {
        state.lock().counters.logins_refused += 1;
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "request body must be a JSON object",
        );
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (user, pass) = if api_key {
        (text("apiKey"), text("secret"))
    } else {
        (text("username"), text("password"))
    };
    let forced = state.lock().faults.login_status;
    if let Some(s) = forced {
        state.lock().counters.logins_refused += 1;
        let status = StatusCode::from_u16(s).unwrap_or(StatusCode::UNAUTHORIZED);
        return match s {
            401 => unauthorized(),
            429 => too_many(state, state.cfg.rate_window),
            _ => error(status, "LoginFailed", "simulated login failure"),
        };
    }
    if let Verdict::Limited { retry_after } = state.login_limiter.check(&format!("login:{user}")) {
        state.lock().counters.logins_refused += 1;
        return too_many(state, retry_after);
    }
    let ok = if api_key {
        user == state.cfg.api_key && pass == state.cfg.secret
    } else {
        user == state.cfg.username && pass == state.cfg.password
    };
    if !ok {
        state.lock().counters.logins_refused += 1;
        return unauthorized();
    }
    let (token, expires) = state.new_session(&user);
    *state
        .lock()
        .counters
        .logins
        .entry(route.to_string())
        .or_default() += 1;
    let mut out = json!({"token": token, "issuer": "VBrick", "expiration": rfc3339_ms(expires)});
    if !api_key {
        out["email"] = json!("audit.admin@example.com");
        out["id"] = json!("0c0ffee0-0000-4000-8000-00000000a0d1");
        out["username"] = json!(state.cfg.username);
        out["firstName"] = json!("Audit");
        out["lastName"] = json!("Admin");
        out["language"] = json!("en");
    }
    Json(out).into_response()
}

async fn authenticate(AxState(state): AxState<Arc<State>>, body: Bytes) -> Response {
    do_login(&state, "authenticate", &body, true).await
}

async fn user_login(AxState(state): AxState<Arc<State>>, body: Bytes) -> Response {
    do_login(&state, "user_login", &body, false).await
}

async fn extend_session(AxState(state): AxState<Arc<State>>, headers: HeaderMap) -> Response {
    latency(&state).await;
    if state.check_token(&headers).is_none() {
        state.lock().counters.extend_session_refused += 1;
        return unauthorized();
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, t)| t.trim().to_string())
        .unwrap_or_default();
    let expires = Utc::now() + chrono_d(state.cfg.session_timeout);
    {
        let mut inner = state.lock();
        if let Some(s) = inner.sessions.get_mut(&token) {
            s.expires = expires;
        }
        inner.counters.extend_session += 1;
    }
    Json(json!({"expiration": rfc3339_ms(expires)})).into_response()
}

async fn check_session(AxState(state): AxState<Arc<State>>, headers: HeaderMap) -> Response {
    if state.check_token(&headers).is_some() {
        StatusCode::OK.into_response()
    } else {
        unauthorized()
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(rename = "fromDate")]
    from_date: Option<String>,
    #[serde(rename = "toDate")]
    to_date: Option<String>,
    #[serde(rename = "nextContinuationToken")]
    token: Option<String>,
}

async fn audit_all(
    AxState(state): AxState<Arc<State>>,
    Path((account, collection)): Path<(String, String)>,
    Query(q): Query<AuditQuery>,
    headers: HeaderMap,
) -> Response {
    audit(state, account, collection, None, q, headers).await
}

async fn audit_one(
    AxState(state): AxState<Arc<State>>,
    Path((account, collection, id)): Path<(String, String, String)>,
    Query(q): Query<AuditQuery>,
    headers: HeaderMap,
) -> Response {
    audit(state, account, collection, Some(id), q, headers).await
}

fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

async fn audit(
    state: Arc<State>,
    account: String,
    collection: String,
    id: Option<String>,
    q: AuditQuery,
    headers: HeaderMap,
) -> Response {
    let known = collection == "principals" || COLLECTIONS.iter().any(|(c, _)| *c == collection);
    let mut rec = RequestRecord {
        route: collection.clone(),
        entity: id.clone(),
        from: q.from_date.clone(),
        to: q.to_date.clone(),
        token: q.token.clone(),
        status: 0,
        rows: 0,
    };
    if !known || (collection == "principals" && id.is_none()) {
        rec.status = 404;
        state.finish(rec);
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no audit route `{collection}`"),
        );
    }
    state.count_audit(&collection);
    latency(&state).await;

    // Stall (crash tests): hold the request until released.
    let stall = {
        let mut inner = state.lock();
        match inner.faults.stall_after {
            Some(0) => {
                // Set under the lock `release` takes, so a release is
                // never overtaken.
                state.stalled.send_replace(true);
                Some(state.stalled.subscribe())
            }
            Some(n) => {
                inner.faults.stall_after = Some(n - 1);
                None
            }
            None => None,
        }
    };
    if let Some(mut rx) = stall {
        let _ = rx.wait_for(|s| !*s).await;
    }

    // Session expiry fault.
    let expire = {
        let mut inner = state.lock();
        match inner.faults.expire_sessions_after {
            Some(0) => {
                inner.faults.expire_sessions_after = None;
                true
            }
            Some(n) => {
                inner.faults.expire_sessions_after = Some(n - 1);
                false
            }
            None => false,
        }
    };
    if expire {
        state.expire_sessions();
    }

    let Some(user) = state.check_token(&headers) else {
        rec.status = 401;
        state.finish(rec);
        return unauthorized();
    };
    if account != state.cfg.account_id {
        rec.status = 403;
        state.finish(rec);
        return error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "only Account Admins of this account may read its audit",
        );
    }
    if let Verdict::Limited { retry_after } = state.limiter.check(&format!("{user}:{collection}")) {
        rec.status = 429;
        state.finish(rec);
        return too_many(&state, retry_after);
    }
    let forced = {
        let mut inner = state.lock();
        if inner.faults.throttle_next > 0 {
            inner.faults.throttle_next -= 1;
            Some(429)
        } else if inner.faults.fail_next > 0 {
            inner.faults.fail_next -= 1;
            Some(inner.faults.fail_status.unwrap_or(500))
        } else {
            None
        }
    };
    match forced {
        Some(429) => {
            rec.status = 429;
            state.finish(rec);
            return too_many(&state, Duration::from_secs(1));
        }
        Some(s) => {
            rec.status = s;
            state.finish(rec);
            return error(
                StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "InternalServerError",
                "simulated failure",
            );
        }
        None => {}
    }

    let (Some(from_text), Some(to_text)) = (&q.from_date, &q.to_date) else {
        rec.status = 400;
        state.finish(rec);
        return error(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "fromDate and toDate are required",
        );
    };
    let (Some(from), Some(to)) = (parse_date(from_text), parse_date(to_text)) else {
        rec.status = 400;
        state.finish(rec);
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidDate",
            "fromDate and toDate must be ISO-8601 dates in UTC",
        );
    };
    if to <= from {
        rec.status = 400;
        state.finish(rec);
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidDateRange",
            "toDate must be greater than fromDate",
        );
    }
    let key = format!("{collection}/{}", id.as_deref().unwrap_or_default());

    let page_size = state.cfg.page_size.max(1);
    let mut inner = state.lock();
    let skip = match q.token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => {
            let now = Instant::now();
            inner.continuations.retain(|_, c| c.expires > now);
            match inner.continuations.get(t) {
                Some(c) if c.key == key && c.to == to && c.from == from => c.skip,
                _ => {
                    drop(inner);
                    rec.status = 400;
                    state.finish(rec);
                    return error(
                        StatusCode::BAD_REQUEST,
                        "InvalidContinuationToken",
                        "nextContinuationToken is unknown, expired, or does not match fromDate/toDate",
                    );
                }
            }
        }
    };
    let matching: Vec<&Row> = inner
        .rows
        .iter()
        .filter(|r| r.when >= from && r.when < to)
        .filter(|r| match (collection.as_str(), id.as_deref()) {
            ("principals", Some(p)) => r.principal_id() == Some(p),
            (c, None) => r.in_collection(c),
            (c, Some(e)) => r.in_collection(c) && r.entity_id == e,
        })
        .collect();
    let total = matching.len();
    let rest = &matching[skip.min(total)..];
    let page: Vec<Row> = rest.iter().take(page_size).map(|r| (*r).clone()).collect();
    let more = rest.get(page_size).map(|r| r.when);
    let mut resp_headers: Vec<(&'static str, String)> = vec![("content-type", "text/csv".into())];
    if let Some(next_from) = more {
        let mut next_skip = page.iter().filter(|r| r.when == next_from).count();
        if next_from == from {
            next_skip += skip;
        }
        let token = random_token(&mut inner.rng);
        let ttl = state.cfg.continuation_ttl;
        inner.continuations.insert(
            token.clone(),
            Continuation {
                key,
                to,
                from: next_from,
                skip: next_skip,
                expires: Instant::now() + ttl,
            },
        );
        // Written camel-cased as Rev documents them; on the wire they go
        // out in title case (see `serve_mixed_case`).
        resp_headers.push(("totalRecords", total.to_string()));
        resp_headers.push(("nextFromDate", rfc3339_ms(next_from)));
        resp_headers.push(("nextContinuationToken", token));
    } else if state.cfg.empty_token_on_last_page {
        resp_headers.push(("nextContinuationToken", String::new()));
    }
    let truncate = if inner.faults.truncate_next > 0 && !page.is_empty() {
        if inner.faults.truncate_after > 0 {
            inner.faults.truncate_after -= 1;
            None
        } else {
            inner.faults.truncate_next -= 1;
            inner.counters.truncated += 1;
            Some(inner.faults.truncate_mode)
        }
    } else {
        None
    };
    drop(inner);

    let mut body = String::with_capacity(64 + page.len() * 400);
    body.push_str(CSV_HEADER);
    for r in &page {
        body.push_str("\r\n");
        body.push_str(&r.csv_line());
    }
    rec.status = 200;
    rec.rows = page.len();
    state.finish(rec);

    let mut builder = Response::builder().status(StatusCode::OK);
    for (k, v) in &resp_headers {
        builder = builder.header(*k, v.as_str());
    }
    let body = match truncate {
        None => Body::from(body),
        Some(mode) => {
            // Cut inside the last row's first quoted JSON field.
            let last_start = body.rfind("\r\n").map_or(0, |i| i + 2);
            let cut = body[last_start..]
                .find("\"{")
                .map_or(body.len() / 2, |i| last_start + i + 5)
                .min(body.len());
            let mut cut = cut;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            let part = Bytes::copy_from_slice(&body.as_bytes()[..cut]);
            match mode {
                TruncateMode::Clean => Body::from(part),
                TruncateMode::Abort => {
                    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                        Ok(part),
                        Err(std::io::Error::other("simulated connection drop")),
                    ];
                    Body::from_stream(futures::stream::iter(chunks))
                }
            }
        }
    };
    builder
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

// ---------------------------------------------------------------- admin

async fn admin_rows(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.rows()).into_response()
}

async fn admin_inject(AxState(state): AxState<Arc<State>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<Row>>(&body) {
        Ok(rows) => {
            let n = rows.len();
            state.inject(rows);
            Json(json!({"injected": n})).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "InvalidRequest", &e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    count: usize,
    #[serde(default)]
    from: Option<DateTime<Utc>>,
    #[serde(default)]
    to: Option<DateTime<Utc>>,
}

async fn admin_seed(AxState(state): AxState<Arc<State>>, body: Bytes) -> Response {
    match serde_json::from_slice::<SeedRequest>(&body) {
        Ok(r) => {
            let to =
                r.to.unwrap_or_else(|| Utc::now() - chrono_d(state.cfg.seed_settle));
            let from = r.from.unwrap_or(to - chrono_d(state.cfg.seed_span));
            if to <= from {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    "to must be after from",
                );
            }
            let rows = state.seed(r.count, from, to);
            Json(json!({"seeded": rows.len()})).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "InvalidRequest", &e.to_string()),
    }
}

async fn admin_faults(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.faults()).into_response()
}

async fn admin_set_faults(AxState(state): AxState<Arc<State>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            state.set_faults(f);
            if state.faults().stall_after.is_none() {
                state.release();
            }
            Json(state.faults()).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "InvalidRequest", &e.to_string()),
    }
}

async fn admin_counters(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.counters()).into_response()
}

async fn admin_requests(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.requests()).into_response()
}

async fn admin_expire(AxState(state): AxState<Arc<State>>) -> Response {
    state.expire_sessions();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_release(AxState(state): AxState<Arc<State>>) -> Response {
    state.release();
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------- data

struct Person {
    id: String,
    username: String,
    first: String,
    last: String,
    email: String,
}

struct Named {
    id: String,
    name: String,
}

/// Seeded, realistic entities the rows talk about.
struct Generator {
    people: Vec<Person>,
    groups: Vec<Named>,
    devices: Vec<(Named, &'static str)>,
    videos: Vec<Named>,
    webcasts: Vec<Named>,
}

const FIRST: [&str; 12] = [
    "Ana", "Ben", "Chloe", "Dev", "Erin", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
];
const LAST: [&str; 12] = [
    "Silva", "Okafor", "Martin", "Patel", "Kowalski", "Haddad", "Lee", "Tanaka", "Moreau", "Berg",
    "Adeyemi", "Walsh",
];
const GROUPS: [&str; 8] = [
    "Sales EMEA",
    "Engineering",
    "Executive Team",
    "Marketing",
    "HR Partners",
    "Support Tier 2",
    "Finance",
    "All Contractors",
];
const VIDEO_TITLES: [&str; 10] = [
    "Q2 all hands",
    "Security awareness 2025",
    "Onboarding: week one",
    "Product roadmap review",
    "CEO town hall",
    "Customer story: Northwind",
    "Benefits enrolment walkthrough",
    "Release 7.4 demo",
    "Sales kickoff keynote",
    "Data privacy basics",
];
const WEBCAST_TITLES: [&str; 6] = [
    "Monthly business review",
    "Town hall (live)",
    "Partner summit day 1",
    "IT change briefing",
    "Quarterly earnings rehearsal",
    "New hire welcome",
];
const DEVICE_TYPES: [&str; 5] = [
    "DmeDevice",
    "EncoderDevice",
    "CustomDevice",
    "LdapConnectorDevice",
    "AkamaiDevice",
];

impl Generator {
    fn new(rng: &mut StdRng) -> Self {
        let people = (0..12)
            .map(|i| {
                let first = FIRST[i].to_string();
                let last = LAST[(i * 5) % LAST.len()].to_string();
                let username = format!("{}.{}", first.to_lowercase(), last.to_lowercase());
                Person {
                    id: uuid_from(rng),
                    email: format!("{username}@example.com"),
                    username,
                    first,
                    last,
                }
            })
            .collect();
        let named = |rng: &mut StdRng, names: &[&str]| {
            names
                .iter()
                .map(|n| Named {
                    id: uuid_from(rng),
                    name: (*n).to_string(),
                })
                .collect::<Vec<_>>()
        };
        let groups = named(rng, &GROUPS);
        let videos = named(rng, &VIDEO_TITLES);
        let webcasts = named(rng, &WEBCAST_TITLES);
        let devices = (0..10)
            .map(|i| {
                let t = DEVICE_TYPES[i % DEVICE_TYPES.len()];
                (
                    Named {
                        id: uuid_from(rng),
                        name: format!("{}-{:02}", ["NYC", "LON", "SIN", "FRA", "SYD"][i % 5], i),
                    },
                    t,
                )
            })
            .collect();
        Generator {
            people,
            groups,
            devices,
            videos,
            webcasts,
        }
    }

    /// Row `i` of a seeded set: the entity type rotates with weights so
    /// every EntityKey appears.
    fn row(&self, rng: &mut StdRng, i: usize, from: DateTime<Utc>, to: DateTime<Utc>) -> Row {
        let span_ms = (to - from).num_milliseconds().max(1);
        let when = from + chrono::Duration::milliseconds(rng.random_range(0..span_ms));
        // weights: userAccess 35, users 15, groups 8, devices 7, videos 25, webcasts 10
        const WHEEL: [&str; 20] = [
            "Network:UserAccess",
            "Media:Video",
            "Network:UserAccess",
            "Network:User",
            "Media:Video",
            "Network:UserAccess",
            "ScheduledEvents:Webcast",
            "Network:UserAccess",
            "Media:Video",
            "Network:Group",
            "Network:UserAccess",
            "Devices:",
            "Media:Video",
            "Network:User",
            "Network:UserAccess",
            "ScheduledEvents:Webcast",
            "Media:Video",
            "Network:User",
            "Network:UserAccess",
            "Network:Group",
        ];
        let mut key = WHEEL[i % WHEEL.len()].to_string();
        if key == "Devices:" {
            key.push_str(DEVICE_TYPES[(i / WHEEL.len()) % DEVICE_TYPES.len()]);
        }
        self.row_of(rng, &key, when)
    }

    fn row_of(&self, rng: &mut StdRng, entity_key: &str, when: DateTime<Utc>) -> Row {
        let pick = |rng: &mut StdRng, n: usize| rng.random_range(0..n.max(1));
        let actor = &self.people[pick(rng, self.people.len())];
        let principal = json!({"Id": actor.id, "Username": actor.username});
        let ip = format!(
            "10.{}.{}.{}",
            rng.random_range(0..255),
            rng.random_range(0..255),
            rng.random_range(1..255)
        );
        let (message_key, entity_id, message, prev, cur): (&str, String, Value, Value, Value) =
            match entity_key {
                "Network:UserAccess" => {
                    let ok = rng.random_bool(0.9);
                    let mk = [
                        "Network:RecordUserLogon",
                        "Network:RecordLdapConnectorUserLogon",
                        "Network:RecordSsoUserLogon",
                        "Network:RecordUserLogoff",
                    ][pick(rng, 4)];
                    (
                        mk,
                        actor.id.clone(),
                        json!({"UserId": actor.id, "LogOnSuccessful": ok, "IpAddress": ip}),
                        json!({"Status": "Active", "ItemStatus": "Active"}),
                        json!({"Status": "Active", "ItemStatus": "Active"}),
                    )
                }
                "Network:User" => {
                    let target = &self.people[pick(rng, self.people.len())];
                    match pick(rng, 4) {
                        0 => (
                            "Network:AddUser",
                            target.id.clone(),
                            json!({"UserId": target.id, "Username": target.username}),
                            Value::Null,
                            json!({"Username": target.username, "FirstName": target.first, "LastName": target.last, "Email": target.email, "Status": "Active"}),
                        ),
                        1 => (
                            "Network:DeleteUser",
                            target.id.clone(),
                            json!({"UserId": target.id}),
                            json!({"Username": target.username, "Status": "Active"}),
                            Value::Null,
                        ),
                        2 => (
                            "Network:SuspendUser",
                            target.id.clone(),
                            json!({"UserId": target.id}),
                            json!({"Username": target.username, "Status": "Active"}),
                            json!({"Username": target.username, "Status": "Suspended"}),
                        ),
                        _ => {
                            let titles = ["Analyst", "Manager", "Director", "Engineer"];
                            let a = titles[pick(rng, 4)];
                            let b = titles[pick(rng, 4)];
                            (
                                "Network:SaveUser",
                                target.id.clone(),
                                json!({"UserId": target.id, "Username": target.username}),
                                json!({"Username": target.username, "Title": a, "Email": target.email}),
                                json!({"Username": target.username, "Title": b, "Email": target.email}),
                            )
                        }
                    }
                }
                "Network:Group" => {
                    let g = &self.groups[pick(rng, self.groups.len())];
                    let n = rng.random_range(3..40);
                    match pick(rng, 3) {
                        0 => (
                            "Network:AddGroup",
                            g.id.clone(),
                            json!({"GroupId": g.id}),
                            Value::Null,
                            json!({"Name": g.name, "UserCount": n}),
                        ),
                        1 => (
                            "Network:DeleteGroup",
                            g.id.clone(),
                            json!({"GroupId": g.id}),
                            json!({"Name": g.name, "UserCount": n}),
                            Value::Null,
                        ),
                        _ => (
                            "Network:SaveGroup",
                            g.id.clone(),
                            json!({"GroupId": g.id, "AddedUserIds": [actor.id]}),
                            json!({"Name": g.name, "UserCount": n}),
                            json!({"Name": g.name, "UserCount": n + 1}),
                        ),
                    }
                }
                k if k.starts_with("Devices:") => {
                    let dev_type = k.trim_start_matches("Devices:");
                    let (d, _) = &self.devices[pick(rng, self.devices.len())];
                    let mk = [
                        "Devices:AddDevice",
                        "Devices:SaveDevice",
                        "Devices:DeleteDevice",
                    ][pick(rng, 3)];
                    let state = |status: &str| json!({"Name": d.name, "DeviceType": dev_type, "Status": status, "Host": format!("{}.corp.example.com", d.name.to_lowercase())});
                    let (p, c) = match mk {
                        "Devices:AddDevice" => (Value::Null, state("Active")),
                        "Devices:DeleteDevice" => (state("Active"), Value::Null),
                        _ => (state("Active"), state("Inactive")),
                    };
                    (
                        mk,
                        d.id.clone(),
                        json!({"DeviceId": d.id, "DeviceType": dev_type}),
                        p,
                        c,
                    )
                }
                "Media:Video" => {
                    let v = &self.videos[pick(rng, self.videos.len())];
                    match pick(rng, 4) {
                        0 => (
                            "Media:UploadVideo",
                            v.id.clone(),
                            json!({"VideoId": v.id, "FileName": format!("{}.mp4", v.name.to_lowercase().replace(' ', "_"))}),
                            Value::Null,
                            json!({"Title": v.name, "AccessControl": "Private", "Status": "Processing"}),
                        ),
                        1 => (
                            "Media:DeleteVideo",
                            v.id.clone(),
                            json!({"VideoId": v.id}),
                            json!({"Title": v.name, "AccessControl": "AllUsers"}),
                            Value::Null,
                        ),
                        _ => {
                            let acl = ["AllUsers", "Private", "Public", "Channels"];
                            let a = acl[pick(rng, 4)];
                            let b = acl[pick(rng, 4)];
                            (
                                "Media:SaveVideoSettings",
                                v.id.clone(),
                                json!({"VideoId": v.id, "Settings": {"Title": v.name, "Description": format!("{} (recording)", v.name), "AccessControl": b, "OwnerUserId": actor.id}}),
                                json!({"Title": v.name, "AccessControl": a}),
                                json!({"Title": v.name, "AccessControl": b}),
                            )
                        }
                    }
                }
                _ => {
                    let w = &self.webcasts[pick(rng, self.webcasts.len())];
                    match pick(rng, 4) {
                        0 => (
                            "ScheduledEvents:AddEvent",
                            w.id.clone(),
                            json!({"EventId": w.id}),
                            Value::Null,
                            json!({"Title": w.name, "AccessControl": "Private", "Status": "Scheduled"}),
                        ),
                        1 => (
                            "ScheduledEvents:DeleteEvent",
                            w.id.clone(),
                            json!({"EventId": w.id}),
                            json!({"Title": w.name, "Status": "Scheduled"}),
                            Value::Null,
                        ),
                        2 => (
                            "ScheduledEvents:StartBroadcast",
                            w.id.clone(),
                            json!({"EventId": w.id}),
                            json!({"Title": w.name, "Status": "Scheduled"}),
                            json!({"Title": w.name, "Status": "Broadcasting"}),
                        ),
                        _ => (
                            "ScheduledEvents:SaveEvent",
                            w.id.clone(),
                            json!({"EventId": w.id}),
                            json!({"Title": w.name, "PresenterIds": []}),
                            json!({"Title": w.name, "PresenterIds": [actor.id]}),
                        ),
                    }
                }
            };
        let entity_key = if entity_key.starts_with("ScheduledEvents:") || entity_key.is_empty() {
            "ScheduledEvents:Webcast".to_string()
        } else {
            entity_key.to_string()
        };
        Row {
            message_key: message_key.to_string(),
            entity_key,
            entity_id,
            when,
            principal,
            message,
            previous_state: prev,
            current_state: cur,
            when_style: WhenStyle::Iso,
            raw_line: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_line_doubles_quotes_like_the_spec() {
        let r = Row {
            message_key: "Media:SaveVideoSettings".into(),
            entity_key: "Media:Video".into(),
            entity_id: "7f0c".into(),
            when: parse_date("2025-06-01T10:00:00Z").expect("date"),
            principal: json!({"Id": "5a1e"}),
            message: json!({"VideoId": "7f0c"}),
            previous_state: json!({"Title": "Old"}),
            current_state: json!({"Title": "Q2 all hands"}),
            when_style: WhenStyle::Iso,
            raw_line: None,
        };
        assert_eq!(
            r.csv_line(),
            "Media:SaveVideoSettings,Media:Video,7f0c,2025-06-01T10:00:00.000Z,\"{\"\"Id\"\":\"\"5a1e\"\"}\",\"{\"\"VideoId\"\":\"\"7f0c\"\"}\",\"{\"\"Title\"\":\"\"Old\"\"}\",\"{\"\"Title\"\":\"\"Q2 all hands\"\"}\""
        );
        let js = Row {
            when_style: WhenStyle::Js,
            ..r
        };
        assert!(js
            .csv_line()
            .contains(",Sun Jun 01 2025 10:00:00 GMT+0000 (Coordinated Universal Time),"));
    }

    #[test]
    fn seeding_covers_every_entity_key() {
        let st = State::new(Config::default());
        let now = Utc::now();
        st.seed(400, now - chrono::Duration::days(1), now);
        let rows = st.rows();
        assert_eq!(rows.len(), 400);
        for k in ENTITY_KEYS {
            assert!(rows.iter().any(|r| r.entity_key == k), "no {k}");
        }
        assert!(rows.windows(2).all(|w| w[0].when <= w[1].when));
        for (c, _) in COLLECTIONS {
            assert!(!st
                .rows_in(c, now - chrono::Duration::days(2), now)
                .is_empty());
        }
    }

    #[test]
    fn config_reads_from_toml_with_human_durations() {
        let c: Config = toml::from_str(
            "session_timeout = \"2s\"\nrate_window = \"10s\"\nseed_rows = 5\n[faults]\nlatency_ms = 3\n",
        )
        .expect("toml");
        assert_eq!(c.session_timeout, Duration::from_secs(2));
        assert_eq!(c.rate_window, Duration::from_secs(10));
        assert_eq!(c.seed_rows, 5);
        assert_eq!(c.faults.latency_ms, 3);
        assert_eq!(c.page_size, 100);
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }
}
