//! `trailkeep run`: the service.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{from_config, pipeline, print_config_errors, EXIT_CONFIG};
use crate::config::Config;
use crate::journal::Journal;
use crate::telemetry::{self, Health};

pub async fn run(path: &Path) -> ExitCode {
    // Logging first: resolving secrets may already warn (world-readable file).
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            print_config_errors(&path.display().to_string(), &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init_tracing(&cfg.telemetry);
    let (cfg, sources, sinks) = match from_config(cfg).await {
        Ok(v) => v,
        Err(e) => {
            print_config_errors(&path.display().to_string(), &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let journal = match Journal::open(&cfg.journal.path, cfg.journal.max_bytes) {
        Ok(j) => j,
        Err(e) => {
            error!(error = %e, "cannot open the journal");
            eprintln!("trailkeep: {e}");
            return ExitCode::FAILURE;
        }
    };
    let health = Arc::new(Health::new());
    health.set_journal(journal.clone());
    let stop = CancellationToken::new();
    if !cfg.telemetry.listen.is_empty() {
        let addr = match cfg.telemetry.listen.parse() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("trailkeep: telemetry.listen: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        match telemetry::server::serve(addr, health.clone(), stop.clone()).await {
            Ok(a) => info!(address = %a, "serving /metrics /healthz /readyz"),
            Err(e) => {
                eprintln!("trailkeep: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    spawn_signal_handler(stop.clone());
    let p = Arc::new(pipeline(&cfg, journal, sources, sinks, health));
    info!(version = env!("CARGO_PKG_VERSION"), config = %path.display(), "trailkeep starting");
    match p.run(stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trailkeep: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `stop` on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub fn spawn_signal_handler(stop: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => info!("SIGTERM received: stopping"),
                        _ = tokio::signal::ctrl_c() => info!("SIGINT received: stopping"),
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        stop.cancel();
    });
}
