//! Splunk HEC sink against the HEC simulator over real HTTP on 127.0.0.1.
//! Every test inserts synthesized events with `Journal::commit_page` and
//! runs a `SinkWorker` (or a whole `Pipeline`) until the cursor reaches the
//! journal's end, then compares what the simulator indexed.

mod splunk_hec_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use splunk_hec_support::*;
use tokio_util::sync::CancellationToken;
use trailkeep::pipeline::{Pipeline, Progress, ScheduledSource};
use trailkeep::sim::hec;
use trailkeep::telemetry::Health;

fn keys(evs: &[trailkeep::model::AuditEvent]) -> Vec<String> {
    evs.iter().map(|e| e.key.clone()).collect()
}

/// Test 1: every event reaches HEC exactly once, with the right `time`,
/// `sourcetype`, `index` and `fields.event_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_events_reach_hec_exactly_once_with_envelope() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config {
        indexes: vec!["main".into(), "audit".into(), "audit_vb".into()],
        ..hec::Config::default()
    })
    .await
    .expect("sim");
    let mut all = events("ringcentral", "acme", "audit-trail", 0, 700);
    all.extend(events("vbrick", "acme-vb", "userAccess", 0, 400));
    all.extend(events("symphony", "pod1", "audittrail", 0, 300));
    fill(&journal, &all);
    let sink = build_sink(
        dir.path(),
        "hec",
        &h.url(),
        "sim-hec-token",
        "index = \"audit\"\nhost = \"tk-1\"\nmax_events = 250\n[sinks.indexes]\nvbrick = \"audit_vb\"",
    )
    .await;
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "hec", 30).await;
    let delivered = run.finish().await;
    assert_eq!(delivered, 1_400);

    assert_exactly_once(&sim.event_ids(), &keys(&all));
    let by_id: BTreeMap<String, hec::IndexedEvent> = sim
        .events()
        .into_iter()
        .map(|e| (e.event_id().expect("id").to_string(), e))
        .collect();
    for ev in &all {
        let got = &by_id[&ev.key];
        let want_time = ev.time.timestamp_millis() as f64 / 1000.0;
        assert!(
            (got.time.expect("time") - want_time).abs() < 0.0005,
            "{} time",
            ev.key
        );
        let (st, idx) = match ev.source.as_str() {
            "ringcentral" => ("ringcentral:audittrail", "audit"),
            "vbrick" => ("vbrick:rev:audit", "audit_vb"),
            _ => ("symphony:audittrail:privileged", "audit"),
        };
        assert_eq!(got.sourcetype.as_deref(), Some(st));
        assert_eq!(got.index, idx);
        assert_eq!(got.host.as_deref(), Some("tk-1"));
        assert_eq!(got.fields["tenant"], ev.tenant.as_str());
        assert_eq!(got.fields["stream"], ev.stream.as_str());
        assert_eq!(got.fields["action"], ev.action.as_str());
        assert_eq!(got.event["key"], ev.key.as_str(), "event = canonical JSON");
        assert_eq!(
            got.event["actor"]["email"],
            ev.actor.email.as_deref().unwrap_or("")
        );
        assert!(got.ack_id.is_some(), "sent with indexer acknowledgement");
    }
    let c = sim.counters();
    assert_eq!(c.pending_acks, 0);
    assert!(c.gzip_requests > 0, "gzip is the default");
    assert!(
        wait_no_ack_records(&journal).await,
        "no pending ack left in the journal"
    );
}

/// Test 2: the server is busy (503, code 9) for a while mid-run: nothing
/// lost, nothing duplicated. The busy period is time-scaled to 2 s
/// (the scenario says 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_period_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config::default()).await.expect("sim");
    let first = events("ringcentral", "acme", "audit-trail", 0, 1_000);
    fill(&journal, &first);
    let sink = build_sink(
        dir.path(),
        "hec",
        &h.url(),
        "sim-hec-token",
        "max_events = 100",
    )
    .await;
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "hec", 30).await;
    // Mid-run: the server turns busy, then more events arrive.
    sim.set_busy(Duration::from_secs(2));
    let second = events("ringcentral", "acme", "audit-trail", 1_000, 1_000);
    fill(&journal, &second);
    wait_drained(&journal, "hec", 60).await;
    run.finish().await;

    let c = sim.counters();
    assert!(c.busy_rejections > 0, "the busy period was hit");
    let mut all = keys(&first);
    all.extend(keys(&second));
    assert_exactly_once(&sim.event_ids(), &all);
}

