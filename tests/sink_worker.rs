//! The generic sink worker's batching: `max_wait` lets a small batch fill
//! while nothing is in flight; zero sends at once.

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
    async fn deliver(&self, batch: &Batch, _ctx: &SinkContext) -> Result<Delivery, SinkError> {
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
