//! Vbrick Rev audit source against the Rev simulator, over real HTTP on
//! 127.0.0.1, through the whole pipeline into the journal and the archive
//! sink.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trailkeep::config::Config;
use trailkeep::journal::Journal;
use trailkeep::model::{AuditEvent, StreamId};
use trailkeep::pipeline::Pipeline;
use trailkeep::sim::vbrick::{self as sim, Faults, RequestRecord, Row, TruncateMode, WhenStyle};
use trailkeep::sim::SimHandle;
use trailkeep::telemetry::{Health, METRICS};

const ALL: [&str; 6] = [
    "userAccess",
    "users",
    "groups",
    "devices",
    "videos",
    "scheduledEvents",
];

struct Env {
    dir: tempfile::TempDir,
    sim: Arc<sim::State>,
    handle: SimHandle,
}

impl Env {
    async fn new(cfg: sim::Config) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("secret"), &cfg.secret).expect("secret");
        std::fs::write(dir.path().join("password"), &cfg.password).expect("password");
        std::fs::write(dir.path().join("wrong"), "not-the-secret").expect("wrong");
        let (sim, handle) = sim::start(cfg).await.expect("sim");
        Env { dir, sim, handle }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A config whose one window covers the last 21 hours (rows made by
    /// `make_rows` lie in it): a walk's requests are exactly its pages.
    fn toml_one_window(&self, name: &str, extra: &str) -> String {
        self.toml(name, extra)
            .replace("start_at = \"2d\"", "start_at = \"21h\"")
    }

    /// A config with one vbrick source (`extra` = more keys of it).
    fn toml(&self, name: &str, extra: &str) -> String {
        let d = self.path().display();
        format!(
            r#"
[journal]
path = "{d}/journal.db"
[telemetry]
listen = ""
log_format = "text"
log_level = "warn"
[pipeline]
shutdown_grace = "2s"
[[sources]]
kind = "vbrick"
name = "{name}"
url = "{url}"
account_id = "{account}"
start_at = "2d"
poll_interval = "60s"
settle_delay = "1s"
{extra}
[[sinks]]
kind = "archive"
name = "archive"
dir = "{d}/archive"
"#,
            url = self.handle.url(),
            account = self.sim.config().account_id,
        )
    }

    fn api_key(&self) -> String {
        format!(
            "api_key = \"{}\"\nsecret = {{ file = \"{}/secret\" }}",
            self.sim.config().api_key,
            self.path().display()
        )
    }

    async fn pipeline(&self, toml: &str) -> (Arc<Pipeline>, Journal) {
        let cfg = Config::from_toml_str(toml).expect("config");
        let journal = Journal::open(&cfg.journal.path, None).expect("journal");
        let (cfg, sources, sinks) = trailkeep::cli::from_config(cfg).await.expect("build");
        let p = trailkeep::cli::pipeline(
            &cfg,
            journal.clone(),
            sources,
            sinks,
            Arc::new(Health::new()),
        );
        (Arc::new(p), journal)
    }

    fn archive(&self) -> Vec<AuditEvent> {
        read_archive(&self.path().join("archive"))
    }
}

/// Runs until every stream is caught up and the sink has everything.
async fn run_until_drained(p: Arc<Pipeline>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.clone().run(stop.clone()));
    let started = Instant::now();
    loop {
        if p.drained().expect("journal") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "pipeline did not drain within 90s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.expect("join").expect("pipeline");
}

fn read_archive(dir: &Path) -> Vec<AuditEvent> {
    let mut files = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.to_string_lossy().ends_with(".ndjson.gz") {
                    out.push(p);
                }
            }
        }
    }
    walk(dir, &mut files);
    let mut out = Vec::new();
    for f in files {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&f).expect("open"))
            .read_to_string(&mut text)
            .expect("gunzip");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            out.push(serde_json::from_str(line).expect("event json"));
        }
    }
    out
}

/// The identity of a row as a user would check it.
fn row_identity(r: &Row) -> (String, String, DateTime<Utc>) {
    (r.message_key.clone(), r.entity_id.clone(), r.when)
}

fn event_identity(e: &AuditEvent) -> (String, String, DateTime<Utc>) {
    (
        e.action.clone(),
        e.target.id.clone().unwrap_or_default(),
        e.time,
    )
}

