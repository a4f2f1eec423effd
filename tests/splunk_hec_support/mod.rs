//! Helpers for the Splunk HEC sink tests: synthesized audit events, a
//! journal filled with them, sinks built from TOML, a worker runner, and a
//! synthetic source that keeps producing events.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use trailkeep::config::Config;
use trailkeep::journal::{Checkpoint, Journal, JournalError};
use trailkeep::model::{Actor, AuditEvent, Change, EventKind, StreamId, Target};
use trailkeep::sinks::worker::WorkerOptions;
use trailkeep::sinks::{Sink, SinkWorker};
use trailkeep::sources::{Page, Source, SourceError, StreamLimits, StreamSource, Window};
use trailkeep::telemetry::Health;

/// A plausible audit event of `source`/`tenant`/`stream`, number `i`.
pub fn event(source: &str, tenant: &str, stream: &str, i: u64, time: DateTime<Utc>) -> AuditEvent {
    let native = format!("{stream}-{i:08}");
    AuditEvent {
        key: trailkeep::model::event_key(source, tenant, &native),
        source: source.into(),
        tenant: tenant.into(),
        stream: stream.into(),
        time,
        ingested_at: Utc::now(),
        action: ["USER_UPDATE", "ROLE_ASSIGN", "LOGIN", "DEVICE_DELETE"][(i % 4) as usize].into(),
        action_label: Some("Changed user settings".into()),
        kind: [
            EventKind::Update,
            EventKind::Create,
            EventKind::Login,
            EventKind::Delete,
        ][(i % 4) as usize],
        actor: Actor {
            id: Some(format!("{}", 1000 + i % 37)),
            name: Some(format!("Admin {}", i % 37)),
            email: Some(format!("admin{}@example.com", i % 37)),
            role: Some("Super Admin".into()),
        },
        target: Target {
            id: Some(format!("{}", 5000 + i)),
            name: Some(format!("User {i}")),
            kind: Some("User".into()),
            extension: Some(format!("{}", 100 + i % 900)),
        },
        changes: vec![Change {
            field: "status".into(),
            old: Some("Enabled".into()),
            new: Some("Disabled".into()),
        }],
        client_ip: Some(format!("10.0.{}.{}", i % 256, (i / 256) % 256)),
        raw: json!({"id": native, "eventType": "update", "details": {"parameters": [{"key": "status", "value": "Disabled"}]}}).into(),
    }
}

/// `n` events of one stream, one second apart from a fixed instant.
pub fn events(source: &str, tenant: &str, stream: &str, offset: u64, n: u64) -> Vec<AuditEvent> {
    let base = Utc
        .timestamp_millis_opt(1_717_200_000_123)
        .single()
        .expect("time");
    (offset..offset + n)
        .map(|i| {
            event(
                source,
                tenant,
                stream,
                i,
                base + chrono::Duration::milliseconds(i as i64 * 1_001),
            )
        })
        .collect()
}

/// Commits events in pages of at most 500, one stream per page.
pub fn fill(journal: &Journal, evs: &[AuditEvent]) {
    let mut start = 0;
    while start < evs.len() {
        let id = evs[start].stream_id();
        let end = (start..evs.len())
            .take(500)
            .take_while(|i| evs[*i].stream_id() == id)
            .last()
            .map_or(start + 1, |i| i + 1);
        journal
            .commit_page(&id, &evs[start..end], &[], &Checkpoint::default())
            .expect("commit");
        start = end;
    }
}

pub fn open_journal(dir: &Path) -> Journal {
    Journal::open(&dir.join("journal.db"), None).expect("journal")
}

