//! Journal → Splunk HEC throughput: events/s and peak RSS for N events
//! (default 1,000,000; first numeric argument or HEC_BENCH_EVENTS) from a
//! pre-filled journal to the in-process HEC simulator, with indexer
//! acknowledgement on.
//!
//! `cargo bench --bench hec_throughput [-- N]`
//!
//! The simulator runs in a child process (this same binary, re-executed
//! with HEC_BENCH_SIM_CHILD=1; it counts events, it does not keep them), so
//! the peak RSS is trailkeep's own (journal reader, sink worker, sink). Both
//! processes share this machine's cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use trailkeep::config::Config;
use trailkeep::journal::{Checkpoint, Journal};
use trailkeep::model::{Actor, AuditEvent, Change, EventKind, StreamId, Target};
use trailkeep::sim::hec;
use trailkeep::sinks::worker::WorkerOptions;
use trailkeep::sinks::SinkWorker;
use trailkeep::telemetry::Health;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux: write 5 to clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn event(i: u64) -> AuditEvent {
    let base = Utc
        .timestamp_millis_opt(1_717_200_000_000)
        .single()
        .expect("time");
    let native = format!("{i:010}");
    AuditEvent {
        key: trailkeep::model::event_key("ringcentral", "acme", &native),
        source: "ringcentral".into(),
        tenant: "acme".into(),
        stream: "audit-trail".into(),
        time: base + chrono::Duration::milliseconds(i as i64 * 37),
        ingested_at: Utc::now(),
        action: "USER_UPDATE".into(),
        action_label: Some("Changed user settings".into()),
        kind: EventKind::Update,
        actor: Actor {
            id: Some(format!("{}", 1000 + i % 97)),
            name: Some(format!("Admin {}", i % 97)),
            email: Some(format!("admin{}@example.com", i % 97)),
            role: Some("Super Admin".into()),
        },
        target: Target {
            id: Some(format!("{}", 50_000 + i)),
            name: Some(format!("User {i}")),
            kind: Some("User".into()),
            extension: Some(format!("{}", 100 + i % 900)),
        },
        changes: vec![Change {
            field: "status".into(),
            old: Some("Enabled".into()),
            new: Some("Disabled".into()),
        }],
        client_ip: Some(format!("10.0.{}.{}", i % 256, (i / 256) % 256)),
        raw: json!({"id": native, "eventType": "update", "accountId": "37439510",
                    "details": {"parameters": [{"key": "status", "value": "Disabled"}]}})
        .into(),
    }
}

struct Row {
    label: String,
    events: u64,
    secs: f64,
    peak_rss_mb: f64,
    baseline_rss_mb: f64,
    requests: u64,
    ack_polls: u64,
}

/// The simulator child: serves on loopback, prints its URL, and exits
/// when its stdin closes (the parent ended).
fn sim_child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (_state, handle) = hec::start(hec::Config {
            store_events: false,
            ..hec::Config::default()
        })
        .await
        .expect("simulator");
        println!("{}", handle.url());
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await;
    });
}

struct SimProcess {
    child: std::process::Child,
    url: String,
}

