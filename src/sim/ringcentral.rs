//! RingCentral platform simulator: the OAuth token endpoint (JWT bearer
//! grant, single-use refresh tokens, Basic client auth, Auth group limit)
//! and the Audit Trail search (filters, paging, 180-day / 10,000-record
//! eviction, Heavy sliding window whose penalty restarts on every request
//! sent during it, rate-limit headers, the vendor's error bodies).
//!
//! Limits are time-scaled knobs (`heavy_window = "2s"`): the client learns
//! them from the headers, as it must with the real service.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::limiter::{SlidingLimiter, Verdict};
use super::SimHandle;
use crate::util::{chrono_duration, rfc3339_ms, HumanDuration};

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub client_id: String,
    pub client_secret: String,
    /// The JWT credential the token endpoint accepts.
    pub jwt: String,
    pub account_id: String,
    /// Requests per window of the Heavy group (audit-trail search).
    pub heavy_limit: u32,
    pub medium_limit: u32,
    pub light_limit: u32,
    pub auth_limit: u32,
    /// Sliding window of every group (60 s on the real service).
    pub window: HumanDuration,
    /// Penalty after going over a limit (60 s on the real service); each
    /// request sent during it restarts it.
    pub penalty: HumanDuration,
    /// No rate limiting at all (benchmarks).
    pub unlimited: bool,
    pub access_token_ttl: HumanDuration,
    pub refresh_token_ttl: HumanDuration,
    pub horizon: HumanDuration,
    pub record_cap: usize,
    pub seed: u64,
    /// Records generated at start, spread over `initial_span` before now.
    pub initial_records: usize,
    pub initial_span: HumanDuration,
    /// Live traffic: new records per second while running.
    pub live_per_second: f64,
    /// Fraction of live records that arrive late: their eventTime lies
    /// `late_by` in the past and they only become visible now.
    pub late_fraction: f64,
    pub late_by: HumanDuration,
    /// Fault knobs.
    pub latency: HumanDuration,
    pub error_rate: f64,
    /// Benchmarks: this many extra records computed from their index on
    /// demand (never stored), spread evenly over `synthetic_span` before
    /// the simulator's start. Time filter and paging apply; other filters
    /// do not.
    pub synthetic_records: u64,
    pub synthetic_span: HumanDuration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            client_id: "sim-client-id".into(),
            client_secret: "sim-client-secret".into(),
            jwt: "sim-jwt-credential".into(),
            account_id: "37439510".into(),
            heavy_limit: 10,
            medium_limit: 40,
            light_limit: 50,
            auth_limit: 5,
            window: HumanDuration(Duration::from_secs(60)),
            penalty: HumanDuration(Duration::from_secs(60)),
            unlimited: false,
            access_token_ttl: HumanDuration(Duration::from_secs(3600)),
            refresh_token_ttl: HumanDuration(Duration::from_secs(604_800)),
            horizon: HumanDuration(Duration::from_secs(180 * 86_400)),
            record_cap: 10_000,
            seed: 7,
            initial_records: 0,
            initial_span: HumanDuration(Duration::from_secs(150 * 86_400)),
            live_per_second: 0.0,
            late_fraction: 0.0,
            late_by: HumanDuration(Duration::from_secs(60)),
            latency: HumanDuration(Duration::ZERO),
            error_rate: 0.0,
            synthetic_records: 0,
            synthetic_span: HumanDuration(Duration::from_secs(30 * 86_400)),
        }
    }
}

#[derive(Clone, Debug)]
struct SimRecord {
    id: String,
    event_time: DateTime<Utc>,
    visible_at: DateTime<Utc>,
    body: Value,
}

struct AccessToken {
    expires: Instant,
    revoked: bool,
}

/// What the simulator saw, for tests and `/_sim/counters`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    pub search_requests: u64,
    pub search_by_status: BTreeMap<u16, u64>,
    pub token_requests: u64,
    pub jwt_grants: u64,
    pub refresh_grants: u64,
    pub rate_limited: BTreeMap<String, u64>,
    pub unauthorized: u64,
    pub evicted: u64,
    pub requests_outside_horizon: u64,
    pub sms_sent: u64,
    pub posts_created: u64,
}

/// One search request as received.
#[derive(Clone, Debug, Serialize)]
pub struct SearchSeen {
    /// Milliseconds since the simulator started.
    pub at_ms: u64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub page: u64,
    pub status: u16,
}

