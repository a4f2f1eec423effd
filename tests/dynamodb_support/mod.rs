//! Test harness for the DynamoDB sink: a dynalite process shared by the
//! test binary, a fault-injecting proxy for what dynalite cannot do
//! (throttling, partial UnprocessedItems), an event generator, and helpers
//! to run a sink worker until it has confirmed the whole journal.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use trailkeep::config::Config;
use trailkeep::journal::{Checkpoint, Journal};
use trailkeep::model::{event_key, Actor, AuditEvent, EventKind, StreamId, Target};
use trailkeep::sinks::worker::WorkerOptions;
use trailkeep::sinks::{self, Sink, SinkContext, SinkWorker};
use trailkeep::telemetry::Health;

// ---------------------------------------------------------------- dynalite

pub struct Dynalite {
    pub port: u16,
    child: Mutex<Child>,
    // Held open for the life of the test binary: dynalite's wrapper exits
    // when this pipe closes, i.e. when the test process ends (however it
    // ends), so no server outlives its tests.
    _stdin: Mutex<ChildStdin>,
}

impl Dynalite {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

const WRAPPER: &str = r#"
const dynalite = require(process.env.TRAILKEEP_DYNALITE_MODULE);
const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
server.listen(0, '127.0.0.1', () => {
  process.stdout.write('PORT ' + server.address().port + '\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
"#;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The dynalite package directory: `$TRAILKEEP_DYNALITE` (a path to its
/// cli.js or package dir) or `.tools/dynalite/node_modules/dynalite`.
fn dynalite_module() -> PathBuf {
    if let Ok(p) = std::env::var("TRAILKEEP_DYNALITE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            p.parent().map(Path::to_path_buf).unwrap_or(p)
        } else {
            p
        };
    }
    repo_root().join(".tools/dynalite/node_modules/dynalite")
}

/// Starts dynalite once per test binary, on 127.0.0.1 and a free port
/// (chosen by the OS: no race with other test binaries).
pub fn dynalite() -> &'static Dynalite {
    static D: OnceLock<Dynalite> = OnceLock::new();
    D.get_or_init(|| {
        let module = dynalite_module();
        assert!(
            module.join("index.js").is_file(),
            "dynalite is not installed at {}: run scripts/ci/install-dynalite.sh once (needs node >= 18 and npm)",
            module.display()
        );
        let mut child = Command::new("node")
            .arg("-e")
            .arg(WRAPPER)
            .env("TRAILKEEP_DYNALITE_MODULE", &module)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `node` for dynalite ({e}); install Node.js >= 18 and run scripts/ci/install-dynalite.sh")
            });
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading dynalite's port");
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("dynalite did not start (said {line:?})"));
        let stdin = child.stdin.take().expect("stdin");
        Dynalite {
            port,
            child: Mutex::new(child),
            _stdin: Mutex::new(stdin),
        }
    })
}

/// A table name no other test uses.
pub fn table_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

// ------------------------------------------------------------ fault proxy

/// Faults the proxy injects into `BatchWriteItem` calls, in order.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next calls answer 400 with these error codes (throttles).
    pub throttle: VecDeque<&'static str>,
    /// The next N calls write only the first half of their items and
    /// return the rest as `UnprocessedItems`.
    pub partial: u32,
    /// Every call writes only its first item and returns the rest
    /// (until switched off).
    pub trickle: bool,
    /// Added before forwarding every request (network round trip).
    pub latency: Duration,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub batch_calls: AtomicU64,
    pub put_calls: AtomicU64,
    pub max_batch_items: AtomicU64,
    pub batch_items: AtomicU64,
    pub throttled: AtomicU64,
    pub unprocessed_returned: AtomicU64,
    /// Answers that carried UnprocessedItems.
    pub unprocessed_calls: AtomicU64,
}

pub struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    pub faults: Mutex<Faults>,
    pub counters: Counters,
}

impl ProxyState {
    pub fn count(&self, c: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        c(&self.counters).load(Ordering::SeqCst)
    }
    pub fn with_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().unwrap());
    }
}

