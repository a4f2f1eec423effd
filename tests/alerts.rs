//! Alerts sink end to end: journal → SinkWorker → alerts sink → RingCentral
//! simulator (SMS, Team Messaging) and a webhook receiver, over real HTTP
//! on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use trailkeep::config::Config;
use trailkeep::journal::{Checkpoint, Journal};
use trailkeep::model::{Actor, AuditEvent, Change, EventKind, StreamId, Target};
use trailkeep::sim::ringcentral::{self, RingCentralSim};
use trailkeep::sim::webhook::{self, WebhookSim};
use trailkeep::sim::SimHandle;
use trailkeep::sinks::worker::WorkerOptions;
use trailkeep::sinks::{self, Sink, SinkWorker};
use trailkeep::telemetry::Health;

const OPT_OUT: &str = "To opt out at any time, simply reply with STOP.";
const SMS_TO: [&str; 2] = ["+14155550123", "+14155550124"];

struct Env {
    dir: tempfile::TempDir,
    rc: Arc<RingCentralSim>,
    _rc_handle: SimHandle,
    hook: Arc<WebhookSim>,
    _hook_handle: SimHandle,
    rc_url: String,
    hook_url: String,
}

async fn env() -> Env {
    env_with(Duration::ZERO).await
}

/// `latency`: how long the RingCentral simulator takes per API call.
async fn env_with(latency: Duration) -> Env {
    let rc_cfg = ringcentral::Config {
        window: trailkeep::util::HumanDuration(Duration::from_secs(2)),
        penalty: trailkeep::util::HumanDuration(Duration::from_secs(2)),
        latency: trailkeep::util::HumanDuration(latency),
        ..Default::default()
    };
    let (rc, rc_handle) = ringcentral::start(rc_cfg).await.expect("rc sim");
    let (hook, hook_handle) = webhook::start(webhook::Config {
        secret: Some("hook-secret".into()),
        ..Default::default()
    })
    .await
    .expect("webhook sim");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, value) in [
        ("rc_client_secret", rc.cfg.client_secret.as_str()),
        ("rc_jwt", rc.cfg.jwt.as_str()),
        ("hook_secret", "hook-secret"),
    ] {
        std::fs::write(dir.path().join(name), value).expect("secret");
    }
    Env {
        rc_url: rc_handle.url(),
        hook_url: format!("{}/services/T000/B000/XXXX", hook_handle.url()),
        dir,
        rc,
        _rc_handle: rc_handle,
        hook,
        _hook_handle: hook_handle,
    }
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The alerts sink entry plus `rules`, with `chats` as the Team
    /// Messaging channel.
    fn config(&self, chats: &[&str], rules: &str) -> String {
        let d = self.dir.path().display();
        let chats: Vec<String> = chats.iter().map(|c| format!("\"{c}\"")).collect();
        format!(
            r#"
[journal]
path = "{d}/journal.db"

[[sinks]]
kind = "alerts"
name = "alerts"
time_zone = "America/New_York"
# The synthetic events are from 2025: alert on any age.
max_age = "0s"
max_events = 3
chat_page_size = 3
[sinks.ringcentral]
server = "{rc}"
client_id = "sim-client-id"
client_secret = {{ file = "{d}/rc_client_secret" }}
jwt = {{ file = "{d}/rc_jwt" }}
[sinks.channels.admins-sms]
type = "sms"
from = "+16505550100"
to = ["{to0}", "{to1}"]
[sinks.channels.audit-chats]
type = "team_messaging"
chats = [{chats}]
[sinks.channels.slack]
type = "webhook"
url = "{hook}"
secret = {{ file = "{d}/hook_secret" }}

{rules}
"#,
            rc = self.rc_url,
            hook = self.hook_url,
            to0 = SMS_TO[0],
            to1 = SMS_TO[1],
            chats = chats.join(", "),
        )
    }

    async fn sink(&self, text: &str) -> Arc<dyn Sink> {
        let cfg = Config::from_toml_str(text).expect("config parses");
        let mut built = sinks::build_all(&cfg).await.expect("sinks build");
        built.remove(0)
    }
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