pub struct RingCentralSim {
    pub cfg: Config,
    records: Mutex<Vec<SimRecord>>,
    tokens: Mutex<HashMap<String, AccessToken>>,
    /// refresh token → (expiry, access token it was issued with)
    refresh: Mutex<HashMap<String, (Instant, String)>>,
    limiters: HashMap<&'static str, SlidingLimiter>,
    counters: Mutex<Counters>,
    searches: Mutex<Vec<SearchSeen>>,
    storm_until: Mutex<Option<Instant>>,
    error_rate: Mutex<f64>,
    rng: Mutex<StdRng>,
    next_id: AtomicU64,
    live_paused: std::sync::atomic::AtomicBool,
    started: Instant,
    started_at: DateTime<Utc>,
    /// Extra routes state (SMS, Team Messaging) lives in `messaging`.
    pub messaging: super::ringcentral_messaging::Messaging,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const ACTIONS: &[(&str, &str)] = &[
    ("CHANGE_USER_INFO", "UPDATE"),
    ("CHANGE_USER_ROLE", "UPDATE"),
    ("CHANGE_SECRET_INFO", "UPDATE"),
    ("LOGIN_SUCCESSFULLY", "LOGIN"),
    ("CREATE_USER", "CREATE"),
    ("DELETE_USER", "DELETE"),
    ("CHANGE_CALL_FORWARDING", "UPDATE"),
    ("CHANGE_MFA_SETTINGS", "Update"),
    ("CHANGE_USER_2FA", "Update"),
    ("CHANGE_FILE_SHARING", "UPDATE"),
];
const ADMINS: &[(&str, &str, &str, &str)] = &[
    ("62264425008", "101", "Dana Whitfield", "Super Admin"),
    ("62264426008", "102", "Ravi Prasad", "IT Administrator"),
    (
        "62264427008",
        "103",
        "Lena Kowalski",
        "Phone System Administrator",
    ),
];
const USERS: &[(&str, &str, &str)] = &[
    ("62265550008", "12004", "Sam Ortega"),
    ("62265551008", "12005", "Mia Chen"),
    ("62265552008", "12006", "Tom Becker"),
    ("62265553008", "12007", "Ana Silva"),
];
const FIELDS: &[(&str, &str, &str)] = &[
    ("Department", "Biology", "Mathematics"),
    ("Email", "sam@old.example", "sam@new.example"),
    ("JobTitle", "Analyst", "Lead Analyst"),
    ("MobilePhone", "+14155550100", "+14155550199"),
    ("FirstName", "Sam", "Samuel"),
];

impl RingCentralSim {
    pub fn new(cfg: Config) -> Arc<Self> {
        let w = cfg.window.0;
        let p = cfg.penalty.0;
        let mut limiters = HashMap::new();
        limiters.insert("heavy", SlidingLimiter::new(cfg.heavy_limit, w, p, true));
        limiters.insert("medium", SlidingLimiter::new(cfg.medium_limit, w, p, true));
        limiters.insert("light", SlidingLimiter::new(cfg.light_limit, w, p, true));
        limiters.insert("auth", SlidingLimiter::new(cfg.auth_limit, w, p, true));
        let sim = Arc::new(RingCentralSim {
            rng: Mutex::new(StdRng::seed_from_u64(cfg.seed)),
            error_rate: Mutex::new(cfg.error_rate),
            cfg,
            records: Mutex::new(Vec::new()),
            tokens: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashMap::new()),
            limiters,
            counters: Mutex::new(Counters::default()),
            searches: Mutex::new(Vec::new()),
            storm_until: Mutex::new(None),
            next_id: AtomicU64::new(1),
            live_paused: std::sync::atomic::AtomicBool::new(false),
            started: Instant::now(),
            started_at: Utc::now(),
            messaging: Default::default(),
        });
        let n = sim.cfg.initial_records;
        if n > 0 {
            sim.generate(n, sim.cfg.initial_span.0);
        }
        sim
    }

    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{:04x}-sim{}", self.cfg.seed as u32, n % 0xffff, n)
    }

    /// A realistic record at `event_time`.
    pub fn make_record(&self, event_time: DateTime<Utc>) -> Value {
        let mut rng = lock(&self.rng);
        let (action, etype) = ACTIONS[rng.random_range(0..ACTIONS.len())];
        let (aid, anum, aname, arole) = ADMINS[rng.random_range(0..ADMINS.len())];
        let (tid, tnum, tname) = USERS[rng.random_range(0..USERS.len())];
        let params = match action {
            "CHANGE_USER_ROLE" => {
                json!([{"key":"oldRoleName","value":"Standard"},{"key":"newRoleName","value":"Super Admin"}])
            }
            "CHANGE_USER_INFO" => {
                let (f, o, n) = FIELDS[rng.random_range(0..FIELDS.len())];
                json!([{"key":"settingName","value":f},{"key":"oldValue","value":o},{"key":"newValue","value":n}])
            }
            "CHANGE_MFA_SETTINGS" | "CHANGE_USER_2FA" => {
                json!([{"key":"settingName","value":"MFA"},{"key":"oldValue","value":"Off"},{"key":"newValue","value":"On"}])
            }
            _ => json!([]),
        };
        let company = action == "CHANGE_MFA_SETTINGS";
        drop(rng);
        json!({
            "id": self.new_id(),
            "eventTime": rfc3339_ms(event_time),
            "eventType": etype,
            "actionId": action,
            "accountId": self.cfg.account_id,
            "accountName": "Acme Corp",
            "clientIp": "203.0.113.17",
            "initiator": {"extensionId": aid, "extensionNumber": anum, "name": aname, "role": arole},
            "target": if company {
                json!({"objectId":"0","objectType":"Company","name":"Acme Corp"})
            } else {
                json!({"objectId": tid, "objectType":"Extension","name": tname, "extensionNumber": tnum, "siteId":"main-site"})
            },
            "details": {"parameters": params},
        })
    }

    /// Adds `n` records spread evenly over `span` before now.
    pub fn generate(&self, n: usize, span: Duration) -> Vec<String> {
        let now = Utc::now();
        let step = chrono_duration(span) / (n.max(1) as i32);
        let mut ids = Vec::with_capacity(n);
        let mut batch = Vec::with_capacity(n);
        for i in 0..n {
            let t = now - step * (i as i32 + 1);
            let body = self.make_record(t);
            ids.push(body["id"].as_str().unwrap_or_default().to_string());
            batch.push(body);
        }
        self.insert(batch, Duration::ZERO);
        ids
    }

    /// Inserts records; they become visible `delay` from now (late arrivals).
    pub fn insert(&self, bodies: Vec<Value>, delay: Duration) {
        let visible_at = Utc::now() + chrono_duration(delay);
        let mut recs = lock(&self.records);
        for b in bodies {
            let Some(id) = b.get("id").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            let Some(t) = b
                .get("eventTime")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            else {
                continue;
            };
            recs.push(SimRecord {
                id,
                event_time: t.with_timezone(&Utc),
                visible_at,
                body: b,
            });
        }
        recs.sort_by_key(|r| r.event_time);
        drop(recs);
        self.evict();
    }

    /// Adds one live record now (or late, per `late_fraction`).
    pub fn add_live(&self) -> String {
        let late = { lock(&self.rng).random_bool(self.cfg.late_fraction.clamp(0.0, 1.0)) };
        let now = Utc::now();
        let t = if late {
            now - chrono_duration(self.cfg.late_by.0)
        } else {
            now
        };
        let body = self.make_record(t);
        let id = body["id"].as_str().unwrap_or_default().to_string();
        self.insert(vec![body], Duration::ZERO);
        id
    }

    /// The 180-day / 10,000-record retention.
    fn evict(&self) {
        let cutoff = Utc::now() - chrono_duration(self.cfg.horizon.0);
        let mut recs = lock(&self.records);
        let before = recs.len();
        recs.retain(|r| r.event_time >= cutoff);
        if recs.len() > self.cfg.record_cap {
            let drop_n = recs.len() - self.cfg.record_cap;
            recs.drain(..drop_n);
        }
        let evicted = (before - recs.len()) as u64;
        drop(recs);
        lock(&self.counters).evicted += evicted;
    }

    /// Ids of every record currently held and visible.
    pub fn visible_ids(&self) -> BTreeSet<String> {
        let now = Utc::now();
        lock(&self.records)
            .iter()
            .filter(|r| r.visible_at <= now)
            .map(|r| r.id.clone())
            .collect()
    }

    pub fn counters(&self) -> Counters {
        lock(&self.counters).clone()
    }

    /// Lets the sibling endpoint modules (SMS, Team Messaging) count what
    /// they served.
    pub fn bump(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut lock(&self.counters));
    }

    pub fn searches(&self) -> Vec<SearchSeen> {
        lock(&self.searches).clone()
    }

    /// Fault: every request of every group answers 429 for `d`.
    pub fn storm(&self, d: Duration) {
        *lock(&self.storm_until) = Some(Instant::now() + d);
    }

    /// Fault: puts the Heavy group in penalty now, as if over the limit.
    pub fn force_heavy_penalty(&self) {
        if let Some(l) = self.limiters.get("heavy") {
            l.force_penalty(&self.cfg.client_id, self.cfg.penalty.0);
        }
    }

    /// Pauses or resumes the live traffic generator.
    pub fn pause_live(&self, paused: bool) {
        self.live_paused.store(paused, Ordering::SeqCst);
    }

    pub fn set_error_rate(&self, r: f64) {
        *lock(&self.error_rate) = r;
    }

    /// Every access and refresh token issued so far (tests check none leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.tokens).keys().cloned().collect();
        v.extend(lock(&self.refresh).keys().cloned());
        v
    }

    /// Fault: revokes every access and refresh token.
    pub fn revoke_tokens(&self) {
        for t in lock(&self.tokens).values_mut() {
            t.revoked = true;
        }
        lock(&self.refresh).clear();
    }

    fn limit(&self, group: &'static str) -> (Verdict, u32) {
        let Some(l) = self.limiters.get(group) else {
            return (Verdict::Allowed { remaining: 0 }, 0);
        };
        if self.cfg.unlimited {
            // Advertise it, as a generous server would: clients pace by headers.
            return (
                Verdict::Allowed {
                    remaining: 1_000_000,
                },
                1_000_000,
            );
        }
        if lock(&self.storm_until).is_some_and(|u| Instant::now() < u) {
            return (
                Verdict::Limited {
                    retry_after: self.cfg.penalty.0,
                },
                l.limit,
            );
        }
        (l.check(&self.cfg.client_id), l.limit)
    }

    fn rate_headers(&self, group: &str, limit: u32, remaining: u32) -> HeaderMap {
        let mut h = HeaderMap::new();
        let secs = self.cfg.window.0.as_secs().max(1);
        let put = |h: &mut HeaderMap, k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        put(&mut h, "x-rate-limit-group", group.to_string());
        put(&mut h, "x-rate-limit-limit", limit.to_string());
        put(&mut h, "x-rate-limit-remaining", remaining.to_string());
        put(&mut h, "x-rate-limit-window", secs.to_string());
        h
    }

    /// Common gate of every API call: latency, auth, rate group, faults.
    /// Returns the response to send instead, or the rate headers to add.
    pub async fn gate(
        &self,
        headers: &HeaderMap,
        group: &'static str,
    ) -> Result<HeaderMap, Response> {
        if !self.cfg.latency.0.is_zero() {
            tokio::time::sleep(self.cfg.latency.0).await;
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::to_string);
        let auth_ok = match &bearer {
            None => Err(("OAU-149", "Unparsable access token")),
            Some(t) => match lock(&self.tokens).get(t) {
                None => Err(("OAU-213", "Token not found")),
                Some(a) if a.revoked => Err(("OAU-213", "Token not found")),
                Some(a) if a.expires <= Instant::now() => Err(("OAU-128", "Access token expired")),
                Some(_) => Ok(()),
            },
        };
        if let Err((code, msg)) = auth_ok {
            lock(&self.counters).unauthorized += 1;
            return Err(api_error(
                StatusCode::UNAUTHORIZED,
                code,
                msg,
                HeaderMap::new(),
            ));
        }
        let (verdict, limit) = self.limit(group);
        match verdict {
            Verdict::Limited { retry_after } => {
                *lock(&self.counters)
                    .rate_limited
                    .entry(group.to_string())
                    .or_default() += 1;
                let mut h = self.rate_headers(group, limit, 0);
                if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                    h.insert("retry-after", v);
                }
                Err(api_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "CMN-301",
                    "Request rate exceeded",
                    h,
                ))
            }
            Verdict::Allowed { remaining } => {
                let rate = *lock(&self.error_rate);
                let fail = rate > 0.0 && lock(&self.rng).random_bool(rate.clamp(0.0, 1.0));
                let h = self.rate_headers(group, limit, remaining);
                if fail {
                    return Err(api_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "CMN-500",
                        "Internal Server Error",
                        h,
                    ));
                }
                Ok(h)
            }
        }
    }
}