pub struct Proxy {
    pub state: Arc<ProxyState>,
    pub port: u16,
    stop: CancellationToken,
}

impl Proxy {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a proxy to dynalite on 127.0.0.1 (a free port), on the current
/// runtime.
pub async fn proxy() -> Proxy {
    let state = Arc::new(ProxyState {
        upstream: dynalite().endpoint(),
        http: reqwest::Client::new(),
        faults: Mutex::new(Faults::default()),
        counters: Counters::default(),
    });
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    Proxy { state, port, stop }
}

fn dynamo_error(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.0")],
        json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": message })
            .to_string(),
    )
        .into_response()
}

async fn forward(State(st): State<Arc<ProxyState>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let latency = st.faults.lock().unwrap().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut body = body.to_vec();
    let mut withheld: Option<(String, Vec<Value>)> = None;
    if target.ends_with(".PutItem") {
        st.counters.put_calls.fetch_add(1, Ordering::SeqCst);
    }
    if target.ends_with(".BatchWriteItem") {
        st.counters.batch_calls.fetch_add(1, Ordering::SeqCst);
        let mut v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let n: usize = v["RequestItems"]
            .as_object()
            .map(|m| m.values().map(|l| l.as_array().map_or(0, Vec::len)).sum())
            .unwrap_or(0);
        st.counters
            .batch_items
            .fetch_add(n as u64, Ordering::SeqCst);
        st.counters
            .max_batch_items
            .fetch_max(n as u64, Ordering::SeqCst);
        let (throttle, keep) = {
            let mut f = st.faults.lock().unwrap();
            if let Some(code) = f.throttle.pop_front() {
                (Some(code), None)
            } else if f.trickle {
                (None, Some(1))
            } else if f.partial > 0 {
                f.partial -= 1;
                (None, Some(n.div_ceil(2)))
            } else {
                (None, None)
            }
        };
        if let Some(code) = throttle {
            st.counters.throttled.fetch_add(1, Ordering::SeqCst);
            return dynamo_error(
                code,
                "injected by the test proxy: rate of requests exceeds the allowed throughput",
            );
        }
        if let Some(keep) = keep {
            if let Some(map) = v["RequestItems"].as_object_mut() {
                if let Some((table, list)) = map.iter_mut().next() {
                    if let Some(list) = list.as_array_mut() {
                        if list.len() > keep {
                            let rest = list.split_off(keep);
                            st.counters.unprocessed_calls.fetch_add(1, Ordering::SeqCst);
                            st.counters
                                .unprocessed_returned
                                .fetch_add(rest.len() as u64, Ordering::SeqCst);
                            withheld = Some((table.clone(), rest));
                        }
                    }
                }
            }
            body = serde_json::to_vec(&v).unwrap();
        }
    }
    let mut req = st.http.post(&st.upstream).body(body);
    for (name, value) in &headers {
        if name == "host" || name == "content-length" {
            continue;
        }
        req = req.header(name.as_str(), value.as_bytes());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-amz-json-1.0")
        .to_string();
    let mut out = resp.bytes().await.unwrap_or_default().to_vec();
    if let (Some((table, rest)), true) = (withheld, status.is_success()) {
        let mut v: Value = serde_json::from_slice(&out).unwrap_or_else(|_| json!({}));
        v["UnprocessedItems"] = json!({ table: rest });
        out = serde_json::to_vec(&v).unwrap();
    }
    (status, [("content-type", content_type)], out).into_response()
}

// ----------------------------------------------------------------- events

/// `n` synthetic events of one tenant, `step` apart from `start`, actors
/// rotating through `actors`; raw records carry `pad` bytes of filler.
pub fn events(
    source: &str,
    tenant: &str,
    n: usize,
    start: DateTime<Utc>,
    step: Duration,
    actors: &[&str],
) -> Vec<AuditEvent> {
    (0..n)
        .map(|i| {
            let time = start + chrono::Duration::from_std(step * i as u32).unwrap();
            let actor = actors[i % actors.len()];
            let id = format!("ev-{i:06}");
            AuditEvent {
                key: event_key(source, tenant, &id),
                source: source.into(),
                tenant: tenant.into(),
                stream: "audit-trail".into(),
                time,
                ingested_at: time + chrono::Duration::seconds(90),
                action: ["UPDATE_USER", "CREATE_USER", "DELETE_DEVICE"][i % 3].into(),
                action_label: Some(format!("action {i}")),
                kind: [EventKind::Update, EventKind::Create, EventKind::Delete][i % 3],
                actor: Actor {
                    id: Some(format!("id-{actor}")),
                    name: Some(actor.to_string()),
                    email: Some(format!("{actor}@acme.test")),
                    role: None,
                },
                target: Target {
                    id: Some(format!("t{}", i % 17)),
                    name: None,
                    kind: Some("user".into()),
                    extension: None,
                },
                changes: Vec::new(),
                client_ip: Some("192.0.2.10".into()),
                raw: json!({ "id": id, "eventTime": time.to_rfc3339(), "seq": i }).into(),
            }
        })
        .collect()
}

/// Commits events to the journal in pages, as a stream worker would.
pub fn commit(journal: &Journal, events: &[AuditEvent]) {
    for page in events.chunks(500) {
        let id = page[0].stream_id();
        journal
            .commit_page(&id, page, &[], &Checkpoint::default())
            .unwrap();
    }
}

pub fn stream_of(ev: &AuditEvent) -> StreamId {
    ev.stream_id()
}

// ------------------------------------------------------------- sink setup

pub struct Env {
    pub dir: tempfile::TempDir,
    pub journal: Journal,
}

pub fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ak"), "AKIDTEST").unwrap();
    std::fs::write(dir.path().join("sk"), "test-secret").unwrap();
    let journal = Journal::open(&dir.path().join("journal.db"), None).unwrap();
    Env { dir, journal }
}

