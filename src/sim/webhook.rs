//! A webhook receiver (Slack-style incoming webhook) for the alert
//! channels: records every POST it receives (path, selected headers, body,
//! whether the HMAC signature verified) and fails on demand (next N
//! requests answer a status, optionally with Retry-After; or always).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use super::SimHandle;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Shared secret to verify `signature_header` (hex HMAC-SHA256 of the
    /// body, `sha256=` prefix); None = signatures are not checked.
    pub secret: Option<String>,
    /// Header carrying the signature.
    pub signature_header: Option<String>,
    /// Every request answers this status (e.g. 404 for a dead hook).
    pub always_status: Option<u16>,
}

/// One request as received.
#[derive(Clone, Debug, Serialize)]
pub struct Received {
    pub path: String,
    pub body: Value,
    pub raw: String,
    pub content_type: Option<String>,
    pub signature: Option<String>,
    /// None when no secret is configured.
    pub signature_valid: Option<bool>,
    pub delivery_id: Option<String>,
    pub status: u16,
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Fault {
    pub status: u16,
    #[serde(default)]
    pub retry_after: Option<u64>,
}

pub struct WebhookSim {
    pub cfg: Config,
    received: Mutex<Vec<Received>>,
    faults: Mutex<VecDeque<Fault>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, the signature format the
/// alert webhook channel sends.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length: new_from_slice cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookSim {
    pub fn new(cfg: Config) -> Arc<Self> {
        Arc::new(WebhookSim {
            cfg,
            received: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
        })
    }

    /// Everything received, in arrival order (failed answers included).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    /// Only the requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        lock(&self.received)
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .cloned()
            .collect()
    }

    /// Fault: the next `n` requests answer `status` (with Retry-After).
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        let mut q = lock(&self.faults);
        for _ in 0..n {
            q.push_back(Fault {
                status,
                retry_after,
            });
        }
    }
}

async fn receive(
    State(sim): State<Arc<WebhookSim>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let sig_header = sim
        .cfg
        .signature_header
        .clone()
        .unwrap_or_else(|| "x-trailkeep-signature".into());
    let signature = h(&sig_header);
    let signature_valid = sim
        .cfg
        .secret
        .as_ref()
        .map(|s| signature.as_deref() == Some(sign(s.as_bytes(), &body).as_str()));
    let fault = lock(&sim.faults).pop_front();
    let status = match (fault, sim.cfg.always_status) {
        (Some(f), _) => f.status,
        (None, Some(s)) => s,
        (None, None) => 200,
    };
    lock(&sim.received).push(Received {
        path: format!("/{path}"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: String::from_utf8_lossy(&body).into_owned(),
        content_type: h("content-type"),
        signature,
        signature_valid,
        delivery_id: h("x-trailkeep-delivery"),
        status,
    });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = HeaderMap::new();
    if let Some(ra) = fault.and_then(|f| f.retry_after) {
        if let Ok(v) = HeaderValue::from_str(&ra.to_string()) {
            out.insert("retry-after", v);
        }
    }
    // Slack answers a plain `ok`.
    let text = if code.is_success() { "ok" } else { "error" };
    (code, out, text).into_response()
}

async fn admin_received(State(sim): State<Arc<WebhookSim>>) -> Response {
    Json(json!({"received": sim.received()})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    fail_next: usize,
    status: u16,
    #[serde(default)]
    retry_after: Option<u64>,
}

async fn admin_faults(State(sim): State<Arc<WebhookSim>>, Json(b): Json<FaultBody>) -> Response {
    sim.fail_next(b.fail_next, b.status, b.retry_after);
    Json(json!({"ok": true})).into_response()
}

pub fn router(sim: Arc<WebhookSim>) -> Router {
    Router::new()
        .route("/_sim/received", get(admin_received))
        .route("/_sim/faults", post(admin_faults))
        .route("/{*path}", post(receive))
        .with_state(sim)
}

pub async fn start(cfg: Config) -> std::io::Result<(Arc<WebhookSim>, SimHandle)> {
    let sim = WebhookSim::new(cfg);
    let handle = super::serve(router(sim.clone()), super::loopback()).await?;
    Ok((sim, handle))
}
