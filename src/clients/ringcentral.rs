//! RingCentral platform client: JWT bearer grant with Basic client auth,
//! token reuse and refresh, per-group rate budgets learned from the
//! `X-Rate-Limit-*` headers, and the vendor's error model.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::Secret;
use crate::internal_events::{AuthCompleted, InternalEvent, SourceRequestCompleted};
use crate::model::StreamId;
use crate::net::http::{describe, header, header_u32, read_body, BodyError, MAX_BODY_BYTES};
use crate::net::rate::RateBudget;
use crate::util::{backoff_delay, parse_retry_after};

/// RingCentral's throttling groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    Light,
    Medium,
    Heavy,
    Auth,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Light => "light",
            Group::Medium => "medium",
            Group::Heavy => "heavy",
            Group::Auth => "auth",
        }
    }

    /// Documented defaults, used until the first response tells the truth.
    fn default_limit(self) -> u32 {
        match self {
            Group::Light => 50,
            Group::Medium => 40,
            Group::Heavy => 10,
            Group::Auth => 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RcError {
    #[error("{0}")]
    Auth(String),
    #[error("{method} {path} answered {status} {code}: {message}")]
    Rejected {
        method: String,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Malformed(String),
}

/// Credentials of one RingCentral app + user.
#[derive(Clone, Debug)]
pub struct RcCredentials {
    pub server: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub jwt: Secret,
}

/// Client tunables.
#[derive(Clone, Copy, Debug)]
pub struct RcOptions {
    pub request_timeout: Duration,
    /// Attempts per request for 5xx / timeouts / 429 before giving up.
    pub max_attempts: u32,
    /// Optional `access_token_ttl` asked of the token endpoint.
    pub access_token_ttl: Option<u64>,
}

impl Default for RcOptions {
    fn default() -> Self {
        RcOptions {
            request_timeout: Duration::from_secs(60),
            max_attempts: 8,
            access_token_ttl: None,
        }
    }
}

struct Token {
    access: Secret,
    expires_at: Instant,
    refresh: Option<(Secret, Instant)>,
}

pub struct RcClient {
    source: String,
    tenant: String,
    creds: RcCredentials,
    opts: RcOptions,
    http: reqwest::Client,
    token: Mutex<Option<Token>>,
    budgets: HashMap<Group, RateBudget>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    refresh_token_expires_in: Option<u64>,
}

/// Reads the vendor's error code and message: `errors[0]` first, then the
/// top level, then OAuth's `error`/`error_description`.
pub fn error_code(body: &Value) -> (String, String) {
    let first = body.get("errors").and_then(|e| e.get(0));
    let code = first
        .and_then(|e| e.get("errorCode"))
        .or_else(|| body.get("errorCode"))
        .or_else(|| body.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let message = first
        .and_then(|e| e.get("message"))
        .or_else(|| body.get("message"))
        .or_else(|| body.get("error_description"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (code, message)
}

impl RcClient {
    pub fn new(
        source: &str,
        tenant: &str,
        creds: RcCredentials,
        opts: RcOptions,
    ) -> Result<Self, RcError> {
        let http = crate::net::http::client(opts.request_timeout)
            .map_err(|e| RcError::Transient(format!("cannot build HTTP client: {e}")))?;
        let budgets = [Group::Light, Group::Medium, Group::Heavy, Group::Auth]
            .into_iter()
            .map(|g| {
                (
                    g,
                    RateBudget::new(
                        source,
                        tenant,
                        g.as_str(),
                        g.default_limit(),
                        Duration::from_secs(60),
                    ),
                )
            })
            .collect();
        Ok(RcClient {
            source: source.to_string(),
            tenant: tenant.to_string(),
            creds: RcCredentials {
                server: creds.server.trim_end_matches('/').to_string(),
                ..creds
            },
            opts,
            http,
            token: Mutex::new(None),
            budgets,
        })
    }

    pub fn server(&self) -> &str {
        &self.creds.server
    }

    pub fn budget(&self, g: Group) -> &RateBudget {
        // Every group is inserted in `new`.
        #[allow(clippy::expect_used)]
        self.budgets.get(&g).expect("all groups have a budget")
    }

    fn observe_rate(&self, fallback: Group, headers: &reqwest::header::HeaderMap) {
        let group = match header(headers, "x-rate-limit-group")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("light") => Group::Light,
            Some("medium") => Group::Medium,
            Some("heavy") => Group::Heavy,
            Some("auth") => Group::Auth,
            _ => fallback,
        };
        self.budget(group).observe(
            header_u32(headers, "x-rate-limit-limit"),
            header_u32(headers, "x-rate-limit-remaining"),
            header_u32(headers, "x-rate-limit-window").map(|s| Duration::from_secs(u64::from(s))),
        );
    }

    /// A valid access token: reused until shortly before expiry, then
    /// refreshed (refresh tokens are single-use), else a new JWT grant.
    pub async fn access_token(&self) -> Result<Secret, RcError> {
        let mut guard = self.token.lock().await;
        let now = Instant::now();
        if let Some(t) = guard.as_ref() {
            if t.expires_at > now {
                return Ok(t.access.clone());
            }
        }
        let refresh = guard
            .take()
            .and_then(|t| t.refresh)
            .filter(|(_, exp)| *exp > now)
            .map(|(r, _)| r);
        if let Some(r) = refresh {
            match self
                .token_request(
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", r.expose()),
                    ],
                    "refresh",
                )
                .await
            {
                Ok(t) => {
                    let access = t.access.clone();
                    *guard = Some(t);
                    return Ok(access);
                }
                Err(RcError::Transient(e)) => return Err(RcError::Transient(e)),
                Err(_) => {} // refresh token refused (revoked, used): fall back to a JWT grant
            }
        }
        let t = self
            .token_request(
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", self.creds.jwt.expose()),
                ],
                "jwt",
            )
            .await?;
        let access = t.access.clone();
        *guard = Some(t);
        Ok(access)
    }

    /// Forgets the access token (after a 401) so the next call re-authenticates.
    pub async fn invalidate(&self, rejected: &Secret) {
        let mut guard = self.token.lock().await;
        if guard.as_ref().is_some_and(|t| &t.access == rejected) {
            // Keep the refresh token: it may still be good.
            if let Some(t) = guard.as_mut() {
                t.expires_at = Instant::now();
            }
        }
    }

    async fn token_request(&self, form: &[(&str, &str)], how: &str) -> Result<Token, RcError> {
        let url = format!("{}/restapi/oauth/token", self.creds.server);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.creds.client_id,
            self.creds.client_secret.expose()
        ));
        let ttl = self.opts.access_token_ttl.map(|t| t.to_string());
        let mut attempts = Attempts::new(self.opts.max_attempts, Duration::from_secs(30));
        loop {
            self.budget(Group::Auth).acquire().await;
            let mut fields: Vec<(&str, &str)> = form.to_vec();
            if let Some(t) = &ttl {
                fields.push(("access_token_ttl", t));
            }
            let resp = self
                .http
                .post(&url)
                .header("Authorization", format!("Basic {basic}"))
                .form(&fields)
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    if is_certificate_error(&e) || !attempts.back_off().await {
                        return Err(RcError::Transient(format!(
                            "POST /restapi/oauth/token: {}",
                            describe(&e)
                        )));
                    }
                    continue;
                }
            };
            let status = resp.status();
            self.observe_rate(Group::Auth, resp.headers());
            let retry_after = parse_retry_after(header(resp.headers(), "retry-after"));
            let body = read_body(resp, 1024 * 1024)
                .await
                .map_err(|e| RcError::Transient(format!("POST /restapi/oauth/token: {e}")))?;
            if status.is_success() {
                let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                    RcError::Malformed(format!(
                        "POST /restapi/oauth/token: unreadable token response: {e}"
                    ))
                })?;
                let ttl = Duration::from_secs(t.expires_in.unwrap_or(3600));
                // Refresh a little before expiry rather than on a 401.
                let early = (ttl / 10).clamp(Duration::from_millis(200), Duration::from_secs(120));
                let now = Instant::now();
                AuthCompleted {
                    source: &self.source,
                    tenant: &self.tenant,
                    how,
                    failure: None,
                }
                .emit();
                return Ok(Token {
                    access: Secret::new(t.access_token),
                    expires_at: now + ttl.saturating_sub(early),
                    refresh: t.refresh_token.map(|r| {
                        let rttl =
                            Duration::from_secs(t.refresh_token_expires_in.unwrap_or(604_800));
                        (Secret::new(r), now + rttl.saturating_sub(early))
                    }),
                });
            }
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (code, message) = error_code(&json);
            if status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some())
            {
                self.budget(Group::Auth).penalize(retry_after);
                if !attempts.spend() {
                    return Err(RcError::Transient(format!(
                        "token endpoint rate-limited ({code})"
                    )));
                }
                continue;
            }
            if status.is_server_error() {
                if !attempts.back_off().await {
                    return Err(RcError::Transient(format!(
                        "token endpoint answered {status}"
                    )));
                }
                continue;
            }
            let reason = format!(
                "token endpoint refused the {how} grant: {} {code} {message}",
                status.as_u16()
            );
            AuthCompleted {
                source: &self.source,
                tenant: &self.tenant,
                how,
                failure: Some(&reason),
            }
            .emit();
            return Err(RcError::Auth(reason));
        }
    }

    /// Sends one API call within the group's budget. 401 → re-authenticate
    /// once and retry; 429 / 503+Retry-After → hold the whole group for
    /// Retry-After and retry; other 5xx and transport errors → backoff with
    /// jitter; 4xx → `Rejected` with the vendor's error code.
    pub async fn call(
        &self,
        group: Group,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        stream: Option<&StreamId>,
    ) -> Result<(StatusCode, Value), RcError> {
        let (status, bytes) = self
            .call_bytes(group, method.clone(), path, query, body, stream)
            .await?;
        if bytes.is_empty() {
            return Ok((status, Value::Null));
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok((status, v)),
            Err(e) => Err(RcError::Malformed(format!(
                "{method} {path}: response is not JSON: {e}"
            ))),
        }
    }

    /// As `call`, but a successful answer's body is returned unparsed, for
    /// callers that read it into their own types.
    pub async fn call_bytes(
        &self,
        group: Group,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        stream: Option<&StreamId>,
    ) -> Result<(StatusCode, Vec<u8>), RcError> {
        let url = format!("{}{}", self.creds.server, path);
        let mut attempts = Attempts::new(self.opts.max_attempts, Duration::from_secs(60));
        let mut reauthed = false;
        loop {
            let token = self.access_token().await?;
            self.budget(group).acquire().await;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.expose())
                .query(query);
            if let Some(b) = body {
                req = req.json(b);
            }
            let sent = Instant::now();
            let result = req.send().await;
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    if let Some(s) = stream {
                        SourceRequestCompleted {
                            stream: s,
                            status: 0,
                            elapsed: sent.elapsed(),
                        }
                        .emit();
                    }
                    if is_certificate_error(&e) || !attempts.back_off().await {
                        return Err(RcError::Transient(format!(
                            "{method} {path}: {}",
                            describe(&e)
                        )));
                    }
                    continue;
                }
            };
            let status = resp.status();
            if let Some(s) = stream {
                SourceRequestCompleted {
                    stream: s,
                    status: status.as_u16(),
                    elapsed: sent.elapsed(),
                }
                .emit();
            }
            self.observe_rate(group, resp.headers());
            let retry_after = parse_retry_after(header(resp.headers(), "retry-after"));
            let bytes = match read_body(resp, MAX_BODY_BYTES).await {
                Ok(b) => b,
                Err(e @ BodyError::TooLarge { .. }) => {
                    return Err(RcError::Malformed(format!("{method} {path}: {e}")))
                }
                // A body cut off mid-way: back off as for any transport
                // failure before asking again.
                Err(e) => {
                    if !attempts.back_off().await {
                        return Err(RcError::Transient(format!("{method} {path}: {e}")));
                    }
                    continue;
                }
            };
            if status.is_success() {
                return Ok((status, bytes));
            }
            // Error answers are small; a body that is not JSON has no code.
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, message) = error_code(&json);
            match status {
                StatusCode::UNAUTHORIZED if !reauthed => {
                    reauthed = true;
                    self.invalidate(&token).await;
                    continue;
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(RcError::Auth(format!(
                        "{method} {path} answered 401 {code} after re-authentication: {message}"
                    )))
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    self.budget(group).penalize(retry_after);
                }
                StatusCode::SERVICE_UNAVAILABLE if retry_after.is_some() => {
                    self.budget(group).penalize(retry_after);
                }
                s if s.is_server_error() => {
                    if attempts.back_off().await {
                        continue;
                    }
                    return Err(RcError::Transient(format!(
                        "{method} {path}: gave up after {} attempts, last {status} {code}",
                        attempts.made()
                    )));
                }
                _ => {
                    return Err(RcError::Rejected {
                        method: method.to_string(),
                        path: path.to_string(),
                        status: status.as_u16(),
                        code,
                        message,
                    })
                }
            }
            // Rate-limited: the group's budget already holds the wait.
            if !attempts.spend() {
                return Err(RcError::Transient(format!(
                    "{method} {path}: gave up after {} attempts, last {status} {code}",
                    attempts.made()
                )));
            }
        }
    }
}

