//! Server-side rate limiting as the vendors do it: a sliding window of
//! request arrival times per key, and a penalty that each request sent
//! during it restarts (RingCentral's rule).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `remaining` requests left in the window.
    Allowed { remaining: u32 },
    /// Rejected; retry after this long.
    Limited { retry_after: Duration },
}

#[derive(Default)]
struct Bucket {
    arrivals: VecDeque<Instant>,
    penalty_until: Option<Instant>,
}

/// One limiter per rate-limit group; keys are (credential, app) strings.
pub struct SlidingLimiter {
    pub limit: u32,
    pub window: Duration,
    pub penalty: Duration,
    /// Whether a request during the penalty restarts it.
    pub penalty_restarts: bool,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl SlidingLimiter {
    pub fn new(limit: u32, window: Duration, penalty: Duration, penalty_restarts: bool) -> Self {
        SlidingLimiter {
            limit,
            window,
            penalty,
            penalty_restarts,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, key: &str) -> Verdict {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry(key.to_string()).or_default();
        if let Some(until) = b.penalty_until {
            if now < until {
                if self.penalty_restarts {
                    b.penalty_until = Some(now + self.penalty);
                    return Verdict::Limited {
                        retry_after: self.penalty,
                    };
                }
                return Verdict::Limited {
                    retry_after: until - now,
                };
            }
            b.penalty_until = None;
            b.arrivals.clear();
        }
        while b
            .arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            b.arrivals.pop_front();
        }
        if b.arrivals.len() as u32 >= self.limit {
            b.penalty_until = Some(now + self.penalty);
            return Verdict::Limited {
                retry_after: self.penalty,
            };
        }
        b.arrivals.push_back(now);
        Verdict::Allowed {
            remaining: self.limit - b.arrivals.len() as u32,
        }
    }

    /// Puts a key in penalty now (fault injection: a 429 storm).
    pub fn force_penalty(&self, key: &str, d: Duration) {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string()).or_default().penalty_until = Some(Instant::now() + d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn over_limit_then_penalty_restarts() {
        let l = SlidingLimiter::new(2, Duration::from_secs(2), Duration::from_secs(3), true);
        assert_eq!(l.check("k"), Verdict::Allowed { remaining: 1 });
        assert_eq!(l.check("k"), Verdict::Allowed { remaining: 0 });
        assert!(matches!(l.check("k"), Verdict::Limited { .. }));
        tokio::time::advance(Duration::from_secs(2)).await;
        // still in penalty; this request restarts it
        assert!(matches!(l.check("k"), Verdict::Limited { .. }));
        tokio::time::advance(Duration::from_millis(2_900)).await;
        assert!(matches!(l.check("k"), Verdict::Limited { .. }));
        tokio::time::advance(Duration::from_millis(3_100)).await;
        assert!(matches!(l.check("k"), Verdict::Allowed { .. }));
    }
}
