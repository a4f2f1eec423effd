//! Typed configuration.
//!
//! The file is TOML read with the `config` crate; any key can be overridden
//! by an environment variable `TRAILKEEP__SECTION__KEY`. Validation collects
//! every problem at once, each named by its key path
//! (`sources[1].client_secret: environment variable RC_SECRET is not set`),
//! so an operator fixes a file in one pass.
//!
//! The core owns the sections it uses itself (journal, telemetry, pipeline,
//! the scheduling keys of each source). The kind-specific keys of a source
//! or sink are handed, as a JSON map, to that kind's module, which parses
//! them into its own struct and reports issues with the same key paths.

mod secret;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

pub use secret::{Secret, SecretRef};

use crate::util::{parse_duration, HumanDuration};

/// One problem found in the configuration, named by its key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found, in file order.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl From<ConfigIssue> for ConfigErrors {
    fn from(i: ConfigIssue) -> Self {
        ConfigErrors(vec![i])
    }
}

/// The journal: where pulled events are kept until every sink has them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    pub path: PathBuf,
    /// How long delivered events stay in the journal. They serve replays and
    /// de-duplication of re-pulled overlap, so keep this longer than the
    /// longest vendor horizon (RingCentral: 180 days).
    #[serde(default = "default_retention")]
    pub retention: HumanDuration,
    /// Upper bound for the journal file in bytes (None = unbounded). When
    /// it is reached pulling pauses, checkpoints stay put, and it resumes
    /// once sinks have drained and pruning freed space.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