fn assert_exactly(events: &[AuditEvent], rows: &[Row], what: &str) {
    let keys: BTreeSet<&str> = events.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), events.len(), "{what}: duplicate event keys");
    let got: BTreeSet<_> = events.iter().map(event_identity).collect();
    let want: BTreeSet<_> = rows.iter().map(row_identity).collect();
    assert_eq!(want.len(), rows.len(), "test data must be distinct");
    assert_eq!(got.len(), events.len(), "{what}: duplicate events");
    let missing: Vec<_> = want.difference(&got).take(3).collect();
    let extra: Vec<_> = got.difference(&want).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} events vs {} rows; missing {missing:?}, extra {extra:?}",
        events.len(),
        rows.len()
    );
}

fn journal_events(j: &Journal) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let batch = j.read_after(after, 1_000, usize::MAX).expect("read");
        if batch.is_empty() {
            return out;
        }
        after = batch.last().map_or(after, |r| r.seq);
        out.extend(batch.iter().map(|r| r.event().expect("payload")));
    }
}

fn parse(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t)
        .expect("date")
        .with_timezone(&Utc)
}

fn ok_requests<'a>(log: &'a [RequestRecord], route: &str) -> Vec<&'a RequestRecord> {
    log.iter()
        .filter(|r| r.route == route && r.status == 200)
        .collect()
}

/// Rows of one collection spread over `[now - from_h, now - to_h)`.
fn make_rows(st: &sim::State, entity_key: &str, n: usize, from_h: i64, to_h: i64) -> Vec<Row> {
    let now = Utc::now();
    let from = now - chrono::Duration::hours(from_h);
    let span = (chrono::Duration::hours(from_h - to_h)).num_milliseconds();
    (0..n)
        .map(|i| {
            let when = from + chrono::Duration::milliseconds(span * i as i64 / n as i64);
            st.make_row(entity_key, when)
        })
        .collect()
}

// ------------------------------------------------------------------ 1

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_all_collections_exactly_once_with_minimal_requests() {
    let env = Env::new(sim::Config::default()).await;
    let now = Utc::now();
    let rows = env.sim.seed(
        2_500,
        now - chrono::Duration::hours(40),
        now - chrono::Duration::hours(1),
    );
    let (p, journal) = env.pipeline(&env.toml("rev-e2e", &env.api_key())).await;
    let started = Instant::now();
    run_until_drained(p).await;
    let elapsed = started.elapsed();

    // Journal and sink hold exactly the 2,500 rows, once each.
    let stored = journal_events(&journal);
    assert_eq!(stored.len(), 2_500);
    assert_exactly(&stored, &rows, "journal");
    let archived = env.archive();
    assert_eq!(archived.len(), 2_500);
    assert_exactly(&archived, &rows, "archive");
    for e in &archived {
        assert_eq!(e.source, "vbrick");
        assert_eq!(e.tenant, "rev-e2e");
        assert!(e.actor.id.is_some(), "actor from Principal: {e:?}");
        assert!(e.target.kind.is_some());
    }
    // Every stream name is one collection, and each event sits in the
    // collection its EntityKey belongs to.
    for e in &archived {
        let kind = e.target.kind.as_deref().unwrap_or_default();
        let expect = match kind {
            "Network:UserAccess" => "userAccess",
            "Network:User" => "users",
            "Network:Group" => "groups",
            "Media:Video" => "videos",
            "ScheduledEvents:Webcast" => "scheduledEvents",
            k if k.starts_with("Devices:") => "devices",
            other => panic!("unexpected EntityKey {other}"),
        };
        assert_eq!(e.stream, expect);
    }
    // Changes come from PreviousState vs CurrentState.
    assert!(archived
        .iter()
        .any(|e| e.action == "Media:SaveVideoSettings" && !e.changes.is_empty()));

    // Requests: per collection window exactly ceil(rows/100) (at least
    // one), plus one login for the whole account.
    let log = env.sim.requests();
    let mut windows = 0;
    for c in ALL {
        let mut by_window: BTreeMap<String, Vec<&RequestRecord>> = BTreeMap::new();
        for r in ok_requests(&log, c) {
            by_window
                .entry(r.to.clone().expect("toDate"))
                .or_default()
                .push(r);
        }
        assert!(!by_window.is_empty(), "{c}: no requests");
        for (to, reqs) in by_window {
            let first: Vec<_> = reqs.iter().filter(|r| r.token.is_none()).collect();
            assert_eq!(first.len(), 1, "{c} window ..{to}: one first page");
            let from = parse(first[0].from.as_deref().expect("fromDate"));
            let n = env.sim.rows_in(c, from, parse(&to)).len();
            let want = n.div_ceil(100).max(1);
            assert_eq!(
                reqs.len(),
                want,
                "{c} window {from}..{to}: {n} rows took {} requests",
                reqs.len()
            );
            windows += 1;
        }
    }
    assert!(windows >= 12, "two windows per collection at least");
    let counters = env.sim.counters();
    eprintln!(
        "e2e: 2500 rows, 6 streams, {windows} windows, {} audit requests + {} login, drained in {:.2}s",
        counters.audit_total(),
        counters.login_total(),
        elapsed.as_secs_f64()
    );
    assert_eq!(counters.login_total(), 1, "one session for all six streams");
    assert_eq!(counters.status(401) + counters.status(429), 0);
    assert_eq!(counters.audit_total(), counters.status(200));
}

