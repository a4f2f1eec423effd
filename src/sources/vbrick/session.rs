//! One Rev session per configured account, shared by all its streams.
//!
//! Login with an API key + secret (`POST /api/v2/authenticate`) or a
//! username + password (`POST /api/v2/user/login`); both answer
//! `{"token","issuer","expiration"}`. The session lasts the tenant's
//! inactivity timeout; past half of its known lifetime the session is
//! extended (`POST /api/v2/user/extend-session`), and when the extension
//! fails, or any call answers 401, the client logs in again.
//!
//! A login answering 401, 403, 429 or 400 is never retried in a loop: Rev
//! can lock the user out. The refusal is remembered for
//! `login_retry_interval`, during which every stream of the account gets
//! the same `SourceError::Auth` at once without a request being sent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::Secret;
use crate::internal_events::{AuthCompleted, InternalEvent};
use crate::net::http::{describe, read_body, MAX_BODY_BYTES};
use crate::sources::SourceError;

/// How the account logs in.
pub enum Credentials {
    ApiKey { api_key: String, secret: Secret },
    User { username: String, password: Secret },
}

impl Credentials {
    fn route(&self) -> &'static str {
        match self {
            Credentials::ApiKey { .. } => "/api/v2/authenticate",
            Credentials::User { .. } => "/api/v2/user/login",
        }
    }

    fn how(&self) -> &'static str {
        match self {
            Credentials::ApiKey { .. } => "api_key",
            Credentials::User { .. } => "user_login",
        }
    }

    fn body(&self) -> serde_json::Value {
        match self {
            Credentials::ApiKey { api_key, secret } => {
                serde_json::json!({"apiKey": api_key, "secret": secret.expose()})
            }
            Credentials::User { username, password } => {
                serde_json::json!({"username": username, "password": password.expose()})
            }
        }
    }
}

/// A token handed to a caller, with the generation it belongs to (so a
/// 401 invalidates only that session, not one another stream just made).
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub generation: u64,
}

struct Live {
    token: String,
    /// When the session was made or last extended.
    renewed: Instant,
    lifetime: Duration,
}

impl Live {
    fn expires(&self) -> Instant {
        self.renewed + self.lifetime
    }
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    generation: u64,
    /// The last refused login: (when, why).
    refused: Option<(Instant, String)>,
}

pub struct Session {
    source: String,
    tenant: String,
    base: reqwest::Url,
    http: reqwest::Client,
    creds: Credentials,
    /// Session length assumed when the server's `expiration` is unreadable.
    default_lifetime: Duration,
    login_retry_interval: Duration,
    state: Mutex<State>,
}

#[derive(Deserialize)]
struct LoginResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

#[derive(Deserialize)]
struct ExtendResponse {
    #[serde(default)]
    expiration: Option<String>,
}

impl Session {
    pub fn new(
        source: &str,
        tenant: &str,
        base: reqwest::Url,
        http: reqwest::Client,
        creds: Credentials,
        default_lifetime: Duration,
        login_retry_interval: Duration,
    ) -> Self {
        Session {
            source: source.to_string(),
            tenant: tenant.to_string(),
            base,
            http,
            creds,
            default_lifetime,
            login_retry_interval,
            state: Mutex::new(State::default()),
        }
    }