/// The vendor's error body: top-level code/message plus `errors[]`.
pub fn api_error(status: StatusCode, code: &str, message: &str, headers: HeaderMap) -> Response {
    let body = json!({"errorCode": code, "message": message, "errors": [{"errorCode": code, "message": message}]});
    (status, headers, Json(body)).into_response()
}

fn oauth_error(
    status: StatusCode,
    error: &str,
    code: &str,
    desc: &str,
    headers: HeaderMap,
) -> Response {
    let body = json!({"error": error, "error_description": desc, "errors": [{"errorCode": code, "message": desc}]});
    (status, headers, Json(body)).into_response()
}

fn random_token(rng: &Mutex<StdRng>, prefix: &str) -> String {
    let mut r = lock(rng);
    let bytes: [u8; 24] = r.random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

async fn token(
    State(sim): State<Arc<RingCentralSim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&sim.counters).token_requests += 1;
    let (verdict, limit) = sim.limit("auth");
    if let Verdict::Limited { retry_after } = verdict {
        *lock(&sim.counters)
            .rate_limited
            .entry("auth".into())
            .or_default() += 1;
        let mut h = sim.rate_headers("auth", limit, 0);
        if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
            h.insert("retry-after", v);
        }
        return api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "CMN-301",
            "Request rate exceeded",
            h,
        );
    }
    let rate_h = match verdict {
        Verdict::Allowed { remaining } => sim.rate_headers("auth", limit, remaining),
        Verdict::Limited { .. } => HeaderMap::new(),
    };
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", sim.cfg.client_id, sim.cfg.client_secret));
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    if basic != Some(expected.as_str()) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "OAU-123",
            "Client authentication is required",
            rate_h,
        );
    }
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "OAU-250",
                "Unparsable request body",
                rate_h,
            )
        }
    };
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    match grant {
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            if form.get("assertion").map(String::as_str) != Some(sim.cfg.jwt.as_str()) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "OAU-140",
                    "Invalid assertion",
                    rate_h,
                );
            }
            lock(&sim.counters).jwt_grants += 1;
        }
        "refresh_token" => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            let entry = lock(&sim.refresh).remove(&presented);
            match entry {
                Some((exp, access)) if exp > Instant::now() => {
                    // Single use, and the access token issued with it dies now.
                    if let Some(t) = lock(&sim.tokens).get_mut(&access) {
                        t.revoked = true;
                    }
                    lock(&sim.counters).refresh_grants += 1;
                }
                _ => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "OAU-211",
                        "Token is revoked",
                        rate_h,
                    )
                }
            }
        }
        other => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "OAU-251",
                &format!("Unsupported grant type: {other}"),
                rate_h,
            )
        }
    }
    let ttl = form
        .get("access_token_ttl")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|v| Duration::from_secs(v.clamp(600, 3600)))
        .unwrap_or(sim.cfg.access_token_ttl.0);
    let access = random_token(&sim.rng, "U1NTVA");
    let refresh = random_token(&sim.rng, "UkVGUg");
    let now = Instant::now();
    lock(&sim.tokens).insert(
        access.clone(),
        AccessToken {
            expires: now + ttl,
            revoked: false,
        },
    );
    lock(&sim.refresh).insert(
        refresh.clone(),
        (now + sim.cfg.refresh_token_ttl.0, access.clone()),
    );
    let body = json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": ttl.as_secs(),
        "refresh_token": refresh,
        "refresh_token_expires_in": sim.cfg.refresh_token_ttl.0.as_secs(),
        "scope": "ReadAuditTrail SMS TeamMessaging ReadAccounts",
        "owner_id": "62264425008",
        "endpoint_id": "sim-endpoint",
        "session_id": "sim-session",
    });
    (StatusCode::OK, rate_h, Json(body)).into_response()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SearchBody {
    event_time_from: Option<String>,
    event_time_to: Option<String>,
    page: Option<Value>,
    per_page: Option<Value>,
    initiator_ids: Vec<String>,
    target_ids: Vec<String>,
    site_id: Option<String>,
    action_ids: Vec<String>,
    exclude_action_ids: Vec<String>,
    search_string: Option<String>,
    // Seen only in the vendor's sample code: accepted and ignored.
    #[allow(dead_code)]
    include_admins: Option<Value>,
    #[allow(dead_code)]
    include_hidden: Option<Value>,
    #[allow(dead_code)]
    search_parameters: Option<Value>,
}

