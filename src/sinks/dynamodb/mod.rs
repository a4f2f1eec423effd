//! DynamoDB sink: one item per audit event, for multi-year retention.
//!
//! Items are keyed deterministically (`pk = source#tenant[#YYYY-MM]`,
//! `sk = time#native-id`, see `item`), so writing an event again overwrites
//! it with identical content: the journal's at-least-once delivery becomes
//! exactly one item per event key. Batches go out as `BatchWriteItem`
//! chunks of at most 25 items / 16 MB; unprocessed items and throttles are
//! retried with backoff and jitter, validation failures are isolated item
//! by item and dead-lettered, and `deliver` returns only once every item
//! of the batch is written or dead-lettered (see `write`).

pub mod item;
pub mod query;
mod table;
mod write;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::Client;
use serde::Deserialize;

use super::{Batch, BatchLimits, Delivery, Sink, SinkContext, SinkError};
use crate::config::{parse_settings, resolve_secret, ConfigIssue, SecretRef, SinkEntry};
use crate::util::HumanDuration;

pub use item::Layout;
pub use query::{run_query, QueryParams};

/// The `[[sinks]]` keys of `kind = "dynamodb"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Table name.
    pub table: String,
    /// AWS region; absent = the standard chain (AWS_REGION, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override for local DynamoDB implementations (dynalite,
    /// DynamoDB Local) or VPC endpoints.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// How long items are kept (TTL from the event time); absent = forever.
    #[serde(default)]
    pub retention: Option<HumanDuration>,
    /// Adds `#YYYY-MM` to the partition key to spread large backfills.
    #[serde(default)]
    pub partition_by_month: bool,
    /// Create the table (on demand, with the actor GSI and TTL) if missing.
    #[serde(default)]
    pub create_table: bool,
    /// The table has (or gets) the `actor-index` GSI used by `query --actor`.
    #[serde(default = "yes")]
    pub actor_index: bool,
    /// Journal events per delivery (split into <= 25-item requests).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Deliveries in flight at once (the cursor still moves in order).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Retries of one request (throttled, unprocessed items, 5xx) before
    /// the batch is handed back to the worker's own backoff.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First retry delay; doubles per retry, with full jitter.
    #[serde(default = "default_retry_base")]
    pub retry_base_delay: HumanDuration,
    /// Ceiling of the retry delay.
    #[serde(default = "default_retry_max")]
    pub retry_max_delay: HumanDuration,
    /// Timeout of one HTTP attempt.
    #[serde(default = "default_timeout")]
    pub request_timeout: HumanDuration,
    /// Static credentials (for local endpoints); absent = the standard AWS
    /// chain (env, profile, SSO, web identity/IRSA, ECS, IMDS).
    #[serde(default)]
    pub access_key_id: Option<SecretRef>,
    #[serde(default)]
    pub secret_access_key: Option<SecretRef>,
}

fn yes() -> bool {
    true
}
fn default_batch_size() -> usize {
    100
}
fn default_in_flight() -> usize {
    4
}
fn default_max_retries() -> u32 {
    10
}
fn default_retry_base() -> HumanDuration {
    HumanDuration(Duration::from_millis(50))
}
fn default_retry_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// Parses and validates the settings of one dynamodb sink entry.
pub fn parse(entry: &SinkEntry, issues: &mut Vec<ConfigIssue>) -> Option<Settings> {
    let s: Settings = parse_settings(&entry.path, &entry.settings, issues)?;
    let before = issues.len();
    let p = &entry.path;
    if s.table.trim().is_empty() || s.table.len() > 255 {
        issues.push(ConfigIssue::new(
            format!("{p}.table"),
            "must be a table name of 1-255 characters",
        ));
    }
    if s.batch_size == 0 {
        issues.push(ConfigIssue::new(
            format!("{p}.batch_size"),
            "must be at least 1",
        ));
    }
    if s.max_in_flight == 0 || s.max_in_flight > 64 {
        issues.push(ConfigIssue::new(
            format!("{p}.max_in_flight"),
            "must be 1-64",
        ));
    }
    if let Some(r) = s.retention {
        if r.0 < Duration::from_secs(86_400) {
            issues.push(ConfigIssue::new(
                format!("{p}.retention"),
                "must be at least 1d (or absent to keep items forever)",
            ));
        }
    }
    if let Some(url) = &s.endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            issues.push(ConfigIssue::new(
                format!("{p}.endpoint_url"),
                format!("`{url}` is not an http(s) URL"),
            ));
        }
    }
    if s.access_key_id.is_some() != s.secret_access_key.is_some() {
        issues.push(ConfigIssue::new(
            format!("{p}.access_key_id"),
            "access_key_id and secret_access_key go together (or leave both out for the standard AWS credential chain)",
        ));
    }
    (issues.len() == before).then_some(s)
}

