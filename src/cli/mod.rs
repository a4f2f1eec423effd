//! The command line: `run`, `check`, `status`, `dead-letters`, `sim`, `demo`.

mod check;
mod demo;
mod run;
mod sim;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigErrors};
use crate::journal::Journal;
use crate::pipeline::{Pipeline, Progress, ScheduledSource};
use crate::sinks::Sink;
use crate::sources::Source;
use crate::telemetry::Health;

/// trailkeep keeps SaaS admin audit trails (RingCentral Audit Trail, Vbrick
/// Rev audit, Symphony privileged-user audit trail) beyond the vendors'
/// retention limits: it pulls them incrementally into a de-duplicating
/// journal and delivers them to DynamoDB, Splunk HEC, a local archive and
/// alert channels.
#[derive(Parser, Debug)]
#[command(name = "trailkeep", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service until SIGTERM or SIGINT.
    Run {
        /// Configuration file (TOML). Keys can be overridden by
        /// TRAILKEEP__SECTION__KEY environment variables.
        #[arg(short, long, env = "TRAILKEEP_CONFIG")]
        config: PathBuf,
    },
    /// Validate the configuration; exit 2 listing every problem by key path.
    Check {
        #[arg(short, long, env = "TRAILKEEP_CONFIG")]
        config: PathBuf,
        /// Also authenticate to every source and health-check every sink.
        #[arg(long)]
        connect: bool,
    },
    /// Show, from the journal, where each stream and sink stands.
    Status {
        #[arg(short, long, env = "TRAILKEEP_CONFIG")]
        config: PathBuf,
        /// Machine-readable JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// List dead letters (records a source could not read, events a sink
    /// refused) with their reasons.
    DeadLetters {
        #[arg(short, long, env = "TRAILKEEP_CONFIG")]
        config: PathBuf,
        /// Only this stream (`source/tenant/stream`) or sink name.
        #[arg(long)]
        origin: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// NDJSON, one dead letter per line, payload included.
        #[arg(long)]
        json: bool,
    },
    /// Read records back from a DynamoDB sink's table as NDJSON, ordered by
    /// time ("show me what we kept").
    Query {
        #[arg(short, long, env = "TRAILKEEP_CONFIG")]
        config: PathBuf,
        /// Source kind: ringcentral, vbrick, symphony.
        #[arg(long)]
        source: String,
        /// The source's configured name.
        #[arg(long)]
        tenant: String,
        /// Start (RFC 3339, or a duration ago such as 30d).
        #[arg(long)]
        from: String,
        /// End (RFC 3339, or a duration ago); default now.
        #[arg(long)]
        to: Option<String>,
        /// Only events by this actor id.
        #[arg(long)]
        actor: Option<String>,
        /// Which dynamodb sink, when several are configured.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Serve the vendor simulators, for trying trailkeep without accounts.
    Sim(sim::SimArgs),
    /// Run the whole pipeline against in-process simulators and print a
    /// summary. Needs no configuration and no accounts.
    Demo(demo::DemoArgs),
    /// Benchmarks: start the simulators, run the service as a child process
    /// and print throughput, CPU, peak RSS, requests vs minimum, 429s.
    Bench(crate::bench::BenchArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Journal calls and compression run on the blocking pool. tokio's
        // default of 512 threads lets 32 in-flight HEC batches compress at
        // once on two cores: no faster, and each thread holds its buffers
        // (and its allocator caches). 16 keeps the CPU busy and memory flat.
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trailkeep: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Run { config } => run::run(&config).await,
            Command::Check { config, connect } => check::check(&config, connect).await,
            Command::Status { config, json } => status::status(&config, json).await,
            Command::DeadLetters {
                config,
                origin,
                limit,
                json,
            } => status::dead_letters(&config, origin, limit, json).await,
            Command::Query {
                config,
                source,
                tenant,
                from,
                to,
                actor,
                sink,
            } => query(&config, source, tenant, &from, to.as_deref(), actor, sink).await,
            Command::Sim(args) => sim::sim(args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Bench(args) => bench(args).await,
        }
    })
}

