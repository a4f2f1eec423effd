//! Indexer acknowledgement: pending ackIds, kept in the journal before
//! anyone waits on them, polled in bulk by one background task.
//!
//! Each pending ack remembers its channel and the seq range of the events
//! it carried (`ack.<channel>.<ackId>` in the sink's journal state). A
//! restarted process loads them, keeps polling their (old) channel, and a
//! batch whose range a recovered ack covers is confirmed without being
//! sent again. New requests always use a fresh channel, so an ackId of a
//! recovered channel can never be mistaken for one of a new request.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::service::{AckQueryError, HecService};
use crate::internal_events::{HecAckTimedOut, HecAcksPending, HecPollFailed, InternalEvent};
use crate::journal::blocking;
use crate::journal::Journal;

/// Most ackIds asked for in one `/ack` request.
const MAX_IDS_PER_QUERY: usize = 10_000;

pub const STATE_PREFIX: &str = "ack.";

/// How one pending ack ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Indexed and replicated.
    Indexed,
    /// Still false after `ack_timeout`, or its channel is gone: resend.
    Lost,
    /// The token stopped acknowledging (code 14): the 200 was all we get.
    Disabled,
}

/// An ack as kept in the journal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SavedAck {
    pub first: u64,
    pub last: u64,
    /// Events the request carried (its seqs are those of the range minus
    /// any dead-lettered before sending).
    #[serde(default)]
    pub count: usize,
    /// When the request was sent (Unix ms), for the timeout after a restart.
    pub sent_ms: i64,
    /// The ack read true. Kept (not deleted) until the worker commits the
    /// batch, because Splunk forgets an ack once read: a process killed
    /// before the cursor moved must still know the request was indexed.
    #[serde(default)]
    pub confirmed: bool,
}

struct Entry {
    first: u64,
    last: u64,
    count: usize,
    deadline: Instant,
    waiters: Vec<oneshot::Sender<AckOutcome>>,
}

#[derive(Default)]
struct Inner {
    /// (channel, ackId) → pending ack.
    pending: HashMap<(String, u64), Entry>,
    /// Requests confirmed but not yet committed by the worker
    /// (first seq → (last seq, count, journal state key)), so a retried
    /// batch is not sent again.
    confirmed: BTreeMap<u64, (u64, usize, String)>,
    /// Journal records of delivered batches, deleted once the worker's
    /// cursor has passed them (last seq, state key).
    awaiting_commit: Vec<(u64, String)>,
}

/// A range already handled, or an ack to wait for.
pub enum Covered {
    Confirmed,
    Pending(oneshot::Receiver<AckOutcome>),
}

pub struct Acks {
    sink: String,
    journal: Journal,
    service: Arc<HecService>,
    poll_interval: Duration,
    ack_timeout: Duration,
    inner: Mutex<Inner>,
    wake: Notify,
    stop: CancellationToken,
    poller: Mutex<bool>,
    poll_failures: AtomicU64,
}

fn state_key(channel: &str, ack_id: u64) -> String {
    format!("{STATE_PREFIX}{channel}.{ack_id}")
}

fn parse_key(key: &str) -> Option<(String, u64)> {
    let rest = key.strip_prefix(STATE_PREFIX)?;
    let (channel, id) = rest.rsplit_once('.')?;
    Some((channel.to_string(), id.parse().ok()?))
}

