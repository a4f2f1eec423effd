//! Vbrick Rev audit source (`kind = "vbrick"`).
//!
//! One `Source` per configured Rev account. Its streams: one per audit
//! collection (`userAccess`, `users`, `groups`, `devices`, `videos`,
//! `scheduledEvents`) plus one per watched principal (`principals/<id>`).
//! All streams share one session and one rate budget per endpoint.
//!
//! Paging is Vbrick's own: `GET .../{collection}?fromDate&toDate` answers
//! at most 100 CSV rows; when more remain the response carries
//! `totalRecords`, `nextFromDate` and `nextContinuationToken`, and the next
//! call keeps `toDate`, sends `fromDate=<nextFromDate>` and the token. The
//! continuation is the page cursor the stream worker saves with each page,
//! so a restart resumes mid-window.

mod rows;
mod session;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{parse_settings, resolve_secret, ConfigIssue, SecretRef, SourceEntry};
use crate::internal_events::{
    InternalEvent, SourceCursorRestarted, SourceRequestCompleted, SourceRequestRetrying,
};
use crate::model::StreamId;
use crate::net::http::{describe, header, read_body, MAX_BODY_BYTES};
use crate::net::rate::RateBudget;
use crate::sources::{Page, Source, SourceError, StreamLimits, StreamSource, Window};
use crate::util::{backoff_delay, parse_retry_after, rfc3339_ms, HumanDuration};

pub use rows::{parse_body, parse_when, PageContext, ParsedPage, HEADER};
pub use session::Credentials;

pub const KIND: &str = "vbrick";

/// The audit collections, as their URL path segment.
pub const COLLECTIONS: [&str; 6] = [
    "userAccess",
    "users",
    "groups",
    "devices",
    "videos",
    "scheduledEvents",
];

/// Longest window one walk covers. Rev takes any range; a day keeps a
/// window's page walk (and a restart's re-read) short.
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Base URL of the Rev tenant, e.g. `https://acme.rev.vbrick.com`.
    url: String,
    /// The Rev AccountId (Admin > Account Settings).
    account_id: String,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    secret: Option<SecretRef>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<SecretRef>,
    #[serde(default = "default_collections")]
    collections: Vec<String>,
    #[serde(default)]
    principals: Vec<String>,
    /// Requests per `rate_window` per audit endpoint.
    #[serde(default = "default_rate_limit")]
    rate_limit: u32,
    #[serde(default = "default_rate_window")]
    rate_window: HumanDuration,
    #[serde(default = "default_timeout")]
    request_timeout: HumanDuration,
    /// Session length assumed when a login does not say (`expiration`).
    #[serde(default = "default_session_timeout")]
    session_timeout: HumanDuration,
    /// After a refused login, how long before the next attempt.
    #[serde(default = "default_login_retry")]
    login_retry_interval: HumanDuration,
    /// Attempts per page on 429 / 5xx / transport errors before the stream
    /// backs off.
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
}

