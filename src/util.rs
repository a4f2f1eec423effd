//! Small helpers shared by every module: human durations, time conversions,
//! backoff with jitter.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rand::Rng;
use serde::{Deserialize, Deserializer};

/// Parses durations written as `90s`, `5m`, `180d`, `1h30m`, `250ms`, `7y`.
/// A year is 365 days; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total_ms: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (expected e.g. 90s, 5m, 2h, 180d, 7y)"
            ));
        }
        let value: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor_ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            "" => {
                return Err(format!(
                    "`{text}`: missing unit after {value} (use ms, s, m, h, d, w or y)"
                ))
            }
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use ms, s, m, h, d, w or y)"
                ))
            }
        };
        total_ms = total_ms
            .checked_add(value.saturating_mul(factor_ms))
            .ok_or_else(|| format!("`{text}`: duration too large"))?;
    }
    let ms = u64::try_from(total_ms).map_err(|_| format!("`{text}`: duration too large"))?;
    Ok(Duration::from_millis(ms))
}

/// Formats a duration compactly for logs and tables (`3d4h`, `15m`, `820ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
            if out.len() >= 5 {
                break;
            }
        }
    }
    out
}

/// A `Duration` that deserializes from human text (`"5m"`) or whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Secs(u64),
        }
        match Raw::deserialize(de)? {
            Raw::Text(t) => parse_duration(&t)
                .map(HumanDuration)
                .map_err(serde::de::Error::custom),
            Raw::Secs(s) => Ok(HumanDuration(Duration::from_secs(s))),
        }
    }
}

pub fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// RFC 3339 with milliseconds and `Z`, the form every vendor API here accepts.
pub fn rfc3339_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Exponential backoff with full jitter: attempt 0 waits up to `base`,
/// each later attempt doubles the ceiling until `max`.
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(max);
    let ms = ceiling.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    // Never below half the ceiling, so retries do spread out.
    let jittered = rand::rng().random_range(ms / 2..=ms);
    Duration::from_millis(jittered)
}

/// Parses a `Retry-After` header value given in seconds (the only form the
/// APIs here send); HTTP dates are ignored in favour of the caller's backoff.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let v = value?.trim();
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_millis((s * 1000.0) as u64))
}

/// glibc malloc, tuned for this workload (BENCHMARKS.md, "engine"):
/// - two arenas: glibc gives each thread that allocates concurrently its
///   own arena (up to 8 per core), and the journal and compression work on
///   tokio's blocking pool then strands freed memory across many of them;
/// - a fixed 1 MiB mmap threshold: request bodies and batch buffers of a
///   megabyte or more go straight to the kernel and back when freed,
///   instead of fragmenting the heap (glibc's adaptive threshold otherwise
///   climbs to 32 MiB after the first such buffer is freed).
///
/// Peak RSS then stops growing once the pipeline is at full speed. An
/// operator's own MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ win. Call it
/// first thing in `main` (the service binary and the benchmarks do).
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only adjusts allocator tunables; callers call it
        // first thing in main, before any other thread exists.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(
            parse_duration("180d"),
            Ok(Duration::from_secs(180 * 86_400))
        );
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_duration("7y"),
            Ok(Duration::from_secs(7 * 365 * 86_400))
        );
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(10);
        for attempt in 0..30 {
            let d = backoff_delay(attempt, Duration::from_millis(100), max);
            assert!(d <= max);
        }
        assert!(backoff_delay(10, Duration::from_millis(100), max) >= Duration::from_secs(5));
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(Some(" 1.5 ")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after(Some("soon")), None);
        assert_eq!(parse_retry_after(None), None);
    }
}
