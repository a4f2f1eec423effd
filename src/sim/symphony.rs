//! Symphony simulator: RSA public-key authentication (pod and key manager)
//! and the Agent's privileged-user audit trail, as `shared/api-facts.md`
//! §3 describes.
//!
//! - `POST /login/pubkey/authenticate` and `POST /relay/pubkey/authenticate`
//!   take `{"token":"<jwt>"}`: the JWT must be RS512, signed by a public key
//!   registered for its `sub`, with `exp` (seconds) in the future and at most
//!   5 minutes ahead. Anything else: 401 `{"code":401,"message":...}`.
//! - `GET /agent/v1/audittrail/privilegeduser` with `sessionToken` (and
//!   `keyManagerToken` when the knob requires it), `startTimestamp`,
//!   `endTimestamp`, `limit` (default 50, max 500), `before` / `after`
//!   cursors, `initiatorId`, `role`. More than 30 days → the vendor's exact
//!   400 body; nothing → 204 with no body; items newest first; `pagination`
//!   only on pages of 50 or more items, `next` / `previous` as relative
//!   URLs in the vendor's `?&startTimestamp=...` form.
//! - Knobs: session lifetime, sessions that die after N requests, ids and
//!   timestamps sent as strings, latency, clock skew, 429 / 5xx bursts, and
//!   a stall (requests hang) for crash tests.
//! - Admin: `/_sim/items`, `/_sim/generate`, `/_sim/keys`, `/_sim/counters`,
//!   `/_sim/requests`, `/_sim/faults`, `/_sim/expire_sessions`.
//!
//! UNCONFIRMED details (no public source settles them), chosen tolerant:
//! both ends of the window are inclusive; a `limit` above 500 is clamped;
//! cursors are item positions (as in the vendor's examples: `after` = how
//! many items were returned so far, `before` = 1-based position of the
//! page's first item); the texts of 401 / 429 / 5xx messages.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{loopback, serve, SimHandle};
use crate::util::HumanDuration;

/// The route the audit trail lives on.
pub const AUDIT_PATH: &str = "/agent/v1/audittrail/privilegeduser";
/// The vendor's limit on one request's window.
pub const MAX_WINDOW_MS: i64 = 30 * 86_400_000;
/// The vendor's exact 400 body for a window over 30 days.
pub const WINDOW_TOO_LARGE_BODY: &str = r#"{"code":400,"message":"\"Max of 30 days is allowed per request.\"","details":"Max of 30 days is allowed per request."}"#;
/// Roles the `role` filter accepts.
pub const ROLES: &[&str] = &[
    "USER_PROVISIONING",
    "CONTENT_MANAGEMENT",
    "EF_POLICY_MANAGEMENT",
    "SUPER_COMPLIANCE_OFFICER",
    "COMPLIANCE_OFFICER",
    "SUPER_ADMINISTRATOR",
    "ADMINISTRATOR",
    "L1_SUPPORT",
    "L2_SUPPORT",
    "SCOPE_MANAGEMENT",
];
/// Furthest ahead a JWT's `exp` may be.
const MAX_JWT_AHEAD_SECS: i64 = 300;

/// A service account the pod knows.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub username: String,
    /// Public key PEM (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// Holds the Audit Trail Management role (else the audit route is 403).
    #[serde(default = "yes")]
    pub audit_role: bool,
}

fn yes() -> bool {
    true
}