/// Exit code for configuration errors.
pub const EXIT_CONFIG: u8 = 2;

pub fn print_config_errors(origin: &str, e: &ConfigErrors) {
    eprintln!("{origin}: {} configuration error(s):", e.0.len());
    for issue in &e.0 {
        eprintln!("  {issue}");
    }
}

/// Loads the config and builds every source and sink, reporting all
/// issues together.
pub async fn load_and_build(
    path: &std::path::Path,
) -> Result<(Config, Vec<Arc<dyn Source>>, Vec<Arc<dyn Sink>>), ConfigErrors> {
    let cfg = Config::load(path)?;
    from_config(cfg).await
}

pub async fn from_config(
    cfg: Config,
) -> Result<(Config, Vec<Arc<dyn Source>>, Vec<Arc<dyn Sink>>), ConfigErrors> {
    let mut issues = Vec::new();
    let sources = match crate::sources::build_all(&cfg) {
        Ok(s) => s,
        Err(e) => {
            issues.extend(e.0);
            Vec::new()
        }
    };
    let sinks = match crate::sinks::build_all(&cfg).await {
        Ok(s) => s,
        Err(e) => {
            issues.extend(e.0);
            Vec::new()
        }
    };
    if cfg.sinks.iter().all(|s| !s.enabled) {
        issues.push(crate::config::ConfigIssue::new(
            "sinks",
            "no enabled sink: events would pile up in the journal",
        ));
    }
    if issues.is_empty() {
        Ok((cfg, sources, sinks))
    } else {
        Err(ConfigErrors(issues))
    }
}

/// Assembles the pipeline from a built configuration.
pub fn pipeline(
    cfg: &Config,
    journal: Journal,
    sources: Vec<Arc<dyn Source>>,
    sinks: Vec<Arc<dyn Sink>>,
    health: Arc<Health>,
) -> Pipeline {
    let sources = sources
        .into_iter()
        .map(|source| {
            let schedule = cfg
                .sources
                .iter()
                .find(|e| e.name == source.name())
                .map(|e| e.schedule.clone())
                .unwrap_or_default();
            ScheduledSource { source, schedule }
        })
        .collect();
    Pipeline {
        journal,
        sources,
        sinks,
        health,
        progress: Arc::new(Progress::default()),
        shutdown_grace: cfg.pipeline.shutdown_grace.0,
        retention: cfg.journal.retention.0,
        prune_interval: cfg.pipeline.prune_interval.0,
        worker_options: Default::default(),
    }
}

async fn bench(args: crate::bench::BenchArgs) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("trailkeep bench: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command: Vec<String> = std::env::args().collect();
    match crate::bench::run(&args, &exe).await {
        Ok(rows) => {
            crate::bench::print_table(&command.join(" "), &rows);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trailkeep bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_instant(
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    crate::config::StartAt::parse(text).map(|s| s.resolve(now))
}

async fn query(
    path: &std::path::Path,
    source: String,
    tenant: String,
    from: &str,
    to: Option<&str>,
    actor: Option<String>,
    sink: Option<String>,
) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            print_config_errors(&path.display().to_string(), &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let now = chrono::Utc::now();
    let (from, to) = match (
        parse_instant(from, now),
        to.map(|t| parse_instant(t, now)).unwrap_or(Ok(now)),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("trailkeep query: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let params = crate::sinks::dynamodb::QueryParams {
        sink,
        source,
        tenant,
        from,
        to,
        actor,
    };
    let mut out = std::io::stdout();
    match crate::sinks::dynamodb::run_query(&cfg, &params, &mut out).await {
        Ok(n) => {
            eprintln!("{n} event(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trailkeep query: {e:#}");
            ExitCode::FAILURE
        }
    }
}
