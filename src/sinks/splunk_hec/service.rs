//! The HTTP side of the HEC sink: sending a request body, querying ack
//! statuses, the health check, and mapping every HEC answer to what the
//! sink does next (the status table of `shared/hec-facts.md`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::Secret;
use crate::internal_events::{HecRequestCompleted, InternalEvent};
use crate::net::http::read_body;
use crate::sinks::SinkError;
use crate::util::parse_retry_after;

/// Largest answer body read from HEC (answers are tiny JSON objects; an
/// ack answer for 10,000 ids is ~200 KB).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

pub const CHANNEL_HEADER: &str = "X-Splunk-Request-Channel";

/// What the server did with one request of events.
#[derive(Debug)]
pub enum SendOutcome {
    /// 200: accepted; with an ackId when the token acknowledges.
    Accepted { ack_id: Option<u64> },
    /// 400 codes 6/12/13: some event is bad; `invalid_event` is its index
    /// in the request when the server said so.
    Poison {
        code: i64,
        text: String,
        invalid_event: Option<usize>,
    },
    /// 413: the body is over the server's `max_content_length`.
    TooLarge,
    /// Code 14: the token does not acknowledge.
    AckDisabled,
    /// Everything else: retry or halt.
    Failed(SinkError),
}

/// Why an ack query gave no statuses.
#[derive(Debug)]
pub enum AckQueryError {
    /// Code 14: acknowledgement is off for the token.
    Disabled,
    /// Codes 10/11: the server does not know the channel (idle cleanup,
    /// restart): its pending acks are lost.
    ChannelGone(String),
    /// Transport failure, 5xx, auth: try again at the next poll.
    Other(SinkError),
}

#[derive(Debug, Default, Deserialize)]
struct HecAnswer {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default, rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(default, rename = "invalid-event-number")]
    invalid_event: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct AckAnswer {
    acks: HashMap<String, bool>,
}

/// TLS and timeout options of the client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub request_timeout: Duration,
    pub ca_file: Option<std::path::PathBuf>,
    pub insecure_skip_verify: bool,
    pub pool_size: usize,
}

pub fn build_client(opts: &ClientOptions) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("trailkeep/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10).min(opts.request_timeout))
        .timeout(opts.request_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(opts.pool_size.max(1));
    if let Some(path) = &opts.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("CA file {} is not PEM certificates: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "CA file {} holds no certificate",
                Path::new(path).display()
            ));
        }
        b = b.tls_certs_merge(certs);
    }
    if opts.insecure_skip_verify {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

pub struct HecService {
    sink: String,
    client: reqwest::Client,
    event_url: String,
    ack_url: String,
    health_url: String,
    auth: HeaderValue,
}

impl std::fmt::Debug for HecService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HecService")
            .field("event_url", &self.event_url)
            .finish_non_exhaustive()
    }
}

impl HecService {
    pub fn new(
        sink: &str,
        client: reqwest::Client,
        endpoint: &str,
        token: &Secret,
    ) -> Result<Self, String> {
        let base = endpoint.trim_end_matches('/');
        let mut auth = HeaderValue::from_str(&format!("Splunk {}", token.expose()))
            .map_err(|_| "token contains characters not allowed in an HTTP header".to_string())?;
        auth.set_sensitive(true);
        Ok(HecService {
            sink: sink.to_string(),
            client,
            event_url: format!("{base}/services/collector/event"),
            ack_url: format!("{base}/services/collector/ack"),
            health_url: format!("{base}/services/collector/health"),
            auth,
        })
    }

    pub fn event_url(&self) -> &str {
        &self.event_url
    }

    /// Sends one request body (already gzipped when `gzip`).
    pub async fn send(&self, channel: &str, body: Vec<u8>, gzip: bool) -> SendOutcome {
        let started = Instant::now();
        let mut req = self
            .client
            .post(&self.event_url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CHANNEL_HEADER, channel)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.completed(0, None, started);
                return SendOutcome::Failed(transport_error("POST", &self.event_url, &e));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(
            resp.headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let body = match read_body(resp, MAX_ANSWER_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                self.completed(status, None, started);
                // The server may have indexed the data: a retry can
                // duplicate (fields.event_id lets searches remove them).
                return SendOutcome::Failed(SinkError::retryable(
                    "transport",
                    format!("POST {}: answer broken off ({e})", self.event_url),
                ));
            }
        };
        let answer: HecAnswer = serde_json::from_slice(&body).unwrap_or_default();
        self.completed(status, answer.code, started);
        classify_send(&self.event_url, status, answer, &body, retry_after)
    }

