//! Issue 8, chaos suite: all three sources (RingCentral, Vbrick, Symphony
//! simulators) and all sinks (archive, Splunk HEC simulator with acks,
//! DynamoDB = dynalite behind a fault proxy) in one `trailkeep run` child
//! process, SIGKILLed at random moments while the HEC simulator answers
//! 503 busy for a stretch and the proxy throttles and returns partial
//! `UnprocessedItems`. Then one last run drains and is stopped by SIGTERM.
//!
//! Final state: DynamoDB and the archive hold exactly the sources' set (one
//! item / line per event key); the HEC simulator holds every event at least
//! once, its duplicates counted and printed, and no more than the batches
//! that could have been awaiting acknowledgement at the kills.
//!
//! CI runs 5 kills (`CHAOS_KILLS`, default 5). The issue's full run:
//!
//! ```text
//! CHAOS_KILLS=20 cargo test --test chaos -- --nocapture
//! ```
//!
//! Needs dynalite (scripts/ci/install-dynalite.sh, or $TRAILKEEP_DYNALITE).

mod dynamodb_support;
mod engine_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;
use trailkeep::journal::Journal;
use trailkeep::model::AuditEvent;
use trailkeep::sim::{hec, ringcentral as rcsim, symphony, vbrick};
use trailkeep::util::HumanDuration;

const RC_RECORDS: usize = 2_000;
const VBRICK_ROWS: usize = 1_500;
const SYMPHONY_ITEMS: u32 = 1_500;
/// HEC sink knobs: the at-least-once window is at most this many batches
/// of this many events per kill.
const HEC_MAX_EVENTS: usize = 100;
const HEC_MAX_IN_FLIGHT: usize = 4;
const SINKS: [&str; 3] = ["archive", "splunk", "ddb"];