/// Test 3: the ack of one request is lost (never true): after
/// `ack_timeout` that request is sent again. Every event arrives at least
/// once; the duplicates are exactly that request's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_ack_resends_that_batch_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config::default()).await.expect("sim");
    let all = events("ringcentral", "acme", "audit-trail", 0, 1_000);
    fill(&journal, &all);
    sim.lose_next_acks(1);
    let sink = build_sink(
        dir.path(),
        "hec",
        &h.url(),
        "sim-hec-token",
        "max_events = 100\nack_timeout = \"1s\"",
    )
    .await;
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "hec", 30).await;
    run.finish().await;

    let lost: BTreeSet<String> = sim.lost_ack_event_ids().into_iter().collect();
    assert_eq!(lost.len(), 100, "one request of 100 events lost its ack");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in sim.event_ids() {
        *counts.entry(id).or_default() += 1;
    }
    for k in keys(&all) {
        let n = counts.get(&k).copied().unwrap_or(0);
        let want = if lost.contains(&k) { 2 } else { 1 };
        assert_eq!(n, want, "{k}");
    }
    assert_eq!(counts.len(), 1_000);
}

/// Test 4: the process dies while acks are pending. The restarted process
/// loads the saved channel and ackIds from the journal, queries them, and
/// confirms the batches without sending them again. Events that arrived
/// meanwhile make the last batch after the restart larger than the request
/// it recovered: only the new part is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_with_pending_acks_recovers_from_saved_channel() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config {
        indexing_delay_ms: 1_500,
        ..hec::Config::default()
    })
    .await
    .expect("sim");
    let mut all = events("ringcentral", "acme", "audit-trail", 0, 450);
    fill(&journal, &all);
    let extra = "max_events = 100\nack_timeout = \"20s\"";
    let sink = build_sink(dir.path(), "hec", &h.url(), "sim-hec-token", extra).await;
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_until(10, "all sent and 5 acks saved", || {
        sim.events_indexed() == 450
            && journal
                .sink_state_prefix("hec", "ack.")
                .expect("state")
                .len()
                == 5
    })
    .await;
    // Crash: the worker (and with it the sink) vanishes mid-wait.
    run.task.abort();
    let _ = run.task.await;
    assert_eq!(
        journal.sink_cursor("hec").expect("cursor"),
        0,
        "nothing confirmed yet"
    );
    let saved = journal.sink_state_prefix("hec", "ack.").expect("state");
    let old_channel = saved[0].0.split('.').nth(1).expect("channel").to_string();
    assert_eq!(sim.counters().acks_read_true, 0);
    let later = events("ringcentral", "acme", "audit-trail", 450, 100);
    fill(&journal, &later);
    all.extend(later);

    // Restart with a new process (same journal, same sink name).
    let sink = build_sink(dir.path(), "hec", &h.url(), "sim-hec-token", extra).await;
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "hec", 30).await;
    run.finish().await;

    assert_exactly_once(&sim.event_ids(), &keys(&all));
    let c = sim.counters();
    assert_eq!(c.events_indexed, 550, "nothing was sent again");
    // Five saved acks, plus two new requests: the new half of the batch
    // that grew (seqs 451-500) and the last batch (501-550).
    assert_eq!(c.acks_read_true, 7, "the five saved acks were read true");
    assert!(
        c.ack_channels.contains(&old_channel),
        "the saved channel was queried"
    );
    assert!(wait_no_ack_records(&journal).await);
}