fn default_collections() -> Vec<String> {
    COLLECTIONS.iter().map(|c| c.to_string()).collect()
}
fn default_rate_limit() -> u32 {
    60
}
fn default_rate_window() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_session_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_login_retry() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_max_attempts() -> u32 {
    8
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Builds the source from its `[[sources]]` entry.
pub fn build(entry: &SourceEntry, issues: &mut Vec<ConfigIssue>) -> Option<Arc<dyn Source>> {
    let p = &entry.path;
    let s: Settings = parse_settings(p, &entry.settings, issues)?;
    let before = issues.len();
    let base = match reqwest::Url::parse(s.url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        _ => {
            issues.push(ConfigIssue::new(
                format!("{p}.url"),
                format!("`{}` is not an http(s) URL", s.url),
            ));
            None
        }
    };
    if !valid_id(&s.account_id) {
        issues.push(ConfigIssue::new(
            format!("{p}.account_id"),
            "must be the Rev AccountId (a GUID: letters, digits and `-`)",
        ));
    }
    let creds = match (&s.api_key, &s.secret, &s.username, &s.password) {
        (Some(k), Some(sec), None, None) => {
            if k.trim().is_empty() {
                issues.push(ConfigIssue::new(
                    format!("{p}.api_key"),
                    "must not be empty",
                ));
            }
            resolve_secret(&format!("{p}.secret"), sec, issues).map(|secret| Credentials::ApiKey {
                api_key: k.trim().to_string(),
                secret,
            })
        }
        (None, None, Some(u), Some(pw)) => {
            if u.trim().is_empty() {
                issues.push(ConfigIssue::new(
                    format!("{p}.username"),
                    "must not be empty",
                ));
            }
            resolve_secret(&format!("{p}.password"), pw, issues).map(|password| Credentials::User {
                username: u.trim().to_string(),
                password,
            })
        }
        (Some(_), None, _, _) => {
            issues.push(ConfigIssue::new(
                format!("{p}.secret"),
                "missing (api_key needs secret = { env = \"...\" } or { file = \"...\" })",
            ));
            None
        }
        (None, Some(_), _, _) => {
            issues.push(ConfigIssue::new(
                format!("{p}.api_key"),
                "missing (secret is given without api_key)",
            ));
            None
        }
        (None, None, Some(_), None) => {
            issues.push(ConfigIssue::new(
                format!("{p}.password"),
                "missing (username needs password = { env = \"...\" } or { file = \"...\" })",
            ));
            None
        }
        (None, None, None, Some(_)) => {
            issues.push(ConfigIssue::new(
                format!("{p}.username"),
                "missing (password is given without username)",
            ));
            None
        }
        (None, None, None, None) => {
            issues.push(ConfigIssue::new(
                p.clone(),
                "credentials missing: give api_key + secret, or username + password",
            ));
            None
        }
        _ => {
            issues.push(ConfigIssue::new(
                p.clone(),
                "give either api_key + secret or username + password, not both",
            ));
            None
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in s.collections.iter().enumerate() {
        if !COLLECTIONS.contains(&c.as_str()) {
            issues.push(ConfigIssue::new(
                format!("{p}.collections[{i}]"),
                format!(
                    "unknown collection `{c}` (expected one of: {})",
                    COLLECTIONS.join(", ")
                ),
            ));
        } else if !seen.insert(c.clone()) {
            issues.push(ConfigIssue::new(
                format!("{p}.collections[{i}]"),
                format!("`{c}` is listed twice"),
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, id) in s.principals.iter().enumerate() {
        if !valid_id(id) {
            issues.push(ConfigIssue::new(
                format!("{p}.principals[{i}]"),
                format!("`{id}` is not a principal id (letters, digits, `-`, `_`; at most 64)"),
            ));
        } else if !seen.insert(id.clone()) {
            issues.push(ConfigIssue::new(
                format!("{p}.principals[{i}]"),
                format!("`{id}` is listed twice"),
            ));
        }
    }
    if s.collections.is_empty() && s.principals.is_empty() {
        issues.push(ConfigIssue::new(
            format!("{p}.collections"),
            "no streams: give at least one collection or principal",
        ));
    }
    if s.rate_limit == 0 {
        issues.push(ConfigIssue::new(
            format!("{p}.rate_limit"),
            "must be at least 1",
        ));
    }
    if s.rate_window.0.is_zero() {
        issues.push(ConfigIssue::new(
            format!("{p}.rate_window"),
            "must be above zero",
        ));
    }
    if s.max_attempts == 0 {
        issues.push(ConfigIssue::new(
            format!("{p}.max_attempts"),
            "must be at least 1",
        ));
    }
    if s.request_timeout.0.is_zero() {
        issues.push(ConfigIssue::new(
            format!("{p}.request_timeout"),
            "must be above zero",
        ));
    }
    let http = match crate::net::http::client(s.request_timeout.0) {
        Ok(c) => Some(c),
        Err(e) => {
            issues.push(ConfigIssue::new(
                p.clone(),
                format!("cannot build the HTTP client: {e}"),
            ));
            None
        }
    };
    if issues.len() > before {
        return None;
    }
    let (base, creds, http) = (base?, creds?, http?);
    Some(Arc::new(VbrickSource::new(
        &entry.name,
        base,
        http,
        creds,
        Options {
            account_id: s.account_id,
            collections: s.collections,
            principals: s.principals,
            rate_limit: s.rate_limit,
            rate_window: s.rate_window.0,
            session_timeout: s.session_timeout.0,
            login_retry_interval: s.login_retry_interval.0,
            max_attempts: s.max_attempts,
        },
    )))
}

/// Everything but the endpoint and credentials.
pub struct Options {
    pub account_id: String,
    pub collections: Vec<String>,
    pub principals: Vec<String>,
    pub rate_limit: u32,
    pub rate_window: Duration,
    pub session_timeout: Duration,
    pub login_retry_interval: Duration,
    pub max_attempts: u32,
}

struct Shared {
    tenant: String,
    base: reqwest::Url,
    account_id: String,
    http: reqwest::Client,
    session: session::Session,
    max_attempts: u32,
}

pub struct VbrickSource {
    shared: Arc<Shared>,
    streams: Vec<Arc<dyn StreamSource>>,
}

impl VbrickSource {
    pub fn new(
        name: &str,
        base: reqwest::Url,
        http: reqwest::Client,
        creds: Credentials,
        opts: Options,
    ) -> Self {
        let session = session::Session::new(
            KIND,
            name,
            base.clone(),
            http.clone(),
            creds,
            opts.session_timeout,
            opts.login_retry_interval,
        );
        let shared = Arc::new(Shared {
            tenant: name.to_string(),
            base,
            account_id: opts.account_id.clone(),
            http,
            session,
            max_attempts: opts.max_attempts.max(1),
        });
        // One budget per endpoint: each collection route, and the
        // principals route shared by every watched principal.
        let mut budgets: BTreeMap<String, Arc<RateBudget>> = BTreeMap::new();
        let mut budget = |endpoint: &str| {
            budgets
                .entry(endpoint.to_string())
                .or_insert_with(|| {
                    Arc::new(RateBudget::new(
                        KIND,
                        name,
                        endpoint,
                        opts.rate_limit,
                        opts.rate_window,
                    ))
                })
                .clone()
        };
        let mut streams: Vec<Arc<dyn StreamSource>> = Vec::new();
        for c in &opts.collections {
            streams.push(Arc::new(VbrickStream {
                id: StreamId::new(KIND, name, c),
                segments: vec![c.clone()],
                budget: budget(c),
                shared: shared.clone(),
            }));
        }
        for p in &opts.principals {
            streams.push(Arc::new(VbrickStream {
                id: StreamId::new(KIND, name, &format!("principals/{p}")),
                segments: vec!["principals".into(), p.clone()],
                budget: budget("principals"),
                shared: shared.clone(),
            }));
        }
        VbrickSource { shared, streams }
    }
}

#[async_trait]
impl Source for VbrickSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn name(&self) -> &str {
        &self.shared.tenant
    }

    fn streams(&self) -> Vec<Arc<dyn StreamSource>> {
        self.streams.clone()
    }

    async fn check_connection(&self) -> Result<String, SourceError> {
        let left = self.shared.session.login_now().await?;
        // One small audit read proves the account is an Account Admin and
        // the Audit Service is on.
        let to = chrono::Utc::now();
        let window = Window {
            from: to - chrono::Duration::minutes(1),
            to,
        };
        let stream = VbrickStream {
            id: StreamId::new(KIND, &self.shared.tenant, "userAccess"),
            segments: vec!["userAccess".into()],
            budget: Arc::new(RateBudget::new(
                KIND,
                &self.shared.tenant,
                "check",
                1,
                Duration::from_secs(1),
            )),
            shared: self.shared.clone(),
        };
        stream.fetch_page(&window, None).await?;
        Ok(format!(
            "Rev {} account {}: logged in (session good for {}s), audit API readable",
            self.shared.base,
            self.shared.account_id,
            left.as_secs()
        ))
    }
}

/// The continuation saved with each page: opaque to the pipeline.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Cursor {
    /// 1-based number of the page this cursor fetches.
    page: u32,
    /// `nextFromDate`, verbatim as the server sent it.
    from: String,
    /// `nextContinuationToken`; empty after the server refused a stale one.
    #[serde(default)]
    token: String,
}

pub struct VbrickStream {
    id: StreamId,
    /// Path segments after `/network/audit/accounts/{accountId}/`.
    segments: Vec<String>,
    budget: Arc<RateBudget>,
    shared: Arc<Shared>,
}

enum Outcome {
    Page(Page),
    /// Try again right away (after a re-login or a stale-token fallback).
    Again,
    /// Try again after this long (`Duration::MAX`: give up now); the
    /// HTTP status (0 = none).
    Wait(Duration, SourceError, u16),
}

impl VbrickStream {
    fn url(&self) -> reqwest::Url {
        let mut u = self.shared.base.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty();
            segs.extend(["network", "audit", "accounts", &self.shared.account_id]);
            segs.extend(self.segments.iter());
        }
        u
    }

    fn path_for_errors(&self) -> String {
        format!("/network/audit/accounts/…/{}", self.segments.join("/"))
    }

    fn emit_request(&self, status: u16, started: Instant) {
        SourceRequestCompleted {
            stream: &self.id,
            status,
            elapsed: started.elapsed(),
        }
        .emit();
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        window: &Window,
        cursor: &mut Cursor,
        to: &str,
        relogged: &mut bool,
        attempt: u32,
    ) -> Outcome {
        let path = self.path_for_errors();
        let token = match self.shared.session.token().await {
            Ok(t) => t,
            Err(e @ SourceError::Transient(_)) => {
                return Outcome::Wait(
                    backoff_delay(attempt, Duration::from_millis(500), Duration::from_secs(10)),
                    e,
                    0,
                )
            }
            Err(e) => return Outcome::Wait(Duration::MAX, e, 0),
        };
        self.budget.acquire().await;
        let mut query: Vec<(&str, &str)> = vec![("fromDate", &cursor.from), ("toDate", to)];
        if !cursor.token.is_empty() {
            query.push(("nextContinuationToken", &cursor.token));
        }
        let started = Instant::now();
        let resp = self
            .shared
            .http
            .get(self.url())
            .query(&query)
            .header("Authorization", format!("VBrick {}", token.value))
            .header("Accept", "text/csv")
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                self.emit_request(0, started);
                return Outcome::Wait(
                    backoff_delay(attempt, Duration::from_millis(500), Duration::from_secs(10)),
                    SourceError::Transient(format!("GET {path}: {}", describe(&e))),
                    0,
                );
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_body(resp, MAX_BODY_BYTES).await;
        self.emit_request(status, started);
        match status {
            200 => {}
            401 => {
                self.shared.session.invalidate(token.generation).await;
                if *relogged {
                    return Outcome::Wait(
                        Duration::MAX,
                        SourceError::Auth(format!(
                            "GET {path} answered 401 again right after a new login"
                        )),
                        401,
                    );
                }
                *relogged = true;
                return Outcome::Again;
            }
            429 => {
                let retry_after = parse_retry_after(header(&headers, "retry-after"));
                self.budget.penalize(retry_after);
                return Outcome::Wait(
                    Duration::ZERO,
                    SourceError::Transient(format!(
                        "GET {path} answered 429 on every attempt (rate limited)"
                    )),
                    429,
                );
            }
            400 | 404 | 410 if !cursor.token.is_empty() => {
                // A continuation the server no longer knows (it expired while
                // we were down): restart the walk at nextFromDate without it.
                // Rows at that instant come again; the journal drops them as
                // duplicates, so nothing is lost.
                SourceCursorRestarted {
                    stream: &self.id,
                    reason: &format!(
                        "GET {path} refused the continuation token ({status}); resuming at nextFromDate without it"
                    ),
                }
                .emit();
                cursor.token.clear();
                return Outcome::Again;
            }
            s if s >= 500 => {
                let detail = body.map(|b| session::error_detail(&b)).unwrap_or_default();
                return Outcome::Wait(
                    backoff_delay(attempt, Duration::from_millis(500), Duration::from_secs(10)),
                    SourceError::Transient(format!("GET {path} answered {s}: {detail}")),
                    s,
                );
            }
            s => {
                let detail = body.map(|b| session::error_detail(&b)).unwrap_or_default();
                return Outcome::Wait(
                    Duration::MAX,
                    SourceError::Rejected(format!("GET {path} answered {s}: {detail}")),
                    s,
                );
            }
        }
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Wait(
                    Duration::MAX,
                    SourceError::Malformed(format!("GET {path}: {e} (page will be fetched again)")),
                    200,
                )
            }
        };
        let location = format!(
            "window {}..{} page {}",
            rfc3339_ms(window.from),
            rfc3339_ms(window.to),
            cursor.page
        );
        let ctx = PageContext {
            tenant: &self.shared.tenant,
            stream: &self.id.stream,
            location: &location,
        };
        let parsed = match parse_body(&body, &ctx) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Wait(
                    Duration::MAX,
                    SourceError::Malformed(format!("GET {path}: {}", e.0)),
                    200,
                )
            }
        };
        let next_token = header(&headers, "nextcontinuationtoken")
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let next_from = header(&headers, "nextfromdate")
            .map(str::trim)
            .filter(|f| !f.is_empty());
        // A continuation that starts at or past toDate cannot hold rows of
        // this window (and Rev refuses fromDate >= toDate): the walk ends.
        let past_end = next_from
            .and_then(|f| chrono::DateTime::parse_from_rfc3339(f).ok())
            .is_some_and(|f| f >= window.to);
        if past_end && next_token.is_some() {
            tracing::warn!(stream = %self.id, next_from = next_from.unwrap_or_default(), to = %to, "nextFromDate at or past toDate; window complete");
        }
        let next_token = next_token.filter(|_| !past_end);
        let next = next_token.map(|t| {
            // Without nextFromDate the token alone carries the position.
            let from = next_from.map_or_else(|| cursor.from.clone(), str::to_string);
            let c = Cursor {
                page: cursor.page.saturating_add(1),
                from,
                token: t.to_string(),
            };
            // Serializing a struct of strings cannot fail.
            serde_json::to_string(&c).unwrap_or_default()
        });
        let total_found = header(&headers, "totalrecords").and_then(|v| v.trim().parse().ok());
        Outcome::Page(Page {
            events: parsed.events,
            rejected: parsed.rejected,
            next,
            total_found,
        })
    }
}

