//! Symphony RSA authentication: a JWT (RS512, claims `sub` and `exp` in
//! seconds) signed with the service account's private key is exchanged for
//! a session token at the pod (`POST /login/pubkey/authenticate`) and,
//! where configured, for a key manager token
//! (`POST /relay/pubkey/authenticate`). Tokens are reused until the Agent
//! answers 401; the caller then invalidates them and asks again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::http::Http;
use crate::internal_events::{AuthCompleted, InternalEvent};
use crate::sources::SourceError;

/// The tokens of one login. Never logged.
pub struct Tokens {
    pub session: String,
    pub key_manager: Option<String>,
    pub generation: u64,
}

pub struct Auth {
    pub http: Arc<Http>,
    pub pod_url: String,
    /// Some = also authenticate at the key manager.
    pub key_manager_url: Option<String>,
    pub username: String,
    pub key: EncodingKey,
    pub jwt_lifetime: Duration,
    tokens: tokio::sync::Mutex<Option<Arc<Tokens>>>,
    generation: AtomicU64,
}

/// Signs the authentication JWT: header `{"alg":"RS512"}`, claims `sub`
/// and `exp` (seconds since the epoch).
pub fn sign_jwt(key: &EncodingKey, username: &str, lifetime: Duration) -> Result<String, String> {
    let exp = chrono::Utc::now().timestamp() + lifetime.as_secs() as i64;
    let mut header = Header::new(Algorithm::RS512);
    header.typ = None;
    jsonwebtoken::encode(&header, &json!({"sub": username, "exp": exp}), key)
        .map_err(|e| format!("cannot sign the authentication JWT with private_key: {e}"))
}

impl Auth {
    pub fn new(
        http: Arc<Http>,
        pod_url: String,
        key_manager_url: Option<String>,
        username: String,
        key: EncodingKey,
        jwt_lifetime: Duration,
    ) -> Self {
        Auth {
            http,
            pod_url,
            key_manager_url,
            username,
            key,
            jwt_lifetime,
            tokens: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// The current tokens, logging in first if there are none. Concurrent
    /// callers wait for one login.
    pub async fn tokens(&self) -> Result<Arc<Tokens>, SourceError> {
        let mut slot = self.tokens.lock().await;
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let session = self
            .login(
                &format!("{}/login/pubkey/authenticate", self.pod_url),
                "POST /login/pubkey/authenticate (pod)",
                "rsa_pubkey",
            )
            .await?;
        let key_manager = match &self.key_manager_url {
            Some(km) => Some(
                self.login(
                    &format!("{km}/relay/pubkey/authenticate"),
                    "POST /relay/pubkey/authenticate (key manager)",
                    "rsa_pubkey_key_manager",
                )
                .await?,
            ),
            None => None,
        };
        let t = Arc::new(Tokens {
            session,
            key_manager,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        });
        *slot = Some(t.clone());
        Ok(t)
    }

    /// Drops the tokens of `generation` (the Agent refused them); newer
    /// tokens another caller got meanwhile are kept.
    pub async fn invalidate(&self, generation: u64) {
        let mut slot = self.tokens.lock().await;
        if slot.as_ref().is_some_and(|t| t.generation == generation) {
            *slot = None;
        }
    }

    async fn login(&self, url: &str, what: &str, how: &str) -> Result<String, SourceError> {
        let stream = &self.http.stream;
        let result = self
            .http
            .send(what, || {
                let jwt = sign_jwt(&self.key, &self.username, self.jwt_lifetime)
                    .map_err(SourceError::Auth)?;
                Ok(self.http.client.post(url).json(&json!({ "token": jwt })))
            })
            .await;
        let outcome = match result {
            Err(e) => Err(e),
            Ok(reply) => match reply.status {
                200 => serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_string))
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        SourceError::Malformed(format!("{what}: 200 without a token in the body"))
                    }),
                401 => Err(SourceError::Auth(format!(
                    "{what} refused the signed JWT for service account `{}` (401: {}); check that \
                     the public key registered for that account matches private_key and that this \
                     host's clock is right (the JWT is valid for {}s from signing)",
                    self.username,
                    reply.message(),
                    self.jwt_lifetime.as_secs()
                ))),
                403 => Err(SourceError::Auth(format!(
                    "{what}: service account `{}` is not allowed to log in (403: {})",
                    self.username,
                    reply.message()
                ))),
                s => Err(SourceError::Rejected(format!(
                    "{what} answered {s}: {} (check the configured URL)",
                    reply.message()
                ))),
            },
        };
        let failure = outcome.as_ref().err().map(|e| e.to_string());
        AuthCompleted {
            source: &stream.source,
            tenant: &stream.tenant,
            how,
            failure: failure.as_deref(),
        }
        .emit();
        outcome
    }
}
