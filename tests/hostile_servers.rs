//! Issue 8, bad input: oversized responses and slow-loris servers. Every
//! HTTP client of trailkeep (the RingCentral, Vbrick and Symphony sources,
//! the Splunk HEC sink, the alerts webhook) is pointed at real TCP servers
//! on 127.0.0.1 that misbehave (see `hostile_support`):
//!
//! - an answer with an endless body (Content-Length huge, chunked, or
//!   delimited by the connection's close): the client stops reading at the
//!   body cap, fails with an error naming the request, and hangs up: the
//!   server sees its writes fail after at most cap + socket buffers;
//! - a server that never answers, or trickles its headers or its body one
//!   byte at a time: the request fails with "timed out" at the configured
//!   timeout, naming the request, and the client hangs up.
//!
//! The body cap is lowered for the whole binary to `CAP` with
//! `trailkeep::net::http::set_body_ceiling`, so each hostile answer costs
//! a megabyte, not 64. `memory_stays_bounded_by_the_cap` measures peak RSS
//! in child processes of this binary (one probe each).

mod hostile_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hostile_support::{vm_hwm_kib, within, End, Framing, HostileServer, Reply, Served};
use serde_json::json;
use trailkeep::clients::ringcentral::{RcClient, RcCredentials, RcOptions};
use trailkeep::config::{Config, Secret};
use trailkeep::journal::Journal;
use trailkeep::model::{Actor, AuditEvent, Change, EventKind, StreamId, Target};
use trailkeep::sinks::{Batch, Sink, SinkContext, SinkError};
use trailkeep::sources::ringcentral::RingCentralSource;
use trailkeep::sources::{Source, SourceError, StreamSource, Window};

/// Body cap of this binary's clients.
const CAP: usize = 1024 * 1024;
/// What may sit between a server and a client that stopped reading: the
/// client's socket receive buffer (autotuned by the kernel as the client
/// reads), the server's send buffer (set small) and the HTTP client's read
/// buffer. Observed: at most 2.8 MB written in all for a 1 MiB cap. Well
/// below the 64 MiB default cap, so a client ignoring `CAP` is caught.
const SLACK: u64 = 8 * 1024 * 1024;
/// Configured request timeout of every client here.
const TIMEOUT: &str = "1s";
/// A request must have failed by then, or its timeout did not fire.
const BOUND: Duration = Duration::from_secs(10);
/// Trickle pace: well inside the timeout, so only a total timeout helps.
const TRICKLE: Duration = Duration::from_millis(200);

fn init() {
    trailkeep::net::http::set_body_ceiling(CAP);
}

fn window() -> Window {
    let to = Utc::now() - chrono::Duration::minutes(5);
    Window {
        from: to - chrono::Duration::hours(1),
        to,
    }
}

/// The slow-loris variants: nothing after the request, headers one byte
/// at a time, the body one byte at a time.
fn slow_replies() -> [(&'static str, Reply); 3] {
    [
        ("silent", Reply::Silent),
        ("trickled headers", Reply::TrickleHeaders { every: TRICKLE }),
        ("trickled body", Reply::TrickleBody { every: TRICKLE }),
    ]
}

fn write(dir: &Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, value).expect("write secret");
    p.display().to_string()
}

fn config(dir: &Path, entries: &str) -> Config {
    let text = format!(
        r#"
[journal]
path = "{d}/journal.db"

{entries}

[[sinks]]
kind = "archive"
name = "archive"
dir = "{d}/archive"
"#,
        d = dir.display()
    );
    Config::from_toml_str(&text).expect("config parses")
}

