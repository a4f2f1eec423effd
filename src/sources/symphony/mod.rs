//! Symphony privileged-user audit trail source (`kind = "symphony"`).
//!
//! One stream per pod: `GET {agent_url}/agent/v1/audittrail/privilegeduser`
//! over closed windows of at most 30 days (the API's limit; the planner is
//! told a little less, and a longer window is split here rather than ever
//! sent), walking `after` cursors until none comes back. Each page's cursor
//! is committed with the page, so a restart resumes inside the window.
//! Items come newest first, so the stream worker moves the watermark only
//! when a window is complete.
//!
//! Authentication is RSA: see `auth`. Items become `AuditEvent`s in
//! `normalize`.

mod auth;
mod http;
pub mod normalize;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use jsonwebtoken::EncodingKey;
use serde::Deserialize;
use serde_json::Value;

use self::auth::{sign_jwt, Auth};
use self::http::{Http, Reply, RetryPolicy};
use crate::config::{parse_settings, resolve_secret, ConfigIssue, SecretRef, SourceEntry};
use crate::internal_events::{InternalEvent, SourceWindowTooLarge};
use crate::journal::RejectedRecord;
use crate::model::StreamId;
use crate::sources::{Page, Source, SourceError, StreamLimits, StreamSource, Window};
use crate::util::HumanDuration;

pub use self::auth::sign_jwt as sign_authentication_jwt;

/// The route, relative to `agent_url`.
pub const AUDIT_PATH: &str = "/agent/v1/audittrail/privilegeduser";
/// The API's own limit on one request's window.
pub const API_MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// What one request ever asks for: the API's limit less an hour, so clock
/// or rounding differences never meet the 30-day 400.
pub const REQUEST_MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400 - 3_600);
/// Roles the API's `role` filter accepts.
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
/// The longest JWT lifetime the pod accepts.
const MAX_JWT_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Pod base URL; login at `{pod_url}/login/pubkey/authenticate`.
    pod_url: String,
    /// Agent base URL (default: pod_url); the audit route is under `/agent`.
    #[serde(default)]
    agent_url: Option<String>,
    /// Key manager base URL (default: pod_url); used when use_key_manager.
    #[serde(default)]
    key_manager_url: Option<String>,
    #[serde(default)]
    use_key_manager: bool,
    /// The service account's username (the JWT's `sub`).
    username: String,
    /// Its RSA private key, PEM (PKCS#1 or PKCS#8).
    private_key: SecretRef,
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    initiator_id: Option<u64>,
    #[serde(default = "default_timeout")]
    request_timeout: HumanDuration,
    #[serde(default = "default_jwt_lifetime")]
    jwt_lifetime: HumanDuration,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    #[serde(default = "default_retry_base")]
    retry_base: HumanDuration,
    #[serde(default = "default_retry_max")]
    retry_max: HumanDuration,
}

fn default_limit() -> u32 {
    500
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_jwt_lifetime() -> HumanDuration {
    HumanDuration(Duration::from_secs(240))
}
fn default_attempts() -> u32 {
    6
}
fn default_retry_base() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_retry_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// A base URL without its trailing slash; None (with an issue) if unusable.
fn base_url(path: &str, text: &str, issues: &mut Vec<ConfigIssue>) -> Option<String> {
    match reqwest::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if u.query().is_some() {
                issues.push(ConfigIssue::new(path, "must not contain a query string"));
                return None;
            }
            Some(text.trim_end_matches('/').to_string())
        }
        Ok(_) => {
            issues.push(ConfigIssue::new(
                path,
                format!("`{text}` must be an http(s) URL like https://acme.symphony.com"),
            ));
            None
        }
        Err(e) => {
            issues.push(ConfigIssue::new(
                path,
                format!("`{text}` is not a URL: {e}"),
            ));
            None
        }
    }
}

/// Parses the private key PEM and proves it can sign. PEM kept in an
/// environment variable with literal `\n` is accepted too.
fn load_key(path: &str, pem: &str, issues: &mut Vec<ConfigIssue>) -> Option<EncodingKey> {
    let text = if !pem.contains('\n') && pem.contains("\\n") {
        pem.replace("\\n", "\n")
    } else {
        pem.to_string()
    };
    let key = match EncodingKey::from_rsa_pem(text.trim().as_bytes()) {
        Ok(k) => k,
        Err(e) => {
            issues.push(ConfigIssue::new(
                path,
                format!(
                    "not an RSA private key in PEM form (expected `-----BEGIN RSA PRIVATE KEY-----` \
                     (PKCS#1) or `-----BEGIN PRIVATE KEY-----` (PKCS#8)): {e}"
                ),
            ));
            return None;
        }
    };
    // The PEM parsed; prove the key really signs (a truncated key parses).
    if let Err(e) = sign_jwt(&key, "check", Duration::from_secs(60)) {
        issues.push(ConfigIssue::new(path, e));
        return None;
    }
    Some(key)
}