    fn url(&self, route: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), route)
    }

    /// A usable token: the current one, extended when past half its life,
    /// or a fresh login.
    pub async fn token(&self) -> Result<Token, SourceError> {
        let mut st = self.state.lock().await;
        if let Some(live) = &st.live {
            let now = Instant::now();
            let guard = (live.lifetime / 10).min(Duration::from_secs(30));
            if now + guard < live.expires() {
                if now < live.renewed + live.lifetime / 2 {
                    return Ok(Token {
                        value: live.token.clone(),
                        generation: st.generation,
                    });
                }
                let token = live.token.clone();
                match self.extend(&token).await {
                    Extend::Extended(lifetime) => {
                        st.live = Some(Live {
                            token: token.clone(),
                            renewed: Instant::now(),
                            lifetime,
                        });
                        return Ok(Token {
                            value: token,
                            generation: st.generation,
                        });
                    }
                    // Not refused, just not now: the token is still valid.
                    Extend::Later => {
                        return Ok(Token {
                            value: token,
                            generation: st.generation,
                        })
                    }
                    Extend::Refused => {}
                }
            }
            st.live = None;
        }
        self.login(&mut st).await
    }

    /// Drops the session a 401 came back for (unless a newer one exists).
    pub async fn invalidate(&self, generation: u64) {
        let mut st = self.state.lock().await;
        if st.generation == generation {
            st.live = None;
        }
    }

    /// Logs in now (for `check --connect`), returning the session's expiry.
    pub async fn login_now(&self) -> Result<Duration, SourceError> {
        let mut st = self.state.lock().await;
        st.live = None;
        st.refused = None;
        self.login(&mut st).await?;
        Ok(st
            .live
            .as_ref()
            .map(|l| l.expires().saturating_duration_since(Instant::now()))
            .unwrap_or_default())
    }

    async fn login(&self, st: &mut State) -> Result<Token, SourceError> {
        let how = self.creds.how();
        if let Some((at, why)) = &st.refused {
            let next = *at + self.login_retry_interval;
            if Instant::now() < next {
                let wait = next.saturating_duration_since(Instant::now());
                return Err(SourceError::Auth(format!(
                    "{why}; not logging in again for {}s (a login loop can lock the user out)",
                    wait.as_secs()
                )));
            }
        }
        let route = self.creds.route();
        let resp = self
            .http
            .post(self.url(route))
            .json(&self.creds.body())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("POST {route}: {}", describe(&e));
                self.emit_auth(how, Some(&msg));
                return Err(SourceError::Transient(msg));
            }
        };
        let status = resp.status();
        let server_now = server_date(resp.headers());
        let body = read_body(resp, MAX_BODY_BYTES).await;
        if !status.is_success() {
            let detail = body
                .ok()
                .map(|b| error_detail(&b))
                .filter(|d| !d.is_empty())
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            let msg = format!("POST {route} answered {}{detail}", status.as_u16());
            self.emit_auth(how, Some(&msg));
            if status.is_server_error() {
                return Err(SourceError::Transient(msg));
            }
            // 400/401/403/429: credentials refused or login throttled. Do
            // not try again before login_retry_interval.
            st.refused = Some((Instant::now(), msg.clone()));
            return Err(SourceError::Auth(msg));
        }
        let body = body.map_err(|e| {
            let msg = format!("POST {route}: {e}");
            self.emit_auth(how, Some(&msg));
            SourceError::Transient(msg)
        })?;
        let parsed: LoginResponse = serde_json::from_slice(&body).map_err(|e| {
            let msg = format!("POST {route}: unreadable login response: {e}");
            self.emit_auth(how, Some(&msg));
            SourceError::Malformed(msg)
        })?;
        let Some(token) = parsed.token.filter(|t| !t.is_empty()) else {
            let msg = format!("POST {route}: login response has no token");
            self.emit_auth(how, Some(&msg));
            return Err(SourceError::Malformed(msg));
        };
        let lifetime = self.lifetime_of(parsed.expiration.as_deref(), server_now);
        st.refused = None;
        st.generation += 1;
        st.live = Some(Live {
            token: token.clone(),
            renewed: Instant::now(),
            lifetime,
        });
        self.emit_auth(how, None);
        Ok(Token {
            value: token,
            generation: st.generation,
        })
    }

    async fn extend(&self, token: &str) -> Extend {
        let route = "/api/v2/user/extend-session";
        let resp = self
            .http
            .post(self.url(route))
            .header("Authorization", format!("VBrick {token}"))
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(_) => return Extend::Later,
        };
        let status = resp.status();
        let server_now = server_date(resp.headers());
        let body = read_body(resp, MAX_BODY_BYTES).await;
        if status.is_success() {
            let exp = body
                .ok()
                .and_then(|b| serde_json::from_slice::<ExtendResponse>(&b).ok())
                .and_then(|r| r.expiration);
            self.emit_auth("extend_session", None);
            return Extend::Extended(self.lifetime_of(exp.as_deref(), server_now));
        }
        let msg = format!("POST {route} answered {}", status.as_u16());
        self.emit_auth("extend_session", Some(&msg));
        if status.as_u16() == 401 || status.as_u16() == 400 {
            Extend::Refused
        } else {
            Extend::Later
        }
    }

    /// How long the session lasts from now: `expiration` less the later
    /// of our clock and the server's (its `Date` header), so a clock behind
    /// the server's never stretches the session (an early extension is
    /// harmless; a late one costs a 401 and a login).
    fn lifetime_of(&self, expiration: Option<&str>, server_now: Option<DateTime<Utc>>) -> Duration {
        let now = Utc::now();
        let now = server_now.map_or(now, |s| s.max(now));
        expiration
            .and_then(|e| DateTime::parse_from_rfc3339(e.trim()).ok())
            .map(|e| e.with_timezone(&Utc) - now)
            .and_then(|d| d.to_std().ok())
            // An expiration already past (a clock far off and no Date
            // header) must not make every call log in again: assume the
            // default and let a 401 tell.
            .filter(|d| !d.is_zero())
            .unwrap_or(self.default_lifetime)
    }

    fn emit_auth(&self, how: &str, failure: Option<&str>) {
        AuthCompleted {
            source: &self.source,
            tenant: &self.tenant,
            how,
            failure,
        }
        .emit();
    }
}

/// The response's `Date` header (HTTP-date, whole seconds).
fn server_date(headers: &reqwest::header::HeaderMap) -> Option<DateTime<Utc>> {
    let text = headers.get("date")?.to_str().ok()?;
    DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

enum Extend {
    Extended(Duration),
    Later,
    Refused,
}

/// `{"code","detail"}` error bodies, or short plain text.
pub fn error_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Err {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        detail: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Err>(body) {
        return match (e.code, e.detail) {
            (Some(c), Some(d)) => format!("{c}: {d}"),
            (Some(c), None) => c,
            (None, Some(d)) => d,
            (None, None) => String::new(),
        };
    }
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.len() > 200 {
        let mut cut = 200;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &t[..cut])
    } else {
        t.to_string()
    }
}
