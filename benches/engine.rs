//! `cargo bench --bench engine`: the `trailkeep bench` scenarios (engine at
//! 100k and 1M events, backlog, sources, lag) with the release binary.
//! Under `cargo test --all-targets` (no `--bench` flag) it runs a small
//! smoke version so the benchmark code cannot rot.
//!
//! Environment: TRAILKEEP_BENCH_EVENTS (large run, default 1,000,000),
//! TRAILKEEP_BENCH_SCENARIOS (comma list, default all).

use std::path::Path;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env_u64 = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let scenarios: Vec<String> = std::env::var("TRAILKEEP_BENCH_SCENARIOS")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| {
            if full {
                Vec::new()
            } else {
                vec!["engine".into()]
            }
        });
    let args = trailkeep::bench::BenchArgs {
        scenarios,
        events: if full {
            env_u64("TRAILKEEP_BENCH_EVENTS", 1_000_000)
        } else {
            4_000
        },
        small_events: if full {
            env_u64("TRAILKEEP_BENCH_SMALL_EVENTS", 100_000)
        } else {
            1_000
        },
        lag_records: 40,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let exe = Path::new(env!("CARGO_BIN_EXE_trailkeep"));
    match rt.block_on(trailkeep::bench::run(&args, exe)) {
        Ok(rows) => {
            let command = if full {
                "cargo bench --bench engine"
            } else {
                "cargo test --bench engine (smoke)"
            };
            trailkeep::bench::print_table(command, &rows);
            if !full {
                // The smoke run must still have delivered everything it claims.
                assert!(rows
                    .iter()
                    .all(|r| r.events > 0 && r.requests >= r.min_requests));
            }
        }
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            std::process::exit(1);
        }
    }
}
