//! `trailkeep bench`: named scenarios that start the simulators, run the
//! real service binary as a child process (so its CPU time and peak RSS are
//! its own, not the simulators'), and print one table of figures.

mod proc_stats;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;

use crate::journal::Journal;
use crate::sim;
use crate::util::HumanDuration;

pub use proc_stats::{machine, ProcStats};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenarios to run: engine, backlog, sources, lag (default: all of
    /// them); engine-archive and engine-hec run the engine with one sink.
    #[arg(long = "scenario", value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Events of the large engine run.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events of the small engine run (memory growth is large / small).
    #[arg(long, default_value_t = 100_000)]
    pub small_events: u64,
    /// Records injected by the lag scenario.
    #[arg(long, default_value_t = 40)]
    pub lag_records: usize,
}

/// One line of the results table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    pub events: u64,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub peak_rss_mb: f64,
    pub requests: u64,
    pub min_requests: u64,
    pub rate_limited: u64,
    pub note: String,
}

impl Row {
    fn events_per_s(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.events as f64 / self.wall_s
        } else {
            0.0
        }
    }
    fn cpu_per_million(&self) -> f64 {
        if self.events > 0 {
            self.cpu_s * 1_000_000.0 / self.events as f64
        } else {
            0.0
        }
    }
}

pub fn print_table(command: &str, rows: &[Row]) {
    let m = machine();
    println!("command: {command}");
    println!(
        "machine: {} cores, {:.1} GiB memory, {}",
        m.cores, m.mem_gib, m.cpu_model
    );
    println!(
        "{:<22} {:>9} {:>8} {:>10} {:>12} {:>9} {:>14} {:>5}  NOTE",
        "SCENARIO", "EVENTS", "WALL s", "EVENTS/s", "CPU s/1M ev", "RSS MB", "REQ (MIN)", "429s"
    );
    for r in rows {
        println!(
            "{:<22} {:>9} {:>8.1} {:>10.0} {:>12.1} {:>9.1} {:>14} {:>5}  {}",
            r.scenario,
            r.events,
            r.wall_s,
            r.events_per_s(),
            r.cpu_per_million(),
            r.peak_rss_mb,
            format!("{} ({})", r.requests, r.min_requests),
            r.rate_limited,
            r.note
        );
    }
}

