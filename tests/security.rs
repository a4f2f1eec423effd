//! Security checks: secrets never appear in logs (even at debug level),
//! metrics, `status` output or error messages.

mod engine_support;

use std::process::Command;
use std::time::Duration;

use engine_support::*;
use trailkeep::sim::ringcentral::{self as rcsim, Config as SimConfig};
use trailkeep::util::HumanDuration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_debug_logs_metrics_or_status() {
    let (_t, dir) = temp();
    let (sim, h) = rcsim::start(SimConfig {
        initial_records: 300,
        access_token_ttl: HumanDuration(Duration::from_millis(1_500)),
        window: HumanDuration(Duration::from_secs(2)),
        penalty: HumanDuration(Duration::from_secs(2)),
        live_per_second: 5.0,
        client_secret: "cs-VERY-SECRET-4a1f".into(),
        jwt: "jwt-VERY-SECRET-77b2".into(),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let src = rc_source_toml(
        &dir,
        &sim,
        &h.url(),
        "sec",
        "poll_interval = \"300ms\"\nsettle_delay = \"100ms\"",
    );
    let port = free_port();
    let cfg_text =
        config_toml(&dir, &src).replace("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\""));
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, cfg_text).expect("config");
    let log = dir.join("debug.log");
    let logf = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "debug")
        .stderr(logf)
        .spawn()
        .expect("spawn");
    // Long enough for several token refreshes (TTL 1.5 s) and a revocation.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.revoke_tokens();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    sigterm(&child);
    assert!(child.wait().expect("wait").success());
    let status = Command::new(BIN)
        .args(["status", "--json", "-c"])
        .arg(&cfg)
        .output()
        .expect("status");
    let logs = std::fs::read_to_string(&log).expect("logs");
    assert!(
        logs.len() > 1_000,
        "debug logging produced almost nothing; the test would prove nothing"
    );
    assert!(
        metrics.contains("trailkeep_source_requests_total"),
        "metrics scraped"
    );

    let mut secrets = vec![sim.cfg.client_secret.clone(), sim.cfg.jwt.clone()];
    secrets.extend(sim.issued_tokens());
    assert!(
        secrets.len() >= 4,
        "expected several issued tokens, got {}",
        secrets.len()
    );
    let status_out = String::from_utf8_lossy(&status.stdout).to_string()
        + &String::from_utf8_lossy(&status.stderr);
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "a secret appears in the debug log"
        );
        assert!(
            !metrics.contains(s.as_str()),
            "a secret appears in /metrics"
        );
        assert!(
            !status_out.contains(s.as_str()),
            "a secret appears in `status`"
        );
    }
    // Basic auth header value (base64 of id:secret) must not leak either.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", sim.cfg.client_id, sim.cfg.client_secret));
    assert!(!logs.contains(&basic));
}

#[test]
fn world_readable_secret_file_draws_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, dir) = temp();
    let secret = dir.join("secret");
    std::fs::write(&secret, "x").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[journal]\npath = \"{d}/j.db\"\n[[sinks]]\nkind = \"archive\"\nname = \"a\"\ndir = \"{d}/a\"\n[[sources]]\nkind = \"ringcentral\"\nname = \"r\"\nclient_id = \"c\"\nclient_secret = {{ file = \"{s}\" }}\njwt = {{ file = \"{s}\" }}\n",
            d = dir.display(),
            s = secret.display()
        ),
    )
    .expect("config");
    // `check` logs through tracing only when a subscriber exists; run the
    // service briefly instead and read its log.
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .output()
        .expect("check");
    assert!(out.status.success());
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env("TRAILKEEP__TELEMETRY__LISTEN", "")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(800));
    sigterm(&child);
    let _ = child.wait();
    let mut err = String::new();
    use std::io::Read;
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(err.contains("world-readable"), "no warning in: {err}");
    assert!(
        err.contains(&secret.display().to_string()),
        "the warning names the file: {err}"
    );
}
