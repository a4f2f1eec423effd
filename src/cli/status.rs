//! `trailkeep status` and `trailkeep dead-letters`: read the journal.

use std::path::Path;
use std::process::ExitCode;

use chrono::Utc;
use serde_json::json;

use super::{print_config_errors, EXIT_CONFIG};
use crate::config::Config;
use crate::journal::Journal;
use crate::util::format_duration;

fn open(path: &Path) -> Result<(Config, Journal), ExitCode> {
    let cfg = Config::load(path).map_err(|e| {
        print_config_errors(&path.display().to_string(), &e);
        ExitCode::from(EXIT_CONFIG)
    })?;
    if !cfg.journal.path.exists() {
        eprintln!(
            "trailkeep: no journal at {} yet (has `trailkeep run` started?)",
            cfg.journal.path.display()
        );
        return Err(ExitCode::FAILURE);
    }
    let j = Journal::open(&cfg.journal.path, None).map_err(|e| {
        eprintln!("trailkeep: {e}");
        ExitCode::FAILURE
    })?;
    Ok((cfg, j))
}

/// Seconds before records not yet read can fall out of the source's
/// retention (the dashboard's "horizon headroom"), where the source has a
/// known horizon: (watermark - overlap) - (now - horizon).
fn headroom_seconds(
    cfg: &Config,
    stream: &str,
    watermark: Option<chrono::DateTime<Utc>>,
) -> Option<i64> {
    let id = crate::model::StreamId::parse(stream)?;
    let horizon = match id.source.as_str() {
        "ringcentral" => crate::sources::ringcentral::HORIZON,
        _ => return None,
    };
    let overlap = cfg
        .sources
        .iter()
        .find(|e| e.name == id.tenant)
        .map(|e| e.schedule.overlap)
        .unwrap_or_default();
    let now = Utc::now();
    let oldest_unread = watermark? - crate::util::chrono_duration(overlap);
    Some((oldest_unread - (now - crate::util::chrono_duration(horizon))).num_seconds())
}

pub async fn status(path: &Path, as_json: bool) -> ExitCode {
    let (cfg, journal) = match open(path) {
        Ok(v) => v,
        Err(c) => return c,
    };
    let sinks: Vec<String> = cfg
        .sinks
        .iter()
        .filter(|s| s.enabled)
        .map(|s| s.name.clone())
        .collect();
    let st = match journal.status(&sinks) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("trailkeep: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = Utc::now();
    if as_json {
        let streams: Vec<_> = st
            .streams
            .iter()
            .map(|s| {
                let lag = s.watermark.map(|w| (now - w).num_seconds());
                let headroom = headroom_seconds(&cfg, &s.stream, s.watermark);
                json!({"stream": s.stream, "watermark": s.watermark, "lag_seconds": lag, "horizon_headroom_seconds": headroom, "open_window": s.open_window,
                       "fetched": s.fetched, "stored": s.stored, "duplicates": s.duplicates, "rejected": s.rejected,
                       "gaps": s.gaps, "last_error": s.last_error, "last_error_at": s.last_error_at})
            })
            .collect();
        let out = json!({"journal": st.path, "events": st.events, "max_seq": st.max_seq, "streams": streams, "sinks": st.sinks});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    println!(
        "journal {}  ({} events held, last seq {})\n",
        st.path, st.events, st.max_seq
    );
    println!(
        "{:<40} {:<24} {:>9} {:>9} {:>8} {:>8} {:>6} {:>5}  LAST ERROR",
        "STREAM", "WATERMARK", "LAG", "HEADROOM", "STORED", "DUPS", "REJECT", "GAPS"
    );
    for s in &st.streams {
        let lag = s
            .watermark
            .map(|w| format_duration((now - w).to_std().unwrap_or_default()))
            .unwrap_or_else(|| "-".into());
        let wm = s
            .watermark
            .map(|w| w.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into());
        let headroom = match headroom_seconds(&cfg, &s.stream, s.watermark) {
            Some(h) if h < 0 => "LOST".to_string(),
            Some(h) => format_duration(std::time::Duration::from_secs(h as u64)),
            None => "-".into(),
        };
        let mut err = s.last_error.clone().unwrap_or_default();
        err.truncate(100);
        println!(
            "{:<40} {:<24} {:>9} {:>9} {:>8} {:>8} {:>6} {:>5}  {}",
            s.stream, wm, lag, headroom, s.stored, s.duplicates, s.rejected, s.gaps, err
        );
    }
    println!(
        "\n{:<24} {:>10} {:>10} {:>10} {:>6}  LAST ERROR",
        "SINK", "CURSOR", "PENDING", "DELIVERED", "DEAD"
    );
    for s in &st.sinks {
        let mut err = s.last_error.clone().unwrap_or_default();
        err.truncate(100);
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>6}  {}",
            s.sink, s.cursor, s.pending, s.delivered, s.dead_letters, err
        );
    }
    ExitCode::SUCCESS
}

pub async fn dead_letters(
    path: &Path,
    origin: Option<String>,
    limit: usize,
    as_json: bool,
) -> ExitCode {
    let (_, journal) = match open(path) {
        Ok(v) => v,
        Err(c) => return c,
    };
    let rows = match journal.dead_letters(origin.as_deref(), limit) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("trailkeep: {e}");
            return ExitCode::FAILURE;
        }
    };
    for d in &rows {
        if as_json {
            println!("{}", serde_json::to_string(d).unwrap_or_default());
        } else {
            println!(
                "#{:<6} {} {:<6} {:<36} {}  {}",
                d.id,
                d.created_at.format("%Y-%m-%d %H:%M:%S"),
                d.origin_kind,
                d.origin,
                d.event_key.as_deref().unwrap_or("-"),
                d.reason
            );
        }
    }
    if !as_json {
        eprintln!("{} dead letter(s)", rows.len());
    }
    ExitCode::SUCCESS
}