/// Runs the chosen scenarios with `exe` as the service binary.
pub async fn run(args: &BenchArgs, exe: &Path) -> Result<Vec<Row>> {
    let all = ["engine", "backlog", "sources", "lag"];
    let extra = ["engine-archive", "engine-hec"];
    let chosen: Vec<String> = if args.scenarios.is_empty() {
        all.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    let mut rows = Vec::new();
    for s in &chosen {
        match s.as_str() {
            "engine" => {
                let small = engine(exe, args.small_events).await?;
                rows.extend(small_and_large(small, engine(exe, args.events).await?));
            }
            // One sink at a time: which one bounds the engine figure.
            "engine-archive" => {
                rows.push(engine_with(exe, args.events, EngineSinks::ArchiveOnly).await?)
            }
            "engine-hec" => rows.push(engine_with(exe, args.events, EngineSinks::HecOnly).await?),
            "backlog" => {
                let small = backlog(exe, args.small_events).await?;
                rows.extend(small_and_large(small, backlog(exe, args.events).await?));
            }
            "sources" => rows.extend(sources(exe).await?),
            "lag" => rows.push(lag(exe, args.lag_records).await?),
            other => bail!(
                "unknown scenario `{other}` (expected: {}, or {})",
                all.join(", "),
                extra.join(", ")
            ),
        }
    }
    Ok(rows)
}

/// The two runs of a size scenario, the large one noting how its memory
/// compares (memory must not grow with the backlog).
fn small_and_large(small: Row, mut large: Row) -> [Row; 2] {
    let growth = if small.peak_rss_mb > 0.0 {
        large.peak_rss_mb / small.peak_rss_mb
    } else {
        0.0
    };
    large.note = format!("{}; RSS {:.2}x the small run", large.note, growth);
    [small, large]
}

struct Service {
    child: Child,
    dir: PathBuf,
}

impl Service {
    fn start(exe: &Path, dir: &Path, config: &str) -> Result<Self> {
        let cfg = dir.join("trailkeep.toml");
        std::fs::write(&cfg, config).context("writing bench config")?;
        let log = std::fs::File::create(dir.join("service.log")).context("log file")?;
        let child = Command::new(exe)
            .args(["run", "-c"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        Ok(Service {
            child,
            dir: dir.to_path_buf(),
        })
    }

    fn stats(&self) -> ProcStats {
        ProcStats::read(self.child.id())
    }

    fn stop(mut self) -> Result<()> {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = self.child.wait()?;
        if !status.success() {
            let log = std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default();
            bail!(
                "service exited with {status}: {}",
                log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(())
    }
}

fn write_rc_secrets(
    dir: &Path,
    sim: &sim::ringcentral::RingCentralSim,
) -> Result<(PathBuf, PathBuf)> {
    let s = dir.join("rc_secret");
    let j = dir.join("rc_jwt");
    std::fs::write(&s, &sim.cfg.client_secret)?;
    std::fs::write(&j, &sim.cfg.jwt)?;
    Ok((s, j))
}

fn base_config(dir: &Path, sources: &str, sinks: &str) -> String {
    format!(
        "[journal]\npath = \"{d}/journal.db\"\n[telemetry]\nlisten = \"\"\nlog_format = \"text\"\nlog_level = \"warn\"\n{sources}\n{sinks}\n",
        d = dir.display()
    )
}

fn archive_sink(dir: &Path) -> String {
    format!(
        "[[sinks]]\nkind = \"archive\"\nname = \"archive\"\ndir = \"{}/archive\"\n",
        dir.display()
    )
}

/// Waits until every sink has confirmed `n` events. Cheap queries only
/// (cursor and max seq): the bench must not steal the service's CPU.
async fn wait_delivered(
    dir: &Path,
    sinks: &[String],
    n: u64,
    timeout: Duration,
    svc: &Service,
) -> Result<()> {
    let started = Instant::now();
    let path = dir.join("journal.db");
    let mut journal: Option<Journal> = None;
    loop {
        if journal.is_none() && path.exists() {
            journal = Journal::open(&path, None).ok();
        }
        if let Some(j) = &journal {
            let mut done = true;
            for s in sinks {
                // seqs are dense from 1: a cursor at n means n events confirmed.
                if j.sink_cursor(s)? < n {
                    done = false;
                }
            }
            if done {
                return Ok(());
            }
        }
        if started.elapsed() > timeout {
            let st = svc.stats();
            bail!(
                "not delivered within {timeout:?} (service RSS {:.1} MB)",
                st.peak_rss_mb
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn synthetic_rc_source(
    url: &str,
    rc: &sim::ringcentral::RingCentralSim,
    secret: &Path,
    jwt: &Path,
) -> String {
    format!(
        "[[sources]]\nkind = \"ringcentral\"\nname = \"bench\"\nserver = \"{url}\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"{}\" }}\njwt = {{ file = \"{}\" }}\nper_page = 1000\nrecord_cap = 0\npoll_interval = \"5s\"\nsettle_delay = \"1s\"\n",
        rc.cfg.client_id,
        secret.display(),
        jwt.display()
    )
}

fn hec_sink(dir: &Path, endpoint: &str, token: &str) -> Result<String> {
    let t = dir.join("hec_token");
    std::fs::write(&t, token)?;
    Ok(format!(
        "[[sinks]]\nkind = \"splunk_hec\"\nname = \"splunk\"\nendpoint = \"{endpoint}\"\ntoken = {{ file = \"{}\" }}\nack = \"on\"\n",
        t.display()
    ))
}

async fn synthetic_rc(
    n: u64,
) -> Result<(
    std::sync::Arc<sim::ringcentral::RingCentralSim>,
    sim::SimHandle,
)> {
    Ok(sim::ringcentral::start(sim::ringcentral::Config {
        unlimited: true,
        synthetic_records: n,
        synthetic_span: HumanDuration(Duration::from_secs(30 * 86_400)),
        ..Default::default()
    })
    .await?)
}

/// Which sinks an engine run delivers to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EngineSinks {
    Both,
    ArchiveOnly,
    HecOnly,
}

/// Unthrottled RingCentral simulator with `n` synthetic records, perPage
/// 1000 -> journal -> archive + Splunk HEC simulator (acks on).
async fn engine(exe: &Path, n: u64) -> Result<Row> {
    engine_with(exe, n, EngineSinks::Both).await
}

async fn engine_with(exe: &Path, n: u64, which: EngineSinks) -> Result<Row> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (rc, h) = synthetic_rc(n).await?;
    let (s, j) = write_rc_secrets(dir, &rc)?;
    let hec_cfg = sim::hec::Config {
        store_events: false,
        ..Default::default()
    };
    let token = hec_cfg
        .tokens
        .iter()
        .find(|t| t.use_ack && !t.disabled)
        .map(|t| t.token.clone())
        .unwrap_or_default();
    let (hec, hec_h) = sim::hec::start(hec_cfg).await?;
    let mut sinks_toml = String::new();
    let mut sink_names = Vec::new();
    if which != EngineSinks::HecOnly {
        sinks_toml.push_str(&archive_sink(dir));
        sink_names.push("archive".to_string());
    }
    if which != EngineSinks::ArchiveOnly {
        sinks_toml.push('\n');
        sinks_toml.push_str(&hec_sink(dir, &hec_h.url(), &token)?);
        sink_names.push("splunk".to_string());
    }
    let config = base_config(
        dir,
        &synthetic_rc_source(&h.url(), &rc, &s, &j),
        &sinks_toml,
    );
    let svc = Service::start(exe, dir, &config)?;
    let t0 = Instant::now();
    wait_delivered(dir, &sink_names, n, Duration::from_secs(1_800), &svc).await?;
    let wall = t0.elapsed().as_secs_f64();
    let st = svc.stats();
    svc.stop()?;
    let c = rc.counters();
    let hc = hec.counters();
    Ok(Row {
        scenario: match which {
            EngineSinks::Both => format!("engine {}k", n / 1000),
            EngineSinks::ArchiveOnly => format!("engine-archive {}k", n / 1000),
            EngineSinks::HecOnly => format!("engine-hec {}k", n / 1000),
        },
        events: n,
        wall_s: wall,
        cpu_s: st.cpu_s,
        peak_rss_mb: st.peak_rss_mb,
        requests: c.search_requests,
        min_requests: n.div_ceil(1000),
        rate_limited: c.rate_limited.values().sum(),
        note: match which {
            EngineSinks::ArchiveOnly => "RingCentral sim -> journal -> archive".to_string(),
            _ => {
                format!(
                "RingCentral sim -> journal -> {}HEC sim (acks on: {} indexed, {} HEC requests)",
                if which == EngineSinks::Both { "archive + " } else { "" },
                hc.events_indexed,
                hc.event_requests
            )
            }
        },
    })
}

/// The sink is down (nothing listens at its endpoint) while `n` records
/// are pulled: the journal absorbs the backlog, memory must not grow with it.
async fn backlog(exe: &Path, n: u64) -> Result<Row> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (rc, h) = synthetic_rc(n).await?;
    let (s, j) = write_rc_secrets(dir, &rc)?;
    // A port nobody listens on: every delivery fails and is retried.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let sinks_toml = hec_sink(dir, &format!("http://{dead}"), "unused")?;
    let config = base_config(
        dir,
        &synthetic_rc_source(&h.url(), &rc, &s, &j),
        &sinks_toml,
    );
    let svc = Service::start(exe, dir, &config)?;
    let t0 = Instant::now();
    let path = dir.join("journal.db");
    let mut journal: Option<Journal> = None;
    loop {
        if journal.is_none() && path.exists() {
            journal = Journal::open(&path, None).ok();
        }
        if let Some(j) = &journal {
            if j.max_seq()? >= n {
                break;
            }
        }
        if t0.elapsed() > Duration::from_secs(1_800) {
            bail!("backlog: not stored within 30 min");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let st = svc.stats();
    svc.stop()?;
    let c = rc.counters();
    Ok(Row {
        scenario: format!("backlog {}k", n / 1000),
        events: n,
        wall_s: wall,
        cpu_s: st.cpu_s,
        peak_rss_mb: st.peak_rss_mb,
        requests: c.search_requests,
        min_requests: n.div_ceil(1000),
        rate_limited: c.rate_limited.values().sum(),
        note: "sink down the whole run; journal absorbs everything".into(),
    })
}

/// Each source at its real limits, time-scaled: requests vs the minimum.
async fn sources(exe: &Path) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    // RingCentral: Heavy 10 requests / 2 s, 9,000 records (under the cap).
    {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        let n = 9_000u64;
        let (rc, h) = sim::ringcentral::start(sim::ringcentral::Config {
            initial_records: n as usize,
            window: HumanDuration(Duration::from_secs(2)),
            penalty: HumanDuration(Duration::from_secs(2)),
            ..Default::default()
        })
        .await?;
        let (s, j) = write_rc_secrets(dir, &rc)?;
        let source = format!(
            "[[sources]]\nkind = \"ringcentral\"\nname = \"bench\"\nserver = \"{}\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"{}\" }}\njwt = {{ file = \"{}\" }}\npoll_interval = \"1s\"\nsettle_delay = \"500ms\"\n",
            h.url(),
            rc.cfg.client_id,
            s.display(),
            j.display()
        );
        let svc = Service::start(exe, dir, &base_config(dir, &source, &archive_sink(dir)))?;
        let t0 = Instant::now();
        wait_delivered(dir, &["archive".into()], n, Duration::from_secs(300), &svc).await?;
        let wall = t0.elapsed().as_secs_f64();
        let backfill_requests = rc.counters().search_requests;
        // Steady state: 10 more seconds of polling, which must meet no 429.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let st = svc.stats();
        svc.stop()?;
        let c = rc.counters();
        rows.push(Row {
            scenario: "sources ringcentral".into(),
            events: n,
            wall_s: wall,
            cpu_s: st.cpu_s,
            peak_rss_mb: st.peak_rss_mb,
            requests: backfill_requests,
            min_requests: n.div_ceil(1000),
            rate_limited: c.rate_limited.values().sum(),
            note: format!(
                "Heavy 10/2s; then {} polls in 10 s steady state",
                c.search_requests - backfill_requests
            ),
        });
    }
    // Symphony: 5,000 records over 95 days, 30-day windows, limit 500.
    {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        let n = 5_000u32;
        let (sy, h) = sim::symphony::start(sim::symphony::Config {
            seed_items: n,
            seed_days: 95,
            ..Default::default()
        })
        .await?;
        let key =
            sim::symphony::provision_account(&sy, "bench-bot", dir).map_err(anyhow::Error::msg)?;
        let source = format!(
            "[[sources]]\nkind = \"symphony\"\nname = \"bench\"\npod_url = \"{}\"\nusername = \"bench-bot\"\nprivate_key = {{ file = \"{}\" }}\nstart_at = \"96d\"\npoll_interval = \"1s\"\nsettle_delay = \"500ms\"\n",
            h.url(),
            key.display()
        );
        let svc = Service::start(exe, dir, &base_config(dir, &source, &archive_sink(dir)))?;
        let t0 = Instant::now();
        wait_delivered(
            dir,
            &["archive".into()],
            u64::from(n),
            Duration::from_secs(300),
            &svc,
        )
        .await?;
        let wall = t0.elapsed().as_secs_f64();
        let st = svc.stats();
        let requests = sy.requests();
        svc.stop()?;
        // Minimum for the 30-day windows the API forces: per window
        // requested, ceil(items in it / 500), at least one.
        let items: Vec<i64> = sy
            .items_wire()
            .iter()
            .filter_map(|i| i["timestamp"].as_i64())
            .collect();
        let mut windows: Vec<(i64, i64)> = requests
            .iter()
            .filter_map(|r| {
                Some((
                    r.start.as_deref()?.parse().ok()?,
                    r.end.as_deref()?.parse().ok()?,
                ))
            })
            .collect();
        windows.sort();
        windows.dedup();
        let min: u64 = windows
            .iter()
            .map(|(a, b)| {
                (items.iter().filter(|t| *t >= a && *t <= b).count() as u64)
                    .div_ceil(500)
                    .max(1)
            })
            .sum();
        let c = sy.counters();
        rows.push(Row {
            scenario: "sources symphony".into(),
            events: u64::from(n),
            wall_s: wall,
            cpu_s: st.cpu_s,
            peak_rss_mb: st.peak_rss_mb,
            requests: c.audit_requests,
            min_requests: min,
            rate_limited: c.rate_limited_429,
            note: format!(
                "{} windows of <= 30 days; 30-day 400s: {}",
                windows.len(),
                c.window_too_large_400
            ),
        });
    }
    Ok(rows)
}

/// Records injected while running: time until the archive holds them.
async fn lag(exe: &Path, count: usize) -> Result<Row> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (rc, h) = sim::ringcentral::start(sim::ringcentral::Config {
        initial_records: 10,
        window: HumanDuration(Duration::from_secs(2)),
        penalty: HumanDuration(Duration::from_secs(2)),
        ..Default::default()
    })
    .await?;
    let (s, j) = write_rc_secrets(dir, &rc)?;
    let (poll, settle) = (2.0, 1.0);
    let source = format!(
        "[[sources]]\nkind = \"ringcentral\"\nname = \"bench\"\nserver = \"{}\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"{}\" }}\njwt = {{ file = \"{}\" }}\npoll_interval = \"{poll}s\"\nsettle_delay = \"{settle}s\"\noverlap = \"10s\"\n",
        h.url(),
        rc.cfg.client_id,
        s.display(),
        j.display()
    );
    let svc = Service::start(exe, dir, &base_config(dir, &source, &archive_sink(dir)))?;
    wait_delivered(dir, &["archive".into()], 10, Duration::from_secs(60), &svc).await?;
    let mut injected: Vec<(String, Instant)> = Vec::new();
    let mut seen: std::collections::HashMap<String, Duration> = Default::default();
    let t0 = Instant::now();
    let mut next_inject = Instant::now();
    while seen.len() < count {
        if injected.len() < count && Instant::now() >= next_inject {
            let mut r = rc.make_record(Utc::now());
            let id = format!("lag-{}", injected.len());
            r["id"] = serde_json::json!(id);
            rc.insert(vec![r], Duration::ZERO);
            injected.push((id, Instant::now()));
            next_inject += Duration::from_millis(250);
        }
        for v in read_archive_ids(&dir.join("archive")) {
            if let Some((id, at)) = injected.iter().find(|(i, _)| *i == v) {
                seen.entry(id.clone()).or_insert_with(|| at.elapsed());
            }
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!(
                "lag scenario: only {} of {count} records arrived within 120 s",
                seen.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = svc.stats();
    svc.stop()?;
    let mut lags: Vec<f64> = seen.values().map(Duration::as_secs_f64).collect();
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| lags[((lags.len() as f64 - 1.0) * p).round() as usize];
    let target = poll + settle + 2.0;
    Ok(Row {
        scenario: "lag".into(),
        events: count as u64,
        wall_s: t0.elapsed().as_secs_f64(),
        cpu_s: st.cpu_s,
        peak_rss_mb: st.peak_rss_mb,
        requests: rc.counters().search_requests,
        min_requests: 0,
        rate_limited: rc.counters().rate_limited.values().sum(),
        note: format!(
            "lag p50 {:.2}s p99 {:.2}s (target p50 <= poll {poll}s + settle {settle}s + 2s = {target}s) until archived",
            pct(0.5),
            pct(0.99)
        ),
    })
}

fn read_archive_ids(dir: &Path) -> Vec<String> {
    use std::io::BufRead;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(f) = std::fs::File::open(&p) {
                for line in std::io::BufReader::new(flate2::read::MultiGzDecoder::new(f))
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if let Some(id) = v["raw"]["id"].as_str() {
                            out.push(id.to_string());
                        }
                    }
                }
            }
        }
    }
    out
}
