//! Sources: the vendor APIs trailkeep pulls from.
//!
//! A `Source` is one configured account; it exposes one or more
//! `StreamSource`s (one incremental feed each). The stream worker in
//! `pipeline` plans closed time windows and asks the stream for pages; the
//! stream owns everything vendor-specific: auth, rate budget, paging,
//! retries of transient failures, normalisation to `AuditEvent`.

pub mod ringcentral;
pub mod symphony;
pub mod vbrick;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Config, ConfigErrors, ConfigIssue, SourceEntry};
use crate::journal::RejectedRecord;
use crate::model::{AuditEvent, StreamId};

/// The source kinds this build knows.
pub const KINDS: &[&str] = &["ringcentral", "symphony", "vbrick"];

/// A closed time window `[from, to)` to read completely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// One page of a window.
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<AuditEvent>,
    /// Records that could not be normalised: dead-lettered, the rest of the
    /// page is kept.
    pub rejected: Vec<RejectedRecord>,
    /// Opaque cursor of the next page of this window; None = window done.
    pub next: Option<String>,
    /// How many records the server says match the window, where it says.
    pub total_found: Option<u64>,
}

/// What the API allows, as the planner needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Longest window one request may cover.
    pub max_window: Duration,
    /// Oldest data the API still serves, relative to now (None: unknown).
    pub horizon: Option<Duration>,
    /// Record count at which the API may have evicted unread records
    /// (RingCentral keeps only the last 10,000).
    pub record_cap: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Credentials refused: not retried in a loop, the stream waits for
    /// its next poll (a login loop can lock the account out).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The API rejected the request (400/403...): recorded, retried on the
    /// next poll.
    #[error("request rejected: {0}")]
    Rejected(String),
    /// The API says the window is too long: the planner shrinks it.
    #[error("window too large for the API: {0}")]
    WindowTooLarge(String),
    /// 5xx, timeouts, 429 storms that outlasted the client's own retries.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The response could not be read as a whole (truncated, wrong
    /// format): the page is retried, nothing of it is stored.
    #[error("malformed response: {0}")]
    Malformed(String),
}

impl SourceError {
    /// Short class for the metric label.
    pub fn class(&self) -> &'static str {
        match self {
            SourceError::Auth(_) => "auth",
            SourceError::Rejected(_) => "rejected",
            SourceError::WindowTooLarge(_) => "window_too_large",
            SourceError::Transient(_) => "transient",
            SourceError::Malformed(_) => "malformed",
        }
    }
}

/// One incremental feed of one account.
#[async_trait]
pub trait StreamSource: Send + Sync {
    fn id(&self) -> &StreamId;
    fn limits(&self) -> StreamLimits;
    /// Fetches the page of `window` at `cursor` (None = first page).
    async fn fetch_page(&self, window: &Window, cursor: Option<&str>) -> Result<Page, SourceError>;
}

/// One configured account of a vendor.
#[async_trait]
pub trait Source: Send + Sync {
    fn kind(&self) -> &'static str;
    fn name(&self) -> &str;
    fn streams(&self) -> Vec<Arc<dyn StreamSource>>;
    /// Authenticates once and describes what it reached (for `check --connect`).
    async fn check_connection(&self) -> Result<String, SourceError>;
}

/// Builds one source from its config entry, pushing every issue found.
pub fn build(entry: &SourceEntry, issues: &mut Vec<ConfigIssue>) -> Option<Arc<dyn Source>> {
    match entry.kind.as_str() {
        "ringcentral" => ringcentral::build(entry, issues),
        "symphony" => symphony::build(entry, issues),
        "vbrick" => vbrick::build(entry, issues),
        other => {
            issues.push(ConfigIssue::new(
                format!("{}.kind", entry.path),
                format!(
                    "unknown source kind `{other}` (expected one of: {})",
                    KINDS.join(", ")
                ),
            ));
            None
        }
    }
}

/// Builds every enabled source; all issues at once.
pub fn build_all(cfg: &Config) -> Result<Vec<Arc<dyn Source>>, ConfigErrors> {
    let mut issues = Vec::new();
    let mut out = Vec::new();
    for entry in cfg.sources.iter().filter(|e| e.enabled) {
        if let Some(s) = build(entry, &mut issues) {
            out.push(s);
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(issues))
    }
}