#[async_trait]
impl StreamSource for VbrickStream {
    fn id(&self) -> &StreamId {
        &self.id
    }

    fn limits(&self) -> StreamLimits {
        StreamLimits {
            max_window: MAX_WINDOW,
            // Rev's audit retention is not published (vendor-defined).
            horizon: None,
            record_cap: None,
        }
    }

    async fn fetch_page(&self, window: &Window, cursor: Option<&str>) -> Result<Page, SourceError> {
        let mut c = match cursor.map(serde_json::from_str::<Cursor>) {
            None => Cursor {
                page: 1,
                from: rfc3339_ms(window.from),
                token: String::new(),
            },
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // Not ours (an older format?): re-read the window; the
                // journal drops what was stored already.
                SourceCursorRestarted {
                    stream: &self.id,
                    reason: &format!(
                        "unreadable saved cursor ({e}); re-reading the window from its start"
                    ),
                }
                .emit();
                Cursor {
                    page: 1,
                    from: rfc3339_ms(window.from),
                    token: String::new(),
                }
            }
        };
        let to = rfc3339_ms(window.to);
        let mut relogged = false;
        let mut last = None;
        let mut attempt = 0u32;
        // Re-logins and stale-token fallbacks are bounded separately from
        // the retry budget (each happens at most once per page).
        let mut free_retries = 2u32;
        while attempt < self.shared.max_attempts {
            match self
                .attempt(window, &mut c, &to, &mut relogged, attempt)
                .await
            {
                Outcome::Page(p) => return Ok(p),
                Outcome::Again if free_retries > 0 => free_retries -= 1,
                Outcome::Again => attempt += 1,
                Outcome::Wait(d, e, status) => {
                    if d == Duration::MAX {
                        return Err(e);
                    }
                    attempt += 1;
                    if attempt < self.shared.max_attempts {
                        SourceRequestRetrying {
                            stream: &self.id,
                            what: &self.path_for_errors(),
                            status,
                            attempt,
                            retry_in: d,
                        }
                        .emit();
                        if !d.is_zero() {
                            tokio::time::sleep(d).await;
                        }
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            SourceError::Transient(format!(
                "GET {}: gave up after retries",
                self.path_for_errors()
            ))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            page: 3,
            from: "2025-01-01T00:00:00.000Z".into(),
            token: "abc".into(),
        };
        let s = serde_json::to_string(&c).expect("json");
        assert_eq!(serde_json::from_str::<Cursor>(&s).expect("back"), c);
    }
}
