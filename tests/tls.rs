//! Issue 8, security: TLS verification is on by default. A simulator served
//! over HTTPS with a certificate from a private CA (generated at test time)
//! is refused by the Splunk HEC sink and the RingCentral source unless the
//! CA is configured; `insecure_skip_verify` works but logs a loud warning.

mod splunk_hec_support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use splunk_hec_support::{build_sink, events, fill, open_journal, run_worker, wait_drained};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use trailkeep::config::Config;
use trailkeep::sim::hec;
use trailkeep::sim::ringcentral::{self as rcsim, RingCentralSim};
use trailkeep::sinks::{Batch, SinkContext};
use trailkeep::telemetry::Health;

/// A private CA (PEM written to `dir/ca.pem`) and a server config whose
/// leaf certificate, signed by it, names 127.0.0.1 and localhost.
fn pki(dir: &Path) -> (PathBuf, Arc<ServerConfig>) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "trailkeep test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("leaf params");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "hec.test");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf cert");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write CA");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(
            vec![
                CertificateDer::from(leaf.der().to_vec()),
                CertificateDer::from(ca.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server config");
    (ca_path, Arc::new(cfg))
}

/// Accepts TCP connections and completes the TLS handshake; connections
/// whose handshake fails (the client refused the certificate) are dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshake_failures: Arc<Mutex<u64>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => *self.handshake_failures.lock().expect("lock") += 1,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serves `router` over HTTPS on 127.0.0.1; returns its base URL and the
/// count of refused handshakes.
async fn serve_tls(router: axum::Router, cfg: Arc<ServerConfig>) -> (String, Arc<Mutex<u64>>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let failures = Arc::new(Mutex::new(0));
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(cfg),
        handshake_failures: failures.clone(),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("https://{addr}"), failures)
}

async fn hec_over_tls(dir: &Path) -> (Arc<hec::State>, String, PathBuf, Arc<Mutex<u64>>) {
    let (ca, server) = pki(dir);
    let state = Arc::new(hec::State::new(hec::Config::default()));
    let (url, failures) = serve_tls(hec::router(state.clone()), server).await;
    (state, url, ca, failures)
}

fn full_text(e: &impl std::fmt::Display) -> String {
    e.to_string().to_lowercase()
}