/// The attempts of one logical request: how many failed so far, and the
/// jittered, growing wait before the next.
struct Attempts {
    failed: u32,
    max: u32,
    cap: Duration,
}

impl Attempts {
    fn new(max: u32, cap: Duration) -> Self {
        Attempts {
            failed: 0,
            max,
            cap,
        }
    }

    /// Counts a failed attempt; false once none is left.
    fn spend(&mut self) -> bool {
        self.failed += 1;
        self.failed < self.max
    }

    /// Counts a failed attempt and waits before the next; false (at once)
    /// once none is left.
    async fn back_off(&mut self) -> bool {
        if !self.spend() {
            return false;
        }
        tokio::time::sleep(backoff_delay(
            self.failed,
            Duration::from_millis(500),
            self.cap,
        ))
        .await;
        true
    }

    fn made(&self) -> u32 {
        self.failed
    }
}

/// The server's TLS certificate was not trusted: retrying cannot help
/// (configure the CA instead), so the request fails at once.
fn is_certificate_error(e: &reqwest::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        if c.to_string().contains("certificate") {
            return true;
        }
        src = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn attempts_count_to_the_limit_and_wait_between() {
        let mut a = Attempts::new(3, Duration::from_secs(30));
        let t0 = tokio::time::Instant::now();
        assert!(a.back_off().await, "first failure: one more try");
        assert!(t0.elapsed() > Duration::ZERO, "a wait before it");
        assert!(a.spend(), "second failure: one more try");
        let t1 = tokio::time::Instant::now();
        assert!(!a.back_off().await, "third failure of three: give up");
        assert_eq!(t1.elapsed(), Duration::ZERO, "no wait when giving up");
        assert_eq!(a.made(), 3);
    }

    #[test]
    fn error_code_prefers_errors_array() {
        let b: Value = serde_json::json!({"errorCode":"TOP","message":"top","errors":[{"errorCode":"CMN-301","message":"Request rate exceeded"}]});
        assert_eq!(
            error_code(&b),
            ("CMN-301".into(), "Request rate exceeded".into())
        );
        let o: Value = serde_json::json!({"error":"invalid_grant","error_description":"bad"});
        assert_eq!(error_code(&o), ("invalid_grant".into(), "bad".into()));
    }
}