pub fn build(entry: &SourceEntry, issues: &mut Vec<ConfigIssue>) -> Option<Arc<dyn Source>> {
    let p = |k: &str| format!("{}.{k}", entry.path);
    let s: Settings = parse_settings(&entry.path, &entry.settings, issues)?;
    let before = issues.len();
    let pod = base_url(&p("pod_url"), &s.pod_url, issues);
    let agent = match &s.agent_url {
        Some(a) => base_url(&p("agent_url"), a, issues),
        None => pod.clone(),
    };
    let km = match (&s.key_manager_url, s.use_key_manager) {
        (Some(k), true) => base_url(&p("key_manager_url"), k, issues),
        (None, true) => pod.clone(),
        (Some(_), false) => {
            issues.push(ConfigIssue::new(
                p("key_manager_url"),
                "set, but use_key_manager is false (set use_key_manager = true or remove it)",
            ));
            None
        }
        (None, false) => None,
    };
    if s.username.trim().is_empty() {
        issues.push(ConfigIssue::new(p("username"), "must not be empty"));
    }
    if !(50..=500).contains(&s.limit) {
        issues.push(ConfigIssue::new(
            p("limit"),
            format!(
                "{} is outside 50-500: the API returns no paging cursor on pages under 50 items, \
                 and 500 is its maximum",
                s.limit
            ),
        ));
    }
    if let Some(r) = &s.role {
        if !ROLES.contains(&r.as_str()) {
            issues.push(ConfigIssue::new(
                p("role"),
                format!(
                    "`{r}` is not a privileged role (one of: {})",
                    ROLES.join(", ")
                ),
            ));
        }
    }
    let lifetime = s.jwt_lifetime.0;
    if lifetime < Duration::from_secs(10) || lifetime > MAX_JWT_LIFETIME {
        issues.push(ConfigIssue::new(
            p("jwt_lifetime"),
            "must be between 10s and 5m (the pod refuses a JWT expiring more than 5 minutes ahead)",
        ));
    }
    if s.max_attempts == 0 {
        issues.push(ConfigIssue::new(p("max_attempts"), "must be at least 1"));
    }
    if s.request_timeout.0.is_zero() {
        issues.push(ConfigIssue::new(p("request_timeout"), "must be above zero"));
    }
    let key = resolve_secret(&p("private_key"), &s.private_key, issues)
        .and_then(|pem| load_key(&p("private_key"), pem.expose(), issues));
    let client = match crate::net::http::client(s.request_timeout.0) {
        Ok(c) => Some(c),
        Err(e) => {
            issues.push(ConfigIssue::new(
                entry.path.clone(),
                format!("cannot build the HTTP client: {e}"),
            ));
            None
        }
    };
    if issues.len() > before {
        return None;
    }
    let (pod, agent, key, client) = (pod?, agent?, key?, client?);
    let id = StreamId::new(normalize::SOURCE, &entry.name, normalize::STREAM);
    let http = Arc::new(Http {
        client,
        stream: id.clone(),
        retry: RetryPolicy {
            max_attempts: s.max_attempts,
            base: s.retry_base.0,
            max: s.retry_max.0.max(s.retry_base.0),
        },
    });
    let auth = Auth::new(
        http.clone(),
        pod.clone(),
        km,
        s.username.clone(),
        key,
        lifetime,
    );
    let stream = Arc::new(SymphonyStream {
        id,
        http,
        auth,
        agent_url: agent,
        limit: s.limit,
        role: s.role,
        initiator_id: s.initiator_id,
    });
    Some(Arc::new(SymphonySource {
        name: entry.name.clone(),
        pod_url: pod,
        stream,
    }))
}

pub struct SymphonySource {
    name: String,
    pod_url: String,
    stream: Arc<SymphonyStream>,
}

#[async_trait]
impl Source for SymphonySource {
    fn kind(&self) -> &'static str {
        normalize::SOURCE
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn streams(&self) -> Vec<Arc<dyn StreamSource>> {
        vec![self.stream.clone()]
    }

    async fn check_connection(&self) -> Result<String, SourceError> {
        let now = Utc::now();
        let window = Window {
            from: now - chrono::Duration::hours(1),
            to: now,
        };
        let page = self.stream.fetch_page(&window, None).await?;
        Ok(format!(
            "authenticated to {} as `{}`; audit trail at {}{} answered ({} records in the last hour{})",
            self.pod_url,
            self.stream.auth.username,
            self.stream.agent_url,
            AUDIT_PATH,
            page.events.len() + page.rejected.len(),
            if page.next.is_some() { " on the first page" } else { "" },
        ))
    }
}