async fn poison_case(report_number: bool) {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config {
        report_invalid_event_number: report_number,
        ..hec::Config::default()
    })
    .await
    .expect("sim");
    let all = events("ringcentral", "acme", "audit-trail", 0, 500);
    fill(&journal, &all);
    let bad = all[250].key.clone();
    sim.poison(&bad);
    let sink = build_sink(
        dir.path(),
        "hec",
        &h.url(),
        "sim-hec-token",
        "max_events = 500",
    )
    .await;
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "hec", 30).await;
    run.finish().await;

    let dead = journal
        .dead_letters(Some("hec"), 100)
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event_key.as_deref(), Some(bad.as_str()));
    assert!(
        dead[0].reason.starts_with("hec_6: Invalid data format"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].payload.contains(&bad), "the payload is kept");
    let rest: Vec<String> = keys(&all).into_iter().filter(|k| *k != bad).collect();
    assert_exactly_once(&sim.event_ids(), &rest);
}

/// Test 5: one poison event in a batch of 500: exactly that one is
/// dead-lettered with the server's reason, the other 499 delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_event_is_dead_lettered_alone() {
    poison_case(true).await;
}

/// Test 5b: same without `invalid-event-number` in the answer (bisection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_event_found_by_bisection() {
    poison_case(false).await;
}

async fn get_readyz(url: &str) -> (u16, String) {
    let r = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}

/// Test 6: a disabled token halts the sink; the source keeps pulling into
/// the journal and `/readyz` fails; once the token is enabled again the
/// backlog is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_token_halts_sink_then_backlog_delivered() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config::default()).await.expect("sim");
    sim.set_token_disabled("sim-hec-token", true);
    let sink = build_sink(dir.path(), "hec", &h.url(), "sim-hec-token", "").await;
    let health = Arc::new(Health::new());
    let ops = trailkeep::sim::serve(
        trailkeep::telemetry::server::router(health.clone()),
        trailkeep::sim::loopback(),
    )
    .await
    .expect("ops");
    let schedule = trailkeep::config::Schedule {
        start_at: Some(trailkeep::config::StartAt::Ago(Duration::from_secs(2))),
        poll_interval: Duration::from_millis(100),
        overlap: Duration::ZERO,
        settle_delay: Duration::ZERO,
        max_window: None,
    };
    let pipeline = Arc::new(Pipeline {
        journal: journal.clone(),
        sources: vec![ScheduledSource {
            source: TickSource::new(),
            schedule,
        }],
        sinks: vec![sink],
        health: health.clone(),
        progress: Arc::new(Progress::default()),
        shutdown_grace: Duration::from_secs(5),
        retention: Duration::from_secs(86_400),
        prune_interval: Duration::from_secs(3_600),
        worker_options: fast_worker(),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(pipeline.clone().run(stop.clone()));

    wait_until(10, "sink halted", || health.halted().contains_key("hec")).await;
    let at_halt = journal.max_seq().expect("max");
    wait_until(10, "journal grows while halted", || {
        journal.max_seq().expect("max") > at_halt + 10
    })
    .await;
    let (status, body) = get_readyz(&ops.url()).await;
    assert_eq!(status, 503);
    assert!(body.contains("sink hec halted: hec_1"), "{body}");
    assert!(body.contains("Token disabled"), "{body}");
    assert_eq!(sim.events_indexed(), 0);
    assert_eq!(journal.sink_cursor("hec").expect("cursor"), 0);

    sim.set_token_disabled("sim-hec-token", false);
    let backlog = journal.max_seq().expect("max");
    wait_until(20, "backlog delivered", || {
        journal.sink_cursor("hec").expect("cursor") >= backlog
    })
    .await;
    wait_until(10, "ready again", || health.readiness().is_ok()).await;
    assert_eq!(get_readyz(&ops.url()).await.0, 200);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("pipeline ok");

    let cursor = journal.sink_cursor("hec").expect("cursor");
    let stored = journal.event_keys().expect("keys");
    let confirmed: Vec<String> = stored[..cursor as usize].to_vec();
    let got = sim.event_ids();
    let got_set: BTreeSet<&String> = got.iter().collect();
    assert!(
        confirmed.iter().all(|k| got_set.contains(k)),
        "confirmed events reached HEC"
    );
    assert_eq!(got.len(), got_set.len(), "no duplicates");
}

/// Test 7: a token without indexer acknowledgement (no ackIds, as Splunk
/// Cloud): `ack = "auto"` delivers on plain 200s and never polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_ack_uses_plain_delivery() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config::default()).await.expect("sim");
    let all = events("vbrick", "acme-vb", "userAccess", 0, 800);
    fill(&journal, &all);
    let sink = build_sink(
        dir.path(),
        "hec",
        &h.url(),
        "sim-hec-noack",
        "max_events = 100",
    )
    .await;
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "hec", 30).await;
    run.finish().await;
    assert_exactly_once(&sim.event_ids(), &keys(&all));
    let c = sim.counters();
    assert_eq!(c.ack_requests, 0, "no ack polling without ackIds");
    assert_eq!(c.acks_issued, 0);
    assert!(sim.events().iter().all(|e| e.ack_id.is_none()));
}