fn kills() -> usize {
    std::env::var("CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn ms(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(n))
}

fn canon(v: &Value) -> String {
    serde_json::to_string(v).expect("json")
}

fn vbrick_identity(action: &str, target: &str, when: DateTime<Utc>) -> String {
    format!("{action}|{target}|{}", when.timestamp_millis())
}

struct Figures {
    journal_events: u64,
    max_seq: u64,
    cursors: BTreeMap<String, u64>,
}

fn figures(j: &Journal) -> Figures {
    let st = j.status(&SINKS.map(String::from)).expect("journal status");
    Figures {
        journal_events: st.events,
        max_seq: st.max_seq,
        cursors: st.sinks.into_iter().map(|s| (s.sink, s.cursor)).collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn config_text(
    dir: &Path,
    rc: &str,
    vb_url: &str,
    vb: &vbrick::Config,
    sym_url: &str,
    sym_key: &Path,
    hec_url: &str,
    ddb_url: &str,
    table: &str,
) -> String {
    let d = dir.display();
    std::fs::write(dir.join("rev_secret"), &vb.secret).expect("secret");
    std::fs::write(dir.join("hec_token"), "sim-hec-token").expect("token");
    std::fs::write(dir.join("ak"), "AKIDTEST").expect("ak");
    std::fs::write(dir.join("sk"), "test-secret").expect("sk");
    format!(
        r#"
[journal]
path = "{d}/journal.db"

[telemetry]
listen = ""
log_format = "text"
log_level = "warn"

[pipeline]
shutdown_grace = "3s"

{rc}

[[sources]]
kind = "vbrick"
name = "chaos-rev"
url = "{vb_url}"
account_id = "{account}"
api_key = "{api_key}"
secret = {{ file = "{d}/rev_secret" }}
start_at = "3d"
poll_interval = "1s"
overlap = "5s"
settle_delay = "1s"

[[sources]]
kind = "symphony"
name = "chaos-pod"
pod_url = "{sym_url}"
username = "audit-bot"
private_key = {{ file = "{key}" }}
start_at = "25d"
poll_interval = "1s"
overlap = "5s"
settle_delay = "1s"
retry_base = "10ms"
retry_max = "200ms"
limit = 100

[[sinks]]
kind = "archive"
name = "archive"
dir = "{d}/archive"

[[sinks]]
kind = "splunk_hec"
name = "splunk"
endpoint = "{hec_url}"
token = {{ file = "{d}/hec_token" }}
ack = "on"
max_events = {HEC_MAX_EVENTS}
max_in_flight = {HEC_MAX_IN_FLIGHT}
ack_poll_interval = "50ms"
ack_timeout = "10s"
request_timeout = "10s"

[[sinks]]
kind = "dynamodb"
name = "ddb"
table = "{table}"
region = "us-east-1"
endpoint_url = "{ddb_url}"
access_key_id = {{ file = "{d}/ak" }}
secret_access_key = {{ file = "{d}/sk" }}
create_table = true
batch_size = 100
max_in_flight = 3
retry_base_delay = "2ms"
retry_max_delay = "40ms"
request_timeout = "10s"
"#,
        account = vb.account_id,
        api_key = vb.api_key,
        key = sym_key.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_all_sources_all_sinks_survive_sigkills() {
    let started = Instant::now();
    let n_kills = kills();
    let (_t, dir) = engine_support::temp();

    // Sources, with latency so the kills land mid-request.
    let (rc, rc_h) = rcsim::start(rcsim::Config {
        initial_records: RC_RECORDS,
        initial_span: HumanDuration(Duration::from_secs(2 * 86_400)),
        latency: ms(120),
        // Time-scaled Heavy/Auth groups: 2 s windows instead of 60 s.
        window: ms(2_000),
        penalty: ms(2_000),
        ..rcsim::Config::default()
    })
    .await
    .expect("rc sim");
    let vb_cfg = vbrick::Config {
        seed_rows: VBRICK_ROWS,
        rate_window: Duration::from_secs(10),
        faults: vbrick::Faults {
            latency_ms: 100,
            ..vbrick::Faults::default()
        },
        ..vbrick::Config::default()
    };
    let (vb, vb_h) = vbrick::start(vb_cfg.clone()).await.expect("vbrick sim");
    let (sym, sym_h) = symphony::start(symphony::Config {
        seed_items: SYMPHONY_ITEMS,
        seed_days: 20,
        faults: symphony::Faults {
            latency_ms: 150,
            ..symphony::Faults::default()
        },
        ..symphony::Config::default()
    })
    .await
    .expect("symphony sim");
    let sym_key = symphony::provision_account(&sym, "audit-bot", &dir).expect("key");

    // Sinks.
    let (hec_sim, hec_h) = hec::start(hec::Config {
        latency_ms: 40,
        ..hec::Config::default()
    })
    .await
    .expect("hec sim");
    let proxy = dynamodb_support::proxy().await;
    proxy
        .state
        .with_faults(|f| f.latency = Duration::from_millis(20));
    let table = dynamodb_support::table_name("chaos");

    let rc_src = engine_support::rc_source_toml(
        &dir,
        &rc,
        &rc_h.url(),
        "chaos-rc",
        "start_at = \"3d\"\npoll_interval = \"500ms\"\nsettle_delay = \"300ms\"\noverlap = \"2s\"\nper_page = 100",
    );
    let cfg = dir.join("trailkeep.toml");
    std::fs::write(
        &cfg,
        config_text(
            &dir,
            &rc_src,
            &vb_h.url(),
            &vb_cfg,
            &sym_h.url(),
            &sym_key,
            &hec_h.url(),
            &proxy.endpoint(),
            &table,
        ),
    )
    .expect("config");
    let journal = Journal::open(&dir.join("journal.db"), None).expect("journal");
    let log = dir.join("child.log");

    let expected_total = RC_RECORDS + VBRICK_ROWS + SYMPHONY_ITEMS as usize;
    assert_eq!(rc.visible_ids().len(), RC_RECORDS);
    assert_eq!(vb.rows().len(), VBRICK_ROWS);
    assert_eq!(sym.items_wire().len(), SYMPHONY_ITEMS as usize);

    let mut rng = rand::rng();
    let busy_round = 1.min(n_kills.saturating_sub(1));
    for round in 0..n_kills {
        // Faults for this round: the proxy throttles the next BatchWriteItem
        // calls and part-writes several more; the HEC simulator goes busy.
        proxy.state.with_faults(|f| {
            f.throttle.extend([
                "ProvisionedThroughputExceededException",
                "ThrottlingException",
                "ProvisionedThroughputExceededException",
            ]);
            f.partial += 6;
        });
        let mut child = engine_support::start_child(&cfg, &log);
        let after = Duration::from_millis(rng.random_range(300..1_500));
        if round == busy_round {
            // Mid-run, so sends (not only the start-up health check) meet
            // "503 Server is busy" and the kill lands while they retry.
            tokio::time::sleep(after / 2).await;
            hec_sim.set_busy(Duration::from_secs(2));
            tokio::time::sleep(after - after / 2).await;
        } else {
            tokio::time::sleep(after).await;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "trailkeep run exited on its own ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let f = figures(&journal);
        eprintln!(
            "chaos round {round}: SIGKILL after {after:?}; journal {} events, cursors {:?}, HEC indexed {}",
            f.journal_events,
            f.cursors,
            hec_sim.events_indexed()
        );
    }

    // The last run drains everything, then SIGTERM (once it is up: its
    // HEC sink has started, so the signal handler is installed).
    let health_before = hec_sim.counters().health_requests;
    let mut child = engine_support::start_child(&cfg, &log);
    let drain_started = Instant::now();
    engine_support::wait_until(
        "journal holds every source record and every sink confirmed it",
        Duration::from_secs(120),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "trailkeep run exited during the drain ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let f = figures(&journal);
            hec_sim.counters().health_requests > health_before
                && f.journal_events as usize >= expected_total
                && SINKS
                    .iter()
                    .all(|s| f.cursors.get(*s).copied().unwrap_or(0) >= f.max_seq)
        },
    )
    .await;
    let drain = drain_started.elapsed();
    engine_support::sigterm(&child);
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "clean exit after SIGTERM, got {status}:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // The journal: exactly the sources' set, by key.
    let keys: BTreeSet<String> = journal.event_keys().expect("keys").into_iter().collect();
    assert_eq!(keys.len(), expected_total, "journal key count");

    // The archive: every journal key exactly once, and its records are
    // exactly the simulators' records.
    let lines = engine_support::read_archive(&dir.join("archive"));
    let events: Vec<AuditEvent> = lines
        .iter()
        .map(|v| serde_json::from_str(&v.to_string()).expect("archived AuditEvent"))
        .collect();
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        *per_key.entry(e.key.as_str()).or_default() += 1;
    }
    let archive_dups: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        archive_dups.is_empty(),
        "duplicates in the archive: {archive_dups:?}"
    );
    let archive_keys: BTreeSet<String> = per_key.keys().map(|k| k.to_string()).collect();
    assert_eq!(archive_keys, keys, "archive keys = journal keys");

    let rc_got: BTreeSet<String> = events
        .iter()
        .filter(|e| e.source == "ringcentral")
        .map(|e| e.raw.value()["id"].as_str().expect("raw.id").to_string())
        .collect();
    assert_eq!(rc_got, rc.visible_ids(), "RingCentral records");
    let sym_got: BTreeSet<String> = events
        .iter()
        .filter(|e| e.source == "symphony")
        .map(|e| canon(&e.raw.value()))
        .collect();
    let sym_want: BTreeSet<String> = sym.items_wire().iter().map(canon).collect();
    assert_eq!(sym_got, sym_want, "Symphony records");
    let vb_got: BTreeSet<String> = events
        .iter()
        .filter(|e| e.source == "vbrick")
        .map(|e| vbrick_identity(&e.action, e.target.id.as_deref().unwrap_or(""), e.time))
        .collect();
    let vb_want: BTreeSet<String> = vb
        .rows()
        .iter()
        .map(|r| vbrick_identity(&r.message_key, &r.entity_id, r.when))
        .collect();
    assert_eq!(vb_want.len(), VBRICK_ROWS, "test rows are distinct");
    assert_eq!(vb_got, vb_want, "Vbrick rows");
    assert_eq!(
        rc_got.len() + sym_got.len() + vb_got.len(),
        expected_total,
        "nothing else in the archive"
    );

    // DynamoDB: one item per event key, nothing else.
    let client = dynamodb_support::direct_client().await;
    let items = dynamodb_support::scan(&client, &table).await;
    let ddb_keys: BTreeSet<String> = items
        .iter()
        .map(|i| dynamodb_support::s_attr(i, "event_id"))
        .collect();
    assert_eq!(items.len(), expected_total, "one DynamoDB item per event");
    assert_eq!(ddb_keys, keys, "DynamoDB holds exactly the sources' set");

    // Splunk HEC: every event at least once; duplicates only from batches
    // that were awaiting acknowledgement when a kill landed.
    let hec_ids = hec_sim.event_ids();
    let hec_keys: BTreeSet<String> = hec_ids.iter().cloned().collect();
    assert_eq!(hec_keys, keys, "HEC holds every event (and nothing else)");
    let hec_dups = hec_ids.len() - hec_keys.len();
    let bound = n_kills * HEC_MAX_IN_FLIGHT * HEC_MAX_EVENTS;
    let hc = hec_sim.counters();
    eprintln!(
        "chaos: {n_kills} SIGKILLs, {expected_total} events; HEC duplicates {hec_dups} (bound {bound} = kills x max_in_flight x max_events), \
         HEC 503 busy answers {}, acks issued {}; DynamoDB throttled {} calls, UnprocessedItems returned {} items in {} answers; \
         final drain {:.1}s, whole test {:.1}s",
        hc.busy_rejections,
        hc.acks_issued,
        proxy.state.count(|c| &c.throttled),
        proxy.state.count(|c| &c.unprocessed_returned),
        proxy.state.count(|c| &c.unprocessed_calls),
        drain.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        hec_dups <= bound,
        "{hec_dups} HEC duplicates exceed the at-least-once window of {bound}"
    );
    assert!(
        proxy.state.count(|c| &c.throttled) > 0,
        "the proxy never throttled: the test proved nothing about DynamoDB retries"
    );
    assert!(
        journal
            .dead_letters(None, 10)
            .expect("dead letters")
            .is_empty(),
        "nothing may be dead-lettered"
    );
}
