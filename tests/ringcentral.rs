//! Issue 2: the engine end to end with the RingCentral source, against the
//! RingCentral simulator over real HTTP. Limits are time-scaled (a 2 s
//! Heavy window instead of 60 s); the client learns them from headers.

mod engine_support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use engine_support::*;
use rand::Rng;
use trailkeep::journal::{Checkpoint, Journal};
use trailkeep::model::StreamId;
use trailkeep::sim::ringcentral::{self as rcsim, Config as SimConfig};
use trailkeep::util::HumanDuration;

fn hd(ms: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(ms))
}

fn days(d: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(d * 86_400))
}

/// Time-scaled Heavy group: 10 requests per 2 s, 2 s penalty.
fn fast_limits() -> SimConfig {
    SimConfig {
        window: hd(2_000),
        penalty: hd(2_000),
        ..SimConfig::default()
    }
}

fn assert_exact(archive: &std::collections::BTreeMap<String, usize>, expected: &BTreeSet<String>) {
    let dups: Vec<_> = archive.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicates in the archive: {dups:?}");
    let got: BTreeSet<String> = archive.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "archive differs: missing {missing:?}, extra {extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_archives_exactly_the_simulators_set_with_minimal_requests() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 8_000,
        initial_span: days(150),
        live_per_second: 5.0,
        ..fast_limits()
    })
    .await
    .expect("sim");
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "catchup",
        "poll_interval = \"3s\"\nsettle_delay = \"300ms\"\noverlap = \"2s\"",
    );
    let (p, journal) = pipeline_from(&config_toml(&dir, &src)).await;
    let run = spawn(&p);
    wait_until("first catch-up", Duration::from_secs(60), || {
        p.progress.all_caught_up()
    })
    .await;
    let requests = sim.counters().search_requests;
    let stored = journal.status(&[]).expect("status").streams[0].stored;
    let minimum = stored.div_ceil(1_000);
    assert!(stored >= 8_000, "backfill stored {stored}");
    assert!(
        requests as f64 <= (minimum as f64 * 1.1).floor().max(minimum as f64),
        "{requests} search requests for {stored} records; minimum is {minimum}"
    );

    // Live traffic keeps arriving; stop it and let the next polls take the rest.
    sim.pause_live(true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let expected = sim.visible_ids();
    wait_until(
        "archive holds the simulator's set",
        Duration::from_secs(30),
        || archived_ids(&dir.join("archive")).len() >= expected.len(),
    )
    .await;
    run.shutdown().await;
    assert_exact(&archived_ids(&dir.join("archive")), &expected);
    assert_eq!(
        sim.counters().rate_limited.get("heavy"),
        None,
        "steady run met a 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_five_random_moments_loses_and_doubles_nothing() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 6_000,
        initial_span: days(150),
        latency: hd(20),
        ..fast_limits()
    })
    .await
    .expect("sim");
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "crash",
        "poll_interval = \"500ms\"\nsettle_delay = \"300ms\"\noverlap = \"2s\"\nper_page = 200",
    );
    let cfg = dir.join("trailkeep.toml");
    std::fs::write(&cfg, config_toml(&dir, &src)).expect("config");
    let log = dir.join("child.log");
    let mut rng = rand::rng();
    for round in 0..5 {
        let mut child = start_child(&cfg, &log);
        let after = Duration::from_millis(rng.random_range(300..2_500));
        tokio::time::sleep(after).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        eprintln!(
            "round {round}: killed after {after:?}, archive has {} lines",
            read_archive(&dir.join("archive")).len()
        );
    }
    let mut child = start_child(&cfg, &log);
    let expected = sim.visible_ids();
    wait_until(
        "archive complete after restarts",
        Duration::from_secs(90),
        || archived_ids(&dir.join("archive")).len() >= expected.len(),
    )
    .await;
    sigterm(&child);
    let status = child.wait().expect("wait");
    assert!(status.success(), "clean exit after SIGTERM, got {status}");
    assert_exact(&archived_ids(&dir.join("archive")), &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_meets_no_429_and_honours_retry_after() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 3_000,
        initial_span: days(30),
        ..fast_limits()
    })
    .await
    .expect("sim");
    // 100 per page: 30 pages against 10 requests / 2 s.
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "rates",
        "poll_interval = \"300ms\"\nsettle_delay = \"200ms\"\noverlap = \"1s\"\nper_page = 100",
    );
    let (p, _j) = pipeline_from(&config_toml(&dir, &src)).await;
    let run = spawn(&p);
    wait_until("3,000 records archived", Duration::from_secs(60), || {
        archived_ids(&dir.join("archive")).len() >= 3_000
    })
    .await;
    // Keep polling a while in steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = sim.counters();
    assert_eq!(
        c.rate_limited.get("heavy"),
        None,
        "a steady run must never receive a 429: {c:?}"
    );
    assert!(c.search_requests >= 30);

    // Injected penalty: the next request meets a 429; nothing of the group
    // may be sent until Retry-After (2 s) has passed.
    sim.force_heavy_penalty();
    wait_until("a 429 answered", Duration::from_secs(10), || {
        sim.searches().iter().any(|s| s.status == 429)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    run.shutdown().await;
    let searches = sim.searches();
    let limited: Vec<_> = searches.iter().filter(|s| s.status == 429).collect();
    assert_eq!(
        limited.len(),
        1,
        "requests sent during the penalty restarted it: {limited:?}"
    );
    let hit = limited[0].at_ms;
    let next = searches
        .iter()
        .filter(|s| s.at_ms > hit)
        .map(|s| s.at_ms)
        .min()
        .expect("a request after the penalty");
    assert!(
        next - hit >= 2_000,
        "next Heavy request {}ms after the 429, before Retry-After",
        next - hit
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_and_revocation_reauthenticates() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 500,
        initial_span: days(10),
        live_per_second: 20.0,
        access_token_ttl: hd(1_500),
        ..fast_limits()
    })
    .await
    .expect("sim");
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "tokens",
        "poll_interval = \"200ms\"\nsettle_delay = \"100ms\"\noverlap = \"1s\"",
    );
    let (p, journal) = pipeline_from(&config_toml(&dir, &src)).await;
    let run = spawn(&p);
    tokio::time::sleep(Duration::from_secs(4)).await;
    sim.revoke_tokens();
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.pause_live(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expected = sim.visible_ids();
    wait_until("all records archived", Duration::from_secs(20), || {
        archived_ids(&dir.join("archive")).len() >= expected.len()
    })
    .await;
    run.shutdown().await;
    let c = sim.counters();
    assert!(c.refresh_grants >= 1, "refresh token never used: {c:?}");
    assert!(
        c.jwt_grants >= 2,
        "no new JWT grant after revocation: {c:?}"
    );
    assert!(c.unauthorized <= 1, "401s beyond the one revocation: {c:?}");
    assert_eq!(
        c.rate_limited.get("auth"),
        None,
        "Auth group exceeded: {c:?}"
    );
    let st = journal.status(&[]).expect("status");
    assert_eq!(
        st.streams[0].last_error, None,
        "a token problem reached the stream"
    );
    let errors = trailkeep::telemetry::METRICS
        .source_errors_total
        .with_label_values(&["ringcentral", "tokens", "audit-trail", "auth"])
        .get();
    assert_eq!(errors, 0);
    assert_exact(&archived_ids(&dir.join("archive")), &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_checkpoint_reports_gap_and_never_asks_past_the_horizon() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 1_000,
        initial_span: days(150),
        ..fast_limits()
    })
    .await
    .expect("sim");
    // The service was down 200 days: its checkpoint is older than the horizon.
    let stale = Utc::now() - chrono::Duration::days(200);
    let journal = Journal::open(&dir.join("journal.db"), None).expect("journal");
    journal
        .commit_page(
            &StreamId::new("ringcentral", "horizon", "audit-trail"),
            &[],
            &[],
            &Checkpoint {
                watermark: Some(stale),
                open_window: None,
            },
        )
        .expect("seed checkpoint");
    drop(journal);
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "horizon",
        "poll_interval = \"500ms\"\nsettle_delay = \"200ms\"",
    );
    let (p, journal) = pipeline_from(&config_toml(&dir, &src)).await;
    let run = spawn(&p);
    wait_until("caught up", Duration::from_secs(30), || {
        p.drained().unwrap_or(false)
    })
    .await;
    run.shutdown().await;
    let gaps = journal.gaps().expect("gaps");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].stream, "ringcentral/horizon/audit-trail");
    assert_eq!(gaps[0].from.timestamp_millis(), stale.timestamp_millis());
    assert!(gaps[0].to > Utc::now() - chrono::Duration::days(180));
    assert_eq!(sim.counters().requests_outside_horizon, 0);
    let gauge = trailkeep::telemetry::METRICS
        .source_gaps_total
        .with_label_values(&["ringcentral", "horizon", "audit-trail"])
        .get();
    assert_eq!(gauge, 1);
    assert_exact(&archived_ids(&dir.join("archive")), &sim.visible_ids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_window_is_flagged_and_shrunk() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 10_000,
        initial_span: days(100),
        ..fast_limits()
    })
    .await
    .expect("sim");
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "saturated",
        "poll_interval = \"1s\"\nsettle_delay = \"200ms\"",
    );
    let (p, journal) = pipeline_from(&config_toml(&dir, &src)).await;
    let run = spawn(&p);
    wait_until("caught up", Duration::from_secs(60), || {
        p.drained().unwrap_or(false)
    })
    .await;
    run.shutdown().await;
    let gaps = journal.gaps().expect("gaps");
    assert!(
        gaps.iter().any(|g| g.reason.contains("cap")),
        "saturation not recorded: {gaps:?}"
    );
    // The first window spanned the horizon; later ones were smaller.
    let searches = sim.searches();
    let first = &searches[0];
    let later = searches
        .iter()
        .find(|s| s.page == 1 && s.from != first.from || s.to != first.to)
        .expect("a later window");
    assert!(
        later.to - later.from < first.to - first.from,
        "window did not shrink"
    );
    assert_exact(&archived_ids(&dir.join("archive")), &sim.visible_ids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_arrival_inside_the_overlap_is_captured() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 100,
        initial_span: days(5),
        ..fast_limits()
    })
    .await
    .expect("sim");
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "late",
        "poll_interval = \"500ms\"\nsettle_delay = \"300ms\"\noverlap = \"10s\"",
    );
    let (p, _j) = pipeline_from(&config_toml(&dir, &src)).await;
    let run = spawn(&p);
    wait_until("caught up", Duration::from_secs(20), || {
        p.drained().unwrap_or(false)
    })
    .await;
    // A record whose eventTime lies before the watermark, visible only now.
    let mut late = sim.make_record(Utc::now() - chrono::Duration::seconds(4));
    late["id"] = serde_json::json!("late-arrival-1");
    sim.insert(vec![late], Duration::ZERO);
    wait_until("late record archived", Duration::from_secs(15), || {
        archived_ids(&dir.join("archive")).contains_key("late-arrival-1")
    })
    .await;
    run.shutdown().await;
    assert_exact(&archived_ids(&dir.join("archive")), &sim.visible_ids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_within_ten_seconds_and_journal_resumes() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 4_000,
        initial_span: days(60),
        latency: hd(100),
        ..fast_limits()
    })
    .await
    .expect("sim");
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "term",
        "poll_interval = \"500ms\"\nsettle_delay = \"200ms\"\nper_page = 100",
    );
    let cfg = dir.join("trailkeep.toml");
    std::fs::write(&cfg, config_toml(&dir, &src)).expect("config");
    let log = dir.join("child.log");
    let mut child = start_child(&cfg, &log);
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigterm(&child);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.success(),
        "exit status {status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let journal = Journal::open(&dir.join("journal.db"), None).expect("journal reopens");
    let st = journal.status(&["archive".into()]).expect("status");
    assert_eq!(
        st.events, st.streams[0].stored,
        "journal rows and checkpoint counts agree"
    );
    assert!(
        st.events < 4_000,
        "SIGTERM came after the run had finished; test proves nothing"
    );
    drop(journal);
    let mut child = start_child(&cfg, &log);
    let expected = sim.visible_ids();
    wait_until(
        "rest archived after restart",
        Duration::from_secs(60),
        || archived_ids(&dir.join("archive")).len() >= expected.len(),
    )
    .await;
    sigterm(&child);
    assert!(child.wait().expect("wait").success());
    assert_exact(&archived_ids(&dir.join("archive")), &expected);
}