fn num(v: &Option<Value>) -> Option<i64> {
    match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
}

async fn search(
    State(sim): State<Arc<RingCentralSim>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at_ms = sim.started.elapsed().as_millis() as u64;
    let resp = search_inner(&sim, &account, &headers, &body, at_ms).await;
    let status = resp.status().as_u16();
    if status != 200 {
        let now = Utc::now();
        lock(&sim.searches).push(SearchSeen {
            at_ms,
            from: now,
            to: now,
            page: 0,
            status,
        });
    }
    let mut c = lock(&sim.counters);
    c.search_requests += 1;
    *c.search_by_status.entry(status).or_default() += 1;
    resp
}

async fn search_inner(
    sim: &Arc<RingCentralSim>,
    account: &str,
    headers: &HeaderMap,
    body: &Bytes,
    at_ms: u64,
) -> Response {
    let rate_h = match sim.gate(headers, "heavy").await {
        Ok(h) => h,
        Err(r) => return r,
    };
    if account != "~" && account != sim.cfg.account_id {
        return api_error(
            StatusCode::NOT_FOUND,
            "CMN-102",
            "Resource for parameter [accountId] is not found",
            rate_h,
        );
    }
    let req: SearchBody = if body.is_empty() {
        SearchBody::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "CMN-103",
                    &format!("Unparsable JSON: {e}"),
                    rate_h,
                )
            }
        }
    };
    let now = Utc::now();
    let parse = |v: &Option<String>| -> Result<Option<DateTime<Utc>>, ()> {
        match v {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| ()),
        }
    };
    let invalid = |name: &str| {
        api_error(
            StatusCode::BAD_REQUEST,
            "CMN-101",
            &format!("Parameter [{name}] value is invalid"),
            HeaderMap::new(),
        )
    };
    let Ok(to) = parse(&req.event_time_to) else {
        return invalid("eventTimeTo");
    };
    let to = to.unwrap_or(now);
    let Ok(from) = parse(&req.event_time_from) else {
        return invalid("eventTimeFrom");
    };
    let from = from.unwrap_or(to - chrono::Duration::hours(24));
    let page = num(&req.page).unwrap_or(1).max(1) as u64;
    let per_page = num(&req.per_page).unwrap_or(100).clamp(1, 1000) as u64;
    {
        lock(&sim.searches).push(SearchSeen {
            at_ms,
            from,
            to,
            page,
            status: 200,
        });
    }
    if from < now - chrono_duration(sim.cfg.horizon.0) {
        lock(&sim.counters).requests_outside_horizon += 1;
        return api_error(
            StatusCode::BAD_REQUEST,
            "CMN-101",
            "Parameter [eventTimeFrom] value is invalid: older than the retention period",
            rate_h,
        );
    }
    if from > to {
        return api_error(
            StatusCode::BAD_REQUEST,
            "CMN-101",
            "Parameter [eventTimeFrom] must not be after [eventTimeTo]",
            rate_h,
        );
    }
    if sim.cfg.synthetic_records > 0 {
        return synthetic_page(sim, from, to, page, per_page, rate_h);
    }
    sim.evict();
    let recs = lock(&sim.records);
    let search = req.search_string.as_deref().map(str::to_lowercase);
    let matching: Vec<&SimRecord> = recs
        .iter()
        .rev() // newest first
        .filter(|r| r.visible_at <= now && r.event_time >= from && r.event_time <= to)
        .filter(|r| {
            let b = &r.body;
            let field = |p: &str| b.pointer(p).and_then(Value::as_str).unwrap_or("");
            let action = field("/actionId");
            (req.action_ids.is_empty() || req.action_ids.iter().any(|a| a == action))
                && !req.exclude_action_ids.iter().any(|a| a == action)
                && (req.initiator_ids.is_empty()
                    || req
                        .initiator_ids
                        .iter()
                        .any(|i| i == field("/initiator/extensionId")))
                && (req.target_ids.is_empty()
                    || req
                        .target_ids
                        .iter()
                        .any(|i| i == field("/target/objectId")))
                && req
                    .site_id
                    .as_deref()
                    .is_none_or(|s| s == field("/target/siteId"))
                && search.as_deref().is_none_or(|q| {
                    [
                        "/initiator/name",
                        "/initiator/role",
                        "/initiator/extensionNumber",
                        "/target/name",
                        "/target/extensionNumber",
                    ]
                    .iter()
                    .any(|p| field(p).to_lowercase().contains(q))
                        || b.pointer("/details/parameters")
                            .and_then(Value::as_array)
                            .is_some_and(|ps| {
                                ps.iter().any(|x| {
                                    x["value"]
                                        .as_str()
                                        .is_some_and(|v| v.to_lowercase().contains(q))
                                })
                            })
                })
        })
        .collect();
    let total_found = matching.len() as u64;
    let total_pages = total_found.div_ceil(per_page);
    let start = ((page - 1) * per_page) as usize;
    let records: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(per_page as usize)
        .map(|r| r.body.clone())
        .collect();
    drop(recs);
    let mut paging = json!({"perPage": per_page, "total": total_pages, "totalFound": total_found});
    if !records.is_empty() {
        paging["page"] = json!(page);
    }
    (
        StatusCode::OK,
        rate_h,
        Json(json!({"records": records, "paging": paging})),
    )
        .into_response()
}

