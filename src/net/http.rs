//! The HTTP client every source uses, and body reading with a size bound
//! (a broken or hostile server cannot make trailkeep buffer without limit).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Response;

/// Largest response body a source accepts (one page of 1,000 RingCentral
/// records is well under 5 MB).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("trailkeep/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

/// Reads the body, failing once it exceeds `limit` bytes.
pub async fn read_body(mut resp: Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(format!("response body larger than {limit} bytes"));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf),
            Err(e) => return Err(format!("reading response body: {e}")),
        }
    }
}

/// A header as text, case-insensitively (HTTP header names are).
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn header_u32(headers: &HeaderMap, name: &str) -> Option<u32> {
    header(headers, name).and_then(|v| v.trim().parse().ok())
}