impl Acks {
    pub fn new(
        sink: &str,
        journal: Journal,
        service: Arc<HecService>,
        poll_interval: Duration,
        ack_timeout: Duration,
    ) -> Self {
        Acks {
            sink: sink.to_string(),
            journal,
            service,
            poll_interval,
            ack_timeout,
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            poller: Mutex::new(false),
            poll_failures: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the poller (the sink is going away).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    pub fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }

    fn ensure_poller(self: &Arc<Self>) {
        let mut started = self.poller.lock().unwrap_or_else(|p| p.into_inner());
        if !*started {
            *started = true;
            let me = self.clone();
            tokio::spawn(async move { me.poll_loop().await });
        }
    }

    /// Loads the acks a previous process left pending. Those whose range
    /// the cursor already passed are dropped. Returns how many remain.
    pub async fn recover(self: &Arc<Self>, cursor: u64) -> Result<usize, String> {
        let sink = self.sink.clone();
        let saved = blocking(&self.journal, move |j| {
            j.sink_state_prefix(&sink, STATE_PREFIX)
        })
        .await
        .map_err(|e| e.to_string())?;
        let now_ms = Utc::now().timestamp_millis();
        let now = Instant::now();
        let mut stale = Vec::new();
        let mut kept = 0;
        {
            let mut inner = self.lock();
            for (key, value) in saved {
                let (Some((channel, id)), Ok(s)) =
                    (parse_key(&key), serde_json::from_str::<SavedAck>(&value))
                else {
                    stale.push(key);
                    continue;
                };
                if s.last <= cursor {
                    stale.push(key);
                    continue;
                }
                if s.confirmed {
                    inner.confirmed.insert(s.first, (s.last, s.count, key));
                    continue;
                }
                let age = Duration::from_millis(now_ms.saturating_sub(s.sent_ms).max(0) as u64);
                inner.pending.insert(
                    (channel, id),
                    Entry {
                        first: s.first,
                        last: s.last,
                        count: s.count,
                        deadline: now + self.ack_timeout.saturating_sub(age),
                        waiters: Vec::new(),
                    },
                );
                kept += 1;
            }
        }
        self.delete_keys(stale).await;
        if kept > 0 {
            self.ensure_poller();
            self.wake.notify_one();
        }
        self.report();
        Ok(kept)
    }

    /// Records a pending ack in the journal, then returns what to wait on.
    pub async fn register(
        self: &Arc<Self>,
        channel: &str,
        ack_id: u64,
        seqs: &[u64],
    ) -> Result<oneshot::Receiver<AckOutcome>, String> {
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return Err("an ack for an empty request".into());
        };
        let count = seqs.len();
        let saved = SavedAck {
            first,
            last,
            count,
            sent_ms: Utc::now().timestamp_millis(),
            confirmed: false,
        };
        let (sink, key) = (self.sink.clone(), state_key(channel, ack_id));
        let value = serde_json::to_string(&saved).map_err(|e| e.to_string())?;
        blocking(&self.journal, move |j| {
            j.set_sink_state(&sink, &key, &value)
        })
        .await
        .map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel();
        self.lock().pending.insert(
            (channel.to_string(), ack_id),
            Entry {
                first,
                last,
                count,
                deadline: Instant::now() + self.ack_timeout,
                waiters: vec![tx],
            },
        );
        self.ensure_poller();
        self.wake.notify_one();
        self.report();
        Ok(rx)
    }

    /// Whether an earlier request (pending, recovered from a previous
    /// process, or confirmed since) carried exactly the first `k` events
    /// of `seqs` (ascending). Returns `k` and what to do about them.
    pub fn covering(&self, seqs: &[u64]) -> Option<(usize, Covered)> {
        let first = *seqs.first()?;
        let prefix = |last: u64, count: usize| {
            let k = seqs.partition_point(|s| *s <= last);
            (k == count).then_some(k)
        };
        let mut inner = self.lock();
        if let Some(k) = inner
            .confirmed
            .get(&first)
            .and_then(|(last, count, _)| prefix(*last, *count))
        {
            return Some((k, Covered::Confirmed));
        }
        let (k, entry) = inner
            .pending
            .values_mut()
            .filter(|e| e.first == first)
            .find_map(|e| prefix(e.last, e.count).map(|k| (k, e)))?;
        let (tx, rx) = oneshot::channel();
        entry.waiters.push(tx);
        Some((k, Covered::Pending(rx)))
    }

