//! The HTTP client every source uses, and body reading with a size bound
//! (a broken or hostile server cannot make trailkeep buffer without limit).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Response;

/// Largest response body a source accepts (one page of 1,000 RingCentral
/// records is well under 5 MB).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Process-wide ceiling on every `read_body` limit (default: none, each
/// caller's own limit applies).
static BODY_CEILING: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Lowers the largest response body any source or sink of this process
/// reads: every `read_body` limit becomes `min(limit, bytes)`. For tight
/// memory budgets and for tests with hostile servers; it can only lower
/// the per-call limits, never raise them.
pub fn set_body_ceiling(bytes: usize) {
    BODY_CEILING.store(bytes, Ordering::Relaxed);
}

/// The ceiling `set_body_ceiling` set (`usize::MAX` when none).
pub fn body_ceiling() -> usize {
    BODY_CEILING.load(Ordering::Relaxed)
}

pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("trailkeep/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

/// Reads the body, failing once it exceeds `limit` bytes (or the process's
/// `body_ceiling`, when lower). A declared `Content-Length` over the limit
/// fails before reading anything; either way the response is dropped, which
/// closes the connection, so nothing more is received.
pub async fn read_body(mut resp: Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    let limit = limit.min(body_ceiling());
    if let Some(n) = resp.content_length() {
        if n > limit as u64 {
            return Err(BodyError::TooLarge {
                limit,
                declared: Some(n),
            });
        }
    }
    // Sized from Content-Length when the server gave one (within the limit).
    let mut buf = Vec::with_capacity(resp.content_length().map_or(0, |n| n as usize));
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge {
                        limit,
                        declared: None,
                    });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf),
            Err(e) if e.is_timeout() => return Err(BodyError::TimedOut),
            Err(e) => return Err(BodyError::Transport(describe(&e))),
        }
    }
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the caller's limit: asking again gets the same answer.
    #[error("response body larger than {limit} bytes{}", declared.map(|n| format!(" (Content-Length {n})")).unwrap_or_default())]
    TooLarge { limit: usize, declared: Option<u64> },
    #[error("timed out reading the response body")]
    TimedOut,
    #[error("reading response body: {0}")]
    Transport(String),
}

/// A transport error as one line without the URL: "timed out", or
/// reqwest's text with its cause chain (reqwest's own text hides the cause:
/// refused, reset, TLS).
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "request timed out".to_string();
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    if let Some(u) = e.url() {
        s = s.replace(&format!(" for url ({u})"), "");
        s = s.replace(u.as_str(), "");
    }
    s
}

/// A header as text, case-insensitively (HTTP header names are).
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn header_u32(headers: &HeaderMap, name: &str) -> Option<u32> {
    header(headers, name).and_then(|v| v.trim().parse().ok())
}