/// Test 7b: `ack = "on"` with such a token halts with a clear reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_on_with_token_without_ack_halts() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (_sim, h) = hec::start(hec::Config::default()).await.expect("sim");
    fill(&journal, &events("vbrick", "acme-vb", "userAccess", 0, 10));
    let sink = build_sink(dir.path(), "hec", &h.url(), "sim-hec-noack", "ack = \"on\"").await;
    let health = Arc::new(Health::new());
    let run = run_worker(sink, &journal, health.clone());
    wait_until(10, "halted", || health.halted().contains_key("hec")).await;
    let why = health.halted()["hec"].clone();
    assert!(
        why.contains("ack = \"on\" but the HEC token does not acknowledge"),
        "{why}"
    );
    run.finish().await;
}

/// Test 8: gzip on and off are both accepted; a 413 splits the request
/// until it fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_on_and_off_accepted_and_413_splits() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config::default()).await.expect("sim");
    let all = events("symphony", "pod1", "audittrail", 0, 600);
    fill(&journal, &all);

    let gz = build_sink(
        dir.path(),
        "hec-gz",
        &h.url(),
        "sim-hec-token",
        "compression = \"gzip\"",
    )
    .await;
    let run = run_worker(gz, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "hec-gz", 30).await;
    run.finish().await;
    let c = sim.counters();
    assert!(c.gzip_requests > 0);
    assert_exactly_once(&sim.event_ids(), &keys(&all));

    let plain_before = c.plain_requests;
    let plain = build_sink(
        dir.path(),
        "hec-plain",
        &h.url(),
        "sim-hec-token",
        "compression = \"none\"",
    )
    .await;
    let run = run_worker(plain, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "hec-plain", 30).await;
    run.finish().await;
    assert!(sim.counters().plain_requests > plain_before);
    let mut twice = keys(&all);
    twice.extend(keys(&all));
    let mut got = sim.event_ids();
    got.sort();
    twice.sort();
    assert_eq!(got, twice, "each sink delivered every event once");

    // 413: the server takes at most 40 KB per request; the sink sends
    // ~600 KB batches uncompressed and must split them.
    let (sim2, h2) = hec::start(hec::Config {
        max_content_length: 40_000,
        ..hec::Config::default()
    })
    .await
    .expect("sim");
    let split = build_sink(
        dir.path(),
        "hec-413",
        &h2.url(),
        "sim-hec-token",
        "compression = \"none\"\nmax_events = 600",
    )
    .await;
    let run = run_worker(split, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "hec-413", 30).await;
    run.finish().await;
    assert!(sim2.counters().too_large > 0, "413 was answered");
    assert_exactly_once(&sim2.event_ids(), &keys(&all));
    assert!(journal
        .dead_letters(Some("hec-413"), 10)
        .expect("dl")
        .is_empty());
}

