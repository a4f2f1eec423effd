//! Sinks: where events go from the journal.
//!
//! Each configured sink gets a `SinkWorker` with its own cursor. The worker
//! reads batches after the cursor, hands them to the sink, and moves the
//! cursor only after the sink confirmed every event of the batch (or
//! dead-lettered it). Sinks are therefore at-least-once and must be
//! idempotent (deterministic keys) or carry the event key for de-duplication.

pub mod alerts;
pub mod archive;
pub mod dynamodb;
pub mod splunk_hec;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{Config, ConfigErrors, ConfigIssue, SinkEntry};
use crate::journal::{Journal, JournalRecord, SinkDeadLetter};

pub use worker::SinkWorker;

/// The sink kinds this build knows.
pub const KINDS: &[&str] = &["archive", "alerts", "dynamodb", "splunk_hec"];

/// Batching limits a sink asks the worker for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    /// Batches delivered concurrently; the cursor still moves in order.
    pub max_in_flight: usize,
    /// While nothing is in flight, a batch smaller than `max_events` waits
    /// up to this long for more events (fewer, fuller requests). Zero =
    /// send at once.
    pub max_wait: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_events: 1_000,
            max_bytes: 4 * 1024 * 1024,
            max_in_flight: 1,
            max_wait: Duration::ZERO,
        }
    }
}

/// A contiguous run of journal records (ascending `seq`).
#[derive(Clone, Debug)]
pub struct Batch {
    pub records: Vec<JournalRecord>,
}

/// Where a batch lies in the journal: all that is needed to read it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSpan {
    pub first_seq: u64,
    pub last_seq: u64,
    pub len: usize,
}

impl Batch {
    pub fn span(&self) -> BatchSpan {
        BatchSpan {
            first_seq: self.first_seq(),
            last_seq: self.last_seq(),
            len: self.len(),
        }
    }
    pub fn first_seq(&self) -> u64 {
        self.records.first().map_or(0, |r| r.seq)
    }
    pub fn last_seq(&self) -> u64 {
        self.records.last().map_or(0, |r| r.seq)
    }
    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// What the sink did with a batch: everything not listed in `dead` was
/// delivered and confirmed.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    pub dead: Vec<SinkDeadLetter>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Try the same batch again after a backoff (at least `retry_after`).
    #[error("{code}: {reason}")]
    Retryable {
        code: String,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Credentials or configuration refused: the sink halts (readiness
    /// fails), sources keep pulling, the worker retries slowly.
    #[error("halted ({code}): {reason}")]
    Halt { code: String, reason: String },
}

impl SinkError {
    pub fn retryable(code: impl Into<String>, reason: impl Into<String>) -> Self {
        SinkError::Retryable {
            code: code.into(),
            reason: reason.into(),
            retry_after: None,
        }
    }
    pub fn halt(code: impl Into<String>, reason: impl Into<String>) -> Self {
        SinkError::Halt {
            code: code.into(),
            reason: reason.into(),
        }
    }
    pub fn code(&self) -> &str {
        match self {
            SinkError::Retryable { code, .. } | SinkError::Halt { code, .. } => code,
        }
    }
}

/// What a sink may use while running: the journal for its own durable
/// state (`sink_state`), and its name.
#[derive(Clone, Debug)]
pub struct SinkContext {
    pub journal: Journal,
    pub sink: String,
}

impl SinkContext {
    /// Reads a batch again from the journal. Its rows cannot have gone:
    /// pruning stops at the slowest sink's cursor, which is behind them.
    pub async fn reread(&self, span: BatchSpan) -> Result<Batch, SinkError> {
        let records = crate::journal::blocking(&self.journal, move |j| {
            j.read_after(span.first_seq.saturating_sub(1), span.len, usize::MAX)
        })
        .await
        .map_err(|e| SinkError::retryable("journal", e.to_string()))?;
        let batch = Batch { records };
        if batch.span() != span {
            return Err(SinkError::retryable(
                "journal",
                format!(
                    "re-reading seq {}..={} from the journal found {} records ({}..={})",
                    span.first_seq,
                    span.last_seq,
                    batch.len(),
                    batch.first_seq(),
                    batch.last_seq()
                ),
            ));
        }
        Ok(batch)
    }
}

#[async_trait]
pub trait Sink: Send + Sync {
    fn name(&self) -> &str;
    fn kind(&self) -> &'static str;
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits::default()
    }
    /// Called once before the first batch: health check, recovery of state
    /// left by a previous process.
    async fn start(&self, _ctx: &SinkContext) -> Result<(), SinkError> {
        Ok(())
    }
    /// Delivers the whole batch, or fails without having confirmed any of
    /// it. Returns only once the destination has confirmed. The sink owns
    /// the batch so it can release the records once the destination holds
    /// them (a sink waiting seconds for acknowledgements then holds no
    /// events in memory); a retry reads them again from the journal.
    async fn deliver(&self, batch: Batch, ctx: &SinkContext) -> Result<Delivery, SinkError>;
    /// Describes the destination after a health check (`check --connect`).
    async fn check_connection(&self) -> Result<String, SinkError>;
}

/// Builds one sink from its config entry.
pub async fn build(entry: &SinkEntry, issues: &mut Vec<ConfigIssue>) -> Option<Arc<dyn Sink>> {
    match entry.kind.as_str() {
        "archive" => archive::build(entry, issues),
        "alerts" => alerts::build(entry, issues),
        "dynamodb" => dynamodb::build(entry, issues).await,
        "splunk_hec" => splunk_hec::build(entry, issues),
        other => {
            issues.push(ConfigIssue::new(
                format!("{}.kind", entry.path),
                format!(
                    "unknown sink kind `{other}` (expected one of: {})",
                    KINDS.join(", ")
                ),
            ));
            None
        }
    }
}

/// Builds every enabled sink; all issues at once.
pub async fn build_all(cfg: &Config) -> Result<Vec<Arc<dyn Sink>>, ConfigErrors> {
    let mut issues = alerts::placement_issues(cfg);
    let mut out = Vec::new();
    for entry in cfg.sinks.iter().filter(|e| e.enabled) {
        let entry = alerts::attach_rules(entry, cfg);
        if let Some(s) = build(&entry, &mut issues).await {
            out.push(s);
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(issues))
    }
}
