//! Items/s from the journal into DynamoDB (dynalite) through the real sink
//! worker: 25-item BatchWriteItem requests, N concurrent batch writers.
//!
//!   scripts/ci/install-dynalite.sh
//!   cargo bench --bench dynamodb_throughput
//!   DDB_BENCH_EVENTS=20000 DDB_BENCH_WRITERS=1,2,4,8 cargo bench --bench dynamodb_throughput
//!   DDB_BENCH_LATENCY_MS=10 ...   # through a proxy adding 10 ms per request
//!
//! dynalite is a single-threaded Node process on LevelDB, so the figures
//! measure the sink's overhead and pipelining against a slow local
//! endpoint, not DynamoDB's capacity (on-demand tables take far more).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/dynamodb_support/mod.rs"]
mod dynamodb_support;

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::Select;
use chrono::{TimeZone, Utc};

use dynamodb_support::*;

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

async fn count(table: &str) -> usize {
    let client = direct_client().await;
    let mut n = 0usize;
    let mut start = None;
    loop {
        let res = client
            .scan()
            .table_name(table)
            .select(Select::Count)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        n += res.count() as usize;
        match res.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    n
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not:
    // then this is a quick smoke run, not a measurement.
    let measuring = std::env::args().any(|a| a == "--bench");
    let (default_events, default_writers) = if measuring {
        ("100000", "1,4,8")
    } else {
        ("500", "2")
    };
    let events_n = env_list("DDB_BENCH_EVENTS", default_events)
        .first()
        .copied()
        .unwrap_or(100_000);
    let writers = env_list("DDB_BENCH_WRITERS", default_writers);
    let latency_ms = env_list("DDB_BENCH_LATENCY_MS", "0")
        .first()
        .copied()
        .unwrap_or(0);
    // With a latency, requests go through the test proxy, which waits
    // that long before forwarding each one (a network round trip).
    let proxy = if latency_ms > 0 {
        let p = proxy().await;
        p.state
            .with_faults(|f| f.latency = Duration::from_millis(latency_ms as u64));
        Some(p)
    } else {
        None
    };
    let endpoint = proxy
        .as_ref()
        .map(|p| p.endpoint())
        .unwrap_or_else(|| dynalite().endpoint());
    let env = env();
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let evs = events(
        "ringcentral",
        "bench",
        events_n,
        start,
        Duration::from_secs(20),
        &["ann", "bob", "cid", "dan"],
    );
    let payload: usize = evs
        .iter()
        .map(|e| serde_json::to_string(e).unwrap().len())
        .sum();
    let t = Instant::now();
    commit(&env.journal, &evs);
    println!(
        "journal: {events_n} events ({:.1} MB of payload) committed in {:.2?}",
        payload as f64 / 1e6,
        t.elapsed()
    );
    println!(
        "endpoint: dynalite at {} (added latency per request: {latency_ms} ms)",
        dynalite().endpoint()
    );
    println!("| writers (max_in_flight) | batch | latency | events | seconds | items/s |");
    println!("|---|---|---|---|---|---|");
    for w in writers {
        let table = table_name(&format!("bench-w{w}"));
        create_via_sink(&env, &table).await;
        let name = format!("bench-w{w}");
        let sink = env
            .sink(
                &name,
                &table,
                &endpoint,
                &format!("batch_size = 25\nmax_in_flight = {w}"),
            )
            .await;
        let t = Instant::now();
        drain(&env, sink, Duration::from_secs(3600)).await;
        let secs = t.elapsed().as_secs_f64();
        let stored = count(&table).await;
        assert_eq!(stored, events_n, "every event stored exactly once");
        println!(
            "| {w} | 25 | {latency_ms} ms | {events_n} | {secs:.1} | {:.0} |",
            events_n as f64 / secs
        );
    }
}