/// Synthetic record `i` (0 = oldest): deterministic, cheap, realistic.
/// Typed so a page serialises straight to text: the simulator shares the
/// benchmark machine with the service and must not dominate it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SyntheticRecord<'a> {
    id: String,
    event_time: String,
    event_type: &'a str,
    action_id: &'a str,
    account_id: &'a str,
    client_ip: &'a str,
    initiator: SyntheticInitiator<'a>,
    target: SyntheticTarget<'a>,
    details: SyntheticDetails<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SyntheticInitiator<'a> {
    extension_id: &'a str,
    extension_number: &'a str,
    name: &'a str,
    role: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SyntheticTarget<'a> {
    object_id: &'a str,
    object_type: &'a str,
    name: &'a str,
    extension_number: &'a str,
}

#[derive(Serialize)]
struct SyntheticDetails<'a> {
    parameters: [SyntheticParam<'a>; 3],
}

#[derive(Serialize)]
struct SyntheticParam<'a> {
    key: &'a str,
    value: &'a str,
}

fn synthetic_record(sim: &RingCentralSim, i: u64, t: DateTime<Utc>) -> SyntheticRecord<'_> {
    let (action, etype) = ACTIONS[(i % ACTIONS.len() as u64) as usize];
    let (aid, anum, aname, arole) = ADMINS[(i % ADMINS.len() as u64) as usize];
    let (tid, tnum, tname) = USERS[((i / 3) % USERS.len() as u64) as usize];
    let (f, o, n) = FIELDS[((i / 7) % FIELDS.len() as u64) as usize];
    SyntheticRecord {
        id: format!("syn-{:010}", i),
        event_time: rfc3339_ms(t),
        event_type: etype,
        action_id: action,
        account_id: &sim.cfg.account_id,
        client_ip: "203.0.113.17",
        initiator: SyntheticInitiator {
            extension_id: aid,
            extension_number: anum,
            name: aname,
            role: arole,
        },
        target: SyntheticTarget {
            object_id: tid,
            object_type: "Extension",
            name: tname,
            extension_number: tnum,
        },
        details: SyntheticDetails {
            parameters: [
                SyntheticParam {
                    key: "settingName",
                    value: f,
                },
                SyntheticParam {
                    key: "oldValue",
                    value: o,
                },
                SyntheticParam {
                    key: "newValue",
                    value: n,
                },
            ],
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SyntheticPaging {
    per_page: u64,
    total: u64,
    total_found: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<u64>,
}

#[derive(Serialize)]
struct SyntheticResponse<'a> {
    records: Vec<SyntheticRecord<'a>>,
    paging: SyntheticPaging,
}

impl RingCentralSim {
    fn synthetic_time(&self, i: u64) -> DateTime<Utc> {
        let span_ms = self.cfg.synthetic_span.0.as_millis() as i64;
        let n = self.cfg.synthetic_records.max(1) as i64;
        let start = self.started_at - chrono::Duration::milliseconds(span_ms);
        start + chrono::Duration::milliseconds(span_ms * i as i64 / n)
    }

    /// Ids of every synthetic record (tests of the bench path).
    pub fn synthetic_ids(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.cfg.synthetic_records).map(|i| format!("syn-{:010}", i))
    }
}