/// Test 2b: the server indexes a request, then the connection breaks
/// before the answer is complete (the known duplicate source): the request
/// is retried; every event arrives, duplicates only from that request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answer_is_retried_without_loss() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config::default()).await.expect("sim");
    let all = events("ringcentral", "acme", "audit-trail", 0, 500);
    fill(&journal, &all);
    sim.drop_after_receive(1);
    let sink = build_sink(
        dir.path(),
        "hec",
        &h.url(),
        "sim-hec-token",
        "max_events = 100\nmax_in_flight = 1",
    )
    .await;
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "hec", 30).await;
    run.finish().await;
    assert_eq!(sim.counters().dropped_connections, 1);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in sim.event_ids() {
        *counts.entry(id).or_default() += 1;
    }
    // With one batch in flight the dropped request is the first batch.
    for (i, k) in keys(&all).iter().enumerate() {
        assert_eq!(
            counts.get(k).copied(),
            Some(if i < 100 { 2 } else { 1 }),
            "{k}"
        );
    }
}

/// Events committed while earlier batches wait for their acks are sent at
/// once (the worker refills its in-flight window on new events), not after
/// the oldest ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_events_are_sent_while_acks_are_pending() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config {
        indexing_delay_ms: 5_000,
        ..hec::Config::default()
    })
    .await
    .expect("sim");
    let first = events("ringcentral", "acme", "audit-trail", 0, 100);
    fill(&journal, &first);
    let sink = build_sink(dir.path(), "hec", &h.url(), "sim-hec-token", "").await;
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_until(10, "first batch sent", || sim.events_indexed() == 100).await;
    let second = events("ringcentral", "acme", "audit-trail", 100, 100);
    fill(&journal, &second);
    wait_until(10, "second batch sent", || sim.events_indexed() == 200).await;
    assert_eq!(
        sim.counters().acks_read_true,
        0,
        "the second batch did not wait for the first one's ack"
    );
    wait_drained(&journal, "hec", 30).await;
    run.finish().await;
    let mut all = keys(&first);
    all.extend(keys(&second));
    assert_exactly_once(&sim.event_ids(), &all);
}

/// `check --connect`: health and token are checked; a disabled token is a
/// halt with the server's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connection_reports_health_and_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_sim, h) = hec::start(hec::Config::default()).await.expect("sim");
    let ok = build_sink(dir.path(), "hec", &h.url(), "sim-hec-token", "").await;
    let text = ok.check_connection().await.expect("reachable");
    assert!(
        text.contains("HEC is healthy") && text.contains("token accepted"),
        "{text}"
    );
    let bad = build_sink(dir.path(), "hec2", &h.url(), "sim-hec-disabled", "").await;
    let err = bad.check_connection().await.expect_err("disabled token");
    assert!(
        matches!(err, trailkeep::sinks::SinkError::Halt { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Token disabled"), "{err}");
}

/// Acknowledgement switched off on the token while acks are pending: the
/// ack query answers code 14, `auto` falls back to plain delivery (the 200s
/// stand), nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_switched_off_mid_run_falls_back_to_plain_delivery() {
    let dir = tempfile::tempdir().expect("tmp");
    let journal = open_journal(dir.path());
    let (sim, h) = hec::start(hec::Config {
        indexing_delay_ms: 2_000,
        ..hec::Config::default()
    })
    .await
    .expect("sim");
    let first = events("ringcentral", "acme", "audit-trail", 0, 100);
    fill(&journal, &first);
    let sink = build_sink(dir.path(), "hec", &h.url(), "sim-hec-token", "").await;
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_until(10, "first batch sent", || sim.events_indexed() == 100).await;
    sim.set_token_ack("sim-hec-token", false);
    wait_drained(&journal, "hec", 30).await;
    let second = events("ringcentral", "acme", "audit-trail", 100, 100);
    fill(&journal, &second);
    wait_drained(&journal, "hec", 30).await;
    run.finish().await;
    let c = sim.counters();
    assert_eq!(c.acks_issued, 1);
    assert_eq!(c.errors_by_code.get(&14).copied(), Some(1), "{c:?}");
    let mut all = keys(&first);
    all.extend(keys(&second));
    assert_exactly_once(&sim.event_ids(), &all);
}

/// Ack records of delivered batches are removed shortly after the worker
/// commits its cursor; wait (bounded) for that.
async fn wait_no_ack_records(journal: &trailkeep::journal::Journal) -> bool {
    for _ in 0..100 {
        if journal
            .sink_state_prefix("hec", "ack.")
            .expect("state")
            .is_empty()
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}