impl Env {
    /// The TOML of one dynamodb sink pointed at `endpoint`.
    pub fn sink_toml(&self, name: &str, table: &str, endpoint: &str, extra: &str) -> String {
        let d = self.dir.path().display();
        format!(
            r#"
[[sinks]]
kind = "dynamodb"
name = "{name}"
table = "{table}"
region = "us-east-1"
endpoint_url = "{endpoint}"
access_key_id = {{ file = "{d}/ak" }}
secret_access_key = {{ file = "{d}/sk" }}
retry_base_delay = "2ms"
retry_max_delay = "40ms"
request_timeout = "10s"
{extra}
"#
        )
    }

    /// A whole config file: this env's journal, no metrics listener, and
    /// the given `[[sources]]`/`[[sinks]]` entries.
    pub fn config_text(&self, entries: &str) -> String {
        format!(
            "[journal]\npath = \"{}\"\n[telemetry]\nlisten = \"\"\nlog_level = \"warn\"\n{entries}",
            self.dir.path().join("journal.db").display()
        )
    }

    pub fn config(&self, entries: &str) -> Config {
        let text = self.config_text(entries);
        Config::from_toml_str(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"))
    }

    pub async fn sink(
        &self,
        name: &str,
        table: &str,
        endpoint: &str,
        extra: &str,
    ) -> Arc<dyn Sink> {
        let cfg = self.config(&self.sink_toml(name, table, endpoint, extra));
        let mut issues = Vec::new();
        let s = sinks::build(&cfg.sinks[0], &mut issues).await;
        assert!(issues.is_empty(), "{issues:?}");
        s.unwrap()
    }

    pub fn ctx(&self, name: &str) -> SinkContext {
        SinkContext {
            journal: self.journal.clone(),
            sink: name.into(),
        }
    }
}

/// A client straight to dynalite (for checking what the table holds).
pub async fn direct_client() -> Client {
    let conf = aws_sdk_dynamodb::config::Builder::new()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(dynalite().endpoint())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "AKIDTEST",
            "test-secret",
            None,
            None,
            "test",
        ))
        .build();
    Client::from_conf(conf)
}