/// Builds the SDK client for these settings (standard credential chain
/// unless static credentials are configured). SDK retries are off: the
/// sink retries itself, so it can count and pace them.
pub async fn connect(path: &str, s: &Settings, issues: &mut Vec<ConfigIssue>) -> Option<Client> {
    let creds = match (&s.access_key_id, &s.secret_access_key) {
        (Some(id), Some(secret)) => {
            let id = resolve_secret(&format!("{path}.access_key_id"), id, issues);
            let secret = resolve_secret(&format!("{path}.secret_access_key"), secret, issues);
            Some((id?, secret?))
        }
        _ => None,
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = &s.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(url) = &s.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some((id, secret)) = creds {
        loader = loader.credentials_provider(Credentials::new(
            id.expose(),
            secret.expose(),
            None,
            None,
            "trailkeep-config",
        ));
    }
    let shared = loader.load().await;
    if shared.region().is_none() {
        issues.push(ConfigIssue::new(
            format!("{path}.region"),
            "no region configured and none found in AWS_REGION or the AWS profile",
        ));
        return None;
    }
    let conf = aws_sdk_dynamodb::config::Builder::from(&shared)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(s.request_timeout.0)
                .build(),
        )
        .build();
    Some(Client::from_conf(conf))
}

/// `build` for the sink registry.
pub async fn build(entry: &SinkEntry, issues: &mut Vec<ConfigIssue>) -> Option<Arc<dyn Sink>> {
    let s = parse(entry, issues)?;
    let client = connect(&entry.path, &s, issues).await?;
    Some(Arc::new(DynamoSink::new(&entry.name, s, client)))
}

pub struct DynamoSink {
    name: String,
    settings: Settings,
    client: Client,
}

impl DynamoSink {
    pub fn new(name: &str, settings: Settings, client: Client) -> Self {
        DynamoSink {
            name: name.to_string(),
            settings,
            client,
        }
    }