pub struct SymphonyStream {
    id: StreamId,
    http: Arc<Http>,
    auth: Auth,
    agent_url: String,
    limit: u32,
    role: Option<String>,
    initiator_id: Option<u64>,
}

/// Where inside a window a cursor points: which ≤ 30-day segment, and the
/// vendor's `after` cursor in it. A window that fits one request (always,
/// with the planner) uses the vendor cursor verbatim; a longer one is split
/// and its cursors read `seg:<index>:<vendor cursor>`.
#[derive(Debug, PartialEq, Eq)]
struct Position {
    segment: u32,
    after: Option<String>,
}

fn segments(window: &Window) -> u32 {
    let len = (window.to - window.from).num_milliseconds().max(0) as u128;
    let max = REQUEST_MAX_WINDOW.as_millis();
    (len.div_ceil(max).max(1)) as u32
}

fn parse_cursor(cursor: Option<&str>, split: bool) -> Result<Position, SourceError> {
    match cursor {
        None => Ok(Position {
            segment: 0,
            after: None,
        }),
        Some(c) if split => {
            let rest = c.strip_prefix("seg:").ok_or_else(|| {
                SourceError::Malformed(format!("cursor `{c}` lacks the segment of a split window"))
            })?;
            let (seg, after) = rest.split_once(':').ok_or_else(|| {
                SourceError::Malformed(format!("cursor `{c}` is not `seg:<n>:<cursor>`"))
            })?;
            let segment = seg
                .parse()
                .map_err(|_| SourceError::Malformed(format!("cursor `{c}`: bad segment")))?;
            Ok(Position {
                segment,
                after: (!after.is_empty()).then(|| after.to_string()),
            })
        }
        Some(c) => Ok(Position {
            segment: 0,
            after: Some(c.to_string()),
        }),
    }
}

fn format_cursor(pos: &Position, split: bool) -> String {
    if split {
        format!("seg:{}:{}", pos.segment, pos.after.as_deref().unwrap_or(""))
    } else {
        pos.after.clone().unwrap_or_default()
    }
}

/// The `[start, end]` in ms of segment `i` of `window`.
fn segment_bounds(window: &Window, i: u32) -> (i64, i64) {
    let from = window.from.timestamp_millis();
    let to = window.to.timestamp_millis();
    let max = REQUEST_MAX_WINDOW.as_millis() as i64;
    let start = from + i64::from(i) * max;
    (start, (start + max).min(to))
}

fn is_window_too_large(reply: &Reply) -> bool {
    String::from_utf8_lossy(&reply.body).contains("30 days")
}

impl SymphonyStream {
    async fn get_page(
        &self,
        start: i64,
        end: i64,
        after: Option<&str>,
    ) -> Result<Option<Value>, SourceError> {
        let what = format!("GET {AUDIT_PATH}");
        let url = format!("{}{AUDIT_PATH}", self.agent_url);
        let mut query: Vec<(&str, String)> = vec![
            ("startTimestamp", start.to_string()),
            ("endTimestamp", end.to_string()),
            ("limit", self.limit.to_string()),
        ];
        if let Some(r) = &self.role {
            query.push(("role", r.clone()));
        }
        if let Some(i) = self.initiator_id {
            query.push(("initiatorId", i.to_string()));
        }
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        // One re-authentication per request: a 401 with fresh tokens is a
        // real refusal, not an expired session.
        for fresh_login in [false, true] {
            let tokens = self.auth.tokens().await?;
            let reply = self
                .http
                .send(&what, || {
                    let mut req = self
                        .http
                        .client
                        .get(&url)
                        .query(&query)
                        .header("sessionToken", &tokens.session);
                    if let Some(km) = &tokens.key_manager {
                        req = req.header("keyManagerToken", km);
                    }
                    Ok(req)
                })
                .await?;
            match reply.status {
                200 => {
                    return serde_json::from_slice::<Value>(&reply.body)
                        .map(Some)
                        .map_err(|e| SourceError::Malformed(format!("{what}: body is not JSON: {e}")))
                }
                204 => return Ok(None),
                401 if !fresh_login => {
                    // Session expired (or revoked): log in again, once.
                    self.auth.invalidate(tokens.generation).await;
                }
                401 => {
                    return Err(SourceError::Auth(format!(
                        "{what}: the Agent refused a freshly issued session token (401: {}){}",
                        reply.message(),
                        if self.auth.key_manager_url.is_none() {
                            "; if the Agent needs a key manager token, set use_key_manager = true"
                        } else {
                            ""
                        }
                    )))
                }
                400 if is_window_too_large(&reply) => {
                    return Err(SourceError::WindowTooLarge(format!(
                        "{what} startTimestamp={start} endTimestamp={end}: {}",
                        reply.message()
                    )))
                }
                403 => {
                    return Err(SourceError::Rejected(format!(
                        "{what}: 403 {}: the service account `{}` needs the Audit Trail Management role",
                        reply.message(),
                        self.auth.username
                    )))
                }
                s => {
                    return Err(SourceError::Rejected(format!(
                        "{what} startTimestamp={start} endTimestamp={end}: {s} {}",
                        reply.message()
                    )))
                }
            }
        }
        // Both turns of the loop return or continue into the second.
        Err(SourceError::Auth(format!(
            "{what}: still unauthorized after logging in again"
        )))
    }
}