/// Fault knobs; changeable at run time (`/_sim/faults`, `State::set_faults`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// The next N audit requests answer 429 with `Retry-After`.
    pub burst_429: u32,
    /// The next N audit requests answer 500.
    pub burst_5xx: u32,
    /// The next N login requests (pod) answer 503.
    pub login_5xx: u32,
    /// `Retry-After` of the 429s, in milliseconds (sent as seconds; 0 =
    /// no header).
    pub retry_after_ms: u64,
    /// Delay before every answer, in milliseconds.
    pub latency_ms: u64,
    /// Once this many audit requests arrived, further ones hang until the
    /// stall is lifted (crash tests: freeze a client mid-window).
    pub stall_after_requests: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub accounts: Vec<Account>,
    /// How long a session token lives (the pod setting: 1 h to 2 weeks).
    pub session_lifetime: HumanDuration,
    /// A session dies after serving this many audit requests (tests:
    /// expiry mid-walk at an exact point).
    pub session_max_requests: Option<u64>,
    /// The audit route demands a valid `keyManagerToken` header.
    pub require_key_manager_token: bool,
    /// Send `timestamp`, `initiatorId` and `affectedId` as strings (the
    /// spec's types) instead of numbers (what the examples show).
    pub numbers_as_strings: bool,
    /// The simulator's clock runs this many seconds ahead (negative:
    /// behind) of the host's: JWT `exp` checks and the default `endTimestamp`.
    pub clock_skew_secs: i64,
    /// Longest window accepted, in days (the vendor: 30). Lower it to make
    /// the server stricter than the client expects (tests of the
    /// shrink-on-400 path); the 400 body stays the vendor's.
    pub max_window_days: u32,
    /// Generate this many records at start (demo), spread over `seed_days`
    /// up to now.
    pub seed_items: u32,
    pub seed_days: u32,
    pub seed: u64,
    /// New records per second while running (demo live traffic), stamped
    /// with the current time.
    pub live_per_second: f64,
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            accounts: Vec::new(),
            session_lifetime: HumanDuration(Duration::from_secs(3_600)),
            session_max_requests: None,
            require_key_manager_token: false,
            numbers_as_strings: false,
            clock_skew_secs: 0,
            max_window_days: 30,
            seed_items: 0,
            seed_days: 90,
            seed: 1,
            live_per_second: 0.0,
            faults: Faults::default(),
        }
    }
}

/// What the simulator saw; for tests and `/_sim/counters`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub logins_ok: u64,
    pub logins_failed: u64,
    pub key_manager_logins_ok: u64,
    pub key_manager_logins_failed: u64,
    pub audit_requests: u64,
    pub pages_200: u64,
    pub empty_204: u64,
    pub items_served: u64,
    /// 400s for windows over 30 days: a client bug whenever non-zero.
    pub window_too_large_400: u64,
    pub bad_request_400: u64,
    pub unauthorized_401: u64,
    pub forbidden_403: u64,
    pub rate_limited_429: u64,
    pub server_errors_5xx: u64,
    pub stalled: u64,
}

/// One audit request as it arrived (status 0 = still running or stalled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRequest {
    pub start: Option<String>,
    pub end: Option<String>,
    pub limit: Option<String>,
    pub after: Option<String>,
    pub before: Option<String>,
    pub role: Option<String>,
    pub initiator_id: Option<String>,
    pub status: u16,
}

struct Session {
    username: String,
    created: Instant,
    requests: u64,
}

struct Stored {
    ts: i64,
    seq: u64,
    item: Value,
}

struct Inner {
    cfg: Config,
    keys: HashMap<String, Vec<DecodingKey>>,
    audit_role: HashMap<String, bool>,
    sessions: HashMap<String, Session>,
    km_tokens: HashSet<String>,
    /// Newest first; ties keep insertion order.
    items: Vec<Stored>,
    next_seq: u64,
    counters: Counters,
    requests: Vec<AuditRequest>,
    /// Host times (ms) of every pod login attempt.
    login_attempts_ms: Vec<i64>,
    token_counter: u64,
}

pub struct State {
    inner: Mutex<Inner>,
    unstall: Notify,
}

