//! The pipeline: one stream worker per source stream, one sink worker per
//! sink, a pruner, and orderly shutdown. It only knows the `StreamSource`
//! and `Sink` traits.

pub mod planner;
pub mod stream;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Schedule;
use crate::internal_events::{InternalEvent, JournalOpened, SinkRegistered, StreamRegistered};
use crate::journal::blocking;
use crate::journal::{Journal, JournalError};
use crate::model::StreamId;
use crate::sinks::worker::WorkerOptions;
use crate::sinks::{Sink, SinkWorker};
use crate::sources::Source;
use crate::telemetry::Health;

pub use stream::StreamWorker;

/// Which streams have nothing left to read right now (for `demo` and
/// tests that wait for catch-up).
#[derive(Default)]
pub struct Progress {
    caught_up: Mutex<BTreeMap<StreamId, bool>>,
}

impl Progress {
    pub fn set_caught_up(&self, id: &StreamId, v: bool) {
        self.caught_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), v);
    }

    pub fn register(&self, id: &StreamId) {
        self.caught_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_insert(false);
    }

    /// True when every registered stream is caught up.
    pub fn all_caught_up(&self) -> bool {
        let m = self.caught_up.lock().unwrap_or_else(|p| p.into_inner());
        !m.is_empty() && m.values().all(|v| *v)
    }
}

/// One source with the schedule of its config entry.
pub struct ScheduledSource {
    pub source: Arc<dyn Source>,
    pub schedule: Schedule,
}

pub struct Pipeline {
    pub journal: Journal,
    pub sources: Vec<ScheduledSource>,
    pub sinks: Vec<Arc<dyn Sink>>,
    pub health: Arc<Health>,
    pub progress: Arc<Progress>,
    pub shutdown_grace: Duration,
    pub retention: Duration,
    pub prune_interval: Duration,
    pub worker_options: WorkerOptions,
}

impl Pipeline {
    pub fn sink_names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.name().to_string()).collect()
    }

    /// True when every stream is caught up and every sink has confirmed
    /// everything in the journal.
    pub fn drained(&self) -> Result<bool, JournalError> {
        if !self.progress.all_caught_up() {
            return Ok(false);
        }
        let max = self.journal.max_seq()?;
        for s in &self.sinks {
            if self.journal.sink_cursor(s.name())? < max {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs until `stop` is cancelled. Stream workers stop at once (an open
    /// transaction completes or rolls back); sinks then get
    /// `shutdown_grace` to settle the batches in hand.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> Result<(), JournalError> {
        self.health.set_journal(self.journal.clone());
        JournalOpened {
            journal: &self.journal.path().display().to_string(),
        }
        .emit();
        let stream_stop = stop.child_token();
        let sink_stop = CancellationToken::new();
        let mut streams = JoinSet::new();
        for s in &self.sources {
            for stream in s.source.streams() {
                self.progress.register(stream.id());
                StreamRegistered {
                    stream: stream.id(),
                }
                .emit();
                let worker = StreamWorker {
                    stream,
                    schedule: s.schedule.clone(),
                    journal: self.journal.clone(),
                    health: self.health.clone(),
                    progress: self.progress.clone(),
                };
                streams.spawn(worker.run(stream_stop.clone()));
            }
        }
        let mut sinks = JoinSet::new();
        for sink in &self.sinks {
            SinkRegistered {
                sink: sink.name(),
                kind: sink.kind(),
            }
            .emit();
            let w = SinkWorker::new(
                sink.clone(),
                self.journal.clone(),
                self.health.clone(),
                self.worker_options,
            );
            sinks.spawn(w.run(sink_stop.clone()));
        }
        let pruner = {
            let me = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move { me.prune_loop(stop).await })
        };
        info!(
            streams = streams.len(),
            sinks = sinks.len(),
            "pipeline running"
        );

        let mut fatal: Option<JournalError> = None;
        // Wait for shutdown, or for a worker dying on a journal error.
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(r) = streams.join_next(), if !streams.is_empty() => {
                    if let Some(e) = task_error(r) { fatal = Some(e); break; }
                }
                Some(r) = sinks.join_next(), if !sinks.is_empty() => {
                    if let Some(e) = task_error(r) { fatal = Some(e); break; }
                }
            }
        }
        stream_stop.cancel();
        while let Some(r) = streams.join_next().await {
            if let Some(e) = task_error(r) {
                fatal.get_or_insert(e);
            }
        }
        sink_stop.cancel();
        let deadline = tokio::time::sleep(self.shutdown_grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = sinks.join_next() => match r {
                    Some(r) => { if let Some(e) = task_error(r) { fatal.get_or_insert(e); } }
                    None => break,
                },
                _ = &mut deadline => {
                    warn!("sinks did not settle within the shutdown grace; unconfirmed batches will be delivered again on restart");
                    sinks.abort_all();
                    break;
                }
            }
        }
        pruner.abort();
        match fatal {
            Some(e) => {
                error!(error = %e, "pipeline stopped on a journal error");
                Err(e)
            }
            None => {
                info!("pipeline stopped cleanly");
                Ok(())
            }
        }
    }

    async fn prune_loop(&self, stop: CancellationToken) {
        loop {
            if stream::sleep_or_stop(self.prune_interval, &stop).await {
                return;
            }
            let (retention, names) = (self.retention, self.sink_names());
            match blocking(&self.journal, move |j| j.prune(retention, &names)).await {
                Ok(n) if n > 0 => info!(pruned = n, "pruned delivered events past retention"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "pruning failed"),
            }
        }
    }
}

fn task_error<T>(
    r: Result<Result<T, JournalError>, tokio::task::JoinError>,
) -> Option<JournalError> {
    match r {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e),
        Err(e) if e.is_cancelled() => None,
        Err(e) => Some(JournalError::Io {
            path: String::new(),
            source: std::io::Error::other(format!("worker task panicked: {e}")),
        }),
    }
}