#[async_trait]
impl StreamSource for SymphonyStream {
    fn id(&self) -> &StreamId {
        &self.id
    }

    fn limits(&self) -> StreamLimits {
        StreamLimits {
            max_window: REQUEST_MAX_WINDOW,
            // Vendor-defined and not published: unknown.
            horizon: None,
            record_cap: None,
        }
    }

    async fn fetch_page(&self, window: &Window, cursor: Option<&str>) -> Result<Page, SourceError> {
        let segs = segments(window);
        let split = segs > 1;
        let pos = parse_cursor(cursor, split)?;
        if pos.segment >= segs {
            return Err(SourceError::Malformed(format!(
                "cursor names segment {} of a window with {segs}",
                pos.segment
            )));
        }
        let (start, end) = segment_bounds(window, pos.segment);
        debug_assert!(end - start <= REQUEST_MAX_WINDOW.as_millis() as i64);
        let body = match self.get_page(start, end, pos.after.as_deref()).await {
            Err(SourceError::WindowTooLarge(msg)) => {
                SourceWindowTooLarge {
                    stream: &self.id,
                    from: window.from,
                    to: window.to,
                    message: &msg,
                }
                .emit();
                return Err(SourceError::WindowTooLarge(msg));
            }
            other => other?,
        };
        let mut page = Page::default();
        let mut vendor_after = None;
        if let Some(body) = body {
            let items = match body.get("items") {
                Some(Value::Array(a)) => a.as_slice(),
                None | Some(Value::Null) => &[],
                Some(_) => {
                    return Err(SourceError::Malformed(format!(
                        "GET {AUDIT_PATH}: `items` is not a list"
                    )))
                }
            };
            let now = Utc::now();
            for (i, item) in items.iter().enumerate() {
                match normalize::normalize(&self.id.tenant, item, now) {
                    Ok(e) => page.events.push(e),
                    Err(reason) => page.rejected.push(RejectedRecord {
                        location: format!(
                            "GET {AUDIT_PATH} startTimestamp={start} endTimestamp={end} after={} item {i}",
                            pos.after.as_deref().unwrap_or("-")
                        ),
                        reason,
                        raw: item.to_string(),
                    }),
                }
            }
            vendor_after = body
                .pointer("/pagination/cursors/after")
                .and_then(|v| match v {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
            if vendor_after.is_some() && vendor_after == pos.after {
                return Err(SourceError::Malformed(format!(
                    "GET {AUDIT_PATH}: the `after` cursor did not advance (still {})",
                    pos.after.as_deref().unwrap_or("")
                )));
            }
        }
        page.next = match vendor_after {
            Some(a) => Some(format_cursor(
                &Position {
                    segment: pos.segment,
                    after: Some(a),
                },
                split,
            )),
            None if pos.segment + 1 < segs => Some(format_cursor(
                &Position {
                    segment: pos.segment + 1,
                    after: None,
                },
                split,
            )),
            None => None,
        };
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: i64) -> Window {
        let to = Utc::now();
        Window {
            from: to - chrono::Duration::days(days),
            to,
        }
    }

    #[test]
    fn short_windows_use_vendor_cursors_verbatim() {
        let w = window(29);
        assert_eq!(segments(&w), 1);
        let p = parse_cursor(Some("17"), false).expect("cursor");
        assert_eq!(p.after.as_deref(), Some("17"));
        assert_eq!(format_cursor(&p, false), "17");
    }

    #[test]
    fn long_windows_are_split_never_sent_whole() {
        let w = window(95);
        let n = segments(&w);
        assert_eq!(n, 4);
        let mut covered = w.from.timestamp_millis();
        for i in 0..n {
            let (s, e) = segment_bounds(&w, i);
            assert_eq!(s, covered);
            assert!(e - s <= REQUEST_MAX_WINDOW.as_millis() as i64);
            assert!(e - s < API_MAX_WINDOW.as_millis() as i64);
            covered = e;
        }
        assert_eq!(covered, w.to.timestamp_millis());
        let p = Position {
            segment: 2,
            after: Some("500".into()),
        };
        assert_eq!(
            parse_cursor(Some(&format_cursor(&p, true)), true).expect("c"),
            p
        );
        let start = Position {
            segment: 1,
            after: None,
        };
        assert_eq!(
            parse_cursor(Some(&format_cursor(&start, true)), true).expect("c"),
            start
        );
    }
}