impl State {
    pub fn new(cfg: Config) -> Result<Arc<State>, String> {
        let mut inner = Inner {
            cfg: cfg.clone(),
            keys: HashMap::new(),
            audit_role: HashMap::new(),
            sessions: HashMap::new(),
            km_tokens: HashSet::new(),
            items: Vec::new(),
            next_seq: 0,
            counters: Counters::default(),
            requests: Vec::new(),
            login_attempts_ms: Vec::new(),
            token_counter: 0,
        };
        for (i, a) in cfg.accounts.iter().enumerate() {
            let pem = match (&a.public_key, &a.public_key_file) {
                (Some(p), None) => p.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| format!("accounts[{i}].public_key_file {}: {e}", f.display()))?,
                _ => {
                    return Err(format!(
                        "accounts[{i}]: give exactly one of public_key, public_key_file"
                    ))
                }
            };
            let key = DecodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|e| format!("accounts[{i}].public_key: not an RSA public key: {e}"))?;
            inner.keys.entry(a.username.clone()).or_default().push(key);
            inner.audit_role.insert(a.username.clone(), a.audit_role);
        }
        let state = Arc::new(State {
            inner: Mutex::new(inner),
            unstall: Notify::new(),
        });
        if cfg.seed_items > 0 {
            let now = now_ms(0);
            let from = now - i64::from(cfg.seed_days.max(1)) * 86_400_000;
            let items = generate(cfg.seed_items as usize, from, now - 60_000, cfg.seed);
            state.inject(items);
        }
        Ok(state)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a public key (PEM) for a service account.
    pub fn register_key(&self, username: &str, public_pem: &str) -> Result<(), String> {
        let key = DecodingKey::from_rsa_pem(public_pem.as_bytes())
            .map_err(|e| format!("not an RSA public key: {e}"))?;
        let mut g = self.lock();
        g.keys.entry(username.to_string()).or_default().push(key);
        g.audit_role.entry(username.to_string()).or_insert(true);
        Ok(())
    }

    /// Grants or withdraws the Audit Trail Management role.
    pub fn set_audit_role(&self, username: &str, granted: bool) {
        self.lock().audit_role.insert(username.to_string(), granted);
    }

    /// Adds audit records (vendor JSON, numbers for ids and timestamps).
    pub fn inject(&self, items: Vec<Value>) {
        let mut g = self.lock();
        for item in items {
            let ts = item.get("timestamp").and_then(as_i64).unwrap_or(0);
            let seq = g.next_seq;
            g.next_seq += 1;
            g.items.push(Stored { ts, seq, item });
        }
        g.items
            .sort_by(|a, b| b.ts.cmp(&a.ts).then(a.seq.cmp(&b.seq)));
    }

    pub fn clear_items(&self) {
        self.lock().items.clear();
    }

    /// Every record as the audit route sends it (newest first).
    pub fn items_wire(&self) -> Vec<Value> {
        let g = self.lock();
        let strings = g.cfg.numbers_as_strings;
        g.items.iter().map(|s| wire(&s.item, strings)).collect()
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    pub fn requests(&self) -> Vec<AuditRequest> {
        self.lock().requests.clone()
    }

    /// Host times (ms since epoch) of every pod login attempt.
    pub fn login_attempts_ms(&self) -> Vec<i64> {
        self.lock().login_attempts_ms.clone()
    }

    pub fn faults(&self) -> Faults {
        self.lock().cfg.faults.clone()
    }

    pub fn set_faults(&self, f: Faults) {
        self.lock().cfg.faults = f;
        self.unstall.notify_waiters();
    }

    /// Changes the behaviour knobs that are not faults.
    pub fn update_config(&self, f: impl FnOnce(&mut Config)) {
        f(&mut self.lock().cfg);
        self.unstall.notify_waiters();
    }

    /// Ends every session (the next audit request answers 401).
    pub fn expire_sessions(&self) {
        self.lock().sessions.clear();
    }

    fn issue_token(g: &mut Inner, prefix: &str) -> String {
        g.token_counter += 1;
        let mut raw = [0u8; 24];
        rand::Rng::fill(&mut rand::rng(), &mut raw[..]);
        format!(
            "{prefix}{}{}",
            g.token_counter,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }
}

fn now_ms(skew_secs: i64) -> i64 {
    chrono::Utc::now().timestamp_millis() + skew_secs * 1000
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The item as sent: optionally with ids and timestamp as strings.
fn wire(item: &Value, strings: bool) -> Value {
    let mut v = item.clone();
    if strings {
        if let Value::Object(m) = &mut v {
            for k in ["timestamp", "initiatorId", "affectedId"] {
                if let Some(Value::Number(n)) = m.get(k) {
                    let s = n.to_string();
                    m.insert(k.to_string(), Value::String(s));
                }
            }
        }
    }
    v
}

fn error_body(code: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/login/pubkey/authenticate", post(pod_login))
        .route("/relay/pubkey/authenticate", post(km_login))
        .route(AUDIT_PATH, get(audit))
        .route(
            "/_sim/items",
            get(admin_items).post(admin_inject).delete(admin_clear),
        )
        .route("/_sim/generate", post(admin_generate))
        .route("/_sim/keys", post(admin_keys))
        .route("/_sim/counters", get(admin_counters))
        .route("/_sim/requests", get(admin_requests))
        .route("/_sim/faults", get(admin_get_faults).post(admin_set_faults))
        .route("/_sim/expire_sessions", post(admin_expire))
        .with_state(state)
}

/// Starts the simulator on 127.0.0.1 (any free port).
pub async fn start(cfg: Config) -> std::io::Result<(Arc<State>, SimHandle)> {
    start_on(cfg, loopback()).await
}

/// Starts the simulator on `addr` (`trailkeep sim`).
pub async fn start_on(cfg: Config, addr: SocketAddr) -> std::io::Result<(Arc<State>, SimHandle)> {
    let live = cfg.live_per_second;
    let seed = cfg.seed;
    let state = State::new(cfg).map_err(std::io::Error::other)?;
    let handle = serve(router(state.clone()), addr).await?;
    if live > 0.0 {
        let (s, stop) = (state.clone(), handle.stop_token());
        tokio::spawn(async move {
            let mut owed = 0.0f64;
            let mut round = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                owed += live / 2.0;
                let n = owed.floor() as usize;
                if n > 0 {
                    owed -= n as f64;
                    round += 1;
                    let now = now_ms(0);
                    s.inject(generate(n, now - 499, now, seed.wrapping_add(round)));
                }
            }
        });
    }
    Ok((state, handle))
}

/// The source entry `trailkeep demo` can add to its config; `${SYMPHONY_URL}`
/// and `${DATA_DIR}` are its usual placeholders, and the key file is the
/// one `start_demo` writes.
pub const DEMO_SOURCE_TOML: &str = r#"
[[sources]]
kind = "symphony"
name = "acme-symphony"
pod_url = "${SYMPHONY_URL}"
username = "demo-bot"
private_key = { file = "${DATA_DIR}/secrets/symphony-demo-bot.pem" }
start_at = "95d"
poll_interval = "2s"
overlap = "30s"
settle_delay = "1s"
"#;

/// For `trailkeep demo`: the simulator with `records` records over the last
/// 90 days and live traffic (1 record/s), and the service account
/// `demo-bot` whose key pair is made now: the public key registered, the
/// private key written to `secrets_dir/symphony-demo-bot.pem` (0600).
/// Placeholder for `DEMO_SOURCE_TOML`: `SYMPHONY_URL` = the handle's URL.
pub async fn start_demo(
    records: u32,
    secrets_dir: &Path,
) -> std::io::Result<(Arc<State>, SimHandle)> {
    let (state, handle) = start(Config {
        seed_items: records,
        seed_days: 90,
        live_per_second: 1.0,
        ..Config::default()
    })
    .await?;
    provision_account(&state, "demo-bot", secrets_dir).map_err(std::io::Error::other)?;
    Ok((state, handle))
}

async fn latency(state: &State) {
    let ms = state.lock().cfg.faults.latency_ms;
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
}

/// Verifies a pubkey-authentication JWT; Err = the 401 message.
fn verify_jwt(g: &Inner, body: &[u8]) -> Result<String, String> {
    let req: Value =
        serde_json::from_slice(body).map_err(|_| "Malformed authentication request".to_string())?;
    let token = req
        .get("token")
        .and_then(Value::as_str)
        .ok_or("Missing authentication token")?;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| "Malformed authentication token".to_string())?;
    if header.alg != Algorithm::RS512 {
        return Err(format!(
            "Unsupported token algorithm {:?} (RS512 expected)",
            header.alg
        ));
    }
    // Read `sub` to pick the account's keys, then verify properly.
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or("Malformed authentication token")?;
    let sub = payload
        .get("sub")
        .and_then(Value::as_str)
        .ok_or("Authentication token has no sub")?;
    let keys = g
        .keys
        .get(sub)
        .ok_or_else(|| format!("User {sub} not found or has no public key"))?;
    let mut validation = Validation::new(Algorithm::RS512);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let mut claims = None;
    for k in keys {
        if let Ok(d) = jsonwebtoken::decode::<Claims>(token, k, &validation) {
            claims = Some(d.claims);
            break;
        }
    }
    let claims = claims.ok_or("Invalid authentication token signature")?;
    let now = now_ms(g.cfg.clock_skew_secs) / 1000;
    if claims.exp <= now {
        return Err("Authentication token expired".into());
    }
    if claims.exp > now + MAX_JWT_AHEAD_SECS {
        return Err(
            "Authentication token expiration date is more than 5 minutes in the future".into(),
        );
    }
    Ok(claims.sub)
}