/// Builds a `splunk_hec` sink named `name` from TOML settings (the token
/// goes to a file in `dir`).
pub async fn build_sink(
    dir: &Path,
    name: &str,
    url: &str,
    token: &str,
    extra: &str,
) -> Arc<dyn Sink> {
    let token_file = dir.join(format!("{name}.token"));
    std::fs::write(&token_file, token).expect("token file");
    let text = format!(
        r#"
[journal]
path = "{journal}"

[[sinks]]
kind = "splunk_hec"
name = "{name}"
endpoint = "{url}"
token = {{ file = "{token}" }}
ack_poll_interval = "50ms"
{extra}
"#,
        journal = dir.join("journal.db").display(),
        token = token_file.display(),
    );
    let cfg = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("config: {e}"));
    let mut issues = Vec::new();
    let sink = trailkeep::sinks::build(&cfg.sinks[0], &mut issues).await;
    assert!(issues.is_empty(), "{issues:?}");
    sink.expect("sink")
}

pub fn fast_worker() -> WorkerOptions {
    WorkerOptions {
        halt_retry: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        idle_poll: Duration::from_millis(50),
    }
}

pub struct Running {
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<u64, JournalError>>,
}

pub fn run_worker(sink: Arc<dyn Sink>, journal: &Journal, health: Arc<Health>) -> Running {
    let stop = CancellationToken::new();
    let w = SinkWorker::new(sink, journal.clone(), health, fast_worker());
    let task = tokio::spawn(w.run(stop.clone()));
    Running { stop, task }
}

impl Running {
    pub async fn finish(self) -> u64 {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("worker stops")
            .expect("join")
            .expect("worker ok")
    }
}

/// Polls `cond` every 20 ms; fails the test after `secs`.
pub async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the sink's cursor reached the journal's last event.
pub async fn wait_drained(journal: &Journal, sink: &str, secs: u64) {
    wait_until(secs, "sink drained", || {
        let max = journal.max_seq().expect("max");
        max > 0 && journal.sink_cursor(sink).expect("cursor") >= max
    })
    .await;
}

/// Multiset check: every expected id exactly once, nothing else.
pub fn assert_exactly_once(got: &[String], expected: &[String]) {
    let mut g = got.to_vec();
    g.sort();
    let mut e = expected.to_vec();
    e.sort();
    let dups: Vec<_> = g
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0].clone())
        .collect();
    assert!(
        dups.is_empty(),
        "{} duplicates, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    assert_eq!(g.len(), e.len(), "count differs");
    assert_eq!(g, e);
}

/// A source that produces one event per 100 ms of window time, with keys
/// derived from the time (so re-reads de-duplicate). It never ends: the
/// journal keeps growing as time passes.
pub struct TickSource {
    id: StreamId,
}

impl TickSource {
    pub fn new() -> Arc<Self> {
        Arc::new(TickSource {
            id: StreamId::new("ringcentral", "acme", "audit-trail"),
        })
    }
}

#[async_trait]
impl StreamSource for TickSource {
    fn id(&self) -> &StreamId {
        &self.id
    }
    fn limits(&self) -> StreamLimits {
        StreamLimits {
            max_window: Duration::from_secs(3_600),
            horizon: None,
            record_cap: None,
        }
    }
    async fn fetch_page(
        &self,
        window: &Window,
        _cursor: Option<&str>,
    ) -> Result<Page, SourceError> {
        let from = window.from.timestamp_millis().div_euclid(100) * 100;
        let from = if from < window.from.timestamp_millis() {
            from + 100
        } else {
            from
        };
        let to = window.to.timestamp_millis();
        let mut evs = Vec::new();
        let mut t = from;
        while t < to {
            let time = Utc.timestamp_millis_opt(t).single().expect("time");
            let mut e = event("ringcentral", "acme", "audit-trail", (t / 100) as u64, time);
            e.key = format!("ringcentral:acme:tick-{t}");
            evs.push(e);
            t += 100;
        }
        Ok(Page {
            events: evs,
            ..Page::default()
        })
    }
}

#[async_trait]
impl Source for TickSource {
    fn kind(&self) -> &'static str {
        "ringcentral"
    }
    fn name(&self) -> &str {
        "acme"
    }
    fn streams(&self) -> Vec<Arc<dyn StreamSource>> {
        vec![TickSource::new()]
    }
    async fn check_connection(&self) -> Result<String, SourceError> {
        Ok("synthetic".into())
    }
}