fn default_retention() -> HumanDuration {
    HumanDuration(Duration::from_secs(200 * 86_400))
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz`; empty string = off.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_log_format")]
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter; the `RUST_LOG` variable wins when set.
    #[serde(default = "default_log_level")]
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: default_listen(),
            log_format: default_log_format(),
            log_level: default_log_level(),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:9464".into()
}
fn default_log_format() -> LogFormat {
    LogFormat::Json
}
fn default_log_level() -> String {
    "info".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// How long a SIGTERM may take: fetches stop at once, sinks get this
    /// long to finish the batch in hand.
    #[serde(default = "default_grace")]
    pub shutdown_grace: HumanDuration,
    /// How often delivered events past `journal.retention` are pruned.
    #[serde(default = "default_prune_interval")]
    pub prune_interval: HumanDuration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            shutdown_grace: default_grace(),
            prune_interval: default_prune_interval(),
        }
    }
}

fn default_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(8))
}
fn default_prune_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(3_600))
}

/// Where a stream starts on its very first run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// An absolute instant (`2025-01-01T00:00:00Z`).
    At(DateTime<Utc>),
    /// This long before now (`90d`).
    Ago(Duration),
}

impl StartAt {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(StartAt::At(t.with_timezone(&Utc)));
        }
        parse_duration(text)
            .map(StartAt::Ago)
            .map_err(|_| format!("`{text}` is neither an RFC 3339 time nor a duration like 90d"))
    }

    pub fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            StartAt::At(t) => t,
            StartAt::Ago(d) => now - crate::util::chrono_duration(d),
        }
    }
}

/// The scheduling keys every source entry accepts; the stream worker uses
/// them, the source's own module never sees them.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// None = the source's horizon (as far back as the API still serves).
    pub start_at: Option<StartAt>,
    pub poll_interval: Duration,
    pub overlap: Duration,
    pub settle_delay: Duration,
    /// Override of the source's own window limit (never above it).
    pub max_window: Option<Duration>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            start_at: None,
            poll_interval: Duration::from_secs(300),
            overlap: Duration::from_secs(600),
            settle_delay: Duration::from_secs(120),
            max_window: None,
        }
    }
}

const SCHEDULE_KEYS: &[&str] = &[
    "start_at",
    "poll_interval",
    "overlap",
    "settle_delay",
    "max_window",
];

/// One `[[sources]]` entry.
#[derive(Clone, Debug)]
pub struct SourceEntry {
    /// Key path prefix, `sources[2]`.
    pub path: String,
    pub kind: String,
    pub name: String,
    pub enabled: bool,
    pub schedule: Schedule,
    /// The kind-specific keys, for the kind's module to parse.
    pub settings: Map<String, Value>,
}

/// One `[[sinks]]` entry.
#[derive(Clone, Debug)]
pub struct SinkEntry {
    pub path: String,
    pub kind: String,
    pub name: String,
    pub enabled: bool,
    pub settings: Map<String, Value>,
}

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub journal: JournalConfig,
    pub telemetry: TelemetryConfig,
    pub pipeline: PipelineConfig,
    pub sources: Vec<SourceEntry>,
    pub sinks: Vec<SinkEntry>,
    /// `[[alerts]]` rules, parsed by the alerts module.
    pub alerts: Vec<Value>,
    /// Extra top-level tables owned by optional features (e.g.
    /// `alert_categories`), kept verbatim.
    pub extra: Map<String, Value>,
}

const TOP_KEYS: &[&str] = &[
    "journal",
    "telemetry",
    "pipeline",
    "sources",
    "sinks",
    "alerts",
    "alert_categories",
];

impl Config {
    /// Reads a TOML file and applies `TRAILKEEP__...` environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigIssue::new(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )
        })?;
        Self::from_toml_str(&text)
    }

    /// Parses TOML text (plus environment overrides).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("TRAILKEEP")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| ConfigIssue::new("", format!("invalid TOML: {e}")))?;
        let tree: Value = built
            .try_deserialize()
            .map_err(|e| ConfigIssue::new("", format!("invalid configuration: {e}")))?;
        Self::from_value(tree)
    }

    /// Validates an already-parsed tree, collecting every issue.
    pub fn from_value(tree: Value) -> Result<Config, ConfigErrors> {
        let mut issues = Vec::new();
        let Value::Object(mut root) = tree else {
            return Err(ConfigIssue::new("", "the configuration must be a TOML table").into());
        };
        for key in root.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                issues.push(ConfigIssue::new(
                    key.clone(),
                    format!("unknown key (expected one of: {})", TOP_KEYS.join(", ")),
                ));
            }
        }

        let journal = match root.remove("journal") {
            Some(v) => parse_section::<JournalConfig>("journal", v, &mut issues),
            None => {
                issues.push(ConfigIssue::new(
                    "journal",
                    "missing section (needs at least `path`)",
                ));
                None
            }
        };
        let telemetry = root
            .remove("telemetry")
            .map(|v| parse_section::<TelemetryConfig>("telemetry", v, &mut issues))
            .unwrap_or_else(|| Some(TelemetryConfig::default()));
        if let Some(t) = &telemetry {
            if !t.listen.is_empty() && t.listen.parse::<std::net::SocketAddr>().is_err() {
                issues.push(ConfigIssue::new(
                    "telemetry.listen",
                    format!("`{}` is not an address like 0.0.0.0:9464", t.listen),
                ));
            }
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(&t.log_level) {
                issues.push(ConfigIssue::new(
                    "telemetry.log_level",
                    format!("invalid filter: {e}"),
                ));
            }
        }
        let pipeline = root
            .remove("pipeline")
            .map(|v| parse_section::<PipelineConfig>("pipeline", v, &mut issues))
            .unwrap_or_else(|| Some(PipelineConfig::default()));

        let sources = parse_sources(root.remove("sources"), &mut issues);
        let sinks = parse_sinks(root.remove("sinks"), &mut issues);
        let alerts = match root.remove("alerts") {
            None => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => {
                issues.push(ConfigIssue::new(
                    "alerts",
                    "must be a list of [[alerts]] tables",
                ));
                Vec::new()
            }
        };
        let mut extra = Map::new();
        if let Some(v) = root.remove("alert_categories") {
            extra.insert("alert_categories".into(), v);
        }

        match (journal, telemetry, pipeline) {
            (Some(journal), Some(telemetry), Some(pipeline)) if issues.is_empty() => Ok(Config {
                journal,
                telemetry,
                pipeline,
                sources,
                sinks,
                alerts,
                extra,
            }),
            _ => Err(ConfigErrors(issues)),
        }
    }
}

/// Deserializes one section, pushing an issue with the exact key path on
/// failure.
pub fn parse_section<T: DeserializeOwned>(
    prefix: &str,
    value: Value,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let message = e.inner().to_string();
            let mut path = join_path(prefix, if inner == "." { "" } else { &inner });
            // serde names a missing key only in its message: put it in the path.
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                path = join_path(&path, field);
            }
            issues.push(ConfigIssue::new(path, message));
            None
        }
    }
}

/// Parses a kind module's settings map into its typed struct.
pub fn parse_settings<T: DeserializeOwned>(
    prefix: &str,
    settings: &Map<String, Value>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    parse_section(prefix, Value::Object(settings.clone()), issues)
}

/// Resolves a secret, pushing an issue named by `path` on failure.
pub fn resolve_secret(path: &str, r: &SecretRef, issues: &mut Vec<ConfigIssue>) -> Option<Secret> {
    match r.resolve() {
        Ok(s) => Some(s),
        Err(e) => {
            issues.push(ConfigIssue::new(path, e));
            None
        }
    }
}

pub fn join_path(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (_, true) => prefix.to_string(),
        _ if key.starts_with('[') => format!("{prefix}{key}"),
        _ => format!("{prefix}.{key}"),
    }
}

fn take_string(
    map: &mut Map<String, Value>,
    key: &str,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(_) => {
            issues.push(ConfigIssue::new(
                join_path(path, key),
                "must be a non-empty string",
            ));
            None
        }
        None => {
            issues.push(ConfigIssue::new(join_path(path, key), "missing"));
            None
        }
    }
}

fn take_bool(
    map: &mut Map<String, Value>,
    key: &str,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
) -> bool {
    match map.remove(key) {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(_) => {
            issues.push(ConfigIssue::new(
                join_path(path, key),
                "must be true or false",
            ));
            true
        }
    }
}

fn take_duration(
    map: &mut Map<String, Value>,
    key: &str,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Duration> {
    let v = map.remove(key)?;
    let parsed = match &v {
        Value::String(s) => parse_duration(s),
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| "must be a positive number of seconds".to_string()),
        _ => Err("must be a duration like 90s, 5m or 180d".to_string()),
    };
    match parsed {
        Ok(d) => Some(d),
        Err(e) => {
            issues.push(ConfigIssue::new(join_path(path, key), e));
            None
        }
    }
}

/// Names end up in metric labels, file paths and journal keys: keep them
/// to a safe alphabet.
fn check_name(name: &str, path: &str, issues: &mut Vec<ConfigIssue>) {
    let ok = name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        issues.push(ConfigIssue::new(
            join_path(path, "name"),
            format!("`{name}` must be 1-64 characters of letters, digits, `-` or `_`"),
        ));
    }
}

fn entries(
    value: Option<Value>,
    section: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<(String, Map<String, Value>)> {
    match value {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let path = format!("{section}[{i}]");
                match v {
                    Value::Object(m) => Some((path, m)),
                    _ => {
                        issues.push(ConfigIssue::new(path, "must be a table"));
                        None
                    }
                }
            })
            .collect(),
        Some(_) => {
            issues.push(ConfigIssue::new(
                section,
                format!("must be a list of [[{section}]] tables"),
            ));
            Vec::new()
        }
    }
}

fn parse_sources(value: Option<Value>, issues: &mut Vec<ConfigIssue>) -> Vec<SourceEntry> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (path, mut map) in entries(value, "sources", issues) {
        let kind = take_string(&mut map, "kind", &path, issues);
        let name = take_string(&mut map, "name", &path, issues);
        let enabled = take_bool(&mut map, "enabled", &path, issues);
        let mut schedule = Schedule::default();
        if let Some(v) = map.remove("start_at") {
            match v.as_str().map(StartAt::parse) {
                Some(Ok(s)) => schedule.start_at = Some(s),
                Some(Err(e)) => issues.push(ConfigIssue::new(join_path(&path, "start_at"), e)),
                None => issues.push(ConfigIssue::new(
                    join_path(&path, "start_at"),
                    "must be a string",
                )),
            }
        }
        if let Some(d) = take_duration(&mut map, "poll_interval", &path, issues) {
            if d < Duration::from_millis(100) {
                issues.push(ConfigIssue::new(
                    join_path(&path, "poll_interval"),
                    "must be at least 100ms",
                ));
            }
            schedule.poll_interval = d;
        }
        if let Some(d) = take_duration(&mut map, "overlap", &path, issues) {
            schedule.overlap = d;
        }
        if let Some(d) = take_duration(&mut map, "settle_delay", &path, issues) {
            schedule.settle_delay = d;
        }
        if let Some(d) = take_duration(&mut map, "max_window", &path, issues) {
            if d.is_zero() {
                issues.push(ConfigIssue::new(
                    join_path(&path, "max_window"),
                    "must be above zero",
                ));
            }
            schedule.max_window = Some(d);
        }
        debug_assert!(SCHEDULE_KEYS.iter().all(|k| !map.contains_key(*k)));
        if let Some(name) = &name {
            check_name(name, &path, issues);
            if !seen.insert(name.clone()) {
                issues.push(ConfigIssue::new(
                    join_path(&path, "name"),
                    format!("duplicate source name `{name}` (names must be unique)"),
                ));
            }
        }
        if let (Some(kind), Some(name)) = (kind, name) {
            out.push(SourceEntry {
                path,
                kind,
                name,
                enabled,
                schedule,
                settings: map,
            });
        }
    }
    out
}

fn parse_sinks(value: Option<Value>, issues: &mut Vec<ConfigIssue>) -> Vec<SinkEntry> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (path, mut map) in entries(value, "sinks", issues) {
        let kind = take_string(&mut map, "kind", &path, issues);
        let name = take_string(&mut map, "name", &path, issues);
        let enabled = take_bool(&mut map, "enabled", &path, issues);
        if let Some(name) = &name {
            check_name(name, &path, issues);
            if !seen.insert(name.clone()) {
                issues.push(ConfigIssue::new(
                    join_path(&path, "name"),
                    format!("duplicate sink name `{name}` (names must be unique)"),
                ));
            }
        }
        if let (Some(kind), Some(name)) = (kind, name) {
            out.push(SinkEntry {
                path,
                kind,
                name,
                enabled,
                settings: map,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues_of(text: &str) -> Vec<String> {
        match Config::from_toml_str(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|i| i.to_string()).collect(),
        }
    }

    #[test]
    fn minimal_config_parses() {
        let c = Config::from_toml_str(
            r#"
            [journal]
            path = "/tmp/j.db"
            [[sources]]
            kind = "ringcentral"
            name = "acme"
            poll_interval = "1m"
            client_id = "x"
            "#,
        )
        .expect("valid");
        assert_eq!(c.sources.len(), 1);
        assert_eq!(c.sources[0].schedule.poll_interval, Duration::from_secs(60));
        assert!(c.sources[0].settings.contains_key("client_id"));
        assert_eq!(c.journal.retention.0, Duration::from_secs(200 * 86_400));
    }

    #[test]
    fn collects_every_issue_with_paths() {
        let issues = issues_of(
            r#"
            bogus = 1
            [journal]
            path = "/tmp/j.db"
            retention = "ten days"
            [telemetry]
            listen = "nope"
            [[sources]]
            kind = "ringcentral"
            name = "a"
            poll_interval = "5 minutes"
            [[sources]]
            kind = "ringcentral"
            name = "a"
            [[sinks]]
            name = "x"
            "#,
        );
        let all = issues.join("\n");
        assert!(all.contains("bogus: unknown key"), "{all}");
        assert!(all.contains("journal.retention"), "{all}");
        assert!(all.contains("telemetry.listen"), "{all}");
        assert!(all.contains("sources[0].poll_interval"), "{all}");
        assert!(
            all.contains("sources[1].name: duplicate source name"),
            "{all}"
        );
        assert!(all.contains("sinks[0].kind: missing"), "{all}");
    }

    #[test]
    fn unknown_key_in_section_is_named() {
        let issues = issues_of(
            r#"
            [journal]
            path = "/tmp/j.db"
            retension = "1d"
            "#,
        );
        assert!(
            issues
                .iter()
                .any(|i| i.starts_with("journal.retension: unknown field")),
            "{issues:?}"
        );
    }

    #[test]
    fn start_at_accepts_both_forms() {
        assert!(matches!(
            StartAt::parse("2025-01-01T00:00:00Z"),
            Ok(StartAt::At(_))
        ));
        assert_eq!(
            StartAt::parse("90d"),
            Ok(StartAt::Ago(Duration::from_secs(90 * 86_400)))
        );
        assert!(StartAt::parse("yesterday").is_err());
    }
}
