//! Alert channels: RingCentral SMS and Team Messaging (through the shared
//! `RcClient`: token, Medium-group budget, 429/503 Retry-After) and
//! webhooks (Slack-compatible JSON, optional HMAC-SHA256 signature).

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::clients::ringcentral::{Group, RcClient, RcError};
use crate::config::Secret;
use crate::net::http::{header, read_body};
use crate::util::{backoff_delay, parse_retry_after};

pub const SMS_PATH: &str = "/restapi/v1.0/account/~/extension/~/sms";
pub const PHONE_NUMBERS_PATH: &str = "/restapi/v1.0/account/~/extension/~/phone-number";
pub const CHATS_PATH: &str = "/team-messaging/v1/chats";

/// E.164: `+`, then 8 to 15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

/// How one send went wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    /// The destination refused this message for good (unknown chat, from
    /// number not allowed, 4xx): recorded as failed, dead-lettered, never
    /// retried.
    Permanent(String),
    /// Try again later (rate limits outlasting the retries, 5xx, network).
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Our credentials were refused: the sink halts.
    Auth(String),
}

impl SendError {
    pub fn reason(&self) -> &str {
        match self {
            SendError::Permanent(r) | SendError::Auth(r) => r,
            SendError::Transient { reason, .. } => reason,
        }
    }
}