pub fn worker_options() -> WorkerOptions {
    WorkerOptions {
        halt_retry: Duration::from_millis(200),
        max_backoff: Duration::from_millis(200),
        idle_poll: Duration::from_millis(20),
    }
}

/// Runs a sink worker until its cursor reaches the journal's last seq;
/// fails the test after `limit`.
pub async fn drain(env: &Env, sink: Arc<dyn Sink>, limit: Duration) {
    let name = sink.name().to_string();
    let worker = SinkWorker::new(
        sink,
        env.journal.clone(),
        Arc::new(Health::new()),
        worker_options(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));
    let max = env.journal.max_seq().unwrap();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if env.journal.sink_cursor(&name).unwrap() >= max {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sink `{name}` did not confirm the journal within {limit:?} (cursor {} of {max})",
            env.journal.sink_cursor(&name).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// Every item of a table.
pub async fn scan(client: &Client, table: &str) -> Vec<HashMap<String, AttributeValue>> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let res = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        out.extend(res.items().iter().cloned());
        match res.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    out
}

pub fn s_attr(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        other => panic!("attribute {name}: {other:?}"),
    }
}

/// Creates the table through the sink's own `start` (create_table = true).
pub async fn create_via_sink(env: &Env, table: &str) {
    let s = env
        .sink(
            "creator",
            table,
            &dynalite().endpoint(),
            "create_table = true",
        )
        .await;
    s.start(&env.ctx("creator")).await.unwrap();
}

// ------------------------------------------------- the demo's RingCentral

/// The demo's RingCentral simulator with `records` records over the last
/// three days, unthrottled (the DynamoDB tests are not about its limits).
pub async fn rc_sim(
    records: usize,
) -> (
    Arc<trailkeep::sim::ringcentral::RingCentralSim>,
    trailkeep::sim::SimHandle,
) {
    let cfg = trailkeep::sim::ringcentral::Config {
        initial_records: records,
        initial_span: trailkeep::util::HumanDuration(Duration::from_secs(3 * 86_400)),
        unlimited: true,
        ..Default::default()
    };
    trailkeep::sim::ringcentral::start(cfg).await.unwrap()
}

/// A `[[sources]]` entry for that simulator (secrets as files in `dir`).
pub fn rc_source_toml(dir: &Path, url: &str) -> String {
    let sim = trailkeep::sim::ringcentral::Config::default();
    std::fs::write(dir.join("rc_client_secret"), &sim.client_secret).unwrap();
    std::fs::write(dir.join("rc_jwt"), &sim.jwt).unwrap();
    let d = dir.display();
    format!(
        r#"
[[sources]]
kind = "ringcentral"
name = "acme-rc"
server = "{url}"
client_id = "{}"
client_secret = {{ file = "{d}/rc_client_secret" }}
jwt = {{ file = "{d}/rc_jwt" }}
start_at = "4d"
poll_interval = "1s"
overlap = "30s"
settle_delay = "1s"
"#,
        sim.client_id
    )
}

/// Runs a whole pipeline (sources and sinks of `cfg`) until it is drained.
pub async fn run_pipeline(cfg: Config, journal: &Journal, limit: Duration) {
    let (cfg, sources, sinks) = trailkeep::cli::from_config(cfg).await.unwrap();
    let mut p = trailkeep::cli::pipeline(
        &cfg,
        journal.clone(),
        sources,
        sinks,
        Arc::new(Health::new()),
    );
    p.worker_options = worker_options();
    let p = Arc::new(p);
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.clone().run(stop.clone()));
    let deadline = tokio::time::Instant::now() + limit;
    while !p.drained().unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pipeline not drained within {limit:?}: {:?}",
            journal.status(&p.sink_names()).ok().map(|s| s.sinks)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// `trailkeep run -c FILE` as a child process, killed if the test fails.
pub struct Service {
    pub child: Child,
    pub log: PathBuf,
}

impl Service {
    pub fn start(config: &Path, log: PathBuf) -> Service {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Service { child, log }
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "trailkeep run exited ({status}):\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
