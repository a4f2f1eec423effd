//! The stream worker: plan a window, walk its pages, commit each page with
//! its checkpoint, move the watermark when the window is complete.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::planner::{self, Plan};
use super::Progress;
use crate::config::Schedule;
use crate::internal_events::{
    HorizonGap, InternalEvent, JournalFull, PageCommitted, RecordRejected, StreamFetchFailed,
    StreamProgress, WindowSaturated,
};
use crate::journal::blocking;
use crate::journal::{
    Checkpoint, CommitOutcome, Journal, JournalError, OpenWindow, RejectedRecord,
};
use crate::model::{AuditEvent, StreamId};
use crate::sources::{Page, SourceError, StreamSource, Window};
use crate::telemetry::Health;
use crate::util::backoff_delay;

/// Smallest window the saturation shrinking goes down to.
const MIN_WINDOW: Duration = Duration::from_secs(60);

pub struct StreamWorker {
    pub stream: Arc<dyn StreamSource>,
    pub schedule: Schedule,
    pub journal: Journal,
    pub health: Arc<Health>,
    pub progress: Arc<Progress>,
}

enum WindowResult {
    Complete { saturated: bool },
    Shrink,
    Failed(SourceError),
    Stopped,
}

impl StreamWorker {
    pub async fn run(self, stop: CancellationToken) -> Result<(), JournalError> {
        let id = self.stream.id().clone();
        let limits = self.stream.limits();
        let mut max_window = self
            .schedule
            .max_window
            .map_or(limits.max_window, |w| w.min(limits.max_window));
        let mut failures = 0u32;
        let mut saturated = false;
        self.health.expect_stream(&id.to_string());
        while !stop.is_cancelled() {
            let checkpoint = {
                let id = id.clone();
                blocking(&self.journal, move |j| j.checkpoint(&id))
                    .await?
                    .unwrap_or_default()
            };
            let now = Utc::now();
            match planner::plan(&checkpoint, &self.schedule, &limits, max_window, now) {
                Plan::CaughtUp => {
                    self.progress.set_caught_up(&id, true);
                    if let Some(wm) = checkpoint.watermark {
                        self.report_progress(&id, wm, saturated);
                    }
                    if sleep_or_stop(self.schedule.poll_interval, &stop).await {
                        break;
                    }
                }
                Plan::Fetch {
                    window,
                    cursor,
                    gap,
                } => {
                    self.progress.set_caught_up(&id, false);
                    if let Some((from, to)) = gap {
                        HorizonGap {
                            stream: &id,
                            from,
                            to,
                        }
                        .emit();
                        let reason = format!(
                            "watermark {from} older than the source's horizon; lost until {to}"
                        );
                        let gid = id.clone();
                        blocking(&self.journal, move |j| {
                            j.record_gap(&gid, from, to, &reason)
                        })
                        .await?;
                    }
                    match self.walk(&id, &checkpoint, window, cursor, &stop).await? {
                        WindowResult::Complete { saturated: s } => {
                            failures = 0;
                            saturated = s;
                            self.report_progress(&id, window.to, saturated);
                        }
                        WindowResult::Shrink => {
                            let len = (window.to - window.from).to_std().unwrap_or(MIN_WINDOW);
                            max_window = (len / 2).max(MIN_WINDOW);
                            saturated = true;
                        }
                        WindowResult::Stopped => break,
                        WindowResult::Failed(e) => {
                            if let SourceError::WindowTooLarge(_) = e {
                                let len = (window.to - window.from).to_std().unwrap_or(MIN_WINDOW);
                                max_window = (len / 2).max(MIN_WINDOW);
                            }
                            let wait = match &e {
                                SourceError::Auth(_) | SourceError::Rejected(_) => {
                                    self.schedule.poll_interval
                                }
                                SourceError::WindowTooLarge(_) => Duration::ZERO,
                                SourceError::Transient(_) | SourceError::Malformed(_) => {
                                    backoff_delay(
                                        failures,
                                        Duration::from_secs(1),
                                        self.schedule.poll_interval,
                                    )
                                }
                            };
                            failures = failures.saturating_add(1);
                            let text = e.to_string();
                            StreamFetchFailed {
                                stream: &id,
                                class: e.class(),
                                error: &text,
                                retry_in: wait,
                            }
                            .emit();
                            let eid = id.clone();
                            blocking(&self.journal, move |j| j.record_stream_error(&eid, &text))
                                .await?;
                            if sleep_or_stop(wait, &stop).await {
                                break;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn walk(
        &self,
        id: &StreamId,
        checkpoint: &Checkpoint,
        window: Window,
        mut cursor: Option<String>,
        stop: &CancellationToken,
    ) -> Result<WindowResult, JournalError> {
        let limits = self.stream.limits();
        let mut saturated = false;
        // The next page, requested while the previous one was committing.
        let mut prefetched: Option<Result<Page, SourceError>> = None;
        loop {
            let first_page = cursor.is_none();
            let fetched = match prefetched.take() {
                Some(r) => r,
                None => tokio::select! {
                    r = self.stream.fetch_page(&window, cursor.as_deref()) => r,
                    _ = stop.cancelled() => return Ok(WindowResult::Stopped),
                },
            };
            let page = match fetched {
                Ok(p) => p,
                Err(e) => return Ok(WindowResult::Failed(e)),
            };
            self.health.stream_authenticated(&id.to_string());
            let mut shrink = false;
            if first_page {
                if let (Some(cap), Some(found)) = (limits.record_cap, page.total_found) {
                    if found >= cap {
                        WindowSaturated {
                            stream: id,
                            total_found: found,
                            from: window.from,
                            to: window.to,
                        }
                        .emit();
                        // Compliance must see it: the interval may be incomplete.
                        let (gid, from, to) = (id.clone(), window.from, window.to);
                        let reason = format!(
                            "window held {found} records, the source's cap ({cap}): older records may have been evicted unread"
                        );
                        blocking(&self.journal, move |j| {
                            j.record_gap(&gid, from, to, &reason)
                        })
                        .await?;
                        saturated = true;
                        let len = (window.to - window.from).to_std().unwrap_or_default();
                        shrink = len > MIN_WINDOW;
                    }
                }
            }
            for r in &page.rejected {
                RecordRejected {
                    stream: id,
                    location: &r.location,
                    reason: &r.reason,
                }
                .emit();
            }
            let next_checkpoint = if shrink {
                // Keep what this page brought, then re-plan a smaller window.
                Checkpoint {
                    watermark: checkpoint.watermark,
                    open_window: None,
                }
            } else {
                match &page.next {
                    Some(next) => Checkpoint {
                        watermark: checkpoint.watermark,
                        open_window: Some(OpenWindow {
                            from: window.from,
                            to: window.to,
                            cursor: Some(next.clone()),
                        }),
                    },
                    None => Checkpoint {
                        watermark: Some(
                            checkpoint.watermark.map_or(window.to, |w| w.max(window.to)),
                        ),
                        open_window: None,
                    },
                }
            };
            let fetched_n = page.events.len() + page.rejected.len();
            let commit = self.commit(id, page.events, page.rejected, next_checkpoint, stop);
            // Overlap the next request with this commit: the source's latency
            // and the journal's write then cost the time of the slower one.
            // The cursor still moves only with a committed page.
            let (committed, next_page) = match (&page.next, shrink) {
                (Some(next), false) => {
                    let fetch = async {
                        tokio::select! {
                            r = self.stream.fetch_page(&window, Some(next)) => Some(r),
                            _ = stop.cancelled() => None,
                        }
                    };
                    let (c, f) = tokio::join!(commit, fetch);
                    (c?, f)
                }
                _ => (commit.await?, None),
            };
            prefetched = next_page;
            let outcome = match committed {
                Some(o) => o,
                None => return Ok(WindowResult::Stopped),
            };
            if stop.is_cancelled() {
                return Ok(WindowResult::Stopped);
            }
            PageCommitted {
                stream: id,
                fetched: fetched_n,
                outcome,
            }
            .emit();
            if shrink {
                return Ok(WindowResult::Shrink);
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(WindowResult::Complete { saturated }),
            }
        }
    }

    /// Commits a page; while the journal is full, waits (checkpoint
    /// unchanged) and retries. None = stopped while waiting.
    async fn commit(
        &self,
        id: &StreamId,
        events: Vec<AuditEvent>,
        rejected: Vec<RejectedRecord>,
        checkpoint: Checkpoint,
        stop: &CancellationToken,
    ) -> Result<Option<CommitOutcome>, JournalError> {
        let events = Arc::new(events);
        let rejected = Arc::new(rejected);
        let mut was_full = false;
        let journal_name = self.journal.path().display().to_string();
        loop {
            let (sid, ev, rj, cp) = (
                id.clone(),
                events.clone(),
                rejected.clone(),
                checkpoint.clone(),
            );
            match blocking(&self.journal, move |j| j.commit_page(&sid, &ev, &rj, &cp)).await {
                Ok(o) => {
                    if was_full {
                        JournalFull {
                            journal: &journal_name,
                            full: false,
                        }
                        .emit();
                    }
                    return Ok(Some(o));
                }
                Err(e) if e.is_full() => {
                    if !was_full {
                        JournalFull {
                            journal: &journal_name,
                            full: true,
                        }
                        .emit();
                        was_full = true;
                    }
                    if sleep_or_stop(Duration::from_secs(1), stop).await {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn report_progress(&self, id: &StreamId, watermark: chrono::DateTime<Utc>, saturated: bool) {
        let limits = self.stream.limits();
        let headroom = planner::horizon_floor(&limits, Utc::now()).map(|floor| {
            let oldest_unread = watermark - crate::util::chrono_duration(self.schedule.overlap);
            (oldest_unread - floor).num_milliseconds() as f64 / 1000.0
        });
        StreamProgress {
            stream: id,
            watermark,
            headroom,
            saturated,
        }
        .emit();
    }
}

/// Sleeps; true if `stop` fired first.
pub async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.cancelled() => true,
    }
}