    /// Asks for the statuses of `ids` on `channel`.
    pub async fn query_acks(
        &self,
        channel: &str,
        ids: &[u64],
    ) -> Result<HashMap<u64, bool>, AckQueryError> {
        let started = Instant::now();
        let body = serde_json::json!({ "acks": ids }).to_string();
        let resp = self
            .client
            .post(&self.ack_url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CHANNEL_HEADER, channel)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| AckQueryError::Other(transport_error("POST", &self.ack_url, &e)))?;
        let status = resp.status().as_u16();
        let body = read_body(resp, MAX_ANSWER_BYTES).await.map_err(|e| {
            AckQueryError::Other(SinkError::retryable(
                "transport",
                format!("POST {}: {e}", self.ack_url),
            ))
        })?;
        if status == 200 {
            self.completed(status, Some(0), started);
            let a: AckAnswer = serde_json::from_slice(&body).map_err(|e| {
                AckQueryError::Other(SinkError::retryable(
                    "bad_answer",
                    format!("POST {}: unreadable ack answer: {e}", self.ack_url),
                ))
            })?;
            return Ok(a
                .acks
                .into_iter()
                .filter_map(|(k, v)| k.parse::<u64>().ok().map(|k| (k, v)))
                .collect());
        }
        let answer: HecAnswer = serde_json::from_slice(&body).unwrap_or_default();
        self.completed(status, answer.code, started);
        match answer.code {
            Some(14) => Err(AckQueryError::Disabled),
            Some(c @ (10 | 11)) => Err(AckQueryError::ChannelGone(format!(
                "hec_{c}: {}",
                answer.text.unwrap_or_default()
            ))),
            _ => Err(AckQueryError::Other(classify_failure(
                &self.ack_url,
                status,
                &answer,
                &body,
                None,
            ))),
        }
    }

    /// `GET /services/collector/health`.
    pub async fn health(&self) -> Result<String, SinkError> {
        let resp = self
            .client
            .get(&self.health_url)
            .send()
            .await
            .map_err(|e| transport_error("GET", &self.health_url, &e))?;
        let status = resp.status().as_u16();
        let body = read_body(resp, MAX_ANSWER_BYTES).await.map_err(|e| {
            SinkError::retryable("transport", format!("GET {}: {e}", self.health_url))
        })?;
        let answer: HecAnswer = serde_json::from_slice(&body).unwrap_or_default();
        let text = answer
            .text
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into());
        match status {
            200 => Ok(text),
            404 => Err(SinkError::halt(
                "http_404",
                format!(
                    "GET {}: not found; is `endpoint` the HEC base URL (https://host:8088)?",
                    self.health_url
                ),
            )),
            _ => Err(SinkError::retryable(
                format!("http_{status}"),
                format!("GET {}: {status} {text}", self.health_url),
            )),
        }
    }

    /// Checks the token without sending data: an empty request answers
    /// 400 "No data" (code 5) when the token is valid, 401/403 otherwise.
    pub async fn probe_token(&self, channel: &str) -> Result<(), SinkError> {
        match self.send(channel, Vec::new(), false).await {
            SendOutcome::Accepted { .. } => Ok(()),
            SendOutcome::Poison { .. } | SendOutcome::TooLarge | SendOutcome::AckDisabled => Ok(()),
            SendOutcome::Failed(SinkError::Retryable { code, .. }) if code == "hec_5" => Ok(()),
            SendOutcome::Failed(e) => Err(e),
        }
    }

    fn completed(&self, status: u16, code: Option<i64>, started: Instant) {
        HecRequestCompleted {
            sink: &self.sink,
            status,
            code,
            elapsed: started.elapsed(),
        }
        .emit();
    }
}

fn transport_error(method: &str, url: &str, e: &reqwest::Error) -> SinkError {
    let code = if e.is_timeout() {
        "timeout"
    } else {
        "transport"
    };
    // Walk the source chain: reqwest's top-level text hides the cause
    // (refused, TLS, reset).
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    SinkError::retryable(code, format!("{method} {url}: {text}"))
}

fn classify_send(
    url: &str,
    status: u16,
    answer: HecAnswer,
    body: &[u8],
    retry_after: Option<Duration>,
) -> SendOutcome {
    if status == 200 && answer.code.unwrap_or(0) == 0 {
        return SendOutcome::Accepted {
            ack_id: answer.ack_id,
        };
    }
    if status == 413 {
        return SendOutcome::TooLarge;
    }
    match answer.code {
        Some(c @ (6 | 12 | 13)) => SendOutcome::Poison {
            code: c,
            text: answer.text.clone().unwrap_or_default(),
            invalid_event: answer.invalid_event.and_then(|n| usize::try_from(n).ok()),
        },
        Some(14) => SendOutcome::AckDisabled,
        _ => SendOutcome::Failed(classify_failure(url, status, &answer, body, retry_after)),
    }
}