/// Each case: a config mistake and the key path the error must name.
#[test]
fn bad_config_exits_2_naming_the_key() {
    let (_t, dir) = temp();
    std::fs::write(dir.join("s"), "x").expect("secret");
    let secret = dir.join("s").display().to_string();
    let base_source = |extra: &str| {
        format!(
            "[[sources]]\nkind = \"ringcentral\"\nname = \"a\"\nclient_id = \"c\"\nclient_secret = {{ file = \"{secret}\" }}\njwt = {{ file = \"{secret}\" }}\n{extra}\n"
        )
    };
    let journal = format!("[journal]\npath = \"{}/j.db\"\n", dir.display());
    let sink = format!(
        "[[sinks]]\nkind = \"archive\"\nname = \"arch\"\ndir = \"{}/a\"\n",
        dir.display()
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing secret env", format!("{journal}{sink}[[sources]]\nkind = \"ringcentral\"\nname = \"a\"\nclient_id = \"c\"\nclient_secret = {{ env = \"TRAILKEEP_TEST_NOPE_SECRET\" }}\njwt = {{ file = \"{secret}\" }}\n"),
         "sources[0].client_secret: environment variable TRAILKEEP_TEST_NOPE_SECRET is not set"),
        ("bad duration", format!("{journal}{sink}{}", base_source("poll_interval = \"5 minutes\"")), "sources[0].poll_interval"),
        ("unknown key", format!("{journal}{sink}{}", base_source("per_pgae = 10")), "sources[0].per_pgae"),
        ("duplicate source name", format!("{journal}{sink}{}{}", base_source(""), base_source("")), "sources[1].name: duplicate source name"),
        ("per_page over 1000", format!("{journal}{sink}{}", base_source("per_page = 5000")), "sources[0].per_page"),
        ("missing journal", format!("{sink}{}", base_source("")), "journal: missing section"),
        ("unknown source kind", format!("{journal}{sink}[[sources]]\nkind = \"zoom\"\nname = \"z\"\n"), "sources[0].kind: unknown source kind `zoom`"),
        ("archive without dir", format!("{journal}[[sinks]]\nkind = \"archive\"\nname = \"x\"\n{}", base_source("")), "sinks[0].dir"),
        ("missing secret file", format!("{journal}{sink}[[sources]]\nkind = \"ringcentral\"\nname = \"a\"\nclient_id = \"c\"\nclient_secret = {{ file = \"/nonexistent/secret\" }}\njwt = {{ file = \"{secret}\" }}\n"),
         "sources[0].client_secret: cannot read secret file /nonexistent/secret"),
        ("literal secret", format!("{journal}{sink}[[sources]]\nkind = \"ringcentral\"\nname = \"a\"\nclient_id = \"c\"\nclient_secret = \"hunter2\"\njwt = {{ file = \"{secret}\" }}\n"),
         "sources[0].client_secret"),
        ("bad start_at", format!("{journal}{sink}{}", base_source("start_at = \"last tuesday\"")), "sources[0].start_at"),
        ("bad listen address", format!("{journal}[telemetry]\nlisten = \"localhost\"\n{sink}{}", base_source("")), "telemetry.listen"),
    ];
    for (what, text, expect) in cases {
        let file = dir.join("bad.toml");
        std::fs::write(&file, &text).expect("write");
        let out = Command::new(BIN)
            .args(["check", "-c"])
            .arg(&file)
            .output()
            .expect("run check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: expected exit 2, got {:?}; stderr: {stderr}",
            out.status
        );
        assert!(
            stderr.contains(expect),
            "{what}: expected `{expect}` in:\n{stderr}"
        );
        assert!(
            !stderr.contains("hunter2"),
            "{what}: a secret value leaked into the error"
        );
    }
    // And a good one passes.
    let file = dir.join("good.toml");
    std::fs::write(&file, format!("{journal}{sink}{}", base_source(""))).expect("write");
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Environment overrides reach the same validation, named by key path.
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&file)
        .env("TRAILKEEP__TELEMETRY__LISTEN", "not-an-address")
        .env("TRAILKEEP__JOURNAL__RETENTION", "forever")
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("telemetry.listen") && stderr.contains("journal.retention"),
        "{stderr}"
    );
}