fn source(dir: &Path, entry: &str) -> Arc<dyn Source> {
    let cfg = config(dir, entry);
    let mut issues = Vec::new();
    let s = trailkeep::sources::build(&cfg.sources[0], &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    s.expect("source builds")
}

fn first_stream(s: &Arc<dyn Source>) -> Arc<dyn StreamSource> {
    s.streams().into_iter().next().expect("a stream")
}

/// Every request to `prefix` ended with the client hanging up, after at
/// most the cap and the socket buffers.
fn assert_cut_off(served: &[Served], what: &str) {
    assert!(!served.is_empty(), "{what}: no request reached the server");
    for s in served {
        assert_eq!(
            s.end,
            End::ClientClosed,
            "{what}: the client read the whole answer: {s:?}"
        );
        assert!(
            s.written <= CAP as u64 + SLACK,
            "{what}: the server wrote {} bytes before the client hung up (cap {CAP} + slack {SLACK})",
            s.written
        );
    }
    let max = served.iter().map(|s| s.written).max().unwrap_or(0);
    eprintln!(
        "{what}: {} request(s), at most {max} bytes written before the hang-up",
        served.len()
    );
}

/// The error says the body was too large.
fn assert_oversized(msg: &str, place: &str) {
    assert!(
        msg.contains(&format!("larger than {CAP} bytes")),
        "error does not say the answer was too large: {msg}"
    );
    assert!(
        msg.contains(place),
        "error does not name the request `{place}`: {msg}"
    );
}

fn assert_timed_out(msg: &str, place: &str) {
    assert!(
        msg.contains("timed out"),
        "error does not say it timed out: {msg}"
    );
    assert!(
        msg.contains(place),
        "error does not name the request `{place}`: {msg}"
    );
}

// ---------------------------------------------------------------- RingCentral

const RC_TOKEN: &str = "/restapi/oauth/token";
const RC_SEARCH: &str = "/restapi/v1.0/account/~/audit-trail/search";

fn rc_token_ok() -> Reply {
    Reply::json(
        200,
        json!({"access_token": "hostile-access", "token_type": "bearer", "expires_in": 3600}),
    )
}

fn rc_entry(dir: &Path, url: &str) -> String {
    format!(
        r#"
[[sources]]
kind = "ringcentral"
name = "rc"
server = "{url}"
client_id = "hostile-client"
client_secret = {{ file = "{cs}" }}
jwt = {{ file = "{jwt}" }}
request_timeout = "{TIMEOUT}"
"#,
        cs = write(dir, "rc_cs", "client-secret"),
        jwt = write(dir, "rc_jwt", "jwt-assertion"),
    )
}

/// With one attempt per request (the configured source makes 8, with
/// backoff up to 30-60 s between them: too slow for a test), built through
/// the pub constructors the config path uses.
fn rc_single_attempt(url: &str) -> Arc<dyn Source> {
    let creds = RcCredentials {
        server: url.to_string(),
        client_id: "hostile-client".into(),
        client_secret: Secret::new("client-secret".to_string()),
        jwt: Secret::new("jwt-assertion".to_string()),
    };
    let opts = RcOptions {
        request_timeout: Duration::from_secs(1),
        max_attempts: 1,
        access_token_ttl: None,
    };
    let client = RcClient::new("ringcentral", "rc", creds, opts).expect("client");
    Arc::new(RingCentralSource::new(
        "rc",
        Arc::new(client),
        "~".into(),
        100,
        Vec::new(),
        Vec::new(),
        None,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringcentral_token_endpoint_oversized_answer_is_cut_off() {
    init();
    let dir = tempfile::tempdir().expect("tempdir");
    for framing in Framing::ALL {
        let server = HostileServer::start(vec![(RC_TOKEN, Reply::endless(framing))]).await;
        let src = source(dir.path(), &rc_entry(dir.path(), server.url()));
        let err = within(
            "RingCentral check_connection",
            BOUND,
            src.check_connection(),
        )
        .await
        .expect_err("an endless token answer must fail");
        assert!(
            matches!(err, SourceError::Transient(_) | SourceError::Malformed(_)),
            "{framing:?}: {err:?}"
        );
        assert_oversized(&err.to_string(), &format!("POST {RC_TOKEN}"));
        let served = server.wait_all_ended(RC_TOKEN, BOUND).await;
        assert_cut_off(&served, &format!("RingCentral token, {framing:?}"));
        assert_eq!(served.len(), 1, "an oversized token answer is not retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringcentral_audit_search_oversized_answer_is_cut_off() {
    init();
    let dir = tempfile::tempdir().expect("tempdir");
    for framing in Framing::ALL {
        let server = HostileServer::start(vec![
            (RC_TOKEN, rc_token_ok()),
            (RC_SEARCH, Reply::endless(framing)),
        ])
        .await;
        let src = source(dir.path(), &rc_entry(dir.path(), server.url()));
        let err = within(
            "RingCentral fetch_page",
            BOUND,
            first_stream(&src).fetch_page(&window(), None),
        )
        .await
        .expect_err("an endless search answer must fail");
        // Too large is the answer, not a passing fault: no retry.
        assert!(
            matches!(err, SourceError::Malformed(_)),
            "{framing:?}: {err:?}"
        );
        assert_oversized(&err.to_string(), &format!("POST {RC_SEARCH}"));
        let served = server.wait_all_ended(RC_SEARCH, BOUND).await;
        assert_cut_off(&served, &format!("RingCentral search, {framing:?}"));
        assert_eq!(served.len(), 1, "an oversized search answer is not retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringcentral_slow_servers_time_out() {
    init();
    let mut cases = Vec::new();
    for (name, reply) in slow_replies() {
        let search_reply = reply.clone();
        // The token endpoint misbehaving...
        cases.push(tokio::spawn(async move {
            let server = HostileServer::start(vec![(RC_TOKEN, reply)]).await;
            let src = rc_single_attempt(server.url());
            let started = Instant::now();
            let err = within("RingCentral token", BOUND, src.check_connection())
                .await
                .expect_err("a slow token endpoint must fail");
            assert!(matches!(err, SourceError::Transient(_)), "{name}: {err:?}");
            assert_timed_out(&err.to_string(), &format!("POST {RC_TOKEN}"));
            let served = server.wait_all_ended(RC_TOKEN, BOUND).await;
            assert!(served.iter().all(|s| s.end == End::ClientClosed));
            eprintln!(
                "RingCentral token, {name}: {err} after {:?}",
                started.elapsed()
            );
        }));
        // ...and the audit search, with a good token.
        cases.push(tokio::spawn(async move {
            let server =
                HostileServer::start(vec![(RC_TOKEN, rc_token_ok()), (RC_SEARCH, search_reply)])
                    .await;
            let src = rc_single_attempt(server.url());
            let err = within(
                "RingCentral search",
                BOUND,
                first_stream(&src).fetch_page(&window(), None),
            )
            .await
            .expect_err("a slow search must fail");
            assert!(matches!(err, SourceError::Transient(_)), "{name}: {err:?}");
            assert_timed_out(&err.to_string(), &format!("POST {RC_SEARCH}"));
            let served = server.wait_all_ended(RC_SEARCH, BOUND).await;
            assert!(served.iter().all(|s| s.end == End::ClientClosed));
        }));
    }
    for c in cases {
        c.await.expect("case");
    }
}

// ---------------------------------------------------------------- Vbrick

const VB_ACCOUNT: &str = "2abf4d7b-a22e-460b-b991-57a377a45cab";
const VB_LOGIN: &str = "/api/v2/authenticate";
const VB_AUDIT: &str = "/network/audit/accounts/";

fn vb_login_ok() -> Reply {
    let exp = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    Reply::json(200, json!({"token": "hostile-session", "expiration": exp}))
}

fn vb_entry(dir: &Path, url: &str, attempts: u32) -> String {
    format!(
        r#"
[[sources]]
kind = "vbrick"
name = "rev"
url = "{url}"
account_id = "{VB_ACCOUNT}"
api_key = "hostile-key"
secret = {{ file = "{s}" }}
collections = ["userAccess"]
request_timeout = "{TIMEOUT}"
max_attempts = {attempts}
"#,
        s = write(dir, "vb_secret", "rev-secret"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vbrick_oversized_answers_are_cut_off() {
    init();
    let dir = tempfile::tempdir().expect("tempdir");
    for framing in Framing::ALL {
        // The login answer: a transient failure, retried (2 attempts here).
        let server = HostileServer::start(vec![(VB_LOGIN, Reply::endless(framing))]).await;
        let src = source(dir.path(), &vb_entry(dir.path(), server.url(), 2));
        let err = within(
            "Vbrick fetch_page",
            BOUND,
            first_stream(&src).fetch_page(&window(), None),
        )
        .await
        .expect_err("an endless login answer must fail");
        assert!(matches!(err, SourceError::Transient(_)), "{err:?}");
        assert_oversized(&err.to_string(), &format!("POST {VB_LOGIN}"));
        let served = server.wait_all_ended(VB_LOGIN, BOUND).await;
        assert_cut_off(&served, &format!("Vbrick login, {framing:?}"));
        assert_eq!(served.len(), 2, "one request per attempt");

        // An audit page: malformed at once (the page will be fetched again
        // at the next poll), nothing kept.
        let server = HostileServer::start(vec![
            (VB_LOGIN, vb_login_ok()),
            (VB_AUDIT, Reply::endless(framing)),
        ])
        .await;
        let src = source(dir.path(), &vb_entry(dir.path(), server.url(), 2));
        let err = within(
            "Vbrick fetch_page",
            BOUND,
            first_stream(&src).fetch_page(&window(), None),
        )
        .await
        .expect_err("an endless audit page must fail");
        assert!(matches!(err, SourceError::Malformed(_)), "{err:?}");
        assert_oversized(&err.to_string(), "GET /network/audit/accounts/…/userAccess");
        let served = server.wait_all_ended(VB_AUDIT, BOUND).await;
        assert_cut_off(&served, &format!("Vbrick audit page, {framing:?}"));
        assert_eq!(served.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vbrick_slow_servers_time_out() {
    init();
    let mut cases = Vec::new();
    for login_slow in [true, false] {
        for (name, reply) in slow_replies() {
            cases.push(tokio::spawn(async move {
                let dir = tempfile::tempdir().expect("tempdir");
                let (routes, place, path) = if login_slow {
                    (
                        vec![(VB_LOGIN, reply)],
                        format!("POST {VB_LOGIN}"),
                        VB_LOGIN,
                    )
                } else {
                    (
                        vec![(VB_LOGIN, vb_login_ok()), (VB_AUDIT, reply)],
                        "GET /network/audit/accounts/…/userAccess".to_string(),
                        VB_AUDIT,
                    )
                };
                let server = HostileServer::start(routes).await;
                let src = source(dir.path(), &vb_entry(dir.path(), server.url(), 1));
                let err = within(
                    "Vbrick fetch_page",
                    BOUND,
                    first_stream(&src).fetch_page(&window(), None),
                )
                .await
                .expect_err("a slow server must fail");
                assert!(
                    matches!(err, SourceError::Transient(_) | SourceError::Malformed(_)),
                    "{name}: {err:?}"
                );
                assert_timed_out(&err.to_string(), &place);
                let served = server.wait_all_ended(path, BOUND).await;
                assert!(served.iter().all(|s| s.end == End::ClientClosed));
                eprintln!("Vbrick {path}, {name}: {err}");
            }));
        }
    }
    for c in cases {
        c.await.expect("case");
    }
}

// ---------------------------------------------------------------- Symphony

const SY_LOGIN: &str = "/login/pubkey/authenticate";
const SY_AUDIT: &str = "/agent/v1/audittrail/privilegeduser";

fn sy_entry(dir: &Path, url: &str) -> String {
    let key = trailkeep::sim::symphony::generate_rsa_key().expect("RSA key");
    format!(
        r#"
[[sources]]
kind = "symphony"
name = "pod"
pod_url = "{url}"
username = "hostile-bot"
private_key = {{ file = "{k}" }}
request_timeout = "{TIMEOUT}"
max_attempts = 1
"#,
        k = write(dir, "sy_key.pem", &key.private_pkcs8),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symphony_oversized_answers_are_cut_off() {
    init();
    let dir = tempfile::tempdir().expect("tempdir");
    for framing in Framing::ALL {
        for login in [true, false] {
            let (routes, place, path) = if login {
                (
                    vec![(SY_LOGIN, Reply::endless(framing))],
                    format!("POST {SY_LOGIN}"),
                    SY_LOGIN,
                )
            } else {
                (
                    vec![
                        (
                            SY_LOGIN,
                            Reply::json(200, json!({"token": "hostile-session"})),
                        ),
                        (SY_AUDIT, Reply::endless(framing)),
                    ],
                    format!("GET {SY_AUDIT}"),
                    SY_AUDIT,
                )
            };
            let server = HostileServer::start(routes).await;
            let src = source(dir.path(), &sy_entry(dir.path(), server.url()));
            let err = within(
                "Symphony fetch_page",
                BOUND,
                first_stream(&src).fetch_page(&window(), None),
            )
            .await
            .expect_err("an endless answer must fail");
            assert!(matches!(err, SourceError::Malformed(_)), "{err:?}");
            assert_oversized(&err.to_string(), &place);
            let served = server.wait_all_ended(path, BOUND).await;
            assert_cut_off(&served, &format!("Symphony {path}, {framing:?}"));
            assert_eq!(served.len(), 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symphony_slow_servers_time_out() {
    init();
    let mut cases = Vec::new();
    for login_slow in [true, false] {
        for (name, reply) in slow_replies() {
            cases.push(tokio::spawn(async move {
                let dir = tempfile::tempdir().expect("tempdir");
                let (routes, place, path) = if login_slow {
                    (
                        vec![(SY_LOGIN, reply)],
                        format!("POST {SY_LOGIN}"),
                        SY_LOGIN,
                    )
                } else {
                    (
                        vec![
                            (
                                SY_LOGIN,
                                Reply::json(200, json!({"token": "hostile-session"})),
                            ),
                            (SY_AUDIT, reply),
                        ],
                        format!("GET {SY_AUDIT}"),
                        SY_AUDIT,
                    )
                };
                let server = HostileServer::start(routes).await;
                let src = source(dir.path(), &sy_entry(dir.path(), server.url()));
                let err = within(
                    "Symphony fetch_page",
                    BOUND,
                    first_stream(&src).fetch_page(&window(), None),
                )
                .await
                .expect_err("a slow server must fail");
                assert!(
                    matches!(err, SourceError::Transient(_) | SourceError::Malformed(_)),
                    "{name}: {err:?}"
                );
                assert_timed_out(&err.to_string(), &place);
                let served = server.wait_all_ended(path, BOUND).await;
                assert!(served.iter().all(|s| s.end == End::ClientClosed));
                eprintln!("Symphony {path}, {name}: {err}");
            }));
        }
    }
    for c in cases {
        c.await.expect("case");
    }
}

// ---------------------------------------------------------------- sinks

fn event(id: &str) -> AuditEvent {
    AuditEvent {
        key: format!("ringcentral:acme:{id}"),
        source: "ringcentral".into(),
        tenant: "acme".into(),
        stream: "audit-trail".into(),
        time: Utc::now(),
        ingested_at: Utc::now(),
        action: "CHANGE_USER_INFO".into(),
        action_label: Some("change user info".into()),
        kind: EventKind::Update,
        actor: Actor {
            id: Some("1".into()),
            name: Some("Admin".into()),
            email: None,
            role: None,
        },
        target: Target {
            id: Some("2".into()),
            name: Some("User".into()),
            kind: Some("Extension".into()),
            extension: None,
        },
        changes: vec![Change {
            field: "Department".into(),
            old: Some("A".into()),
            new: Some("B".into()),
        }],
        client_ip: None,
        raw: json!({"id": id}).into(),
    }
}

/// A journal under `dir` holding `n` events, and the batch of them.
fn journal_with(dir: &Path, n: usize) -> (Journal, Batch) {
    let journal = Journal::open(&dir.join("journal.db"), None).expect("journal");
    let events: Vec<AuditEvent> = (0..n).map(|i| event(&format!("e{i}"))).collect();
    journal
        .commit_page(
            &StreamId::new("ringcentral", "acme", "audit-trail"),
            &events,
            &[],
            &trailkeep::journal::Checkpoint::default(),
        )
        .expect("commit");
    let records = journal.read_after(0, 100, usize::MAX).expect("read");
    (journal, Batch { records })
}

async fn sink(dir: &Path, entry: &str) -> Arc<dyn Sink> {
    let cfg = config(dir, entry);
    let mut built = trailkeep::sinks::build_all(&cfg)
        .await
        .expect("sinks build");
    built.remove(0)
}

const HEC_HEALTH: &str = "/services/collector/health";
const HEC_EVENT: &str = "/services/collector/event";

async fn hec_sink(dir: &Path, url: &str) -> Arc<dyn Sink> {
    let entry = format!(
        r#"
[[sinks]]
kind = "splunk_hec"
name = "splunk"
endpoint = "{url}"
token = {{ file = "{t}" }}
ack = "off"
request_timeout = "{TIMEOUT}"
"#,
        t = write(dir, "hec_token", "hostile-hec-token"),
    );
    sink(dir, &entry).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_oversized_answers_are_cut_off() {
    init();
    for framing in Framing::ALL {
        let dir = tempfile::tempdir().expect("tempdir");
        // The health check...
        let server = HostileServer::start(vec![(HEC_HEALTH, Reply::endless(framing))]).await;
        let s = hec_sink(dir.path(), server.url()).await;
        let err = within("HEC check_connection", BOUND, s.check_connection())
            .await
            .expect_err("an endless health answer must fail");
        assert!(matches!(err, SinkError::Retryable { .. }), "{err:?}");
        assert_oversized(
            &err.to_string(),
            &format!("GET {}{HEC_HEALTH}", server.url()),
        );
        assert_cut_off(
            &server.wait_all_ended(HEC_HEALTH, BOUND).await,
            &format!("HEC health, {framing:?}"),
        );

        // ...and a delivery: retryable (the worker backs off), nothing
        // confirmed.
        let server = HostileServer::start(vec![(HEC_EVENT, Reply::endless(framing))]).await;
        let s = hec_sink(dir.path(), server.url()).await;
        let (journal, batch) = journal_with(dir.path(), 5);
        let ctx = SinkContext {
            journal: journal.clone(),
            sink: "splunk".into(),
        };
        let err = within("HEC deliver", BOUND, s.deliver(batch.clone(), &ctx))
            .await
            .expect_err("an endless event answer must fail");
        assert!(matches!(err, SinkError::Retryable { .. }), "{err:?}");
        assert_oversized(
            &err.to_string(),
            &format!("POST {}{HEC_EVENT}", server.url()),
        );
        assert_cut_off(
            &server.wait_all_ended(HEC_EVENT, BOUND).await,
            &format!("HEC event, {framing:?}"),
        );
        assert_eq!(journal.sink_cursor("splunk").expect("cursor"), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_slow_servers_time_out() {
    init();
    let mut cases = Vec::new();
    for path in [HEC_HEALTH, HEC_EVENT] {
        for (name, reply) in slow_replies() {
            cases.push(tokio::spawn(async move {
                let dir = tempfile::tempdir().expect("tempdir");
                let server = HostileServer::start(vec![(path, reply)]).await;
                let s = hec_sink(dir.path(), server.url()).await;
                let err = if path == HEC_HEALTH {
                    within("HEC check_connection", BOUND, s.check_connection())
                        .await
                        .expect_err("a slow health check must fail")
                } else {
                    let (journal, batch) = journal_with(dir.path(), 5);
                    let ctx = SinkContext {
                        journal,
                        sink: "splunk".into(),
                    };
                    within("HEC deliver", BOUND, s.deliver(batch.clone(), &ctx))
                        .await
                        .expect_err("a slow delivery must fail")
                };
                assert!(
                    matches!(err, SinkError::Retryable { .. }),
                    "{name}: {err:?}"
                );
                let method = if path == HEC_HEALTH { "GET" } else { "POST" };
                assert_timed_out(
                    &err.to_string(),
                    &format!("{method} {}{path}", server.url()),
                );
                let served = server.wait_all_ended(path, BOUND).await;
                assert!(served.iter().all(|s| s.end == End::ClientClosed));
                eprintln!("HEC {path}, {name}: {err}");
            }));
        }
    }
    for c in cases {
        c.await.expect("case");
    }
}

const HOOK_PATH: &str = "/hooks/T000/secret-part";

async fn webhook_sink(dir: &Path, url: &str, attempts: u32) -> Arc<dyn Sink> {
    let entry = format!(
        r#"
[[sinks]]
kind = "alerts"
name = "alerts"
max_age = "0s"
[sinks.channels.hook]
type = "webhook"
url = "{url}{HOOK_PATH}"
timeout = "{TIMEOUT}"
max_attempts = {attempts}

[[alerts]]
name = "department"
channels = ["hook"]
[alerts.match]
actions = ["CHANGE_USER_INFO"]
"#
    );
    sink(dir, &entry).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_oversized_answers_are_cut_off() {
    init();
    for framing in Framing::ALL {
        // 200 with an endless body: the hook took the message; the client
        // reads at most 64 KiB of the answer and hangs up.
        let dir = tempfile::tempdir().expect("tempdir");
        let server = HostileServer::start(vec![(HOOK_PATH, Reply::endless(framing))]).await;
        let s = webhook_sink(dir.path(), server.url(), 2).await;
        let (journal, batch) = journal_with(dir.path(), 1);
        let ctx = SinkContext {
            journal,
            sink: "alerts".into(),
        };
        s.start(&ctx).await.expect("start");
        let done = within("webhook deliver", BOUND, s.deliver(batch.clone(), &ctx))
            .await
            .expect("a 200 is a delivered alert, whatever its body");
        assert!(done.dead.is_empty(), "{:?}", done.dead);
        let served = server.wait_all_ended(HOOK_PATH, BOUND).await;
        assert_cut_off(&served, &format!("webhook 200, {framing:?}"));
        assert_eq!(served.len(), 1, "sent once");

        // 503 with an endless body: retried, each answer cut off, then a
        // retryable error naming the hook's host (never its secret path).
        let dir = tempfile::tempdir().expect("tempdir");
        let server = HostileServer::start(vec![(
            HOOK_PATH,
            Reply::Huge {
                status: 503,
                framing,
                total: u64::MAX,
            },
        )])
        .await;
        let s = webhook_sink(dir.path(), server.url(), 2).await;
        let (journal, batch) = journal_with(dir.path(), 1);
        let ctx = SinkContext {
            journal,
            sink: "alerts".into(),
        };
        let err = within("webhook deliver", BOUND, s.deliver(batch.clone(), &ctx))
            .await
            .expect_err("503 must fail");
        let msg = err.to_string();
        assert!(matches!(err, SinkError::Retryable { .. }), "{err:?}");
        assert!(
            msg.contains(&format!("POST {} answered 503", server.url())),
            "{msg}"
        );
        assert!(
            !msg.contains("secret-part"),
            "the hook's path leaked: {msg}"
        );
        let served = server.wait_all_ended(HOOK_PATH, BOUND).await;
        assert_cut_off(&served, &format!("webhook 503, {framing:?}"));
        assert_eq!(served.len(), 2, "max_attempts = 2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_slow_servers_time_out() {
    init();
    let mut cases = Vec::new();
    for (name, reply) in slow_replies() {
        cases.push(tokio::spawn(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let server = HostileServer::start(vec![(HOOK_PATH, reply)]).await;
            let s = webhook_sink(dir.path(), server.url(), 1).await;
            let (journal, batch) = journal_with(dir.path(), 1);
            let ctx = SinkContext {
                journal,
                sink: "alerts".into(),
            };
            let result = within("webhook deliver", BOUND, s.deliver(batch.clone(), &ctx)).await;
            let served = server.wait_all_ended(HOOK_PATH, BOUND).await;
            assert!(served.iter().all(|s| s.end == End::ClientClosed));
            if name == "trickled body" {
                // Status 200 arrived before the body stalled: the hook took
                // the message; the stalled answer is abandoned.
                let done = result.expect("a 200 is a delivered alert");
                assert!(done.dead.is_empty());
                return;
            }
            let err = result.expect_err("a slow hook must fail");
            assert!(
                matches!(err, SinkError::Retryable { .. }),
                "{name}: {err:?}"
            );
            let msg = err.to_string();
            assert_timed_out(&msg, &format!("POST {}", server.url()));
            assert!(
                !msg.contains("secret-part"),
                "the hook's path leaked: {msg}"
            );
            eprintln!("webhook, {name}: {msg}");
        }));
    }
    for c in cases {
        c.await.expect("case");
    }
}

// ---------------------------------------------------------------- pipeline

/// End to end: a pipeline pulling from a RingCentral server whose search
/// answers never end commits nothing, leaves the checkpoint where it was,
/// records the error in the stream's status, and stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_against_an_endless_search_commits_nothing() {
    init();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = HostileServer::start(vec![
        (RC_TOKEN, rc_token_ok()),
        (RC_SEARCH, Reply::endless(Framing::Chunked)),
    ])
    .await;
    let entry = format!(
        "{}start_at = \"2h\"\npoll_interval = \"1s\"\nsettle_delay = \"1s\"\n",
        rc_entry(dir.path(), server.url())
    );
    let cfg = config(dir.path(), &entry);
    let (cfg, sources, sinks) = trailkeep::cli::from_config(cfg).await.expect("builds");
    let journal = Journal::open(&cfg.journal.path, None).expect("journal");
    let stream = StreamId::new("ringcentral", "rc", "audit-trail");
    let before = journal.checkpoint(&stream).expect("checkpoint");
    let p = Arc::new(trailkeep::cli::pipeline(
        &cfg,
        journal.clone(),
        sources,
        sinks,
        Arc::new(trailkeep::telemetry::Health::new()),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(p.clone().run(stop.clone()));

    let last_error = within("the stream error to be recorded", BOUND, async {
        loop {
            let status = journal.status(&[]).expect("status");
            if let Some(e) = status
                .streams
                .iter()
                .find(|s| s.stream == stream.to_string())
                .and_then(|s| s.last_error.clone())
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    stop.cancel();
    within("the pipeline to stop", BOUND, task)
        .await
        .expect("pipeline task")
        .expect("pipeline ran cleanly");

    assert_oversized(&last_error, &format!("POST {RC_SEARCH}"));
    let status = journal.status(&[]).expect("status");
    assert_eq!(status.events, 0, "nothing may be committed");
    assert_eq!(status.max_seq, 0);
    let after = journal.checkpoint(&stream).expect("checkpoint");
    let before_w = before.as_ref().and_then(|c| c.watermark);
    let after_w = after.as_ref().and_then(|c| c.watermark);
    assert_eq!(before_w, after_w, "the watermark moved: {after:?}");
    let cursor = after
        .as_ref()
        .and_then(|c| c.open_window.as_ref())
        .and_then(|w| w.cursor.clone());
    assert_eq!(cursor, None, "a page cursor was saved: {after:?}");
    assert_cut_off(
        &server.wait_all_ended(RC_SEARCH, BOUND).await,
        "pipeline search",
    );
    eprintln!("pipeline recorded: {last_error}");
}

// ---------------------------------------------------------------- memory

/// Peak RSS growth (KiB) of one probe run in a child process of this test
/// binary, so no other test's allocations count.
fn probe(name: &str) -> u64 {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOSTILE_MEMORY_PROBE", "1")
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("HWM_GROWTH_KIB="))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("probe {name} printed no figure:\n{stdout}"))
}

/// One Vbrick audit page answered with 256 MiB of chunked body (a
/// complete answer, not an endless one: without a cap the client would
/// hold all of it), after a warm-up page; prints how much the peak RSS grew.
async fn memory_probe(ceiling: Option<usize>) {
    if std::env::var("HOSTILE_MEMORY_PROBE").is_err() {
        eprintln!("run by memory_stays_bounded_by_the_cap in a process of its own");
        return;
    }
    if let Some(c) = ceiling {
        trailkeep::net::http::set_body_ceiling(c);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let warm = HostileServer::start(vec![
        (VB_LOGIN, vb_login_ok()),
        (
            VB_AUDIT,
            Reply::Fixed {
                status: 200,
                content_type: "text/csv",
                body: Vec::new(),
            },
        ),
    ])
    .await;
    let src = source(dir.path(), &vb_entry(dir.path(), warm.url(), 1));
    let _ = first_stream(&src).fetch_page(&window(), None).await;
    let server = HostileServer::start(vec![
        (VB_LOGIN, vb_login_ok()),
        (
            VB_AUDIT,
            Reply::Huge {
                status: 200,
                framing: Framing::Chunked,
                total: 256 * 1024 * 1024,
            },
        ),
    ])
    .await;
    let src = source(dir.path(), &vb_entry(dir.path(), server.url(), 1));
    let before = vm_hwm_kib();
    let err = first_stream(&src)
        .fetch_page(&window(), None)
        .await
        .expect_err("256 MiB is over every cap");
    let after = vm_hwm_kib();
    eprintln!("probe: {err}");
    assert!(err.to_string().contains("larger than"), "{err}");
    println!("HWM_GROWTH_KIB={}", after.saturating_sub(before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a probe: run in a process of its own by memory_stays_bounded_by_the_cap"]
async fn memory_probe_default_cap() {
    memory_probe(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a probe: run in a process of its own by memory_stays_bounded_by_the_cap"]
async fn memory_probe_small_cap() {
    memory_probe(Some(CAP)).await;
}

/// A 256 MiB answer grows the peak RSS by about the cap, not by the
/// answer: with the default 64 MiB cap by at least 48 MiB (the measure
/// sees a buffered body) and at most 64 + 32 MiB; with a 1 MiB cap by at
/// most 16 MiB.
#[test]
fn memory_stays_bounded_by_the_cap() {
    let default_cap = probe("memory_probe_default_cap");
    let small_cap = probe("memory_probe_small_cap");
    eprintln!(
        "peak RSS growth reading a 256 MiB answer: default cap {} KiB, {CAP}-byte cap {} KiB",
        default_cap, small_cap
    );
    let mib = 1024;
    assert!(
        default_cap >= 48 * mib,
        "with the 64 MiB cap the body should show in the peak RSS ({default_cap} KiB): the measure is blind"
    );
    assert!(
        default_cap <= 96 * mib,
        "peak RSS grew {default_cap} KiB for a 64 MiB cap"
    );
    assert!(
        small_cap <= 16 * mib,
        "peak RSS grew {small_cap} KiB with a {CAP}-byte cap"
    );
}