/// Halt or retry, per the HEC status table.
fn classify_failure(
    url: &str,
    status: u16,
    answer: &HecAnswer,
    body: &[u8],
    retry_after: Option<Duration>,
) -> SinkError {
    let text = answer
        .text
        .clone()
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into());
    match answer.code {
        Some(c @ (1..=4)) => SinkError::halt(
            format!("hec_{c}"),
            format!("POST {url}: {status} {text}: fix the HEC token (sinks[].token); delivery resumes by itself"),
        ),
        Some(7) => SinkError::halt(
            "hec_7",
            format!("POST {url}: {status} {text}: the token may not write to the configured index (index / indexes)"),
        ),
        Some(c @ (10 | 11)) => SinkError::halt(
            format!("hec_{c}"),
            format!("POST {url}: {status} {text}: channel refused; check the token's indexer acknowledgement settings"),
        ),
        Some(5) => SinkError::retryable(
            "hec_5",
            format!("POST {url}: {status} {text}: the server saw an empty body (a proxy may strip it)"),
        ),
        Some(c @ (8 | 9)) => SinkError::Retryable {
            code: format!("hec_{c}"),
            reason: format!("POST {url}: {status} {text}"),
            retry_after,
        },
        _ => match status {
            401 | 403 => SinkError::halt(
                format!("http_{status}"),
                format!("POST {url}: {status} {text}: credentials refused"),
            ),
            404 | 405 => SinkError::halt(
                format!("http_{status}"),
                format!("POST {url}: {status}: no HEC here; check `endpoint`"),
            ),
            _ => SinkError::Retryable {
                code: format!("http_{status}"),
                reason: format!("POST {url}: {status} {text}"),
                retry_after,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> HecAnswer {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn status_table() {
        let u = "u";
        let a = answer(r#"{"text":"Success","code":0,"ackId":7}"#);
        assert!(matches!(
            classify_send(u, 200, a, b"", None),
            SendOutcome::Accepted { ack_id: Some(7) }
        ));
        for code in 1..=4 {
            let a = answer(&format!(r#"{{"text":"x","code":{code}}}"#));
            let SendOutcome::Failed(SinkError::Halt { .. }) = classify_send(u, 403, a, b"", None)
            else {
                panic!("code {code} must halt");
            };
        }
        let a = answer(r#"{"text":"Incorrect index","code":7,"invalid-event-number":0}"#);
        assert!(matches!(
            classify_send(u, 400, a, b"", None),
            SendOutcome::Failed(SinkError::Halt { .. })
        ));
        let a = answer(r#"{"text":"Invalid data format","code":6,"invalid-event-number":3}"#);
        assert!(matches!(
            classify_send(u, 400, a, b"", None),
            SendOutcome::Poison {
                code: 6,
                invalid_event: Some(3),
                ..
            }
        ));
        let a = answer(r#"{"text":"Server is busy","code":9}"#);
        let SendOutcome::Failed(SinkError::Retryable { retry_after, .. }) =
            classify_send(u, 503, a, b"", Some(Duration::from_secs(2)))
        else {
            panic!("busy must retry");
        };
        assert_eq!(retry_after, Some(Duration::from_secs(2)));
        assert!(matches!(
            classify_send(u, 413, HecAnswer::default(), b"too large", None),
            SendOutcome::TooLarge
        ));
        assert!(matches!(
            classify_send(u, 429, HecAnswer::default(), b"", None),
            SendOutcome::Failed(SinkError::Retryable { .. })
        ));
        let a = answer(r#"{"text":"ACK is disabled","code":14}"#);
        assert!(matches!(
            classify_send(u, 400, a, b"", None),
            SendOutcome::AckDisabled
        ));
    }

    proptest::proptest! {
        /// Whatever a server (or something pretending to be one) answers,
        /// classification never panics and a 2xx with code 0 is the only
        /// acceptance.
        #[test]
        fn any_answer_is_classified(status in 100u16..600, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let answer: HecAnswer = serde_json::from_slice(&body).unwrap_or_default();
            let accepted_code = answer.code.unwrap_or(0) == 0;
            let out = classify_send("http://x/services/collector/event", status, answer, &body, None);
            if matches!(out, SendOutcome::Accepted { .. }) {
                proptest::prop_assert!(status == 200 && accepted_code);
            }
        }

        #[test]
        fn json_like_answers_are_classified(status in 100u16..600, code in proptest::option::of(-5i64..30), text in ".{0,30}", inv in proptest::option::of(-3i64..600)) {
            let mut v = serde_json::json!({"text": text});
            if let Some(c) = code { v["code"] = c.into(); }
            if let Some(n) = inv { v["invalid-event-number"] = n.into(); }
            let body = v.to_string().into_bytes();
            let answer: HecAnswer = serde_json::from_slice(&body).unwrap_or_default();
            let _ = classify_send("http://x/services/collector/event", status, answer, &body, None);
        }
    }
}
