//! Helpers for the Symphony tests: a simulator with a registered service
//! account, a pipeline writing to the archive sink, and readers of what
//! reached the archive.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use trailkeep::config::Config;
use trailkeep::journal::{Journal, JournalError};
use trailkeep::model::StreamId;
use trailkeep::pipeline::{Pipeline, Progress, ScheduledSource};
use trailkeep::sim::symphony::{self, State};
use trailkeep::sim::SimHandle;
use trailkeep::sinks::worker::WorkerOptions;
use trailkeep::sources::{self, Source, StreamSource};
use trailkeep::telemetry::Health;

pub const USER: &str = "audit-bot";
pub const DAY_MS: i64 = 86_400_000;

pub struct Harness {
    pub dir: TempDir,
    pub sim: Arc<State>,
    pub handle: SimHandle,
    pub key_path: PathBuf,
    /// The source's `start_at`.
    pub start_at: String,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Harness {
    /// A simulator with `USER` registered; its private key (PKCS#8) in a
    /// file in a fresh tempdir.
    pub async fn new(cfg: symphony::Config) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sim, handle) = symphony::start(cfg).await.expect("sim starts");
        let key_path = symphony::provision_account(&sim, USER, dir.path()).expect("key");
        Harness {
            dir,
            sim,
            handle,
            key_path,
            start_at: "96d".into(),
        }
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("journal.db")
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    /// A config with one symphony source named `acme` (extra keys appended
    /// to its table) and the archive sink.
    pub fn config(&self, source_extra: &str) -> String {
        format!(
            r#"
[journal]
path = "{journal}"

[[sources]]
kind = "symphony"
name = "acme"
start_at = "{start_at}"
poll_interval = "1s"
settle_delay = "1s"
pod_url = "{url}"
username = "{USER}"
private_key = {{ file = "{key}" }}
retry_base = "10ms"
retry_max = "100ms"
{source_extra}

[[sinks]]
kind = "archive"
name = "archive"
dir = "{archive}"
"#,
            journal = self.journal_path().display(),
            url = self.handle.url(),
            key = self.key_path.display(),
            archive = self.archive_dir().display(),
            start_at = self.start_at,
        )
    }

    pub fn source(&self, source_extra: &str) -> Arc<dyn Source> {
        build_source(&self.config(source_extra)).expect("source builds")
    }

    pub fn stream(&self, source_extra: &str) -> Arc<dyn StreamSource> {
        self.source(source_extra).streams().remove(0)
    }

    pub async fn pipeline(&self, source_extra: &str) -> Arc<Pipeline> {
        let cfg = Config::from_toml_str(&self.config(source_extra)).expect("config");
        let journal = Journal::open(&cfg.journal.path, None).expect("journal");
        let mut issues = Vec::new();
        let source = sources::build(&cfg.sources[0], &mut issues).expect("source");
        let sink = trailkeep::sinks::build(&cfg.sinks[0], &mut issues)
            .await
            .expect("sink");
        assert!(issues.is_empty(), "{issues:?}");
        Arc::new(Pipeline {
            journal,
            sources: vec![ScheduledSource {
                source,
                schedule: cfg.sources[0].schedule.clone(),
            }],
            sinks: vec![sink],
            health: Arc::new(Health::new()),
            progress: Arc::new(Progress::default()),
            shutdown_grace: Duration::from_secs(2),
            retention: cfg.journal.retention.0,
            prune_interval: Duration::from_secs(3_600),
            worker_options: WorkerOptions::default(),
        })
    }
}

/// Builds the first source of a config text; Err = the issues as text.
pub fn build_source(toml: &str) -> Result<Arc<dyn Source>, String> {
    let cfg = Config::from_toml_str(toml).map_err(|e| e.to_string())?;
    let mut issues = Vec::new();
    let s = sources::build(&cfg.sources[0], &mut issues);
    if !issues.is_empty() {
        return Err(issues
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("\n"));
    }
    s.ok_or_else(|| "no source".to_string())
}

pub fn stream_id() -> StreamId {
    StreamId::new("symphony", "acme", "privilegeduser")
}

pub struct Running {
    pub pipeline: Arc<Pipeline>,
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<(), JournalError>>,
}

pub fn run(pipeline: Arc<Pipeline>) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(pipeline.clone().run(stop.clone()));
    Running {
        pipeline,
        stop,
        task,
    }
}

impl Running {
    /// Waits until the stream's watermark reached `until_ms` (every window
    /// up to then complete) and the sink confirmed everything in the
    /// journal. Fails the test after `timeout`.
    pub async fn wait_drained(&self, until_ms: i64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let j = &self.pipeline.journal;
            let wm = j
                .checkpoint(&stream_id())
                .expect("checkpoint")
                .and_then(|c| c.watermark)
                .map(|w| w.timestamp_millis());
            let sunk = j.sink_cursor("archive").expect("cursor") >= j.max_seq().expect("max");
            if wm.is_some_and(|w| w >= until_ms) && sunk {
                return;
            }
            assert!(
                !self.task.is_finished(),
                "pipeline stopped early: {:?}",
                j.status(&["archive".into()]).map(|s| format!("{s:?}"))
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "not drained within {timeout:?}: watermark {wm:?} < {until_ms}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("pipeline stops");
        r.expect("task").expect("pipeline ok");
    }
}

/// Every event line in the archive, as JSON.
pub fn archive_events(dir: &Path) -> Vec<Value> {
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
            } else if p.to_string_lossy().ends_with(".ndjson.gz") {
                let f = std::fs::File::open(&p).expect("open");
                let mut text = String::new();
                flate2::read::MultiGzDecoder::new(f)
                    .read_to_string(&mut text)
                    .expect("gunzip");
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    out.push(serde_json::from_str(line).expect("event json"));
                }
            }
        }
    }
    out
}

/// Canonical text of a JSON value (object keys sorted), for set compares.
pub fn canon(v: &Value) -> String {
    // serde_json's Map is ordered by key unless preserve_order is on.
    serde_json::to_string(v).expect("json")
}

/// Asserts the archive holds exactly the simulator's records, each once.
pub fn assert_archive_matches_sim(h: &Harness) -> Vec<Value> {
    let events = archive_events(&h.archive_dir());
    let mut keys: HashMap<String, usize> = HashMap::new();
    for e in &events {
        *keys
            .entry(e["key"].as_str().expect("key").to_string())
            .or_default() += 1;
    }
    let dups: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicate events in the archive: {dups:?}");
    let mut got: Vec<String> = events.iter().map(|e| canon(&e["raw"])).collect();
    let mut want: Vec<String> = h.sim.items_wire().iter().map(canon).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len(), "event count");
    assert!(got == want, "archived records differ from the simulator's");
    events
}
