//! The generic sink worker: batching (`max_wait` lets a small batch fill
//! while nothing is in flight; zero sends at once) and retries (read again
//! from the journal).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use trailkeep::journal::{Checkpoint, Journal};
use trailkeep::model::{event_key, Actor, AuditEvent, EventKind, StreamId, Target};
use trailkeep::sinks::worker::WorkerOptions;
use trailkeep::sinks::{Batch, BatchLimits, Delivery, Sink, SinkContext, SinkError, SinkWorker};
use trailkeep::telemetry::Health;

struct Recorder {
    limits: BatchLimits,
    sizes: Mutex<Vec<usize>>,
}

#[async_trait]
impl Sink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn kind(&self) -> &'static str {
        "test"
    }
    fn batch_limits(&self) -> BatchLimits {
        self.limits
    }
    async fn deliver(&self, batch: Batch, _ctx: &SinkContext) -> Result<Delivery, SinkError> {
        let batch = &batch;
        self.sizes.lock().expect("lock").push(batch.len());
        Ok(Delivery::default())
    }
    async fn check_connection(&self) -> Result<String, SinkError> {
        Ok("ok".into())
    }
}

fn ev(i: u32) -> AuditEvent {
    AuditEvent {
        key: event_key("ringcentral", "t", &i.to_string()),
        source: "ringcentral".into(),
        tenant: "t".into(),
        stream: "audit-trail".into(),
        time: Utc::now(),
        ingested_at: Utc::now(),
        action: "X".into(),
        action_label: None,
        kind: EventKind::Update,
        actor: Actor::default(),
        target: Target::default(),
        changes: vec![],
        client_ip: None,
        raw: serde_json::json!({"id": i}).into(),
    }
}

async fn first_batches(max_wait: Duration) -> Vec<usize> {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("j.db"), None).expect("journal");
    let sid = StreamId::new("ringcentral", "t", "audit-trail");
    journal
        .commit_page(&sid, &[ev(1)], &[], &Checkpoint::default())
        .expect("commit");
    let sink = Arc::new(Recorder {
        limits: BatchLimits {
            max_events: 100,
            max_wait,
            ..BatchLimits::default()
        },
        sizes: Mutex::new(Vec::new()),
    });
    let worker = SinkWorker::new(
        sink.clone(),
        journal.clone(),
        Arc::new(Health::new()),
        WorkerOptions::default(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));
    // Three more events arrive shortly after the first.
    tokio::time::sleep(Duration::from_millis(150)).await;
    journal
        .commit_page(&sid, &[ev(2), ev(3), ev(4)], &[], &Checkpoint::default())
        .expect("commit");
    for _ in 0..100 {
        if journal.sink_cursor("recorder").expect("cursor") >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.expect("task").expect("worker");
    let sizes = sink.sizes.lock().expect("lock").clone();
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_fills_a_small_batch() {
    assert_eq!(
        first_batches(Duration::from_millis(600)).await,
        vec![4],
        "one batch of all four"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_max_wait_sends_at_once() {
    assert_eq!(
        first_batches(Duration::ZERO).await,
        vec![1, 3],
        "the first event alone, then the rest"
    );
}

/// Fails the first two attempts of every batch, recording the keys each
/// attempt was given.
struct Flaky {
    attempts: Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl Sink for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn kind(&self) -> &'static str {
        "test"
    }
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: 10,
            max_in_flight: 4,
            ..BatchLimits::default()
        }
    }
    async fn deliver(&self, batch: Batch, _ctx: &SinkContext) -> Result<Delivery, SinkError> {
        let keys: Vec<String> = batch.records.iter().map(|r| r.key.clone()).collect();
        let mut attempts = self.attempts.lock().expect("lock");
        let seen_before = attempts
            .iter()
            .filter(|a| a.first() == keys.first())
            .count();
        attempts.push(keys);
        if seen_before < 2 {
            return Err(SinkError::retryable("test", "not yet"));
        }
        Ok(Delivery::default())
    }
    async fn check_connection(&self) -> Result<String, SinkError> {
        Ok("ok".into())
    }
}

/// The worker hands each batch to the sink and keeps only where it lies in
/// the journal; a retry reads it again. Every retry must carry exactly the
/// records of the first attempt, and the cursor must end at the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_read_the_same_batch_again_from_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("j.db"), None).expect("journal");
    let sid = StreamId::new("ringcentral", "t", "audit-trail");
    let events: Vec<AuditEvent> = (1..=35).map(ev).collect();
    journal
        .commit_page(&sid, &events, &[], &Checkpoint::default())
        .expect("commit");
    let sink = Arc::new(Flaky {
        attempts: Mutex::new(Vec::new()),
    });
    let worker = SinkWorker::new(
        sink.clone(),
        journal.clone(),
        Arc::new(Health::new()),
        WorkerOptions {
            max_backoff: Duration::from_millis(20),
            ..WorkerOptions::default()
        },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));
    for _ in 0..250 {
        if journal.sink_cursor("flaky").expect("cursor") >= 35 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.expect("task").expect("worker");
    assert_eq!(journal.sink_cursor("flaky").expect("cursor"), 35);
    let attempts = sink.attempts.lock().expect("lock").clone();
    // 4 batches (10, 10, 10, 5), 3 attempts each, identical every time.
    let mut by_first: std::collections::BTreeMap<String, Vec<Vec<String>>> = Default::default();
    for a in attempts {
        by_first.entry(a[0].clone()).or_default().push(a);
    }
    assert_eq!(by_first.len(), 4, "{by_first:?}");
    let mut all: Vec<String> = Vec::new();
    for (first, tries) in &by_first {
        assert_eq!(tries.len(), 3, "batch starting {first}");
        assert!(
            tries.iter().all(|t| t == &tries[0]),
            "batch starting {first}: {tries:?}"
        );
        all.extend(tries[0].iter().cloned());
    }
    all.sort();
    let mut want: Vec<String> = events.iter().map(|e| e.key.clone()).collect();
    want.sort();
    assert_eq!(all, want, "every event in exactly one batch");
}