/// A RingCentral-shaped canonical event.
fn event(id: &str, action: &str, change: Option<(&str, &str, &str)>, company: bool) -> AuditEvent {
    AuditEvent {
        key: format!("ringcentral:acme:{id}"),
        source: "ringcentral".into(),
        tenant: "acme".into(),
        stream: "audit-trail".into(),
        time: t("2025-04-24T18:12:00Z"),
        ingested_at: Utc::now(),
        action: action.into(),
        action_label: Some(action.to_lowercase().replace('_', " ")),
        kind: EventKind::Update,
        actor: Actor {
            id: Some("62264425008".into()),
            name: Some("Peter Beck MacIntyre".into()),
            email: None,
            role: Some("Super Admin".into()),
        },
        target: if company {
            Target {
                id: Some("0".into()),
                name: Some("Acme Corp".into()),
                kind: Some("Company".into()),
                extension: None,
            }
        } else {
            Target {
                id: Some("62265550008".into()),
                name: Some("Peter B MacIntyre".into()),
                kind: Some("Extension".into()),
                extension: Some("12004".into()),
            }
        },
        changes: change
            .map(|(f, o, n)| {
                vec![Change {
                    field: f.into(),
                    old: Some(o.into()),
                    new: Some(n.into()),
                }]
            })
            .unwrap_or_default(),
        client_ip: None,
        raw: Value::Null.into(),
    }
}

fn commit(journal: &Journal, events: &[AuditEvent]) {
    journal
        .commit_page(
            &StreamId::new("ringcentral", "acme", "audit-trail"),
            events,
            &[],
            &Checkpoint::default(),
        )
        .expect("commit");
}

fn spawn_worker(
    sink: Arc<dyn Sink>,
    journal: Journal,
    stop: CancellationToken,
) -> JoinHandle<Result<u64, trailkeep::journal::JournalError>> {
    let opts = WorkerOptions {
        halt_retry: Duration::from_millis(300),
        max_backoff: Duration::from_secs(2),
        idle_poll: Duration::from_millis(50),
    };
    let w = SinkWorker::new(sink, journal, Arc::new(Health::new()), opts);
    tokio::spawn(w.run(stop))
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn drain(journal: &Journal, sink: &str) {
    let j = journal.clone();
    let name = sink.to_string();
    until("the alerts sink to confirm every event", 60, move || {
        j.sink_cursor(&name).unwrap_or(0) >= j.max_seq().unwrap_or(u64::MAX)
    })
    .await;
}

fn counts<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    m
}

const DEPARTMENT_TEXT: &str = "Apr 24, 2025 => 2:12 pm: User account information changed by: Peter Beck MacIntyre. Affected Element: [Department] old value / current action: [Biology] new value: [Mathematics] The target of the change was: Peter B MacIntyre (ext: 12004)";

const RULES: &str = r#"
[[alerts]]
name = "user-department"
categories = ["rc_user_info_department"]
channels = ["admins-sms", "audit-chats", "slack"]