impl From<RcError> for SendError {
    fn from(e: RcError) -> Self {
        match e {
            RcError::Auth(r) => SendError::Auth(r),
            RcError::Rejected { .. } => SendError::Permanent(e.to_string()),
            RcError::Transient(r) | RcError::Malformed(r) => SendError::Transient {
                reason: r,
                retry_after: None,
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct WebhookChannel {
    pub url: Secret,
    /// `scheme://host[:port]` only: what logs and errors may show (the
    /// path of a Slack hook URL is itself a secret).
    pub display: String,
    pub secret: Option<Secret>,
    pub signature_header: String,
    pub max_attempts: u32,
    pub include_event: bool,
}

#[derive(Clone, Debug)]
pub enum ChannelKind {
    Sms { from: String, to: Vec<String> },
    TeamMessaging { chats: Vec<String> },
    Webhook(WebhookChannel),
}

#[derive(Clone, Debug)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
}

impl Channel {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ChannelKind::Sms { .. } => "sms",
            ChannelKind::TeamMessaging { .. } => "team_messaging",
            ChannelKind::Webhook(_) => "webhook",
        }
    }

    /// Every recipient of this channel (one send each).
    pub fn recipients(&self) -> Vec<String> {
        match &self.kind {
            ChannelKind::Sms { to, .. } => to.clone(),
            ChannelKind::TeamMessaging { chats } => chats.clone(),
            ChannelKind::Webhook(w) => vec![w.display.clone()],
        }
    }

    pub fn uses_ringcentral(&self) -> bool {
        !matches!(self.kind, ChannelKind::Webhook(_))
    }
}

/// Sends one SMS (one recipient per request, so each is recorded and
/// retried on its own). Returns the message id.
pub async fn send_sms(
    rc: &RcClient,
    from: &str,
    to: &str,
    text: &str,
) -> Result<String, SendError> {
    let body = json!({"from": {"phoneNumber": from}, "to": [{"phoneNumber": to}], "text": text});
    let (_, resp) = rc
        .call(
            Group::Medium,
            Method::POST,
            SMS_PATH,
            &[],
            Some(&body),
            None,
        )
        .await?;
    Ok(id_of(&resp))
}

/// Posts to one chat. Returns the post id.
pub async fn post_to_chat(rc: &RcClient, chat: &str, text: &str) -> Result<String, SendError> {
    let path = format!("{CHATS_PATH}/{chat}/posts");
    let body = json!({"text": text});
    let (_, resp) = rc
        .call(Group::Medium, Method::POST, &path, &[], Some(&body), None)
        .await?;
    Ok(id_of(&resp))
}

fn id_of(v: &Value) -> String {
    match v.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The extension's phone numbers with their features.
pub async fn phone_numbers(rc: &RcClient) -> Result<Vec<(String, Vec<String>)>, SendError> {
    let mut out = Vec::new();
    let per_page = 100usize;
    for page in 1..=100u32 {
        let (_, resp) = rc
            .call(
                Group::Light,
                Method::GET,
                PHONE_NUMBERS_PATH,
                &[
                    ("page", page.to_string()),
                    ("perPage", per_page.to_string()),
                ],
                None,
                None,
            )
            .await?;
        let records = resp
            .get("records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let n = records.len();
        for r in records {
            let number = r
                .get("phoneNumber")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let features = r
                .get("features")
                .and_then(Value::as_array)
                .map(|f| {
                    f.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            out.push((number, features));
        }
        let total_pages = resp
            .pointer("/paging/totalPages")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if n < per_page || u64::from(page) >= total_pages {
            break;
        }
    }
    Ok(out)
}

/// Every chat id visible to the user, following `navigation.nextPageToken`.
pub async fn chat_ids(rc: &RcClient, page_size: u32) -> Result<Vec<(String, String)>, SendError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10_000 {
        let mut q: Vec<(&str, String)> = ["Everyone", "Team", "Group", "Personal", "Direct"]
            .iter()
            .map(|t| ("type", (*t).to_string()))
            .collect();
        q.push(("recordCount", page_size.clamp(1, 250).to_string()));
        if let Some(t) = &token {
            q.push(("pageToken", t.clone()));
        }
        let (_, resp) = rc
            .call(Group::Medium, Method::GET, CHATS_PATH, &q, None, None)
            .await?;
        for r in resp
            .get("records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let id = id_of(r);
            let name = r
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            out.push((id, name));
        }
        token = resp
            .pointer("/navigation/nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(out)
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    // HMAC takes keys of any length: new_from_slice never fails for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs one webhook message, retrying 429 / 5xx / network errors within
/// `max_attempts` (Retry-After honoured).
pub async fn send_webhook(
    http: &reqwest::Client,
    hook: &WebhookChannel,
    body: &Value,
    delivery_id: &str,
    event_key: &str,
) -> Result<String, SendError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| SendError::Permanent(format!("cannot encode webhook body: {e}")))?;
    let mut attempt = 0u32;
    loop {
        let mut req = http
            .post(hook.url.expose())
            .header("content-type", "application/json")
            .header("x-trailkeep-delivery", delivery_id)
            .header("x-trailkeep-event", event_key)
            .body(bytes.clone());
        if let Some(s) = &hook.secret {
            req = req.header(hook.signature_header.as_str(), signature(s, &bytes));
        }
        let (status, retry_after, detail) = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let ra = parse_retry_after(header(resp.headers(), "retry-after"));
                let text = read_body(resp, 64 * 1024).await.unwrap_or_default();
                let text = String::from_utf8_lossy(&text);
                let short: String = text.chars().take(200).collect();
                (Some(status), ra, short)
            }
            Err(e) => (
                None,
                None,
                if e.is_timeout() {
                    "request timed out".to_string()
                } else if e.is_connect() {
                    "connection failed".to_string()
                } else {
                    "transport error".to_string()
                },
            ),
        };
        match status {
            Some(s) if s.is_success() => return Ok(s.as_u16().to_string()),
            Some(s)
                if s != StatusCode::TOO_MANY_REQUESTS
                    && s != StatusCode::REQUEST_TIMEOUT
                    && s.is_client_error() =>
            {
                return Err(SendError::Permanent(format!(
                    "POST {} answered {}: {detail}",
                    hook.display,
                    s.as_u16()
                )))
            }
            _ => {}
        }
        attempt += 1;
        let what = match status {
            Some(s) => format!("answered {}", s.as_u16()),
            None => detail.clone(),
        };
        if attempt >= hook.max_attempts.max(1) {
            return Err(SendError::Transient {
                reason: format!("POST {} {what} ({attempt} attempts)", hook.display),
                retry_after,
            });
        }
        let wait = backoff_delay(attempt, Duration::from_millis(250), Duration::from_secs(30))
            .max(retry_after.unwrap_or_default());
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_simulator() {
        let s = Secret::new("k");
        assert_eq!(signature(&s, b"{}"), crate::sim::webhook::sign(b"k", b"{}"));
        assert!(signature(&s, b"{}").starts_with("sha256="));
    }
}
