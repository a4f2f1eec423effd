//! Liveness and readiness state shared by the workers and `/readyz`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::journal::Journal;

/// Ready = the journal accepts writes, no sink is halted, and every stream
/// has authenticated at least once.
#[derive(Default)]
pub struct Health {
    journal: Mutex<Option<Journal>>,
    expected_streams: Mutex<BTreeSet<String>>,
    authenticated: Mutex<BTreeSet<String>>,
    halted_sinks: Mutex<BTreeMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_journal(&self, j: Journal) {
        *lock(&self.journal) = Some(j);
    }

    pub fn expect_stream(&self, stream: &str) {
        lock(&self.expected_streams).insert(stream.to_string());
    }

    pub fn stream_authenticated(&self, stream: &str) {
        lock(&self.authenticated).insert(stream.to_string());
    }

    pub fn sink_halted(&self, sink: &str, reason: &str) {
        lock(&self.halted_sinks).insert(sink.to_string(), reason.to_string());
    }

    pub fn sink_recovered(&self, sink: &str) {
        lock(&self.halted_sinks).remove(sink);
    }

    pub fn halted(&self) -> BTreeMap<String, String> {
        lock(&self.halted_sinks).clone()
    }

    /// Ok, or the list of reasons it is not ready.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        let journal = lock(&self.journal).clone();
        match journal {
            Some(j) if j.is_writable() => {}
            Some(j) => reasons.push(format!("journal {} is not writable", j.path().display())),
            None => reasons.push("journal not open yet".into()),
        }
        for (sink, why) in lock(&self.halted_sinks).iter() {
            reasons.push(format!("sink {sink} halted: {why}"));
        }
        let auth = lock(&self.authenticated).clone();
        for s in lock(&self.expected_streams).iter() {
            if !auth.contains(s) {
                reasons.push(format!("stream {s} has not authenticated yet"));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}