async fn pod_login(AxState(state): AxState<Arc<State>>, body: Bytes) -> Response {
    latency(&state).await;
    let mut g = state.lock();
    g.login_attempts_ms.push(now_ms(0));
    if g.cfg.faults.login_5xx > 0 {
        g.cfg.faults.login_5xx -= 1;
        g.counters.server_errors_5xx += 1;
        return error_body(503, "Service unavailable");
    }
    match verify_jwt(&g, &body) {
        Ok(user) => {
            g.counters.logins_ok += 1;
            let token = State::issue_token(&mut g, "sess-");
            g.sessions.insert(
                token.clone(),
                Session {
                    username: user,
                    created: Instant::now(),
                    requests: 0,
                },
            );
            Json(json!({"name": "sessionToken", "token": token})).into_response()
        }
        Err(msg) => {
            g.counters.logins_failed += 1;
            error_body(401, &msg)
        }
    }
}

async fn km_login(AxState(state): AxState<Arc<State>>, body: Bytes) -> Response {
    latency(&state).await;
    let mut g = state.lock();
    match verify_jwt(&g, &body) {
        Ok(_) => {
            g.counters.key_manager_logins_ok += 1;
            let token = State::issue_token(&mut g, "km-");
            g.km_tokens.insert(token.clone());
            Json(json!({"name": "keyManagerToken", "token": token})).into_response()
        }
        Err(msg) => {
            g.counters.key_manager_logins_failed += 1;
            error_body(401, &msg)
        }
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn audit(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).cloned();
    let index = {
        let mut g = state.lock();
        g.counters.audit_requests += 1;
        g.requests.push(AuditRequest {
            start: get("startTimestamp"),
            end: get("endTimestamp"),
            limit: get("limit"),
            after: get("after"),
            before: get("before"),
            role: get("role"),
            initiator_id: get("initiatorId"),
            status: 0,
        });
        g.requests.len() - 1
    };
    // Stall (crash tests): hang while the knob says so.
    loop {
        let notified = state.unstall.notified();
        {
            let mut g = state.lock();
            let stall = g
                .cfg
                .faults
                .stall_after_requests
                .is_some_and(|n| index as u64 >= n);
            if !stall {
                break;
            }
            g.counters.stalled += 1;
        }
        notified.await;
    }
    latency(&state).await;
    let resp = answer_audit(&state, &headers, &q);
    let mut g = state.lock();
    if let Some(r) = g.requests.get_mut(index) {
        r.status = resp.status().as_u16();
    }
    resp
}

fn answer_audit(state: &State, headers: &HeaderMap, q: &HashMap<String, String>) -> Response {
    let mut g = state.lock();
    // Faults first: a 429 or 500 is what the client meets before anything.
    if g.cfg.faults.burst_429 > 0 {
        g.cfg.faults.burst_429 -= 1;
        g.counters.rate_limited_429 += 1;
        let ms = g.cfg.faults.retry_after_ms;
        let mut r = error_body(429, "Too many requests");
        // 0 = no Retry-After header (the client falls back to its backoff).
        if ms > 0 {
            let secs = format!("{}", ms as f64 / 1000.0);
            if let Ok(v) = HeaderValue::from_str(&secs) {
                r.headers_mut().insert("retry-after", v);
            }
        }
        return r;
    }
    if g.cfg.faults.burst_5xx > 0 {
        g.cfg.faults.burst_5xx -= 1;
        g.counters.server_errors_5xx += 1;
        return error_body(500, "Internal server error");
    }

    // Auth.
    let session_lifetime = g.cfg.session_lifetime.0;
    let max_requests = g.cfg.session_max_requests;
    let user = match header_str(headers, "sessionToken") {
        None => {
            g.counters.unauthorized_401 += 1;
            return error_body(401, "Session token is missing");
        }
        Some(tok) => {
            let expired = match g.sessions.get(tok) {
                None => true,
                Some(s) => {
                    s.created.elapsed() >= session_lifetime
                        || max_requests.is_some_and(|n| s.requests >= n)
                }
            };
            if expired {
                g.sessions.remove(tok);
                g.counters.unauthorized_401 += 1;
                return error_body(401, "Unauthorized: Session tokens invalid.");
            }
            match g.sessions.get_mut(tok) {
                Some(s) => {
                    s.requests += 1;
                    s.username.clone()
                }
                None => {
                    g.counters.unauthorized_401 += 1;
                    return error_body(401, "Unauthorized: Session tokens invalid.");
                }
            }
        }
    };
    if g.cfg.require_key_manager_token {
        let ok = header_str(headers, "keyManagerToken").is_some_and(|t| g.km_tokens.contains(t));
        if !ok {
            g.counters.unauthorized_401 += 1;
            return error_body(401, "Unauthorized: Key manager token invalid.");
        }
    }
    if !g.audit_role.get(&user).copied().unwrap_or(false) {
        g.counters.forbidden_403 += 1;
        return error_body(403, "Forbidden: Caller lacks necessary entitlement.");
    }

    // Parameters.
    let bad = |g: &mut Inner, msg: &str| {
        g.counters.bad_request_400 += 1;
        error_body(400, msg)
    };
    let int = |k: &str| -> Result<Option<i64>, String> {
        match q.get(k) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("Invalid value for {k}: {v}")),
        }
    };
    let start = match int("startTimestamp") {
        Ok(Some(s)) => s,
        Ok(None) => return bad(&mut g, "startTimestamp is required"),
        Err(e) => return bad(&mut g, &e),
    };
    let end = match int("endTimestamp") {
        Ok(e) => e.unwrap_or_else(|| now_ms(g.cfg.clock_skew_secs)),
        Err(e) => return bad(&mut g, &e),
    };
    if end - start > MAX_WINDOW_MS.min(i64::from(g.cfg.max_window_days) * 86_400_000) {
        g.counters.window_too_large_400 += 1;
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/json")],
            WINDOW_TOO_LARGE_BODY,
        )
            .into_response();
    }
    if end < start {
        return bad(&mut g, "endTimestamp must not be before startTimestamp");
    }
    let limit = match int("limit") {
        Ok(None) => 50,
        Ok(Some(l)) if l >= 1 => l.min(500),
        Ok(Some(_)) => return bad(&mut g, "limit must be a positive number"),
        Err(e) => return bad(&mut g, &e),
    } as usize;
    let initiator = match int("initiatorId") {
        Ok(i) => i,
        Err(e) => return bad(&mut g, &e),
    };
    let role = q.get("role").cloned();
    if let Some(r) = &role {
        if !ROLES.contains(&r.as_str()) {
            return bad(&mut g, &format!("Invalid role: {r}"));
        }
    }
    let cursor = |k: &str| -> Result<Option<usize>, String> {
        match q.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<usize>()
                .map(Some)
                .map_err(|_| format!("Invalid {k} cursor: {v}")),
        }
    };
    let after = match cursor("after") {
        Ok(a) => a,
        Err(e) => return bad(&mut g, &e),
    };
    let before = match cursor("before") {
        Ok(b) => b,
        Err(e) => return bad(&mut g, &e),
    };

    // Select, newest first.
    let strings = g.cfg.numbers_as_strings;
    let matching: Vec<&Stored> = g
        .items
        .iter()
        .filter(|s| s.ts >= start && s.ts <= end)
        .filter(|s| {
            initiator.is_none_or(|id| s.item.get("initiatorId").and_then(as_i64) == Some(id))
        })
        .filter(|s| {
            role.as_ref().is_none_or(|r| {
                s.item
                    .get("authorizationRoles")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(r)))
            })
        })
        .collect();
    let total = matching.len();
    let offset = match (after, before) {
        (Some(a), _) => a.min(total),
        (None, Some(b)) => b.saturating_sub(1).saturating_sub(limit).min(total),
        (None, None) => 0,
    };
    let page_end = match (after, before) {
        (None, Some(b)) => b.saturating_sub(1).min(total),
        _ => (offset + limit).min(total),
    };
    let page: Vec<Value> = matching[offset..page_end.max(offset)]
        .iter()
        .map(|s| wire(&s.item, strings))
        .collect();
    if page.is_empty() {
        g.counters.empty_204 += 1;
        return StatusCode::NO_CONTENT.into_response();
    }
    let n = page.len();
    g.counters.pages_200 += 1;
    g.counters.items_served += n as u64;
    let mut body = Map::new();
    body.insert("items".into(), Value::Array(page));
    if n >= 50 {
        // The vendor's relative URL form: `?&startTimestamp=...`.
        let mut base = format!("{AUDIT_PATH}?&startTimestamp={start}");
        if let Some(e) = q.get("endTimestamp") {
            base.push_str(&format!("&endTimestamp={e}"));
        }
        if let Some(l) = q.get("limit") {
            base.push_str(&format!("&limit={l}"));
        }
        if let Some(i) = q.get("initiatorId") {
            base.push_str(&format!("&initiatorId={i}"));
        }
        if let Some(r) = &role {
            base.push_str(&format!("&role={r}"));
        }
        let mut cursors = Map::new();
        let mut pagination = Map::new();
        if offset > 0 {
            let b = (offset + 1).to_string();
            pagination.insert("previous".into(), json!(format!("{base}&before={b}")));
            cursors.insert("before".into(), json!(b));
        }
        if page_end < total {
            let a = page_end.to_string();
            pagination.insert("next".into(), json!(format!("{base}&after={a}")));
            cursors.insert("after".into(), json!(a));
        }
        pagination.insert("cursors".into(), Value::Object(cursors));
        body.insert("pagination".into(), Value::Object(pagination));
    }
    Json(Value::Object(body)).into_response()
}

