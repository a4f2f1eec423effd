//! `trailkeep demo`: the whole pipeline against in-process simulators.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{from_config, pipeline, print_config_errors, EXIT_CONFIG};
use crate::config::Config;
use crate::journal::Journal;
use crate::sim;
use crate::telemetry::{self, Health};
use crate::util::{format_duration, parse_duration};

/// The demo configuration, shipped as `config/demo.toml`.
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the journal, the archive and the demo's secret files go.
    #[arg(long, default_value = "./demo-data")]
    pub data_dir: PathBuf,
    /// Stop after this long even if not caught up (e.g. 90s, 5m).
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub duration: Duration,
    /// Serve /metrics, /healthz, /readyz here while the demo runs.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Keep running (pulling live traffic, serving metrics) this long after
    /// catching up, e.g. for a Prometheus scrape.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub linger: Duration,
    /// RingCentral records the simulator holds at start (150 days' worth).
    #[arg(long, default_value_t = 5_000)]
    pub records: usize,
    /// Keep the journal and archive of an earlier demo run.
    #[arg(long)]
    pub keep_data: bool,
}

struct Sims {
    rc: Arc<sim::ringcentral::RingCentralSim>,
    symphony: Arc<sim::symphony::State>,
    vbrick: Arc<sim::vbrick::State>,
    hec: Arc<sim::hec::State>,
    _handles: Vec<sim::SimHandle>,
    vars: Vec<(&'static str, String)>,
}

async fn start_sims(args: &DemoArgs, secrets: &Path) -> std::io::Result<Sims> {
    let rc_cfg = sim::ringcentral::Config {
        initial_records: args.records,
        live_per_second: 2.0,
        late_fraction: 0.1,
        late_by: crate::util::HumanDuration(Duration::from_secs(10)),
        // Time-scaled Heavy group: 10 requests per 10 s instead of 60 s.
        window: crate::util::HumanDuration(Duration::from_secs(10)),
        penalty: crate::util::HumanDuration(Duration::from_secs(10)),
        ..Default::default()
    };
    let (rc, rc_handle) = sim::ringcentral::start(rc_cfg).await?;
    let symphony_records = u32::try_from(args.records / 2).unwrap_or(u32::MAX);
    let (symphony, sy_handle) = sim::symphony::start_demo(symphony_records, secrets).await?;
    let (vbrick, vb_handle) = sim::vbrick::start(sim::vbrick::Config {
        seed_rows: args.records / 2,
        live_per_second: 1.0,
        ..Default::default()
    })
    .await?;
    write_secret(secrets, "rev_secret", &vbrick.config().secret)?;
    let hec_cfg = sim::hec::Config::default();
    let hec_token = hec_cfg
        .tokens
        .iter()
        .find(|t| t.use_ack && !t.disabled)
        .map(|t| t.token.clone())
        .unwrap_or_default();
    let (hec, hec_handle) = sim::hec::start(hec_cfg).await?;
    write_secret(secrets, "hec_token", &hec_token)?;
    let vars = vec![
        ("RINGCENTRAL_URL", rc_handle.url()),
        ("SYMPHONY_URL", sy_handle.url()),
        ("VBRICK_URL", vb_handle.url()),
        ("HEC_URL", hec_handle.url()),
    ];
    Ok(Sims {
        rc,
        symphony,
        vbrick,
        hec,
        _handles: vec![rc_handle, sy_handle, vb_handle, hec_handle],
        vars,
    })
}

fn write_secret(dir: &Path, name: &str, value: &str) -> std::io::Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, value)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