// ------------------------------------------------------------------ 2

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_mid_walk_relogs_and_continues_from_saved_continuation() {
    let env = Env::new(sim::Config::default()).await;
    let rows = make_rows(&env.sim, "Network:User", 600, 20, 1);
    env.sim.inject(rows.clone());
    // The 4th audit request finds its session expired.
    env.sim.update_faults(|f| f.expire_sessions_after = Some(3));
    let extra = format!("{}\ncollections = [\"users\"]", env.api_key());
    let (p, journal) = env
        .pipeline(&env.toml_one_window("rev-expiry", &extra))
        .await;
    run_until_drained(p).await;

    assert_exactly(&journal_events(&journal), &rows, "journal");
    assert_exactly(&env.archive(), &rows, "archive");
    let log = env.sim.requests();
    let users: Vec<_> = log.iter().filter(|r| r.route == "users").collect();
    let i401 = users
        .iter()
        .position(|r| r.status == 401)
        .expect("a 401 mid-walk");
    assert_eq!(users.iter().filter(|r| r.status == 401).count(), 1);
    assert!(
        users[i401].token.is_some(),
        "the expiry hit a continuation page"
    );
    let retry = users[i401 + 1];
    assert_eq!(retry.status, 200);
    assert_eq!(
        (&retry.from, &retry.token),
        (&users[i401].from, &users[i401].token),
        "the walk continued from the saved continuation"
    );
    // 600 rows = 6 pages; nothing re-read from the window start.
    assert_eq!(ok_requests(&log, "users").len(), 6);
    assert_eq!(env.sim.counters().login_total(), 2, "exactly one re-login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_is_extended_before_it_expires_user_login() {
    let env = Env::new(sim::Config {
        session_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let rows = make_rows(&env.sim, "Media:Video", 3_000, 20, 1);
    env.sim.inject(rows.clone());
    env.sim.update_faults(|f| f.latency_ms = 60);
    // username + password route this time.
    let extra = format!(
        "username = \"{}\"\npassword = {{ file = \"{}/password\" }}\ncollections = [\"videos\"]",
        env.sim.config().username,
        env.path().display()
    );
    let (p, journal) = env
        .pipeline(&env.toml_one_window("rev-extend", &extra))
        .await;
    run_until_drained(p).await;

    assert_exactly(&journal_events(&journal), &rows, "journal");
    let c = env.sim.counters();
    assert!(c.logins.get("user_login").copied().unwrap_or(0) >= 1);
    assert_eq!(c.logins.get("authenticate"), None);
    assert!(
        c.extend_session >= 1,
        "a 30-page walk longer than half the 2s session extends it: {c:?}"
    );
    assert_eq!(ok_requests(&env.sim.requests(), "videos").len(), 30);
}

// ------------------------------------------------------------------ 3

fn kill(child: &mut std::process::Child) {
    // SIGKILL: no shutdown code runs.
    child.kill().expect("kill");
    child.wait().expect("wait");
}

fn spawn_run(config: &Path, log: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["run", "-c"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn trailkeep run")
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_mid_walk_resumes_without_loss_or_duplicates() {
    let env = Env::new(sim::Config::default()).await;
    let rows = make_rows(&env.sim, "Network:UserAccess", 1_500, 20, 1);
    env.sim.inject(rows.clone());
    // Page 5 of the (single) window hangs: the process is frozen mid-walk
    // with pages 1-4 committed.
    env.sim.update_faults(|f| f.stall_after = Some(4));
    let extra = format!("{}\ncollections = [\"userAccess\"]", env.api_key());
    let config = env.path().join("trailkeep.toml");
    std::fs::write(&config, env.toml_one_window("rev-crash", &extra)).expect("config");

    let mut first = spawn_run(&config, &env.path().join("run1.log"));
    let sim = env.sim.clone();
    wait_until("the walk to stall mid-window", || sim.is_stalled()).await;
    kill(&mut first);

    let journal = Journal::open(&env.path().join("journal.db"), None).expect("journal");
    let id = StreamId::new("vbrick", "rev-crash", "userAccess");
    let cp = journal.checkpoint(&id).expect("cp").expect("checkpoint");
    let open = cp.open_window.expect("killed inside an open window");
    let saved: serde_json::Value =
        serde_json::from_str(open.cursor.as_deref().expect("cursor")).expect("cursor json");
    let saved_token = saved["token"].as_str().expect("token").to_string();
    assert_eq!(journal_events(&journal).len(), 400, "4 pages committed");

    env.sim.release();
    let mut second = spawn_run(&config, &env.path().join("run2.log"));
    let j = journal.clone();
    let want = rows.len();
    wait_until("the restarted run to store and deliver everything", || {
        j.event_keys().map(|k| k.len()).unwrap_or(0) == want
            && j.sink_cursor("archive").unwrap_or(0) == j.max_seq().unwrap_or(u64::MAX)
    })
    .await;
    kill(&mut second);

    assert_exactly(&journal_events(&journal), &rows, "journal");
    assert_exactly(&env.archive(), &rows, "archive");
    let log = env.sim.requests();
    let first_pages = log
        .iter()
        .filter(|r| r.route == "userAccess" && r.token.is_none())
        .count();
    assert_eq!(
        first_pages, 1,
        "the window was not restarted from its start"
    );
    let resumed: Vec<_> = log
        .iter()
        .filter(|r| r.token.as_deref() == Some(saved_token.as_str()))
        .collect();
    // Run 2 resumed at the saved cursor (the stalled request of run 1 is
    // logged too if the simulator finished it after the kill).
    assert!(!resumed.is_empty() && resumed.len() <= 2, "{resumed:?}");
    for r in &resumed {
        assert_eq!(r.from.as_deref(), saved["from"].as_str());
    }
    // 15 pages in all, none fetched twice except the one in flight.
    let ok = ok_requests(&log, "userAccess");
    let distinct: BTreeSet<_> = ok.iter().map(|r| (&r.from, &r.token)).collect();
    assert_eq!(distinct.len(), 15);
    assert!(ok.len() <= 16);
}

// ------------------------------------------------------------------ 4

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_dead_lettered_and_truncated_bodies_retried() {
    for mode in [TruncateMode::Abort, TruncateMode::Clean] {
        let env = Env::new(sim::Config::default()).await;
        let good = make_rows(&env.sim, "Network:Group", 250, 20, 1);
        env.sim.inject(good.clone());
        let now = Utc::now();
        let bad_lines = [
            "Network:SaveGroup,Network:Group,g-bad-1,not-a-date,{},{},{},{}".to_string(),
            format!(
                "Network:SaveGroup,Network:Group,g-bad-2,{},\"{{\"\"Id\"\":\"\"p\"\"\",{{}},{{}},{{}}",
                trailkeep::util::rfc3339_ms(now - chrono::Duration::hours(10))
            ),
            "Network:SaveGroup,Network:Group,g-bad-3,2025-01-01T00:00:00Z,{}".to_string(),
        ];
        let bad: Vec<Row> = bad_lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let mut r = env.sim.make_row(
                    "Network:Group",
                    now - chrono::Duration::hours(15 - 5 * i as i64)
                        + chrono::Duration::milliseconds(7),
                );
                r.raw_line = Some(line.clone());
                r
            })
            .collect();
        env.sim.inject(bad.clone());
        env.sim.update_faults(|f| {
            // Page 2 comes back cut.
            f.truncate_after = 1;
            f.truncate_next = 1;
            f.truncate_mode = mode;
        });
        let extra = format!("{}\ncollections = [\"groups\"]", env.api_key());
        let (p, journal) = env
            .pipeline(&env.toml_one_window("rev-malformed", &extra))
            .await;
        run_until_drained(p).await;

        // Good rows all there once; bad rows dead-lettered with their place.
        assert_exactly(&journal_events(&journal), &good, "journal");
        assert_exactly(&env.archive(), &good, "archive");
        let dead = journal.dead_letters(None, 100).expect("dead letters");
        assert_eq!(dead.len(), 3, "{dead:?}");
        let all = env.sim.rows_in(
            "groups",
            now - chrono::Duration::days(3),
            now + chrono::Duration::days(1),
        );
        for (b, line) in bad.iter().zip(&bad_lines) {
            let idx = all.iter().position(|r| r == b).expect("bad row");
            let (page, row) = (idx / 100 + 1, idx % 100 + 1);
            let d = dead
                .iter()
                .find(|d| &d.payload == line)
                .unwrap_or_else(|| panic!("{line} not dead-lettered: {dead:?}"));
            let loc = d.event_key.as_deref().unwrap_or_default();
            assert!(
                loc.ends_with(&format!(" page {page} row {row}")),
                "{loc} vs page {page} row {row}"
            );
            assert!(loc.starts_with("window "), "{loc}");
            assert_eq!(d.origin, "vbrick/rev-malformed/groups");
        }
        assert!(dead.iter().any(|d| d.reason.contains("not-a-date")));
        assert!(dead
            .iter()
            .any(|d| d.reason.contains("Principal is not JSON")));
        assert!(dead.iter().any(|d| d.reason.contains("columns")));

        // The truncated page was fetched again with the same parameters and
        // nothing of it was stored twice or in part.
        let c = env.sim.counters();
        assert_eq!(c.truncated, 1, "{mode:?}");
        let log = env.sim.requests();
        let ok = ok_requests(&log, "groups");
        assert_eq!(
            ok.len(),
            4,
            "{mode:?}: 253 rows = 3 pages + the retried one"
        );
        assert!(ok[1].token.is_some());
        assert_eq!((&ok[1].from, &ok[1].token), (&ok[2].from, &ok[2].token));
        let status = journal.status(&["archive".into()]).expect("status");
        let s = status
            .streams
            .iter()
            .find(|s| s.stream == "vbrick/rev-malformed/groups")
            .expect("stream");
        assert_eq!(
            (s.fetched, s.stored, s.duplicates, s.rejected),
            (253, 250, 0, 3)
        );
    }
}

// ------------------------------------------------------------------ 5

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_429_bursts_lose_nothing() {
    // Server allows 5 requests per second per endpoint; the client is
    // configured for more, so it meets 429s and must wait them out.
    let env = Env::new(sim::Config {
        rate_limit: 5,
        rate_window: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let rows = make_rows(&env.sim, "Devices:EncoderDevice", 1_500, 20, 1);
    env.sim.inject(rows.clone());
    env.sim.update_faults(|f| f.throttle_next = 3);
    let extra = format!(
        "{}\ncollections = [\"devices\"]\nrate_limit = 600",
        env.api_key()
    );
    let (p, journal) = env.pipeline(&env.toml_one_window("rev-429", &extra)).await;
    run_until_drained(p).await;

    assert_exactly(&journal_events(&journal), &rows, "journal");
    assert_exactly(&env.archive(), &rows, "archive");
    let c = env.sim.counters();
    assert!(c.status(429) >= 4, "bursts and budget 429s: {c:?}");
    assert_eq!(ok_requests(&env.sim.requests(), "devices").len(), 15);
    let hits = METRICS
        .source_rate_limit_hits_total
        .with_label_values(&["vbrick", "rev-429", "devices"])
        .get();
    assert_eq!(hits, c.status(429), "every 429 counted");
}

async fn login_refused_no_loop(name: &str, faults: Faults, creds: &str, want: &str) {
    let env = Env::new(sim::Config::default()).await;
    env.sim.seed(
        50,
        Utc::now() - chrono::Duration::hours(20),
        Utc::now() - chrono::Duration::hours(1),
    );
    env.sim.set_faults(faults);
    let extra = format!("{creds}\npoll_interval = \"100ms\"");
    let toml = env
        .toml(name, &extra)
        .replace("poll_interval = \"60s\"\n", "");
    let (p, journal) = env.pipeline(&toml).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.clone().run(stop.clone()));
    // Every stream fails three times (each waits a poll between tries).
    wait_until("every stream to fail its login three times", || {
        ALL.iter().all(|s| {
            METRICS
                .source_errors_total
                .with_label_values(&["vbrick", name, s, "auth"])
                .get()
                >= 3
        })
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("pipeline");

    let c = env.sim.counters();
    assert_eq!(
        c.login_total(),
        1,
        "18 failed fetches, one login attempt: {c:?}"
    );
    assert_eq!(c.audit_total(), 0);
    let status = journal.status(&[]).expect("status");
    assert_eq!(status.streams.len(), 6);
    for s in &status.streams {
        let e = s.last_error.as_deref().unwrap_or_default();
        assert!(e.contains(want), "{}: {e}", s.stream);
    }
    assert_eq!(status.events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_401_is_not_retried_in_a_loop() {
    let env_creds =
        |dir: &str| format!("api_key = \"sim-api-key\"\nsecret = {{ file = \"{dir}/wrong\" }}");
    // The secret is wrong: /api/v2/authenticate answers 401 (empty body).
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("wrong"), "nope").expect("write");
    login_refused_no_loop(
        "rev-401",
        Faults::default(),
        &env_creds(&dir.path().display().to_string()),
        "authentication failed: POST /api/v2/authenticate answered 401",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_429_is_not_retried_in_a_loop() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("pw"), "sim-password").expect("write");
    login_refused_no_loop(
        "rev-login-429",
        Faults {
            login_status: Some(429),
            ..Default::default()
        },
        &format!(
            "username = \"audit.admin\"\npassword = {{ file = \"{}/pw\" }}",
            dir.path().display()
        ),
        "POST /api/v2/user/login answered 429: Too Many Requests",
    )
    .await;
}

// ------------------------------------------------------------------ 6

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_accepted_in_iso_and_javascript_formats() {
    let env = Env::new(sim::Config::default()).await;
    let mut rows = make_rows(&env.sim, "ScheduledEvents:Webcast", 300, 20, 1);
    for (i, r) in rows.iter_mut().enumerate() {
        if i % 2 == 0 {
            r.when_style = WhenStyle::Js;
            // JavaScript text carries whole seconds.
            r.when = DateTime::from_timestamp(r.when.timestamp(), 0).expect("ts");
        }
    }
    env.sim.inject(rows.clone());
    let js = env
        .sim
        .rows()
        .iter()
        .filter(|r| r.when_style == WhenStyle::Js)
        .count();
    assert_eq!(js, 150);
    assert!(rows[0]
        .csv_line()
        .contains(" GMT+0000 (Coordinated Universal Time)"));
    let extra = format!("{}\ncollections = [\"scheduledEvents\"]", env.api_key());
    let (p, journal) = env.pipeline(&env.toml_one_window("rev-when", &extra)).await;
    run_until_drained(p).await;

    let events = journal_events(&journal);
    assert_exactly(&events, &rows, "journal");
    assert!(journal.dead_letters(None, 10).expect("dl").is_empty());
}

// ------------------------------------------------------------------ more

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_streams_read_that_principals_changes() {
    let env = Env::new(sim::Config::default()).await;
    let now = Utc::now();
    let rows = env.sim.seed(
        600,
        now - chrono::Duration::hours(20),
        now - chrono::Duration::hours(1),
    );
    let who = rows[0].principal["Id"].as_str().expect("id").to_string();
    let mine: Vec<Row> = rows
        .iter()
        .filter(|r| r.principal["Id"].as_str() == Some(who.as_str()))
        .cloned()
        .collect();
    assert!(!mine.is_empty());
    let extra = format!(
        "{}\ncollections = []\nprincipals = [\"{who}\"]",
        env.api_key()
    );
    let (p, journal) = env.pipeline(&env.toml("rev-principal", &extra)).await;
    run_until_drained(p).await;
    let events = journal_events(&journal);
    assert_exactly(&events, &mine, "journal");
    assert!(events
        .iter()
        .all(|e| e.stream == format!("principals/{who}") && e.actor.id.as_deref() == Some(&who)));
    assert!(env
        .sim
        .requests()
        .iter()
        .all(|r| r.route == "principals" && r.entity.as_deref() == Some(who.as_str())));
}

#[tokio::test]
async fn config_issues_are_named_by_key_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let text = format!(
        r#"
[journal]
path = "{d}/j.db"
[[sources]]
kind = "vbrick"
name = "bad"
url = "ftp://nope"
account_id = "has spaces"
api_key = "k"
collections = ["users", "events", "users"]
principals = ["ok-1", "not/ok"]
rate_limit = 0
[[sinks]]
kind = "archive"
name = "a"
dir = "{d}/a"
"#,
        d = dir.path().display()
    );
    let cfg = Config::from_toml_str(&text).expect("core config");
    let Err(e) = trailkeep::cli::from_config(cfg).await else {
        panic!("must fail")
    };
    let all = e.to_string();
    for want in [
        "sources[0].url: `ftp://nope` is not an http(s) URL",
        "sources[0].account_id:",
        "sources[0].secret: missing",
        "sources[0].collections[1]: unknown collection `events`",
        "sources[0].collections[2]: `users` is listed twice",
        "sources[0].principals[1]:",
        "sources[0].rate_limit: must be at least 1",
    ] {
        assert!(all.contains(want), "missing `{want}` in:\n{all}");
    }
    assert!(!all.contains("sim-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_wire_format_matches_rev() {
    let env = Env::new(sim::Config {
        rate_limit: 3,
        ..Default::default()
    })
    .await;
    let rows = make_rows(&env.sim, "Network:User", 150, 20, 1);
    env.sim.inject(rows);
    let http = reqwest::Client::new();
    let url = env.handle.url();
    // Bad credentials: 401, empty body.
    let r = http
        .post(format!("{url}/api/v2/authenticate"))
        .json(&serde_json::json!({"apiKey": "sim-api-key", "secret": "wrong"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 401);
    assert!(r.bytes().await.expect("body").is_empty());
    let login: serde_json::Value = http
        .post(format!("{url}/api/v2/authenticate"))
        .json(&serde_json::json!({"apiKey": "sim-api-key", "secret": "sim-secret"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    assert_eq!(login["issuer"], "VBrick");
    let token = login["token"].as_str().expect("token");
    assert!(parse(login["expiration"].as_str().expect("expiration")) > Utc::now());

    // Raw HTTP/1.1, to see header names as sent.
    let now = Utc::now();
    let path = format!(
        "/network/audit/accounts/{}/users?fromDate={}&toDate={}",
        env.sim.config().account_id,
        trailkeep::util::rfc3339_ms(now - chrono::Duration::days(1)),
        trailkeep::util::rfc3339_ms(now)
    );
    let raw = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(env.handle.addr)
            .await
            .expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: rev\r\nAuthorization: vbrick {token}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        String::from_utf8(buf).expect("utf8")
    };
    let (head, body) = raw.split_once("\r\n\r\n").expect("head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for h in [
        "\r\nTotalrecords: 150\r\n",
        "\r\nNextfromdate: ",
        "\r\nNextcontinuationtoken: ",
        "\r\nContent-Type: text/csv",
    ] {
        assert!(head.contains(h), "{h:?} not in {head}");
    }
    assert!(!head.contains("nextcontinuationtoken"));
    let body = body.trim_end_matches("0\r\n\r\n");
    assert!(body.contains(&format!("{}\r\n", sim::CSV_HEADER)));
    assert!(
        body.contains("\"{\"\"Id\"\":\"\""),
        "JSON columns with doubled quotes"
    );

    // Second page via the continuation: totalRecords counts from the new
    // fromDate, and no continuation headers on the last page.
    let next_from = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Nextfromdate: "))
        .expect("nextFromDate");
    let next_token = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Nextcontinuationtoken: "))
        .expect("token");
    let r = http
        .get(format!(
            "{url}/network/audit/accounts/{}/users",
            env.sim.config().account_id
        ))
        .query(&[
            ("fromDate", next_from),
            ("toDate", &trailkeep::util::rfc3339_ms(now)),
            ("nextContinuationToken", next_token),
        ])
        .header("Authorization", format!("VBrick {token}"))
        .send()
        .await
        .expect("page 2");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("nextcontinuationtoken").is_none());
    let text = r.text().await.expect("text");
    assert_eq!(text.split("\r\n").count(), 51, "header + 50 rows");
    assert!(!text.ends_with("\r\n"));

    // Over the per-endpoint budget: 429, plain text, Retry-After.
    let r = http
        .get(format!("{url}{path}"))
        .header("Authorization", format!("VBrick {token}"))
        .send()
        .await
        .expect("third");
    assert_eq!(r.status(), 200, "3rd request of the window is allowed");
    let r = http
        .get(format!("{url}{path}"))
        .header("Authorization", format!("VBrick {token}"))
        .send()
        .await
        .expect("fourth");
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(r.text().await.expect("text"), "Too Many Requests");
    // Other endpoints have their own budget.
    let r = http
        .get(format!("{url}{}", path.replace("/users?", "/groups?")))
        .header("Authorization", format!("VBrick {token}"))
        .send()
        .await
        .expect("groups");
    assert_eq!(r.status(), 200);
    // A bad token: 401, empty body.
    let r = http
        .get(format!("{url}{path}"))
        .header("Authorization", "VBrick nope")
        .send()
        .await
        .expect("bad token");
    assert_eq!(r.status(), 401);
    assert!(r.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn example_config_builds() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("rev-secret"), "s3cret").expect("secret");
    let d = dir.path().display();
    let example = include_str!("../config/examples/vbrick.toml")
        .replace("/var/run/secrets/trailkeep", &d.to_string());
    let text = format!(
        "[journal]\npath = \"{d}/j.db\"\n{example}\n[[sinks]]\nkind = \"archive\"\nname = \"a\"\ndir = \"{d}/a\"\n"
    );
    let cfg = Config::from_toml_str(&text).expect("config");
    let (_, sources, _) = trailkeep::cli::from_config(cfg).await.expect("builds");
    let names: Vec<String> = sources[0]
        .streams()
        .iter()
        .map(|s| s.id().stream.clone())
        .collect();
    assert_eq!(names, ALL);
    assert_eq!(sources[0].kind(), "vbrick");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_continuation_tokens_fall_back_to_next_from_date() {
    // Every token is expired by the time it comes back (as after a long
    // outage): each continuation is refused once, then read without it.
    let env = Env::new(sim::Config {
        continuation_ttl: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let rows = make_rows(&env.sim, "Network:User", 350, 20, 1);
    env.sim.inject(rows.clone());
    let extra = format!("{}\ncollections = [\"users\"]", env.api_key());
    let (p, journal) = env
        .pipeline(&env.toml_one_window("rev-stale", &extra))
        .await;
    run_until_drained(p).await;

    assert_exactly(&journal_events(&journal), &rows, "journal");
    let c = env.sim.counters();
    assert_eq!(c.status(400), 3, "{c:?}");
    assert_eq!(c.status(200), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_sharing_one_instant_page_without_loss() {
    let env = Env::new(sim::Config::default()).await;
    let when = Utc::now() - chrono::Duration::hours(3);
    let rows: Vec<Row> = (0..250)
        .map(|_| env.sim.make_row("Media:Video", when))
        .collect();
    let distinct: BTreeSet<String> = rows.iter().map(|r| r.csv_line()).collect();
    env.sim.inject(rows.clone());
    let extra = format!("{}\ncollections = [\"videos\"]", env.api_key());
    let (p, journal) = env.pipeline(&env.toml_one_window("rev-ties", &extra)).await;
    run_until_drained(p).await;

    let events = journal_events(&journal);
    // Rows identical in every column are one event (no row id exists).
    assert_eq!(events.len(), distinct.len());
    let keys: BTreeSet<&str> = events.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), events.len());
    assert!(events.iter().all(|e| e.time
        == when
            .with_nanosecond(when.nanosecond() / 1_000_000 * 1_000_000)
            .expect("ms")));
    let log = env.sim.requests();
    let ok = ok_requests(&log, "videos");
    assert_eq!(ok.len(), 3);
    assert_eq!(ok.iter().map(|r| r.rows).sum::<usize>(), 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connection_logs_in_and_reads_the_audit() {
    let env = Env::new(sim::Config::default()).await;
    let build = |creds: String| {
        let toml = env.toml("rev-check", &creds);
        async move {
            let cfg = Config::from_toml_str(&toml).expect("config");
            let (_, sources, _) = trailkeep::cli::from_config(cfg).await.expect("build");
            sources.into_iter().next().expect("source")
        }
    };
    let ok = build(env.api_key()).await;
    let text = ok.check_connection().await.expect("connects");
    assert!(text.contains("audit API readable"), "{text}");
    assert_eq!(env.sim.counters().requests.get("userAccess"), Some(&1));

    let bad = build(format!(
        "api_key = \"sim-api-key\"\nsecret = {{ file = \"{}/wrong\" }}",
        env.path().display()
    ))
    .await;
    let e = bad.check_connection().await.expect_err("refused");
    assert!(matches!(e, trailkeep::sources::SourceError::Auth(_)), "{e}");
    assert!(e.to_string().contains("answered 401"), "{e}");
    assert!(!e.to_string().contains("not-the-secret"));
}