    pub fn layout(&self) -> Layout {
        Layout {
            partition_by_month: self.settings.partition_by_month,
            retention_secs: self.settings.retention.map(|r| r.0.as_secs()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where the table is, for error messages.
    fn location(&self) -> String {
        let region = self.settings.region.as_deref().unwrap_or("default region");
        match &self.settings.endpoint_url {
            Some(u) => format!("{region}, endpoint {u}"),
            None => region.to_string(),
        }
    }
}

/// How an SDK error is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Throttled: retry with backoff.
    Throttle,
    /// 5xx, timeouts, connection failures: retry with backoff.
    Transient,
    /// The request (an item) is invalid: never retry as is.
    Validation,
    /// The table (or index) does not exist.
    NotFound,
    /// Credentials refused: halt.
    Auth,
    /// Anything else: hand back to the worker as retryable.
    Other,
}

/// An SDK error reduced to what the sink needs: class, code, message.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub class: Class,
    pub code: String,
    pub message: String,
}

pub(crate) fn classify<E>(e: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = DisplayErrorContext(e).to_string();
    let transport = |code: &str| Failure {
        class: Class::Transient,
        code: code.into(),
        message: text.clone(),
    };
    match e {
        SdkError::TimeoutError(_) => return transport("timeout"),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            if text.to_ascii_lowercase().contains("credential") {
                return Failure {
                    class: Class::Auth,
                    code: "credentials".into(),
                    message: text,
                };
            }
            return transport("transport");
        }
        SdkError::ConstructionFailure(_) => {
            return Failure {
                class: Class::Auth,
                code: "request_construction".into(),
                message: text,
            }
        }
        _ => {}
    }
    let code = e.code().unwrap_or("unknown").to_string();
    let message = e.message().map(str::to_string).unwrap_or(text);
    let class = match code.as_str() {
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "LimitExceededException" => Class::Throttle,
        "InternalServerError" | "InternalFailure" | "ServiceUnavailable" => Class::Transient,
        "ValidationException" | "ItemCollectionSizeLimitExceededException" => Class::Validation,
        "ResourceNotFoundException" => Class::NotFound,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "MissingAuthenticationTokenException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId" => Class::Auth,
        _ => {
            let server = e
                .raw_response()
                .is_some_and(|r| r.status().is_server_error());
            if server {
                Class::Transient
            } else {
                Class::Other
            }
        }
    };
    Failure {
        class,
        code,
        message,
    }
}

#[async_trait]
impl Sink for DynamoSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "dynamodb"
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.settings.batch_size,
            max_bytes: 16 * 1024 * 1024,
            max_in_flight: self.settings.max_in_flight,
            ..BatchLimits::default()
        }
    }

    async fn start(&self, _ctx: &SinkContext) -> Result<(), SinkError> {
        table::ensure(self).await
    }

    async fn deliver(&self, batch: Batch, _ctx: &SinkContext) -> Result<Delivery, SinkError> {
        write::deliver(self, &batch).await
    }

    async fn check_connection(&self) -> Result<String, SinkError> {
        table::describe(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const EXAMPLE: &str = include_str!("../../../config/examples/dynamodb.toml");

    fn entry(sink: &str) -> SinkEntry {
        let text = format!("[journal]\npath = \"/tmp/j.db\"\n{sink}");
        Config::from_toml_str(&text).unwrap().sinks.remove(0)
    }

    fn issues_of(keys: &str) -> Vec<String> {
        let e = entry(&format!(
            "[[sinks]]\nkind = \"dynamodb\"\nname = \"d\"\ntable = \"t\"\n{keys}"
        ));
        let mut issues = Vec::new();
        let _ = parse(&e, &mut issues);
        issues.iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn the_example_config_parses_with_its_defaults() {
        let mut issues = Vec::new();
        let s = parse(&entry(EXAMPLE), &mut issues).unwrap();
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(s.table, "trailkeep-audit");
        assert_eq!(
            s.retention,
            Some(HumanDuration(Duration::from_secs(7 * 365 * 86_400)))
        );
        assert_eq!((s.batch_size, s.max_in_flight, s.max_retries), (100, 4, 10));
        assert!(s.actor_index && !s.create_table && !s.partition_by_month);
    }

    #[test]
    fn bad_settings_are_named_by_key_path() {
        assert!(issues_of("").is_empty());
        let one = |k: &str| issues_of(k).join("\n");
        assert!(one("batch_size = 0").contains("sinks[0].batch_size"));
        assert!(one("max_in_flight = 0").contains("sinks[0].max_in_flight"));
        assert!(one("retention = \"2h\"").contains("sinks[0].retention"));
        assert!(one("endpoint_url = \"localhost:8000\"").contains("sinks[0].endpoint_url"));
        assert!(one("access_key_id = { env = \"X\" }").contains("sinks[0].access_key_id"));
        assert!(one("tabel = \"x\"").contains("tabel"));
    }
}