async fn admin_items(AxState(state): AxState<Arc<State>>) -> Json<Vec<Value>> {
    Json(state.items_wire())
}

async fn admin_inject(
    AxState(state): AxState<Arc<State>>,
    Json(items): Json<Vec<Value>>,
) -> StatusCode {
    state.inject(items);
    StatusCode::NO_CONTENT
}

async fn admin_clear(AxState(state): AxState<Arc<State>>) -> StatusCode {
    state.clear_items();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateReq {
    count: usize,
    #[serde(default)]
    from_ms: Option<i64>,
    #[serde(default)]
    to_ms: Option<i64>,
    #[serde(default)]
    days: Option<u32>,
    #[serde(default)]
    seed: u64,
}

async fn admin_generate(
    AxState(state): AxState<Arc<State>>,
    Json(r): Json<GenerateReq>,
) -> Json<Value> {
    let to = r.to_ms.unwrap_or_else(|| now_ms(0) - 60_000);
    let from = r
        .from_ms
        .unwrap_or_else(|| to - i64::from(r.days.unwrap_or(90)) * 86_400_000);
    let items = generate(r.count, from, to, r.seed);
    let n = items.len();
    state.inject(items);
    Json(json!({"generated": n}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyReq {
    username: String,
    public_key: String,
    #[serde(default = "yes")]
    audit_role: bool,
}

async fn admin_keys(AxState(state): AxState<Arc<State>>, Json(r): Json<KeyReq>) -> Response {
    match state.register_key(&r.username, &r.public_key) {
        Ok(()) => {
            state.set_audit_role(&r.username, r.audit_role);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error_body(400, &e),
    }
}

async fn admin_counters(AxState(state): AxState<Arc<State>>) -> Json<Counters> {
    Json(state.counters())
}

async fn admin_requests(AxState(state): AxState<Arc<State>>) -> Json<Vec<AuditRequest>> {
    Json(state.requests())
}

async fn admin_get_faults(AxState(state): AxState<Arc<State>>) -> Json<Faults> {
    Json(state.faults())
}

async fn admin_set_faults(
    AxState(state): AxState<Arc<State>>,
    Json(f): Json<Faults>,
) -> StatusCode {
    state.set_faults(f);
    StatusCode::NO_CONTENT
}

async fn admin_expire(AxState(state): AxState<Arc<State>>) -> StatusCode {
    state.expire_sessions();
    StatusCode::NO_CONTENT
}

/// `count` records with distinct millisecond timestamps spread over
/// `[from_ms, to_ms]`, in the shapes of the vendor's examples. Deterministic
/// for a seed.
pub fn generate(count: usize, from_ms: i64, to_ms: i64, seed: u64) -> Vec<Value> {
    let mut rng = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64*: plenty for test data.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let span = (to_ms - from_ms).max(count as i64);
    let step = (span / count.max(1) as i64).max(1);
    let admins = [
        (7215545057307i64, "bob.smith", "SUPER_ADMINISTRATOR"),
        (7215545069230, "alice.jones", "USER_PROVISIONING"),
        (7215545222842, "carol.white", "ADMINISTRATOR"),
        (7215545222800, "dan.brown", "SUPER_COMPLIANCE_OFFICER"),
        (7215545222811, "erin.green", "EF_POLICY_MANAGEMENT"),
    ];
    (0..count)
        .map(|i| {
            let r = next();
            let jitter = if step > 1 {
                (r % step as u64) as i64
            } else {
                0
            };
            let ts = from_ms + i as i64 * step + jitter;
            let (init_id, init_name, role) = admins[(r >> 8) as usize % admins.len()];
            let affected = 7215545221000i64 + ((r >> 16) % 500) as i64;
            let mut m = Map::new();
            let kind = (r >> 32) % 6;
            let (action, action_name) = match kind {
                0 => ("RSA Key Added", "rsaKeyAdded"),
                1 => ("Service Account Created", "createServiceAccount"),
                2 => ("Enabled EF Enforcement", "enabledEfEnforcement"),
                3 => ("End-user account created", "createUser"),
                4 => ("Added Member", "addedMember"),
                _ => ("Profile info update", "profileInfoUpdate"),
            };
            m.insert("action".into(), json!(action));
            m.insert("actionName".into(), json!(action_name));
            m.insert("initiatorId".into(), json!(init_id));
            m.insert("initiatorUsername".into(), json!(init_name));
            m.insert(
                "initiatorEmailAddress".into(),
                json!(format!("{init_name}@example.com")),
            );
            if kind != 2 {
                m.insert("affectedId".into(), json!(affected));
                m.insert("affectedUsername".into(), json!(format!("user.{affected}")));
                m.insert(
                    "affectedEmailAddress".into(),
                    json!(format!("user.{affected}@example.com")),
                );
            }
            if kind == 4 {
                m.insert(
                    "attribute".into(),
                    json!(format!("user.{affected}@example.com")),
                );
                m.insert("threadId".into(), json!(format!("thread{}==", r % 97)));
                m.insert("scope".into(), json!("Internal"));
                m.insert("conversationType".into(), json!("Room"));
            }
            if kind == 5 {
                m.insert("attribute".into(), json!("roles"));
                m.insert("oldValue".into(), json!("[Individual]"));
                m.insert("newValue".into(), json!("[Individual,Administrator]"));
            }
            m.insert("authorizationRoles".into(), json!([role]));
            m.insert("timestamp".into(), json!(ts));
            Value::Object(m)
        })
        .collect()
}

/// An RSA key pair in the PEM forms Symphony users handle.
pub struct RsaKeyPem {
    /// `BEGIN PRIVATE KEY` (PKCS#8).
    pub private_pkcs8: String,
    /// `BEGIN RSA PRIVATE KEY` (PKCS#1).
    pub private_pkcs1: String,
    /// `BEGIN PUBLIC KEY` (X.509 SubjectPublicKeyInfo), what a pod admin
    /// registers for the service account.
    pub public: String,
}

/// Generates a fresh 2048-bit RSA key pair (tests, demo: no key files to
/// commit or prepare).
pub fn generate_rsa_key() -> Result<RsaKeyPem, String> {
    let kp = KeyPair::generate(KeySize::Rsa2048).map_err(|e| format!("RSA keygen: {e}"))?;
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp)
        .map_err(|e| format!("RSA key encoding: {e}"))?;
    let public = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(kp.public_key())
        .map_err(|e| format!("RSA public key encoding: {e}"))?;
    let pkcs1 = pkcs8_inner(pkcs8.as_ref()).ok_or("cannot unwrap the PKCS#8 key")?;
    Ok(RsaKeyPem {
        private_pkcs8: pem("PRIVATE KEY", pkcs8.as_ref()),
        private_pkcs1: pem("RSA PRIVATE KEY", pkcs1),
        public: pem("PUBLIC KEY", public.as_ref()),
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One DER element: (tag, content, rest).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The PKCS#1 key inside a PKCS#8 PrivateKeyInfo
/// (SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }).
fn pkcs8_inner(der: &[u8]) -> Option<&[u8]> {
    let (0x30, seq, _) = der_next(der)? else {
        return None;
    };
    let (0x02, _, rest) = der_next(seq)? else {
        return None;
    };
    let (0x30, _, rest) = der_next(rest)? else {
        return None;
    };
    let (0x04, key, _) = der_next(rest)? else {
        return None;
    };
    Some(key)
}

/// For the demo: creates a key pair, registers its public key for
/// `username`, writes the private key (PKCS#8 PEM, mode 0600) to
/// `dir/symphony-<username>.pem` and returns that path, for the source's
/// `private_key = { file = ... }`.
pub fn provision_account(state: &State, username: &str, dir: &Path) -> Result<PathBuf, String> {
    let keys = generate_rsa_key()?;
    state.register_key(username, &keys.public)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("symphony-{username}.pem"));
    write_private(&path, &keys.private_pkcs8)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_items_are_distinct_and_in_range() {
        let items = generate(1000, 1_000_000, 2_000_000, 7);
        let ts: HashSet<i64> = items
            .iter()
            .filter_map(|i| i.get("timestamp").and_then(as_i64))
            .collect();
        assert_eq!(ts.len(), 1000);
        assert!(ts.iter().all(|t| (1_000_000..=2_000_000).contains(t)));
    }

    #[test]
    fn key_pair_pems_parse() {
        let k = generate_rsa_key().expect("keygen");
        assert!(k
            .private_pkcs1
            .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        jsonwebtoken::EncodingKey::from_rsa_pem(k.private_pkcs1.as_bytes()).expect("pkcs1");
        jsonwebtoken::EncodingKey::from_rsa_pem(k.private_pkcs8.as_bytes()).expect("pkcs8");
        DecodingKey::from_rsa_pem(k.public.as_bytes()).expect("public");
    }

    #[test]
    fn strings_knob_turns_numbers_into_strings() {
        let v = json!({"timestamp": 5, "initiatorId": 6, "affectedId": 7, "x": 8});
        let w = wire(&v, true);
        assert_eq!(w["timestamp"], json!("5"));
        assert_eq!(w["affectedId"], json!("7"));
        assert_eq!(w["x"], json!(8));
    }
}