fn mentions_certificate(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("certificate") || t.contains("unknownissuer") || t.contains("unknown issuer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_sink_refuses_an_unknown_ca_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, url, _ca, failures) = hec_over_tls(dir.path()).await;
    let journal = open_journal(dir.path());
    fill(
        &journal,
        &events("ringcentral", "acme", "audit-trail", 0, 20),
    );
    let sink = build_sink(dir.path(), "splunk", &url, "sim-hec-token", "").await;

    let err = sink
        .check_connection()
        .await
        .expect_err("check_connection must refuse an unverified certificate");
    assert!(
        mentions_certificate(&err.to_string()),
        "error does not say why: {err}"
    );

    let ctx = SinkContext {
        journal: journal.clone(),
        sink: "splunk".into(),
    };
    // The sink worker's start (health check) is refused the same way.
    let err = sink.start(&ctx).await.expect_err("start must fail");
    assert!(
        mentions_certificate(&err.to_string()),
        "start error does not name the certificate: {err}"
    );
    let batch = Batch {
        records: journal.read_after(0, 100, usize::MAX).expect("read"),
    };
    let err = tokio::time::timeout(Duration::from_secs(30), sink.deliver(batch.clone(), &ctx))
        .await
        .expect("deliver answers")
        .expect_err("deliver must fail");
    assert!(
        mentions_certificate(&err.to_string()),
        "delivery error does not name the certificate: {err}"
    );
    assert_eq!(state.events_indexed(), 0, "nothing may reach the server");
    assert_eq!(state.counters().event_requests, 0);
    splunk_hec_support::wait_until(5, "the server saw refused handshakes", || {
        *failures.lock().expect("lock") >= 2
    })
    .await;
    assert_eq!(journal.sink_cursor("splunk").expect("cursor"), 0);
    eprintln!("refused as expected: {}", full_text(&err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_sink_delivers_when_the_ca_is_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, url, ca, failures) = hec_over_tls(dir.path()).await;
    let journal = open_journal(dir.path());
    let evs = events("ringcentral", "acme", "audit-trail", 0, 300);
    fill(&journal, &evs);
    let extra = format!("tls_ca_file = \"{}\"\nmax_events = 100", ca.display());
    let sink = build_sink(dir.path(), "splunk", &url, "sim-hec-token", &extra).await;
    let said = sink.check_connection().await.expect("verified connection");
    assert!(said.contains("token accepted"), "{said}");

    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "splunk", 30).await;
    run.finish().await;
    let mut got = state.event_ids();
    got.sort();
    let mut want: Vec<String> = evs.iter().map(|e| e.key.clone()).collect();
    want.sort();
    assert_eq!(got, want, "every event exactly once over verified TLS");
    assert_eq!(*failures.lock().expect("lock"), 0);
}

/// Collects everything the tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// current_thread: the thread-local log capture sees everything the build
// emits.
#[tokio::test(flavor = "current_thread")]
async fn insecure_skip_verify_delivers_but_warns_loudly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, url, _ca, _failures) = hec_over_tls(dir.path()).await;
    let journal = open_journal(dir.path());
    let evs = events("ringcentral", "acme", "audit-trail", 0, 50);
    fill(&journal, &evs);
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let sink = build_sink(
        dir.path(),
        "splunk",
        &url,
        "sim-hec-token",
        "insecure_skip_verify = true",
    )
    .await;
    drop(guard);
    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
    let warning = text
        .lines()
        .find(|l| l.contains("insecure_skip_verify"))
        .unwrap_or_else(|| panic!("no warning logged; logs were:\n{text}"));
    assert!(
        warning.contains("ERROR") || warning.contains("WARN"),
        "not loud: {warning}"
    );
    assert!(
        warning.contains("NOT verified") && warning.contains(&url),
        "the warning must say what is unverified and where: {warning}"
    );
    assert!(
        !text.contains("sim-hec-token"),
        "the token leaked into logs"
    );

    sink.check_connection()
        .await
        .expect("unverified but allowed");
    let run = run_worker(sink, &journal, Arc::new(Health::new()));
    wait_drained(&journal, "splunk", 30).await;
    run.finish().await;
    assert_eq!(state.events_indexed(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringcentral_source_refuses_an_unknown_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_ca, server) = pki(dir.path());
    let sim = RingCentralSim::new(rcsim::Config {
        initial_records: 10,
        ..rcsim::Config::default()
    });
    let (url, failures) = serve_tls(rcsim::router(sim.clone()), server).await;
    std::fs::write(dir.path().join("cs"), &sim.cfg.client_secret).expect("secret");
    std::fs::write(dir.path().join("jwt"), &sim.cfg.jwt).expect("jwt");
    let text = format!(
        r#"
[journal]
path = "{d}/journal.db"

[[sources]]
kind = "ringcentral"
name = "tls"
server = "{url}"
client_id = "{id}"
client_secret = {{ file = "{d}/cs" }}
jwt = {{ file = "{d}/jwt" }}

[[sinks]]
kind = "archive"
name = "archive"
dir = "{d}/archive"
"#,
        d = dir.path().display(),
        id = sim.cfg.client_id,
    );
    let cfg = Config::from_toml_str(&text).expect("config");
    let mut issues = Vec::new();
    let source = trailkeep::sources::build(&cfg.sources[0], &mut issues).expect("source");
    assert!(issues.is_empty(), "{issues:?}");
    let err = tokio::time::timeout(Duration::from_secs(60), source.check_connection())
        .await
        .expect("check_connection answers")
        .expect_err("an unverified server must be refused");
    let msg = err.to_string();
    assert!(
        mentions_certificate(&msg) || msg.to_lowercase().contains("tls"),
        "auth error does not say it is a TLS/certificate problem: {msg}"
    );
    assert_eq!(sim.counters().token_requests, 0, "no credential was sent");
    splunk_hec_support::wait_until(5, "the server saw the refused handshake", || {
        *failures.lock().expect("lock") >= 1
    })
    .await;
    eprintln!("RingCentral refused as expected: {msg}");
}
