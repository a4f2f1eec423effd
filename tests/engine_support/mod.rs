//! Shared helpers of the engine / RingCentral integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use tokio_util::sync::CancellationToken;
use trailkeep::config::Config;
use trailkeep::journal::Journal;
use trailkeep::pipeline::Pipeline;
use trailkeep::sim::ringcentral::RingCentralSim;
use trailkeep::telemetry::Health;

pub const BIN: &str = env!("CARGO_BIN_EXE_trailkeep");

/// Writes the simulator's credentials as secret files and returns the
/// source's TOML entry pointing at `url`.
pub fn rc_source_toml(
    dir: &Path,
    sim: &RingCentralSim,
    url: &str,
    name: &str,
    extra: &str,
) -> String {
    let secret = dir.join(format!("{name}_secret"));
    let jwt = dir.join(format!("{name}_jwt"));
    std::fs::write(&secret, &sim.cfg.client_secret).expect("write secret");
    std::fs::write(&jwt, &sim.cfg.jwt).expect("write jwt");
    format!(
        r#"
[[sources]]
kind = "ringcentral"
name = "{name}"
server = "{url}"
client_id = "{}"
client_secret = {{ file = "{}" }}
jwt = {{ file = "{}" }}
{extra}
"#,
        sim.cfg.client_id,
        secret.display(),
        jwt.display()
    )
}

/// A whole config: journal + archive under `dir`, plus `sources`.
pub fn config_toml(dir: &Path, sources: &str) -> String {
    format!(
        r#"
[journal]
path = "{}/journal.db"

[telemetry]
listen = ""
log_format = "text"
log_level = "warn"

[pipeline]
shutdown_grace = "3s"

{sources}

[[sinks]]
kind = "archive"
name = "archive"
dir = "{}/archive"
"#,
        dir.display(),
        dir.display()
    )
}

/// Every line of every archive file, parsed.
pub fn read_archive(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "gz") {
                let f = std::fs::File::open(&p).expect("open archive file");
                for line in BufReader::new(MultiGzDecoder::new(f)).lines() {
                    let line = line.expect("archive line");
                    out.push(serde_json::from_str(&line).expect("archive line is JSON"));
                }
            }
        }
    }
    out
}

/// Native ids (the `raw.id`) of archived events, with how often each occurs.
pub fn archived_ids(dir: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for v in read_archive(dir) {
        let id = v["raw"]["id"].as_str().expect("raw.id").to_string();
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

/// An in-process pipeline from config text.
pub async fn pipeline_from(toml: &str) -> (Arc<Pipeline>, Journal) {
    let cfg = Config::from_toml_str(toml).expect("valid config");
    let (cfg, sources, sinks) = trailkeep::cli::from_config(cfg).await.expect("builds");
    let journal = Journal::open(&cfg.journal.path, cfg.journal.max_bytes).expect("journal");
    let p = trailkeep::cli::pipeline(
        &cfg,
        journal.clone(),
        sources,
        sinks,
        Arc::new(Health::new()),
    );
    (Arc::new(p), journal)
}

/// Polls `cond` every 50 ms; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Running {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), trailkeep::journal::JournalError>>,
}

pub fn spawn(p: &Arc<Pipeline>) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.clone().run(stop.clone()));
    Running { stop, task }
}

impl Running {
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("pipeline task")
            .expect("pipeline ran cleanly");
    }
}

/// Starts `trailkeep run -c config` as a child process.
pub fn start_child(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(BIN)
        .args(["run", "-c"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn trailkeep")
}

pub fn sigterm(child: &Child) {
    // SAFETY: sending a signal to our own child by pid has no memory effects.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

pub fn temp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().to_path_buf();
    (d, p)
}