fn synthetic_page(
    sim: &RingCentralSim,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    page: u64,
    per_page: u64,
    rate_h: HeaderMap,
) -> Response {
    let n = sim.cfg.synthetic_records;
    // Index range [lo, hi) whose times fall in [from, to]: times increase with i.
    let first_at_or_after = |t: DateTime<Utc>| -> u64 {
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if sim.synthetic_time(mid) < t {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        lo
    };
    let lo = first_at_or_after(from);
    let hi = first_at_or_after(to + chrono::Duration::milliseconds(1));
    let total_found = hi.saturating_sub(lo);
    let skip = (page - 1) * per_page;
    // Newest first.
    let records: Vec<SyntheticRecord<'_>> = (0..per_page)
        .map(|k| skip + k)
        .take_while(|k| *k < total_found)
        .map(|k| {
            let i = hi - 1 - k;
            synthetic_record(sim, i, sim.synthetic_time(i))
        })
        .collect();
    let paging = SyntheticPaging {
        per_page,
        total: total_found.div_ceil(per_page),
        total_found,
        page: (!records.is_empty()).then_some(page),
    };
    (
        StatusCode::OK,
        rate_h,
        Json(SyntheticResponse { records, paging }),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectBody {
    #[serde(default)]
    records: Vec<Value>,
    #[serde(default)]
    generate: usize,
    #[serde(default)]
    span_seconds: Option<u64>,
    #[serde(default)]
    visible_after_seconds: Option<u64>,
}

async fn admin_inject(
    State(sim): State<Arc<RingCentralSim>>,
    Json(b): Json<InjectBody>,
) -> Response {
    let delay = Duration::from_secs(b.visible_after_seconds.unwrap_or(0));
    let n = b.records.len();
    sim.insert(b.records, delay);
    let generated = if b.generate > 0 {
        sim.generate(
            b.generate,
            Duration::from_secs(b.span_seconds.unwrap_or(3600)),
        )
    } else {
        Vec::new()
    };
    Json(json!({"inserted": n, "generated": generated.len()})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    #[serde(default)]
    storm_seconds: Option<u64>,
    #[serde(default)]
    error_rate: Option<f64>,
    #[serde(default)]
    revoke_tokens: bool,
    #[serde(default)]
    heavy_penalty: bool,
}

async fn admin_faults(
    State(sim): State<Arc<RingCentralSim>>,
    Json(b): Json<FaultBody>,
) -> Response {
    if let Some(s) = b.storm_seconds {
        sim.storm(Duration::from_secs(s));
    }
    if let Some(r) = b.error_rate {
        sim.set_error_rate(r);
    }
    if b.revoke_tokens {
        sim.revoke_tokens();
    }
    if b.heavy_penalty {
        sim.force_heavy_penalty();
    }
    Json(json!({"ok": true})).into_response()
}

async fn admin_counters(State(sim): State<Arc<RingCentralSim>>) -> Response {
    Json(sim.counters()).into_response()
}

async fn admin_records(State(sim): State<Arc<RingCentralSim>>) -> Response {
    let now = Utc::now();
    let recs: Vec<Value> = lock(&sim.records)
        .iter()
        .filter(|r| r.visible_at <= now)
        .map(|r| r.body.clone())
        .collect();
    Json(json!({"records": recs})).into_response()
}

pub fn router(sim: Arc<RingCentralSim>) -> Router {
    Router::new()
        .route("/restapi/oauth/token", post(token))
        .route(
            "/restapi/v1.0/account/{account}/audit-trail/search",
            post(search),
        )
        .route("/_sim/records", post(admin_inject).get(admin_records))
        .route("/_sim/faults", post(admin_faults))
        .route("/_sim/counters", get(admin_counters))
        .merge(super::ringcentral_messaging::routes())
        .with_state(sim)
}

/// Starts the simulator on `addr`, with live traffic if configured.
pub async fn start_on(
    cfg: Config,
    addr: std::net::SocketAddr,
) -> std::io::Result<(Arc<RingCentralSim>, SimHandle)> {
    let sim = RingCentralSim::new(cfg);
    let handle = super::serve(router(sim.clone()), addr).await?;
    if sim.cfg.live_per_second > 0.0 {
        let s = sim.clone();
        let stop = handle.stop_token();
        let every = Duration::from_secs_f64(1.0 / s.cfg.live_per_second);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if !s.live_paused.load(Ordering::SeqCst) {
                            s.add_live();
                        }
                    }
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    Ok((sim, handle))
}

pub async fn start(cfg: Config) -> std::io::Result<(Arc<RingCentralSim>, SimHandle)> {
    start_on(cfg, super::loopback()).await
}
