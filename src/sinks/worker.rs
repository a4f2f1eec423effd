//! The generic sink worker: journal → sink, cursor moved only on
//! confirmation, retries with backoff, halting on credential errors.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Batch, BatchSpan, Delivery, Sink, SinkContext, SinkError};
use crate::internal_events::{
    EventDeadLettered, InternalEvent, SinkBacklog, SinkBatchDelivered, SinkDeliveryFailed,
    SinkHaltChanged,
};
use crate::journal::{blocking, Journal, JournalError};
use crate::telemetry::Health;
use crate::util::{backoff_delay, from_millis};

/// Tunables of the worker itself (not of the destination).
#[derive(Clone, Copy, Debug)]
pub struct WorkerOptions {
    /// How long a halted sink waits before trying again.
    pub halt_retry: Duration,
    /// Ceiling of the retry backoff.
    pub max_backoff: Duration,
    /// How often an idle worker looks for new events even without a wake-up.
    pub idle_poll: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            halt_retry: Duration::from_secs(30),
            max_backoff: Duration::from_secs(60),
            idle_poll: Duration::from_millis(250),
        }
    }
}

pub struct SinkWorker {
    sink: Arc<dyn Sink>,
    ctx: SinkContext,
    health: Arc<Health>,
    opts: WorkerOptions,
}

impl SinkWorker {
    pub fn new(
        sink: Arc<dyn Sink>,
        journal: Journal,
        health: Arc<Health>,
        opts: WorkerOptions,
    ) -> Self {
        let ctx = SinkContext {
            journal,
            sink: sink.name().to_string(),
        };
        SinkWorker {
            sink,
            ctx,
            health,
            opts,
        }
    }

    /// Runs until `stop` is cancelled and the batches in hand are settled.
    /// Returns the number of events delivered.
    pub async fn run(self, stop: CancellationToken) -> Result<u64, JournalError> {
        let name = self.ctx.sink.clone();
        let mut attempt = 0u32;
        loop {
            let started = tokio::select! {
                r = self.sink.start(&self.ctx) => r,
                _ = stop.cancelled() => return Ok(0),
            };
            match started {
                Ok(()) => {
                    self.recovered();
                    break;
                }
                Err(e) => {
                    let wait = self.failure_wait(&e, attempt);
                    attempt += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return Ok(0),
                    }
                }
            }
        }