[[alerts]]
name = "company-mfa-off"
categories = ["rc_company_mfa_off"]
channels = ["audit-chats"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_events_alert_each_recipient_once_with_the_seed_layout() {
    let env = env().await;
    let text = env.config(&["1001", "1002"], RULES);
    let sink = env.sink(&text).await;
    let journal = Journal::open(&env.path("journal.db"), None).expect("journal");
    commit(
        &journal,
        &[
            event(
                "a1",
                "CHANGE_USER_INFO",
                Some(("Department", "Biology", "Mathematics")),
                false,
            ),
            // Unselected: another field, another action, MFA turned ON.
            event(
                "a2",
                "CHANGE_USER_INFO",
                Some(("Email", "a@x.example", "b@x.example")),
                false,
            ),
            event("a3", "LOGIN_SUCCESSFULLY", None, false),
            event(
                "a4",
                "CHANGE_MFA_SETTINGS",
                Some(("MFA", "Off", "On")),
                true,
            ),
            // Selected by the second rule: company MFA turned OFF.
            event(
                "a5",
                "CHANGE_MFA_SETTINGS",
                Some(("MFA", "On", "Off")),
                true,
            ),
        ],
    );
    let stop = CancellationToken::new();
    let worker = spawn_worker(sink, journal.clone(), stop.clone());
    drain(&journal, "alerts").await;
    stop.cancel();
    worker.await.expect("join").expect("worker");

    let m = &env.rc.messaging;
    // Exactly one SMS per recipient, for the Department change only.
    let sms = m.sms_seen();
    assert!(sms.iter().all(|s| s.status == 200), "{sms:?}");
    let got = counts(sms.iter().map(|s| (s.to.join(","), s.text.clone())));
    let want_text = format!("{DEPARTMENT_TEXT} {OPT_OUT}");
    let want = counts(SMS_TO.iter().map(|to| (to.to_string(), want_text.clone())));
    assert_eq!(got, want);
    assert!(sms.iter().all(|s| s.from == "+16505550100"));
    assert_eq!(env.rc.counters().sms_sent, 2);

    // One post per chat per selected event.
    let posts = m.posts_seen();
    assert!(posts.iter().all(|p| p.status == 201), "{posts:?}");
    let mfa_text = "Apr 24, 2025 => 2:12 pm: MFA (one-time PIN) turned OFF for company by: Peter Beck MacIntyre. Affected Element: [MFA] old value / current action: [On] new value: [Off] The target of the change was: Acme Corp";
    let got = counts(posts.iter().map(|p| (p.chat_id.clone(), p.text.clone())));
    let mut want = BTreeMap::new();
    for chat in ["1001", "1002"] {
        want.insert((chat.to_string(), DEPARTMENT_TEXT.to_string()), 1);
        want.insert((chat.to_string(), mfa_text.to_string()), 1);
    }
    assert_eq!(got, want);
    assert_eq!(env.rc.counters().posts_created, 4);

    // The webhook: one Slack-compatible message, signed.
    let hooks = env.hook.received();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let h = &hooks[0];
    assert_eq!(h.path, "/services/T000/B000/XXXX");
    assert_eq!(h.body["text"], DEPARTMENT_TEXT);
    assert_eq!(h.body["trailkeep"]["event_key"], "ringcentral:acme:a1");
    assert_eq!(h.body["trailkeep"]["rule"], "user-department");
    assert_eq!(h.signature_valid, Some(true));
    assert!(h.delivery_id.as_deref().is_some_and(|d| d.len() == 32));

    // Start-up checks: the phone-number list was read and the chat list
    // paged through (8 chats, 3 per page).
    assert!(m.phone_list_requests() >= 1);
    assert!(m.chat_list_requests() >= 3, "{}", m.chat_list_requests());
    // Nothing dead-lettered; delivered records are pruned on the next run.
    assert!(journal
        .dead_letters(Some("alerts"), 10)
        .expect("dl")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_sends_loses_and_doubles_nothing() {
    let env = env().await;
    let rules = r#"
[[alerts]]
name = "user-department"
categories = ["rc_user_info_department"]
channels = ["admins-sms", "audit-chats"]
"#;
    let text = env.config(&["1001"], rules);
    let journal = Journal::open(&env.path("journal.db"), None).expect("journal");
    let n = 7;
    let events: Vec<AuditEvent> = (0..n)
        .map(|i| {
            event(
                &format!("c{i}"),
                "CHANGE_USER_INFO",
                Some((
                    "Department",
                    &format!("Dept {i}"),
                    &format!("Dept {}", i + 1),
                )),
                false,
            )
        })
        .collect();
    commit(&journal, &events);
    let m = &env.rc.messaging;
    // 5 SMS go out (events 0, 1 and half of 2, inside the first batch of
    // 3), then the 6th is held: the process "dies" there.
    m.hold_sms_after(5);
    let stop = CancellationToken::new();
    let worker = spawn_worker(env.sink(&text).await, journal.clone(), stop.clone());
    until("an SMS to be held", 30, || m.held_sms() == 1).await;
    worker.abort();
    let _ = worker.await;
    drop(journal);
    assert_eq!(env.rc.counters().sms_sent, 5);
    // The held request never reaches a phone.
    m.release_held();

    // A new "process": fresh journal handle, freshly built sink.
    let journal = Journal::open(&env.path("journal.db"), None).expect("journal reopen");
    assert_eq!(
        journal.sink_cursor("alerts").expect("cursor"),
        0,
        "first batch was not confirmed"
    );
    let stop = CancellationToken::new();
    let worker = spawn_worker(env.sink(&text).await, journal.clone(), stop.clone());
    drain(&journal, "alerts").await;
    stop.cancel();
    worker.await.expect("join").expect("worker");

    let sms: Vec<_> = m
        .sms_seen()
        .into_iter()
        .filter(|s| s.status == 200)
        .collect();
    let got = counts(sms.iter().map(|s| (s.to.join(","), s.text.clone())));
    assert_eq!(got.len(), 2 * n, "every (recipient, event) once: {got:?}");
    assert!(
        got.values().all(|c| *c == 1),
        "an SMS was sent twice: {got:?}"
    );
    for i in 0..n {
        let needle = format!("[Dept {i}] new value: [Dept {}]", i + 1);
        for to in SMS_TO {
            assert!(
                got.keys().any(|(r, t)| r == to && t.contains(&needle)),
                "SMS to {to} for event {i} lost"
            );
        }
    }
    let posts = counts(
        m.posts_seen()
            .into_iter()
            .filter(|p| p.status == 201)
            .map(|p| p.text),
    );
    assert_eq!(posts.len(), n, "{posts:?}");
    assert!(
        posts.values().all(|c| *c == 1),
        "a post was sent twice: {posts:?}"
    );
    assert_eq!(env.rc.counters().sms_sent, 2 * n as u64);
    // The send records of confirmed events are pruned once the cursor passed them.
    let left = journal.sink_state_prefix("alerts", "sent/").expect("state");
    assert!(left.len() <= 3 * 3, "{} send records left", left.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_mid_send_sends_nothing_twice() {
    // Every RingCentral call takes 200 ms, so the stop lands mid-send.
    let env = env_with(Duration::from_millis(200)).await;
    let rules = r#"
[[alerts]]
name = "user-department"
categories = ["rc_user_info_department"]
channels = ["admins-sms"]
"#;
    let text = env
        .config(&["1001"], rules)
        .replace(r#"name = "alerts""#, r#"name = "alerts-stop""#);
    let journal = Journal::open(&env.path("journal.db"), None).expect("journal");
    let events: Vec<AuditEvent> = (0..3)
        .map(|i| {
            event(
                &format!("s{i}"),
                "CHANGE_USER_INFO",
                Some(("Department", &format!("D{i}"), &format!("D{}", i + 1))),
                false,
            )
        })
        .collect();
    commit(&journal, &events);
    let stop = CancellationToken::new();
    let worker = spawn_worker(env.sink(&text).await, journal.clone(), stop.clone());
    until("the first SMS", 30, || env.rc.counters().sms_sent >= 1).await;
    // SIGTERM-like stop: the worker drops the delivery in hand and runs it
    // again to finish the batch; the interrupted send must not repeat.
    stop.cancel();
    worker.await.expect("join").expect("worker");
    let sms = counts(
        env.rc
            .messaging
            .sms_seen()
            .into_iter()
            .filter(|s| s.status == 200)
            .map(|s| (s.to.join(","), s.text)),
    );
    assert!(
        sms.values().all(|c| *c == 1),
        "an SMS was sent twice: {sms:?}"
    );
    assert_eq!(
        sms.len(),
        6,
        "the batch in hand is finished on stop: {sms:?}"
    );
    assert_eq!(
        journal.sink_cursor("alerts-stop").expect("cursor"),
        journal.max_seq().expect("max")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_sms_is_delayed_not_lost_and_a_missing_chat_blocks_nothing() {
    let env = env().await;
    // 1001 and 1003 exist; 9999 does not.
    // Its own sink name: metrics are process-wide and tests run in parallel.
    let text = env
        .config(&["1001", "9999", "1003"], RULES)
        .replace(r#"name = "alerts""#, r#"name = "alerts-faults""#);
    let sink = env.sink(&text).await;
    let journal = Journal::open(&env.path("journal.db"), None).expect("journal");
    commit(
        &journal,
        &[
            event(
                "r1",
                "CHANGE_USER_INFO",
                Some(("Department", "Biology", "Mathematics")),
                false,
            ),
            event(
                "r2",
                "CHANGE_USER_INFO",
                Some(("Department", "Mathematics", "Physics")),
                false,
            ),
        ],
    );
    let m = &env.rc.messaging;
    // The first two SMS answer 429 MSG-305 (Retry-After 1 s); the webhook
    // answers 503 twice.
    m.fail_next_sms(2, 429, Duration::from_secs(1));
    env.hook.fail_next(2, 503, Some(1));
    let stop = CancellationToken::new();
    let worker = spawn_worker(sink, journal.clone(), stop.clone());
    drain(&journal, "alerts-faults").await;
    stop.cancel();
    worker.await.expect("join").expect("worker");

    // SMS: throttled twice, then every (recipient, event) exactly once.
    let sms = m.sms_seen();
    assert_eq!(sms.iter().filter(|s| s.status == 429).count(), 2, "{sms:?}");
    assert_eq!(env.rc.counters().rate_limited.get("sms"), Some(&2));
    let ok = counts(
        sms.iter()
            .filter(|s| s.status == 200)
            .map(|s| (s.to.join(","), s.text.clone())),
    );
    assert_eq!(ok.len(), 4, "{ok:?}");
    assert!(ok.values().all(|c| *c == 1));

    // Posts: both events reached 1001 and 1003; 9999 answered 404 each time.
    let posts = m.posts_seen();
    let ok = counts(
        posts
            .iter()
            .filter(|p| p.status == 201)
            .map(|p| p.chat_id.clone()),
    );
    assert_eq!(
        ok,
        BTreeMap::from([("1001".to_string(), 2), ("1003".to_string(), 2)])
    );
    let missing = posts
        .iter()
        .filter(|p| p.chat_id == "9999")
        .collect::<Vec<_>>();
    assert_eq!(
        missing.len(),
        2,
        "one attempt per event, no retries: {missing:?}"
    );
    assert!(missing.iter().all(|p| p.status == 404));

    // Webhook: 503 twice, then each event once.
    let accepted = env.hook.accepted();
    assert_eq!(accepted.len(), 2, "{:?}", env.hook.received());
    let keys = counts(
        accepted
            .iter()
            .map(|r| r.body["trailkeep"]["event_key"].to_string()),
    );
    assert!(keys.values().all(|c| *c == 1));

    // The error is reported: dead letters name the chat and the 404, and
    // the metric counts the failures.
    let dead = journal
        .dead_letters(Some("alerts-faults"), 10)
        .expect("dead letters");
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        assert!(d.reason.contains("chat 9999"), "{}", d.reason);
        assert!(d.reason.contains("404"), "{}", d.reason);
        assert!(!d.reason.contains("1001"), "{}", d.reason);
    }
    let metrics = trailkeep::telemetry::metrics::render();
    assert!(
        metrics.contains(r#"trailkeep_alerts_total{channel="audit-chats",outcome="failed",sink="alerts-faults"} 2"#),
        "{}",
        metrics.lines().filter(|l| l.contains("alerts_total")).collect::<Vec<_>>().join("\n")
    );
    assert!(metrics.contains(
        r#"trailkeep_alert_channel_problem{channel="audit-chats",sink="alerts-faults"} 1"#
    ));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_file_errors_exit_2_with_key_paths() {
    let env = env().await;
    let cats = env.path("cats.toml");
    write(
        &cats,
        r#"
[categories.dept]
label = "Department changed"
assumption = true
actions = "CHANGE_USER_INFO"
fields = "Department"

[categories.bad_glob]
label = "Broken"
assumption = true
actions = ["CHANGE_[USER_INFO"]
"#,
    );
    let rules = r#"
[[alerts]]
name = "r"
categories = ["dept", "no_such_category"]
channels = ["admins-sms"]
"#;
    let text = env.config(&["1001"], rules).replace(
        "chat_page_size = 3",
        &format!(
            "chat_page_size = 3\ncategories_file = \"{}\"",
            cats.display()
        ),
    );
    let cfg_path = env.path("trailkeep.toml");
    write(&cfg_path, &text);
    let out = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["check", "-c"])
        .arg(&cfg_path)
        .output()
        .expect("run trailkeep check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let file = cats.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{file}: categories.bad_glob.actions[0]: invalid glob `CHANGE_[USER_INFO`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("alerts[0].categories[1]: unknown category `no_such_category`"),
        "{stderr}"
    );

    // An unknown category in the built-in catalogue and a bad glob in a
    // rule's match table are named the same way.
    let rules = r#"
[[alerts]]
name = "ok"
categories = ["rc_user_info_department"]
channels = ["slack"]

[[alerts]]
name = "bad"
categories = ["rc_user_info_departmnet"]
channels = ["slack", "pager"]
[alerts.match]
actions = ["CHANGE_USER_*", "[!"]
"#;
    write(&cfg_path, &env.config(&["1001"], rules));
    let out = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["check", "-c"])
        .arg(&cfg_path)
        .output()
        .expect("run trailkeep check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for needle in [
        "alerts[1].categories[0]: unknown category `rc_user_info_departmnet`",
        "alerts[1].match.actions[1]: invalid glob `[!`",
        "alerts[1].channels[1]: unknown channel `pager`",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    assert!(!stderr.contains("alerts[0]"), "{stderr}");

    // And the fixed file passes.
    write(&cfg_path, &env.config(&["1001"], RULES));
    let out = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["check", "-c"])
        .arg(&cfg_path)
        .output()
        .expect("run trailkeep check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the child on drop so a failed assertion leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_run(cfg: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["run", "-c"])
        .arg(cfg)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn trailkeep run");
    Child(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_binary_mid_batch_loses_and_doubles_nothing() {
    let env = env().await;
    let n = 6usize;
    let when = Utc::now() - chrono::Duration::minutes(5);
    let records: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("kill-{i}"),
                "eventTime": trailkeep::util::rfc3339_ms(when + chrono::Duration::seconds(i as i64)),
                "eventType": "UPDATE",
                "actionId": "CHANGE_USER_INFO",
                "accountId": env.rc.cfg.account_id,
                "initiator": {"extensionId": "62264425008", "extensionNumber": "101", "name": "Dana Whitfield", "role": "Super Admin"},
                "target": {"objectId": "62265550008", "objectType": "Extension", "name": "Sam Ortega", "extensionNumber": "12004"},
                "details": {"parameters": [
                    {"key": "settingName", "value": "Department"},
                    {"key": "oldValue", "value": format!("Dept {i}")},
                    {"key": "newValue", "value": format!("Dept {}", i + 1)},
                ]},
            })
        })
        .collect();
    env.rc.insert(records, Duration::ZERO);
    let d = env.dir.path().display();
    let rules = format!(
        r#"
[[sources]]
kind = "ringcentral"
name = "acme"
server = "{rc}"
client_id = "sim-client-id"
client_secret = {{ file = "{d}/rc_client_secret" }}
jwt = {{ file = "{d}/rc_jwt" }}
start_at = "1h"
poll_interval = "1s"
overlap = "10s"
settle_delay = "1s"

[[alerts]]
name = "user-department"
categories = ["rc_user_info_department"]
channels = ["admins-sms", "audit-chats"]
"#,
        rc = env.rc_url
    );
    let text = env.config(&["1001"], &rules).replace(
        "[journal]",
        "[telemetry]\nlisten = \"\"\nlog_format = \"text\"\nlog_level = \"info\"\n\n[journal]",
    );
    let cfg_path = env.path("run.toml");
    write(&cfg_path, &text);
    let m = &env.rc.messaging;
    m.hold_sms_after(5);
    let mut first = spawn_run(&cfg_path, &env.path("run1.log"));
    let log1 = env.path("run1.log");
    until("the 6th SMS to be held", 60, || {
        if let Ok(Some(status)) = first.0.try_wait() {
            panic!(
                "trailkeep run exited early ({status}): {}",
                std::fs::read_to_string(&log1).unwrap_or_default()
            );
        }
        m.held_sms() == 1
    })
    .await;
    // SIGKILL: no shutdown, no flush, no cursor move.
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();
    assert_eq!(env.rc.counters().sms_sent, 5);
    m.release_held();

    let mut second = spawn_run(&cfg_path, &env.path("run2.log"));
    let log2 = env.path("run2.log");
    until("every alert of the restarted process", 60, || {
        if let Ok(Some(status)) = second.0.try_wait() {
            panic!(
                "trailkeep run exited early ({status}): {}",
                std::fs::read_to_string(&log2).unwrap_or_default()
            );
        }
        let c = env.rc.counters();
        c.sms_sent as usize >= 2 * n && c.posts_created as usize >= n
    })
    .await;
    // Sends go one at a time in journal order: a repeat of an earlier one
    // would have come before the last new one. Stop the process and count.
    second.0.kill().expect("kill");
    let _ = second.0.wait();

    let sms = counts(
        m.sms_seen()
            .into_iter()
            .filter(|s| s.status == 200)
            .map(|s| (s.to.join(","), s.text)),
    );
    assert_eq!(sms.len(), 2 * n, "{sms:?}");
    assert!(
        sms.values().all(|c| *c == 1),
        "an SMS was sent twice: {sms:?}"
    );
    for i in 0..n {
        let needle = format!("[Dept {i}] new value: [Dept {}]", i + 1);
        assert_eq!(
            sms.keys().filter(|(_, t)| t.contains(&needle)).count(),
            2,
            "event {i}"
        );
    }
    let posts = counts(
        m.posts_seen()
            .into_iter()
            .filter(|p| p.status == 201)
            .map(|p| p.text),
    );
    assert_eq!(posts.len(), n, "{posts:?}");
    assert!(
        posts.values().all(|c| *c == 1),
        "a post was sent twice: {posts:?}"
    );
    let c = env.rc.counters();
    assert_eq!((c.sms_sent as usize, c.posts_created as usize), (2 * n, n));
}

#[test]
/// The built-in categories match what the real normalisers make of vendor
/// records (not hand-built events).
fn builtin_categories_match_normalised_vendor_records() {
    let mut issues = Vec::new();
    let cat = rules::parse_catalogue(rules::BUILTIN_CATEGORIES, "builtin", &mut issues);
    let rule = |c: &str| {
        let v = serde_json::json!({"name": "r", "categories": [c], "channels": ["c"]});
        rules::parse_rule(v, "alerts[0]", &cat, None, &mut Vec::new()).expect("valid")
    };
    let item = serde_json::json!({
        "action": "Profile info update", "actionName": "profileInfoUpdate",
        "attribute": "roles", "oldValue": "[Individual]", "newValue": "[Individual,Administrator]",
        "initiatorId": 7215545222842u64, "affectedId": 7215545222843u64,
        "authorizationRoles": ["SUPER_ADMINISTRATOR"], "timestamp": 1555437274937u64,
    });
    let ev = trailkeep::sources::symphony::normalize::normalize("pod", &item, chrono::Utc::now())
        .expect("ok");
    assert!(rule("sym_role_granted").matches(&ev).is_some());
    assert!(rule("sym_rsa_key_added").matches(&ev).is_none());
    assert!(rule("rc_user_info_any").matches(&ev).is_none());

    let rec = serde_json::json!({
        "id": "1", "eventTime": "2025-04-24T18:12:00.000Z", "eventType": "UPDATE",
        "actionId": "CHANGE_USER_ROLE",
        "details": {"parameters": [{"key": "oldRoleName", "value": "Standard"}, {"key": "newRoleName", "value": "Super Admin"}]},
        "target": {"objectId": "2", "objectType": "Extension", "name": "x"},
    });
    let rec = serde_json::value::to_raw_value(&rec).expect("json");
    let ev = trailkeep::sources::ringcentral::normalize(&rec, "acme").expect("ok");
    let m = rule("rc_user_role_changed");
    let hit = m.matches(&ev).expect("matches");
    assert_eq!(hit.changes.len(), 1);
    assert_eq!(hit.changes[0].field, "RoleName");
    assert!(rule("rc_user_info_department").matches(&ev).is_none());
}

use trailkeep::sinks::alerts::rules;