impl SimProcess {
    fn spawn() -> SimProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("HEC_BENCH_SIM_CHILD", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("simulator process");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("simulator url");
        SimProcess {
            child,
            url: line.trim().to_string(),
        }
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

async fn run(journal: &Journal, name: &str, extra: &str, n: u64, dir: &std::path::Path) -> Row {
    let sim = SimProcess::spawn();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "sim-hec-token").expect("token");
    let text = format!(
        "[journal]\npath = \"{}\"\n[[sinks]]\nkind = \"splunk_hec\"\nname = \"{name}\"\nendpoint = \"{}\"\ntoken = {{ file = \"{}\" }}\n{extra}\n",
        journal.path().display(),
        sim.url,
        token_file.display()
    );
    let cfg = Config::from_toml_str(&text).expect("config");
    let mut issues = Vec::new();
    let sink = trailkeep::sinks::build(&cfg.sinks[0], &mut issues)
        .await
        .expect("sink");
    reset_peak();
    let baseline = status_kb("VmRSS:") as f64 / 1024.0;
    let stop = CancellationToken::new();
    let worker = SinkWorker::new(
        sink,
        journal.clone(),
        Arc::new(Health::new()),
        WorkerOptions::default(),
    );
    let started = Instant::now();
    let task = tokio::spawn(worker.run(stop.clone()));
    loop {
        if journal.sink_cursor(name).expect("cursor") >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let peak = status_kb("VmHWM:") as f64 / 1024.0;
    stop.cancel();
    let _ = task.await;
    let c: serde_json::Value = reqwest::get(format!("{}/_sim/counters", sim.url))
        .await
        .expect("counters")
        .json()
        .await
        .expect("counters json");
    assert_eq!(c["events_indexed"], n, "every event indexed once");
    Row {
        label: name.to_string(),
        events: n,
        secs,
        peak_rss_mb: peak,
        baseline_rss_mb: baseline,
        requests: c["event_requests"].as_u64().unwrap_or(0),
        ack_polls: c["ack_requests"].as_u64().unwrap_or(0),
    }
}

const VARIANTS: &[(&str, &str)] = &[
    ("hec-gzip-ack", "compression = \"gzip\"\nack = \"on\""),
    ("hec-plain-ack", "compression = \"none\"\nack = \"on\""),
    (
        "hec-gzip-ack-inflight8",
        "compression = \"gzip\"\nack = \"on\"\nmax_in_flight = 8",
    ),
];

/// One variant in a fresh process (so its peak RSS is its own), against
/// the journal the parent filled; prints one table row.
fn run_child(variant: usize, journal_path: &std::path::Path, n: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let journal = Journal::open(journal_path, None).expect("journal");
    let dir = tempfile::tempdir().expect("tmp");
    let (name, extra) = VARIANTS[variant];
    let r = rt.block_on(run(&journal, name, extra, n, dir.path()));
    println!(
        "| {} | {} | {:.2} | {:.0} | {:.1} ({:.1}) | {} | {} |",
        r.label,
        r.events,
        r.secs,
        r.events as f64 / r.secs,
        r.peak_rss_mb,
        r.baseline_rss_mb,
        r.requests,
        r.ack_polls
    );
}

fn main() {
    // As the service binary does: the figures are the service's.
    trailkeep::util::tune_malloc();
    if std::env::var_os("HEC_BENCH_SIM_CHILD").is_some() {
        sim_child();
        return;
    }
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| std::env::var("HEC_BENCH_EVENTS").ok()?.parse().ok())
        .unwrap_or(1_000_000);
    if let (Ok(v), Some(path)) = (
        std::env::var("HEC_BENCH_VARIANT"),
        std::env::var_os("HEC_BENCH_JOURNAL"),
    ) {
        run_child(v.parse().expect("variant"), std::path::Path::new(&path), n);
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bench.db");
    let journal = Journal::open(&path, None).expect("journal");
    let fill_start = Instant::now();
    let id = StreamId::new("ringcentral", "acme", "audit-trail");
    let mut i = 0;
    while i < n {
        let page: Vec<AuditEvent> = (i..(i + 1_000).min(n)).map(event).collect();
        journal
            .commit_page(&id, &page, &[], &Checkpoint::default())
            .expect("commit");
        i += page.len() as u64;
    }
    let payload = journal
        .read_after(0, 1, usize::MAX)
        .expect("read")
        .first()
        .map_or(0, |r| r.payload.len());
    drop(journal);
    println!(
        "filled journal with {n} events ({payload} bytes of canonical JSON each) in {:.1}s",
        fill_start.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "| sink (defaults: max_events 1000, max_bytes 1 MB, max_in_flight 32, ack poll 100 ms; sim indexing delay 50 ms) | events | seconds | events/s | trailkeep peak RSS MB (RSS at start) | HEC requests | ack polls |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (v, (name, _)) in VARIANTS.iter().enumerate() {
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .arg(n.to_string())
            .env("HEC_BENCH_VARIANT", v.to_string())
            .env("HEC_BENCH_JOURNAL", &path)
            .status()
            .expect("variant process");
        assert!(status.success(), "variant {name} failed");
    }
}
