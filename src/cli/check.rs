//! `trailkeep check`: validate the configuration, optionally connect.

use std::path::Path;
use std::process::ExitCode;

use super::{load_and_build, print_config_errors, EXIT_CONFIG};

pub async fn check(path: &Path, connect: bool) -> ExitCode {
    // Warnings found while resolving secrets go to stderr as text.
    crate::telemetry::init_tracing(&crate::config::TelemetryConfig {
        log_format: crate::config::LogFormat::Text,
        log_level: "warn".into(),
        ..Default::default()
    });
    let (cfg, sources, sinks) = match load_and_build(path).await {
        Ok(v) => v,
        Err(e) => {
            print_config_errors(&path.display().to_string(), &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let streams: usize = sources.iter().map(|s| s.streams().len()).sum();
    println!(
        "{}: configuration is valid: {} source(s) with {streams} stream(s), {} sink(s), journal {}",
        path.display(),
        sources.len(),
        sinks.len(),
        cfg.journal.path.display()
    );
    if !connect {
        return ExitCode::SUCCESS;
    }
    let mut failed = false;
    println!(
        "\n{:<8} {:<24} {:<12} {:<6} DETAIL",
        "WHAT", "NAME", "KIND", "OK"
    );
    for s in &sources {
        let (ok, detail) = match s.check_connection().await {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        failed |= !ok;
        println!(
            "{:<8} {:<24} {:<12} {:<6} {}",
            "source",
            s.name(),
            s.kind(),
            if ok { "yes" } else { "NO" },
            detail
        );
    }
    for s in &sinks {
        let (ok, detail) = match s.check_connection().await {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        failed |= !ok;
        println!(
            "{:<8} {:<24} {:<12} {:<6} {}",
            "sink",
            s.name(),
            s.kind(),
            if ok { "yes" } else { "NO" },
            detail
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
