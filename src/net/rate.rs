//! Client-side rate budget for one (credential, rate-limit group).
//!
//! The budget is a sliding window kept from our own send times and
//! corrected by the server's `X-Rate-Limit-*` headers, so a steady run never
//! meets a 429. A 429 or 503 with `Retry-After` blocks the whole group until
//! the penalty passed: with RingCentral every request sent during the
//! penalty restarts it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::internal_events::{InternalEvent, RateLimitHit, RateLimitWaited};

struct State {
    limit: u32,
    window: Duration,
    sent: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

pub struct RateBudget {
    source: String,
    tenant: String,
    group: String,
    state: Mutex<State>,
}

/// Slack added to every wait: a request is counted by the server when it
/// arrives, a little after we sent it.
fn margin(window: Duration) -> Duration {
    Duration::from_millis(100) + window / 100
}

impl RateBudget {
    pub fn new(source: &str, tenant: &str, group: &str, limit: u32, window: Duration) -> Self {
        RateBudget {
            source: source.to_string(),
            tenant: tenant.to_string(),
            group: group.to_string(),
            state: Mutex::new(State {
                limit: limit.max(1),
                window,
                sent: VecDeque::new(),
                blocked_until: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// Waits until one more request fits, then reserves it.
    pub async fn acquire(&self) {
        let started = Instant::now();
        loop {
            let wait = {
                let mut s = self.lock();
                let now = Instant::now();
                let window = s.window;
                while s
                    .sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= window + margin(window))
                {
                    s.sent.pop_front();
                }
                let blocked = s.blocked_until.filter(|b| *b > now).map(|b| b - now);
                let full = if s.sent.len() >= s.limit as usize {
                    s.sent
                        .front()
                        .map(|t| (*t + window + margin(window)).saturating_duration_since(now))
                } else {
                    None
                };
                match blocked.max(full) {
                    Some(w) if !w.is_zero() => w,
                    _ => {
                        s.sent.push_back(now);
                        break;
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
        let waited = started.elapsed();
        if !waited.is_zero() {
            RateLimitWaited {
                source: &self.source,
                tenant: &self.tenant,
                group: &self.group,
                waited,
            }
            .emit();
        }
    }

    /// Learns the server's view from response headers. When the server has
    /// counted more requests than we sent (another client shares the
    /// credential, or we restarted), phantom entries make up the difference.
    pub fn observe(&self, limit: Option<u32>, remaining: Option<u32>, window: Option<Duration>) {
        let mut s = self.lock();
        if let Some(w) = window.filter(|w| !w.is_zero()) {
            s.window = w;
        }
        if let Some(l) = limit.filter(|l| *l > 0) {
            s.limit = l;
        }
        if let Some(rem) = remaining {
            let used_by_server = s.limit.saturating_sub(rem) as usize;
            let now = Instant::now();
            while s.sent.len() < used_by_server {
                s.sent.push_back(now);
            }
        }
    }

    /// The server answered 429/503: hold every request of the group for
    /// `retry_after` (or a full window when it gave none).
    pub fn penalize(&self, retry_after: Option<Duration>) {
        RateLimitHit {
            source: &self.source,
            tenant: &self.tenant,
            group: &self.group,
            retry_after,
        }
        .emit();
        let mut s = self.lock();
        let wait = retry_after.unwrap_or(s.window) + margin(s.window);
        let until = Instant::now() + wait;
        s.blocked_until = Some(s.blocked_until.map_or(until, |b| b.max(until)));
    }

    /// Current (limit, window), for tests and status.
    pub fn shape(&self) -> (u32, Duration) {
        let s = self.lock();
        (s.limit, s.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sliding_window_spaces_requests() {
        let b = RateBudget::new("t", "t", "heavy", 3, Duration::from_secs(2));
        let start = Instant::now();
        for _ in 0..3 {
            b.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(10));
        b.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "4th request must wait a window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn penalty_blocks_group() {
        let b = RateBudget::new("t", "t", "heavy", 100, Duration::from_secs(60));
        b.penalize(Some(Duration::from_secs(5)));
        let start = Instant::now();
        b.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn server_count_is_trusted() {
        let b = RateBudget::new("t", "t", "heavy", 10, Duration::from_secs(60));
        b.observe(Some(10), Some(0), Some(Duration::from_secs(2)));
        let start = Instant::now();
        b.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(2));
        assert_eq!(b.shape(), (10, Duration::from_secs(2)));
    }
}
