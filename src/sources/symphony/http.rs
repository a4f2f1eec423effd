//! Sending one request with retries of what is worth retrying (429, 5xx,
//! transport errors), with backoff, jitter and `Retry-After`. Every other
//! answer goes back to the caller, which knows what it means.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::internal_events::{
    InternalEvent, RateLimitHit, SourceRequestCompleted, SourceRequestRetrying,
};
use crate::model::StreamId;
use crate::net::http::{header, read_body, MAX_BODY_BYTES};
use crate::sources::SourceError;
use crate::util::{backoff_delay, parse_retry_after};

/// Longest `Retry-After` honoured as is; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The vendor's `{"code":..,"message":..}` text, or the body's start.
    pub fn message(&self) -> String {
        if let Ok(v) = serde_json::from_slice::<Value>(&self.body) {
            for k in ["message", "details"] {
                if let Some(m) = v.get(k).and_then(Value::as_str) {
                    return m.trim_matches('"').to_string();
                }
            }
        }
        let text = String::from_utf8_lossy(&self.body);
        let t: String = text.chars().take(200).collect();
        if t.trim().is_empty() {
            "(no body)".into()
        } else {
            t
        }
    }
}

/// The rate-limit group a request belongs to, for the metric label.
fn rate_group(what: &str) -> &'static str {
    if what.contains("/login/") {
        "login"
    } else if what.contains("/relay/") {
        "key_manager"
    } else {
        "agent"
    }
}

pub struct Http {
    pub client: reqwest::Client,
    pub stream: StreamId,
    pub retry: RetryPolicy,
}

impl Http {
    /// Sends the request `make` builds (built afresh for each attempt, so a
    /// login signs a fresh JWT), retrying 429 / 5xx / transport failures.
    /// `what` names the request in errors and logs (never a secret).
    pub async fn send<F>(&self, what: &str, make: F) -> Result<Reply, SourceError>
    where
        F: Fn() -> Result<reqwest::RequestBuilder, SourceError>,
    {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let outcome = make()?.send().await;
            let (status, retry_after, failure) = match outcome {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    SourceRequestCompleted {
                        stream: &self.stream,
                        status,
                        elapsed: started.elapsed(),
                    }
                    .emit();
                    if status != 429 && status < 500 {
                        let body = read_body(resp, MAX_BODY_BYTES)
                            .await
                            .map_err(|e| SourceError::Malformed(format!("{what}: {e}")))?;
                        return Ok(Reply { status, body });
                    }
                    let retry_after = parse_retry_after(header(&headers, "retry-after"));
                    if status == 429 {
                        RateLimitHit {
                            source: &self.stream.source,
                            tenant: &self.stream.tenant,
                            group: rate_group(what),
                            retry_after,
                        }
                        .emit();
                    }
                    let body = read_body(resp, 4096).await.unwrap_or_default();
                    let msg = Reply { status, body }.message();
                    (
                        status,
                        retry_after,
                        format!("{what} answered {status}: {msg}"),
                    )
                }
                Err(e) => {
                    SourceRequestCompleted {
                        stream: &self.stream,
                        status: 0,
                        elapsed: started.elapsed(),
                    }
                    .emit();
                    // Without the URL: it is in `what` already.
                    let kind = if e.is_timeout() {
                        "timed out"
                    } else if e.is_connect() {
                        "could not connect"
                    } else {
                        "transport error"
                    };
                    (0, None, format!("{what}: {kind}: {}", e.without_url()))
                }
            };
            attempt += 1;
            if attempt >= self.retry.max_attempts {
                return Err(SourceError::Transient(format!(
                    "{failure} (gave up after {attempt} attempts)"
                )));
            }
            let backoff = backoff_delay(attempt - 1, self.retry.base, self.retry.max);
            let wait = retry_after.map_or(backoff, |r| r.min(MAX_RETRY_AFTER));
            SourceRequestRetrying {
                stream: &self.stream,
                what,
                status,
                attempt,
                retry_in: wait,
            }
            .emit();
            tokio::time::sleep(wait).await;
        }
    }
}
