//! Issue 8, chaos: the journal disk fills up (`journal.max_bytes`, i.e.
//! SQLite `max_page_count`). Pulling pauses without moving any checkpoint,
//! `trailkeep_journal_full{journal}` says so, and when space returns the
//! pull resumes and every record arrives in the archive exactly once.

mod engine_support;

use std::collections::BTreeSet;
use std::time::Duration;

use engine_support::*;
use trailkeep::journal::Checkpoint;
use trailkeep::model::StreamId;
use trailkeep::sim::ringcentral::{self as rcsim, Config as SimConfig};
use trailkeep::telemetry::METRICS;
use trailkeep::util::HumanDuration;

const PER_PAGE: u64 = 100;

fn full_gauge(journal: &str) -> i64 {
    METRICS.journal_full.with_label_values(&[journal]).get()
}

/// Events the checkpoint says were committed: pages before the open
/// window's cursor (one window covers every record here).
fn committed_by_checkpoint(cp: &Option<Checkpoint>) -> Option<u64> {
    let w = cp.as_ref()?.open_window.as_ref()?;
    let next: u64 = w.cursor.as_deref()?.parse().ok()?;
    Some((next - 1) * PER_PAGE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_journal_pauses_pulling_keeps_checkpoint_and_resumes_exactly_once() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 3_000,
        initial_span: HumanDuration(Duration::from_secs(2 * 3_600)),
        unlimited: true,
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "full",
        &format!(
            "start_at = \"3h\"\npoll_interval = \"500ms\"\nsettle_delay = \"200ms\"\nper_page = {PER_PAGE}"
        ),
    );
    // About 1 MB: a few hundred events fit, 3,000 do not.
    let text = config_toml(&dir, &src).replace("[journal]\n", "[journal]\nmax_bytes = 1000000\n");
    let (p, journal) = pipeline_from(&text).await;
    let label = journal.path().display().to_string();
    let stream = StreamId::new("ringcentral", "full", "audit-trail");
    let run = spawn(&p);

    wait_until("journal_full = 1", Duration::from_secs(30), || {
        full_gauge(&label) == 1
    })
    .await;
    let cp = journal.checkpoint(&stream).expect("checkpoint");
    let stored = journal.status(&[]).expect("status").events;
    let searches = sim.counters().search_requests;
    assert!(
        stored > 0 && stored < 3_000,
        "the limit must bite mid-pull (stored {stored})"
    );
    // The checkpoint describes exactly the pages that are in the journal:
    // the page that did not fit is not in it, and neither is its cursor.
    assert_eq!(
        committed_by_checkpoint(&cp),
        Some(stored),
        "checkpoint {cp:?} vs {stored} stored events"
    );
    assert!(
        cp.as_ref().and_then(|c| c.watermark).is_none(),
        "the window is not complete: the watermark must not move ({cp:?})"
    );

    // While full (the commit is retried every second), nothing moves: no
    // checkpoint advances and no new page is fetched. The one request that
    // may land is the next page's, sent together with the commit that
    // found the journal full (the worker prefetches while it commits); it
    // is held in memory, never a second one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = sim.counters().search_requests;
    assert!(
        settled <= searches + 1,
        "{} requests after the journal filled",
        settled - searches
    );
    let searches = settled;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(full_gauge(&label), 1);
    assert_eq!(journal.checkpoint(&stream).expect("checkpoint"), cp);
    assert_eq!(journal.status(&[]).expect("status").events, stored);
    assert_eq!(
        sim.counters().search_requests,
        searches,
        "pulling did not pause"
    );
    let archived = archived_ids(&dir.join("archive"));
    assert!(
        archived.len() as u64 <= stored,
        "the sink delivers only what the journal holds"
    );

    // Space returns.
    journal
        .set_max_bytes(256 * 1024 * 1024)
        .expect("raise limit");
    wait_until(
        "drained after space returned",
        Duration::from_secs(60),
        || p.drained().unwrap_or(false),
    )
    .await;
    assert_eq!(full_gauge(&label), 0, "the metric returns to 0");
    run.shutdown().await;

    let expected: BTreeSet<String> = sim.visible_ids();
    assert_eq!(expected.len(), 3_000);
    let archived = archived_ids(&dir.join("archive"));
    let dups: Vec<_> = archived.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicates in the archive: {dups:?}");
    let got: BTreeSet<String> = archived.keys().cloned().collect();
    assert_eq!(got, expected, "the archive holds exactly the source's set");
    let st = journal.status(&[]).expect("status");
    assert_eq!(st.events, 3_000);
    // (Duplicates the journal counted come from the next polls' overlap
    // re-reads; the unique key keeps them out, as the archive shows.)
}
