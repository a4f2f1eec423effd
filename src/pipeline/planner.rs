//! Plans the next closed window of a stream:
//! `[watermark − overlap, min(watermark + max_window, now − settle_delay)]`,
//! clamped to what the source still serves.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Schedule;
use crate::journal::Checkpoint;
use crate::sources::{StreamLimits, Window};
use crate::util::chrono_duration;

#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Read this window, starting at `cursor` (None = its first page).
    Fetch {
        window: Window,
        cursor: Option<String>,
        /// The stream's watermark is older than the source's horizon: this
        /// interval is lost and must be reported.
        gap: Option<(DateTime<Utc>, DateTime<Utc>)>,
    },
    /// Nothing new is settled yet.
    CaughtUp,
}

/// The oldest instant a request may ask for: the horizon less a safety
/// margin (1% of it, at least a minute), so clock skew never sends a
/// request the API rejects.
pub fn horizon_floor(limits: &StreamLimits, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    limits.horizon.map(|h| {
        let margin = (h / 100).max(Duration::from_secs(60));
        now - chrono_duration(h.saturating_sub(margin))
    })
}

/// `max_window` = the effective window cap (source limit, config override
/// and any shrinking after saturation already applied).
pub fn plan(
    checkpoint: &Checkpoint,
    schedule: &Schedule,
    limits: &StreamLimits,
    max_window: Duration,
    now: DateTime<Utc>,
) -> Plan {
    let floor = horizon_floor(limits, now);
    if let Some(open) = &checkpoint.open_window {
        let too_old = floor.is_some_and(|f| open.from < f);
        if !too_old {
            return Plan::Fetch {
                window: Window {
                    from: open.from,
                    to: open.to,
                },
                cursor: open.cursor.clone(),
                gap: None,
            };
        }
        // The open window slid out of the horizon while we were down:
        // fall through and plan a fresh one from the floor.
    }
    let end_limit = now - chrono_duration(schedule.settle_delay);
    // Overlap re-reads the tail of the last window for late arrivals; it
    // must leave room for progress inside one window.
    let overlap = chrono_duration(schedule.overlap.min(max_window / 2));
    let max_window = chrono_duration(max_window);

    let (base, mut from, mut gap) = match checkpoint.watermark {
        Some(wm) => (wm, wm - overlap, None),
        None => {
            let start = schedule
                .start_at
                .map(|s| s.resolve(now))
                .or(floor)
                .unwrap_or(now - chrono::Duration::days(30));
            (start, start, None)
        }
    };
    let mut base = base;
    if let Some(f) = floor {
        if from < f {
            if checkpoint.watermark.is_some() && base < f {
                gap = Some((base, f));
            }
            from = f;
            base = base.max(f);
        }
    }
    // Less than one poll interval of settled time since the watermark:
    // wait for the next poll rather than fetch slivers in a tight loop.
    if checkpoint.watermark.is_some() && end_limit - base < chrono_duration(schedule.poll_interval)
    {
        return Plan::CaughtUp;
    }
    let to = (from + max_window).min(end_limit);
    if to <= base || to <= from {
        return Plan::CaughtUp;
    }
    Plan::Fetch {
        window: Window { from, to },
        cursor: None,
        gap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StartAt;
    use crate::journal::OpenWindow;

    fn limits(horizon_days: Option<u64>) -> StreamLimits {
        StreamLimits {
            max_window: Duration::from_secs(86_400 * 400),
            horizon: horizon_days.map(|d| Duration::from_secs(d * 86_400)),
            record_cap: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn first_run_starts_at_horizon() {
        let s = Schedule::default();
        let p = plan(
            &Checkpoint::default(),
            &s,
            &limits(Some(180)),
            Duration::from_secs(86_400 * 400),
            now(),
        );
        let Plan::Fetch {
            window,
            cursor,
            gap,
        } = p
        else {
            panic!("expected fetch")
        };
        assert!(cursor.is_none() && gap.is_none());
        assert!(window.from > now() - chrono::Duration::days(180));
        assert!(window.from < now() - chrono::Duration::days(177));
        assert_eq!(window.to, now() - chrono::Duration::minutes(2));
    }

    #[test]
    fn next_window_overlaps_and_respects_max_window() {
        let s = Schedule {
            overlap: Duration::from_secs(600),
            ..Schedule::default()
        };
        let wm = now() - chrono::Duration::days(3);
        let cp = Checkpoint {
            watermark: Some(wm),
            open_window: None,
        };
        let p = plan(
            &cp,
            &s,
            &limits(Some(180)),
            Duration::from_secs(86_400),
            now(),
        );
        let Plan::Fetch { window, .. } = p else {
            panic!("expected fetch")
        };
        assert_eq!(window.from, wm - chrono::Duration::minutes(10));
        assert_eq!(window.to, window.from + chrono::Duration::days(1));
    }

    #[test]
    fn caught_up_when_nothing_settled() {
        let s = Schedule::default();
        let cp = Checkpoint {
            watermark: Some(now() - chrono::Duration::minutes(2)),
            open_window: None,
        };
        assert_eq!(
            plan(&cp, &s, &limits(None), Duration::from_secs(86_400), now()),
            Plan::CaughtUp
        );
    }

    #[test]
    fn open_window_resumes_at_cursor() {
        let s = Schedule::default();
        let w = OpenWindow {
            from: now() - chrono::Duration::days(2),
            to: now() - chrono::Duration::days(1),
            cursor: Some("3".into()),
        };
        let cp = Checkpoint {
            watermark: Some(w.from),
            open_window: Some(w.clone()),
        };
        let p = plan(
            &cp,
            &s,
            &limits(Some(180)),
            Duration::from_secs(86_400),
            now(),
        );
        assert_eq!(
            p,
            Plan::Fetch {
                window: Window {
                    from: w.from,
                    to: w.to
                },
                cursor: Some("3".into()),
                gap: None
            }
        );
    }

    #[test]
    fn stale_watermark_reports_gap_and_never_asks_past_horizon() {
        let s = Schedule::default();
        let wm = now() - chrono::Duration::days(200);
        let cp = Checkpoint {
            watermark: Some(wm),
            open_window: None,
        };
        let l = limits(Some(180));
        let p = plan(&cp, &s, &l, Duration::from_secs(86_400), now());
        let Plan::Fetch { window, gap, .. } = p else {
            panic!("expected fetch")
        };
        let floor = horizon_floor(&l, now()).expect("floor");
        assert_eq!(gap, Some((wm, floor)));
        assert_eq!(window.from, floor);
    }

    #[test]
    fn start_at_is_honoured() {
        let s = Schedule {
            start_at: Some(StartAt::Ago(Duration::from_secs(86_400 * 10))),
            ..Schedule::default()
        };
        let p = plan(
            &Checkpoint::default(),
            &s,
            &limits(Some(180)),
            Duration::from_secs(86_400 * 400),
            now(),
        );
        let Plan::Fetch { window, .. } = p else {
            panic!("expected fetch")
        };
        assert_eq!(window.from, now() - chrono::Duration::days(10));
    }

    #[test]
    fn clock_jumping_back_neither_skips_nor_repeats() {
        let s = Schedule::default();
        let wm = now() - chrono::Duration::hours(1);
        let cp = Checkpoint {
            watermark: Some(wm),
            open_window: None,
        };
        // The clock jumps two hours back: nothing is settled past the
        // watermark, so nothing is fetched (no repeat of read windows).
        let back = now() - chrono::Duration::hours(2);
        assert_eq!(
            plan(
                &cp,
                &s,
                &limits(Some(180)),
                Duration::from_secs(86_400),
                back
            ),
            Plan::CaughtUp
        );
        // Once the clock is past the watermark again, the next window starts
        // exactly at watermark - overlap (no skip).
        let Plan::Fetch { window, .. } = plan(
            &cp,
            &s,
            &limits(Some(180)),
            Duration::from_secs(86_400),
            now(),
        ) else {
            panic!("expected fetch")
        };
        assert_eq!(window.from, wm - chrono::Duration::minutes(10));
    }

    #[test]
    fn clock_jumping_forward_continues_from_the_watermark() {
        let s = Schedule::default();
        let wm = now() - chrono::Duration::hours(1);
        let cp = Checkpoint {
            watermark: Some(wm),
            open_window: None,
        };
        let ahead = now() + chrono::Duration::days(3);
        let Plan::Fetch { window, gap, .. } = plan(
            &cp,
            &s,
            &limits(Some(180)),
            Duration::from_secs(86_400),
            ahead,
        ) else {
            panic!("expected fetch")
        };
        assert_eq!(
            window.from,
            wm - chrono::Duration::minutes(10),
            "no interval skipped"
        );
        assert_eq!(
            window.to,
            window.from + chrono::Duration::days(1),
            "one max_window at a time"
        );
        assert!(gap.is_none());
    }
}