pub async fn demo(args: DemoArgs) -> ExitCode {
    let data = args.data_dir.clone();
    if !args.keep_data {
        for sub in ["journal.db", "journal.db-wal", "journal.db-shm", "archive"] {
            let p = data.join(sub);
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    let secrets = data.join("secrets");
    if let Err(e) = std::fs::create_dir_all(&secrets) {
        eprintln!("trailkeep demo: cannot create {}: {e}", secrets.display());
        return ExitCode::FAILURE;
    }
    let sims = match start_sims(&args, &secrets).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("trailkeep demo: cannot start the simulators: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rc_cfg = &sims.rc.cfg;
    for (name, value) in [
        ("rc_client_secret", rc_cfg.client_secret.as_str()),
        ("rc_jwt", rc_cfg.jwt.as_str()),
    ] {
        if let Err(e) = write_secret(&secrets, name, value) {
            eprintln!("trailkeep demo: cannot write secret file: {e}");
            return ExitCode::FAILURE;
        }
    }
    let abs = std::fs::canonicalize(&data).unwrap_or(data.clone());
    let mut text = DEMO_TOML.replace("${DATA_DIR}", &abs.display().to_string());
    text = text.replace(
        "${METRICS_LISTEN}",
        args.metrics_listen.as_deref().unwrap_or(""),
    );
    for (k, v) in &sims.vars {
        text = text.replace(&format!("${{{k}}}"), v);
    }
    let cfg = match Config::from_toml_str(&text) {
        Ok(c) => c,
        Err(e) => {
            print_config_errors("demo config", &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (cfg, sources, sinks) = match from_config(cfg).await {
        Ok(v) => v,
        Err(e) => {
            print_config_errors("demo config", &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init_tracing(&cfg.telemetry);
    let journal = match Journal::open(&cfg.journal.path, cfg.journal.max_bytes) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("trailkeep demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let health = Arc::new(Health::new());
    let stop = CancellationToken::new();
    if let Some(listen) = &args.metrics_listen {
        match listen.parse() {
            Ok(addr) => match telemetry::server::serve(addr, health.clone(), stop.clone()).await {
                Ok(a) => println!("metrics on http://{a}/metrics"),
                Err(e) => {
                    eprintln!("trailkeep demo: cannot listen on {listen}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            Err(e) => {
                eprintln!("trailkeep demo: --metrics-listen {listen}: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    super::run::spawn_signal_handler(stop.clone());
    let p = Arc::new(pipeline(&cfg, journal.clone(), sources, sinks, health));
    println!(
        "trailkeep demo: simulators up ({} RingCentral records over 150 days, {} Symphony records over 90 days, live traffic on); data in {}",
        args.records,
        args.records / 2,
        abs.display()
    );
    let runner = tokio::spawn(p.clone().run(stop.clone()));
    let started = Instant::now();
    let mut caught_up_at: Option<Instant> = None;
    let sink_names = p.sink_names();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => break,
        }
        let elapsed = started.elapsed();
        if let Ok(st) = journal.status(&sink_names) {
            let streams: Vec<String> = st
                .streams
                .iter()
                .map(|s| format!("{} stored {}", s.stream, s.stored))
                .collect();
            let sinks: Vec<String> = st
                .sinks
                .iter()
                .map(|s| format!("{} delivered {} pending {}", s.sink, s.delivered, s.pending))
                .collect();
            println!(
                "[{:>6}] {} | {}",
                format_duration(elapsed),
                streams.join(", "),
                sinks.join(", ")
            );
        }
        if caught_up_at.is_none() && p.drained().unwrap_or(false) {
            println!("caught up after {}", format_duration(elapsed));
            caught_up_at = Some(Instant::now());
        }
        if caught_up_at.is_some_and(|t| t.elapsed() >= args.linger) || elapsed >= args.duration {
            break;
        }
    }
    stop.cancel();
    let result = runner.await;
    print_summary(&journal, &sink_names, &sims);
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("trailkeep demo: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("trailkeep demo: pipeline task failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_summary(journal: &Journal, sinks: &[String], sims: &Sims) {
    let Ok(st) = journal.status(sinks) else {
        return;
    };
    let rc = sims.rc.counters();
    let sy = sims.symphony.counters();
    let vb = sims.vbrick.counters();
    let hec = sims.hec.counters();
    println!("\nSummary");
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>9} {:>6}",
        "STREAM", "FETCHED", "STORED", "DUPS", "REQUESTS", "429s"
    );
    for s in &st.streams {
        let (req, limited) = if s.stream.starts_with("ringcentral/") {
            (
                rc.search_requests.to_string(),
                rc.rate_limited.values().sum::<u64>().to_string(),
            )
        } else if s.stream.starts_with("symphony/") {
            (
                sy.audit_requests.to_string(),
                sy.rate_limited_429.to_string(),
            )
        } else if let Some((_, collection)) = s
            .stream
            .strip_prefix("vbrick/")
            .and_then(|r| r.split_once('/'))
        {
            let route: u64 = vb
                .requests
                .iter()
                .filter(|(k, _)| k.as_str() == collection)
                .map(|(_, v)| *v)
                .sum();
            (route.to_string(), "-".into())
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<40} {:>8} {:>8} {:>8} {:>9} {:>6}",
            s.stream, s.fetched, s.stored, s.duplicates, req, limited
        );
    }
    println!(
        "\n{:<24} {:>10} {:>10} {:>6}",
        "SINK", "DELIVERED", "PENDING", "DEAD"
    );
    for s in &st.sinks {
        println!(
            "{:<24} {:>10} {:>10} {:>6}",
            s.sink, s.delivered, s.pending, s.dead_letters
        );
    }
    println!(
        "\nsplunk: {} events indexed by the HEC simulator in {} requests, {} acks confirmed\nvbrick: {} audit requests, {} answered 429; alerts received by the simulators: {} SMS, {} Team Messaging posts",
        hec.events_indexed,
        hec.event_requests,
        hec.acks_read_true,
        vb.audit_total(),
        vb.statuses.get(&429).copied().unwrap_or(0),
        rc.sms_sent,
        rc.posts_created
    );
}