    /// Forgets confirmed ranges inside a batch that `deliver` now returns.
    /// Their journal records go only once the sink's cursor has passed
    /// them, so a process killed before the worker commits still knows the
    /// batch was indexed.
    pub async fn forget_confirmed(&self, first: u64, last: u64) {
        let cursor = {
            let (sink, j) = (self.sink.clone(), self.journal.clone());
            blocking(&j, move |j| j.sink_cursor(&sink))
                .await
                .unwrap_or(0)
        };
        let keys: Vec<String> = {
            let mut inner = self.lock();
            let done: Vec<u64> = inner
                .confirmed
                .range(first..=last)
                .filter(|(_, (l, _, _))| *l <= last)
                .map(|(f, _)| *f)
                .collect();
            for f in done {
                if let Some((l, _, k)) = inner.confirmed.remove(&f) {
                    inner.awaiting_commit.push((l, k));
                }
            }
            let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.awaiting_commit)
                .into_iter()
                .partition(|(l, _)| *l <= cursor);
            inner.awaiting_commit = wait;
            ready.into_iter().map(|(_, k)| k).collect()
        };
        self.delete_keys(keys).await;
    }

    /// Deletes the records of delivered batches the cursor has passed.
    /// Returns how many still wait for the worker's commit.
    pub async fn cleanup_committed(&self) -> usize {
        let cursor = {
            let (sink, j) = (self.sink.clone(), self.journal.clone());
            blocking(&j, move |j| j.sink_cursor(&sink))
                .await
                .unwrap_or(0)
        };
        let (keys, left) = {
            let mut inner = self.lock();
            let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.awaiting_commit)
                .into_iter()
                .partition(|(l, _)| *l <= cursor);
            inner.awaiting_commit = wait;
            (
                ready.into_iter().map(|(_, k)| k).collect::<Vec<_>>(),
                inner.awaiting_commit.len(),
            )
        };
        self.delete_keys(keys).await;
        left
    }

    async fn delete_keys(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let sink = self.sink.clone();
        let res = blocking(&self.journal, move |j| {
            for k in &keys {
                j.delete_sink_state(&sink, k)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = res {
            // Left-over keys are dropped at the next start (cursor passed).
            tracing::warn!(sink = %self.sink, error = %e, "cannot remove settled acks from the journal");
        }
    }

    /// Settles acks: journal state first, then the waiters. An indexed
    /// request stays recorded (as confirmed) until its batch is committed.
    async fn settle(&self, done: Vec<((String, u64), AckOutcome)>) {
        if done.is_empty() {
            return;
        }
        let mut settled = Vec::new();
        let mut confirmed_rows = Vec::new();
        let mut lost_keys = Vec::new();
        {
            let mut inner = self.lock();
            for (key, outcome) in done {
                if let Some(e) = inner.pending.remove(&key) {
                    let skey = state_key(&key.0, key.1);
                    if outcome == AckOutcome::Indexed {
                        inner
                            .confirmed
                            .insert(e.first, (e.last, e.count, skey.clone()));
                        let saved = SavedAck {
                            first: e.first,
                            last: e.last,
                            count: e.count,
                            sent_ms: 0,
                            confirmed: true,
                        };
                        if let Ok(v) = serde_json::to_string(&saved) {
                            confirmed_rows.push((skey, v));
                        }
                    } else {
                        if outcome == AckOutcome::Lost {
                            HecAckTimedOut {
                                sink: &self.sink,
                                ack_id: key.1,
                                first: e.first,
                                last: e.last,
                                outcome: "ack_lost",
                            }
                            .emit();
                        }
                        lost_keys.push(skey);
                    }
                    settled.push((key, outcome, e.waiters));
                }
            }
        }
        if !confirmed_rows.is_empty() {
            let sink = self.sink.clone();
            let res = blocking(&self.journal, move |j| {
                for (k, v) in &confirmed_rows {
                    j.set_sink_state(&sink, k, v)?;
                }
                Ok(())
            })
            .await;
            if let Err(e) = res {
                tracing::warn!(sink = %self.sink, error = %e, "cannot record confirmed acks in the journal");
            }
        }
        self.delete_keys(lost_keys).await;
        for (_, outcome, waiters) in settled {
            for w in waiters {
                let _ = w.send(outcome);
            }
        }
        self.report();
    }

    fn report(&self) {
        HecAcksPending {
            sink: &self.sink,
            pending: self.pending_count(),
        }
        .emit();
    }

    async fn poll_loop(self: Arc<Self>) {
        loop {
            if self.lock().pending.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = self.stop.cancelled() => return,
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = self.stop.cancelled() => return,
            }
            self.poll_once().await;
        }
    }

    /// One round: ask for every pending ack, settle what is known, time
    /// out what waited too long.
    pub async fn poll_once(&self) {
        let mut by_channel: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (channel, id) in self.lock().pending.keys() {
            by_channel.entry(channel.clone()).or_default().push(*id);
        }
        let mut done = Vec::new();
        for (channel, mut ids) in by_channel {
            ids.sort_unstable();
            for chunk in ids.chunks(MAX_IDS_PER_QUERY) {
                if self.stop.is_cancelled() {
                    return;
                }
                let answer = self.service.query_acks(&channel, chunk).await;
                if !matches!(answer, Err(AckQueryError::Other(_))) {
                    self.poll_failures.store(0, Ordering::Relaxed);
                }
                match answer {
                    Ok(statuses) => {
                        for id in chunk {
                            if statuses.get(id) == Some(&true) {
                                done.push(((channel.clone(), *id), AckOutcome::Indexed));
                            }
                        }
                    }
                    Err(AckQueryError::Disabled) => {
                        for id in chunk {
                            done.push(((channel.clone(), *id), AckOutcome::Disabled));
                        }
                    }
                    Err(AckQueryError::ChannelGone(reason)) => {
                        HecPollFailed {
                            sink: &self.sink,
                            error: &format!("{reason}: the server forgot channel {channel}; its requests are sent again"),
                            in_a_row: 1,
                        }
                        .emit();
                        for id in chunk {
                            done.push(((channel.clone(), *id), AckOutcome::Lost));
                        }
                    }
                    Err(AckQueryError::Other(e)) => {
                        let n = self.poll_failures.fetch_add(1, Ordering::Relaxed) + 1;
                        HecPollFailed {
                            sink: &self.sink,
                            error: &e.to_string(),
                            in_a_row: n,
                        }
                        .emit();
                        continue;
                    }
                }
            }
        }
        let now = Instant::now();
        {
            let inner = self.lock();
            for (key, e) in &inner.pending {
                if e.deadline <= now && !done.iter().any(|(k, _)| k == key) {
                    done.push((key.clone(), AckOutcome::Lost));
                }
            }
        }
        self.settle(done).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keys_round_trip() {
        let k = state_key("0aeeac95-ac74-4aa9-b30d-6c4c0ac581ba", 42);
        assert_eq!(
            parse_key(&k),
            Some(("0aeeac95-ac74-4aa9-b30d-6c4c0ac581ba".to_string(), 42))
        );
        assert_eq!(parse_key("channel"), None);
    }
}