/// `trailkeep status` shows what the dashboard's main panels show: lag,
/// horizon headroom, stored and duplicates per stream; pending, delivered
/// and dead letters per sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_lag_headroom_and_sink_backlog() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 300,
        initial_span: days(20),
        ..fast_limits()
    })
    .await
    .expect("sim");
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "stat",
        "poll_interval = \"500ms\"\nsettle_delay = \"200ms\"\noverlap = \"1h\"",
    );
    let text = config_toml(&dir, &src);
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, &text).expect("config");
    let (p, _j) = pipeline_from(&text).await;
    let run = spawn(&p);
    wait_until("caught up", Duration::from_secs(30), || {
        p.drained().unwrap_or(false)
    })
    .await;
    run.shutdown().await;
    let out = Command::new(BIN)
        .args(["status", "--json", "-c"])
        .arg(&cfg)
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let s = &v["streams"][0];
    assert_eq!(s["stream"], "ringcentral/stat/audit-trail");
    assert_eq!(s["stored"], 300);
    assert!(s["lag_seconds"].as_i64().expect("lag") < 60, "{s}");
    // Watermark ~now, overlap 1 h: about 180 days less an hour of headroom.
    let headroom = s["horizon_headroom_seconds"].as_i64().expect("headroom");
    assert!(
        (179 * 86_400..180 * 86_400).contains(&headroom),
        "headroom {headroom}"
    );
    let sink = &v["sinks"][0];
    assert_eq!(
        (
            sink["sink"].as_str(),
            sink["pending"].as_u64(),
            sink["delivered"].as_u64()
        ),
        (Some("archive"), Some(0), Some(300))
    );
    let table = Command::new(BIN)
        .args(["status", "-c"])
        .arg(&cfg)
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("HEADROOM") && table.contains("179d"),
        "{table}"
    );
}