        let limits = self.sink.batch_limits();
        let journal = self.ctx.journal.clone();
        let mut read_pos = blocking(&journal, {
            let name = name.clone();
            move |j| j.sink_cursor(&name)
        })
        .await?;
        let mut delivered_total = 0u64;
        let mut in_flight = FuturesOrdered::new();
        let mut stopping = false;
        loop {
            while !stopping && in_flight.len() < limits.max_in_flight.max(1) {
                let batch = blocking(&journal, move |j| {
                    j.read_after(read_pos, limits.max_events.max(1), limits.max_bytes)
                })
                .await?;
                if batch.is_empty() {
                    break;
                }
                let mut batch = Batch { records: batch };
                if in_flight.is_empty()
                    && !limits.max_wait.is_zero()
                    && batch.len() < limits.max_events
                {
                    // Nothing is waiting on us: let the batch fill a little.
                    let deadline = Instant::now() + limits.max_wait;
                    while batch.len() < limits.max_events.max(1) && Instant::now() < deadline {
                        tokio::select! {
                            _ = journal.wait_for_events() => {}
                            _ = tokio::time::sleep_until(deadline) => {}
                            _ = stop.cancelled() => break,
                        }
                        let more = blocking(&journal, move |j| {
                            j.read_after(read_pos, limits.max_events.max(1), limits.max_bytes)
                        })
                        .await?;
                        if more.len() > batch.len() {
                            batch = Batch { records: more };
                        }
                    }
                }
                read_pos = batch.last_seq();
                in_flight.push_back(self.deliver_until_done(batch, stop.clone()));
            }
            if in_flight.is_empty() {
                if stopping {
                    break;
                }
                self.report_backlog(read_pos).await;
                tokio::select! {
                    _ = journal.wait_for_events() => {}
                    _ = tokio::time::sleep(self.opts.idle_poll) => {}
                    _ = stop.cancelled() => { stopping = true; }
                }
                continue;
            }
            let room = !stopping && in_flight.len() < limits.max_in_flight.max(1);
            tokio::select! {
                done = in_flight.next() => {
                    let Some((span, outcome)) = done else { continue };
                    let Some(delivery) = outcome else {
                        // Shutdown interrupted the retries: the cursor stays,
                        // the batch is delivered again next run.
                        stopping = true;
                        continue;
                    };
                    delivered_total += self.commit(span, delivery).await?;
                    self.report_backlog(span.last_seq).await;
                }
                // Room for more batches: pick up events committed while
                // others are in flight (acks can take seconds).
                _ = journal.wait_for_events(), if room => {}
                _ = tokio::time::sleep(self.opts.idle_poll), if room => {}
                _ = stop.cancelled(), if !stopping => { stopping = true; }
            }
        }
        Ok(delivered_total)
    }

    async fn commit(&self, batch: BatchSpan, delivery: Delivery) -> Result<u64, JournalError> {
        let name = self.ctx.sink.clone();
        for d in &delivery.dead {
            let code = d.reason.split(':').next().unwrap_or("rejected").trim();
            let code = if code.len() > 40 || code.contains(' ') {
                "rejected"
            } else {
                code
            };
            EventDeadLettered {
                sink: &name,
                key: &d.key,
                reason: &d.reason,
                code,
            }
            .emit();
        }
        let dead = delivery.dead.len() as u64;
        let delivered = batch.len as u64 - dead.min(batch.len as u64);
        let last = batch.last_seq;
        let dead_rows = delivery.dead;
        blocking(&self.ctx.journal, move |j| {
            j.advance_sink(&name, last, delivered, &dead_rows)
        })
        .await?;
        Ok(delivered)
    }

    async fn report_backlog(&self, cursor: u64) {
        let name = self.ctx.sink.clone();
        let res = blocking(&self.ctx.journal, move |j| {
            let max = j.max_seq()?;
            let oldest = if max > cursor {
                j.read_after(cursor, 1, usize::MAX)?
                    .first()
                    .map(|r| r.ingested_ms)
            } else {
                None
            };
            Ok::<_, JournalError>((max.saturating_sub(cursor), oldest))
        })
        .await;
        if let Ok((depth, oldest)) = res {
            SinkBacklog {
                sink: &name,
                depth,
                oldest_pending: oldest.map(from_millis),
            }
            .emit();
        }
    }

    /// Delivers one batch, retrying until it is confirmed. Returns None
    /// only when shutdown interrupted it. The batch goes to the sink; each
    /// retry reads it again from the journal, so a batch waiting here holds
    /// no events in memory.
    async fn deliver_until_done(
        &self,
        batch: Batch,
        stop: CancellationToken,
    ) -> (BatchSpan, Option<Delivery>) {
        let span = batch.span();
        let mut first = Some(batch);
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let result = match first.take() {
                Some(b) => Ok(b),
                None => self.ctx.reread(span).await,
            };
            // Never cancel a delivery in progress: its side effects (a file
            // append, an HTTP send) may already be under way, and starting it
            // again would repeat them. On shutdown it finishes within the
            // grace period the pipeline allows (which aborts us after that).
            let result = match result {
                Ok(b) => self.sink.deliver(b, &self.ctx).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(delivery) => {
                    self.recovered();
                    SinkBatchDelivered {
                        sink: &self.ctx.sink,
                        delivered: (span.len - delivery.dead.len().min(span.len)) as u64,
                        dead: delivery.dead.len() as u64,
                        elapsed: started.elapsed(),
                    }
                    .emit();
                    return (span, Some(delivery));
                }
                Err(e) => {
                    if stop.is_cancelled() {
                        return (span, None);
                    }
                    let wait = self.failure_wait(&e, attempt);
                    attempt += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return (span, None),
                    }
                }
            }
        }
    }

    /// Records a failure and says how long to wait before the next try.
    fn failure_wait(&self, e: &SinkError, attempt: u32) -> Duration {
        let name = &self.ctx.sink;
        match e {
            SinkError::Retryable {
                code,
                reason,
                retry_after,
            } => {
                let wait =
                    backoff_delay(attempt, Duration::from_millis(200), self.opts.max_backoff)
                        .max(retry_after.unwrap_or_default());
                SinkDeliveryFailed {
                    sink: name,
                    code,
                    error: reason,
                    retry_in: wait,
                }
                .emit();
                wait
            }
            SinkError::Halt { code, reason } => {
                let text = format!("{code}: {reason}");
                if !self.health.halted().contains_key(name) {
                    SinkHaltChanged {
                        sink: name,
                        reason: Some(&text),
                    }
                    .emit();
                }
                self.health.sink_halted(name, &text);
                SinkDeliveryFailed {
                    sink: name,
                    code,
                    error: reason,
                    retry_in: self.opts.halt_retry,
                }
                .emit();
                let _ = self.ctx.journal.record_sink_error(name, &text);
                self.opts.halt_retry
            }
        }
    }

    fn recovered(&self) {
        let name = &self.ctx.sink;
        if self.health.halted().contains_key(name) {
            self.health.sink_recovered(name);
            SinkHaltChanged {
                sink: name,
                reason: None,
            }
            .emit();
        }
    }
}
