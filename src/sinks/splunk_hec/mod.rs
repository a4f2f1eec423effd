//! Splunk HTTP Event Collector sink (`kind = "splunk_hec"`).
//!
//! Laid out like Vector's Splunk sink:
//! - `request_builder`: one envelope per journal record (time, host,
//!   source, sourcetype, index, event = canonical JSON, indexed fields),
//!   newline separated, gzipped;
//! - `service`: the HTTP send and the mapping of every HEC answer to
//!   accept / poison / too large / retry / halt;
//! - `acknowledgements`: pending ackIds kept in the journal before anyone
//!   waits on them, bulk-polled by one task, resent after `ack_timeout`.
//!
//! `deliver()` returns only once the batch is confirmed: every ack of it
//! true (or a plain 200 when the token does not acknowledge). The generic
//! worker keeps `max_in_flight` batches going at once, so acks of several
//! batches are awaited together while the cursor still moves in order.

pub mod acknowledgements;
pub mod request_builder;
pub mod service;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use self::acknowledgements::{AckOutcome, Acks, Covered};
use self::request_builder::EnvelopeConfig;
use self::service::{build_client, ClientOptions, HecService, SendOutcome};
use super::{Batch, BatchLimits, BatchSpan, Delivery, Sink, SinkContext, SinkError};
use crate::config::{parse_settings, resolve_secret, ConfigIssue, SecretRef, SinkEntry};
use crate::internal_events::{
    HecAckFallback, HecAcksRecovered, HecBatchSplit, HecInsecureTls, InternalEvent,
};
use crate::journal::{Journal, JournalRecord, SinkDeadLetter};
use crate::util::HumanDuration;

/// Whether to use indexer acknowledgement.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Use acks when the server hands out ackIds; a plain 200 otherwise
    /// (Splunk Cloud), and code 14 switches to plain delivery.
    #[default]
    Auto,
    /// Require acks: a 200 without ackId halts the sink.
    On,
    /// A 200 is delivered; ackIds are ignored.
    Off,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    endpoint: String,
    token: SecretRef,
    #[serde(default)]
    index: Option<String>,
    #[serde(default)]
    indexes: BTreeMap<String, String>,
    #[serde(default)]
    sourcetypes: BTreeMap<String, String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    compression: Compression,
    #[serde(default = "default_gzip_level")]
    gzip_level: u32,
    #[serde(default = "default_max_bytes")]
    max_bytes: usize,
    #[serde(default = "default_max_events")]
    max_events: usize,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
    /// A batch smaller than `max_events` waits up to this long for more
    /// events while nothing is in flight (0 = send at once).
    #[serde(default = "default_max_wait")]
    max_wait: HumanDuration,
    #[serde(default)]
    ack: AckMode,
    #[serde(default = "default_ack_timeout")]
    ack_timeout: HumanDuration,
    #[serde(default = "default_ack_poll_interval")]
    ack_poll_interval: HumanDuration,
    #[serde(default = "default_request_timeout")]
    request_timeout: HumanDuration,
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

fn default_gzip_level() -> u32 {
    1
}
fn default_max_bytes() -> usize {
    1_000_000
}
fn default_max_events() -> usize {
    1_000
}
fn default_max_wait() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}

fn default_max_in_flight() -> usize {
    32
}
fn default_ack_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_ack_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "trailkeep".into())
}

/// Builds a `splunk_hec` sink from its config entry; every problem is
/// pushed to `issues` with its key path.
pub fn build(entry: &SinkEntry, issues: &mut Vec<ConfigIssue>) -> Option<Arc<dyn Sink>> {
    let p = &entry.path;
    let s: Settings = parse_settings(p, &entry.settings, issues)?;
    let before = issues.len();
    let token = resolve_secret(&format!("{p}.token"), &s.token, issues);
    match reqwest::Url::parse(&s.endpoint) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
        Ok(u) => issues.push(ConfigIssue::new(
            format!("{p}.endpoint"),
            format!(
                "scheme `{}` not supported (use https://host:8088)",
                u.scheme()
            ),
        )),
        Err(e) => issues.push(ConfigIssue::new(
            format!("{p}.endpoint"),
            format!("`{}` is not a URL: {e}", s.endpoint),
        )),
    }
    if s.gzip_level > 9 {
        issues.push(ConfigIssue::new(format!("{p}.gzip_level"), "must be 0-9"));
    }
    if s.max_bytes < 1_024 {
        issues.push(ConfigIssue::new(
            format!("{p}.max_bytes"),
            "must be at least 1024",
        ));
    }
    if s.max_events == 0 {
        issues.push(ConfigIssue::new(
            format!("{p}.max_events"),
            "must be at least 1",
        ));
    }
    if !(1..=256).contains(&s.max_in_flight) {
        issues.push(ConfigIssue::new(
            format!("{p}.max_in_flight"),
            "must be 1-256",
        ));
    }
    for (key, d) in [
        ("ack_timeout", s.ack_timeout),
        ("ack_poll_interval", s.ack_poll_interval),
        ("request_timeout", s.request_timeout),
    ] {
        if d.0.is_zero() {
            issues.push(ConfigIssue::new(
                format!("{p}.{key}"),
                "must be longer than 0",
            ));
        }
    }
    for (table, map) in [("indexes", &s.indexes), ("sourcetypes", &s.sourcetypes)] {
        for (k, v) in map {
            if v.trim().is_empty() {
                issues.push(ConfigIssue::new(
                    format!("{p}.{table}.{k}"),
                    "must not be empty",
                ));
            }
        }
    }
    let client = match build_client(&ClientOptions {
        request_timeout: s.request_timeout.0,
        ca_file: s.tls_ca_file.clone(),
        insecure_skip_verify: s.insecure_skip_verify,
        pool_size: s.max_in_flight,
    }) {
        Ok(c) => Some(c),
        Err(e) => {
            issues.push(ConfigIssue::new(format!("{p}.tls_ca_file"), e));
            None
        }
    };
    let (Some(token), Some(client)) = (token, client) else {
        return None;
    };
    if issues.len() > before {
        return None;
    }
    let service = match HecService::new(&entry.name, client, &s.endpoint, &token) {
        Ok(svc) => svc,
        Err(e) => {
            issues.push(ConfigIssue::new(format!("{p}.token"), e));
            return None;
        }
    };
    if s.insecure_skip_verify {
        HecInsecureTls {
            sink: &entry.name,
            endpoint: &s.endpoint,
        }
        .emit();
    }
    let envelope = EnvelopeConfig {
        host: s.host.clone().unwrap_or_else(default_host),
        source: s.source.clone(),
        index: s.index.clone(),
        indexes: s.indexes.clone(),
        sourcetypes: s.sourcetypes.clone(),
    };
    let opts = HecOptions {
        envelope,
        gzip_level: (s.compression == Compression::Gzip).then_some(s.gzip_level),
        limits: BatchLimits {
            max_events: s.max_events,
            max_bytes: s.max_bytes,
            max_in_flight: s.max_in_flight,
            max_wait: s.max_wait.0,
        },
        ack: s.ack,
        ack_timeout: s.ack_timeout.0,
        ack_poll_interval: s.ack_poll_interval.0,
    };
    Some(Arc::new(HecSink::new(&entry.name, Arc::new(service), opts)))
}

/// Everything a `HecSink` needs besides the HTTP service.
#[derive(Clone, Debug)]
pub struct HecOptions {
    pub envelope: EnvelopeConfig,
    /// gzip level; None = no compression.
    pub gzip_level: Option<u32>,
    pub limits: BatchLimits,
    pub ack: AckMode,
    pub ack_timeout: Duration,
    pub ack_poll_interval: Duration,
}

pub struct HecSink {
    name: String,
    service: Arc<HecService>,
    opts: HecOptions,
    envelope: Arc<EnvelopeConfig>,
    /// This process's channel; acks of earlier processes keep theirs.
    channel: String,
    acks: Mutex<Option<Arc<Acks>>>,
    /// Set when `auto` met a token without acknowledgement (code 14).
    acks_disabled: AtomicBool,
    /// Events found poison during an attempt that then failed, so a retry
    /// of the batch does not send them again.
    dead_memo: Mutex<BTreeMap<u64, SinkDeadLetter>>,
}

impl Drop for HecSink {
    fn drop(&mut self) {
        if let Some(a) = self.acks.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            a.shutdown();
        }
    }
}

fn journal_err(e: impl std::fmt::Display) -> SinkError {
    SinkError::retryable("journal", e.to_string())
}

impl HecSink {
    pub fn new(name: &str, service: Arc<HecService>, opts: HecOptions) -> Self {
        HecSink {
            name: name.to_string(),
            service,
            envelope: Arc::new(opts.envelope.clone()),
            opts,
            channel: uuid::Uuid::new_v4().to_string(),
            acks: Mutex::new(None),
            acks_disabled: AtomicBool::new(false),
            dead_memo: Mutex::new(BTreeMap::new()),
        }
    }

    /// The channel GUID this process sends on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn acks(&self, journal: &Journal) -> Arc<Acks> {
        let mut slot = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| {
            Arc::new(Acks::new(
                &self.name,
                journal.clone(),
                self.service.clone(),
                self.opts.ack_poll_interval,
                self.opts.ack_timeout,
            ))
        })
        .clone()
    }

    fn use_acks(&self) -> bool {
        self.opts.ack != AckMode::Off && !self.acks_disabled.load(Ordering::Relaxed)
    }

    /// `auto` met a token without acknowledgement: plain delivery from now.
    fn fall_back(&self, why: &str) -> Result<(), SinkError> {
        match self.opts.ack {
            AckMode::On => Err(SinkError::halt(
                "ack_disabled",
                format!("ack = \"on\" but {why}; enable indexer acknowledgement on the HEC token or set ack = \"auto\""),
            )),
            _ => {
                if !self.acks_disabled.swap(true, Ordering::Relaxed) {
                    HecAckFallback {
                        sink: &self.name,
                        reason: why,
                    }
                    .emit();
                }
                Ok(())
            }
        }
    }

    /// Envelopes are written here (about a millisecond per thousand
    /// events); gzip, the costly part, runs on the blocking pool.
    async fn encode(&self, batch: &Batch, chunk: &[usize]) -> Result<Vec<u8>, SinkError> {
        let raw = self
            .envelope
            .encode_body(chunk.iter().map(|i| &batch.records[*i]), None)
            .map_err(|e| SinkError::retryable("encode", format!("encoding a request: {e}")))?;
        let Some(level) = self.opts.gzip_level else {
            return Ok(raw);
        };
        tokio::task::spawn_blocking(move || request_builder::gzip(&raw, level))
            .await
            .map_err(|e| SinkError::retryable("encode", format!("encoder task failed: {e}")))?
            .map_err(|e| SinkError::retryable("encode", format!("compressing a request: {e}")))
    }

    fn split(&self, chunk: Vec<usize>, why: &str, queue: &mut VecDeque<Vec<usize>>) {
        HecBatchSplit {
            sink: &self.name,
            reason: why,
            events: chunk.len(),
        }
        .emit();
        let mut left = chunk;
        let right = left.split_off(left.len() / 2);
        queue.push_front(right);
        queue.push_front(left);
    }
}

fn dead_letter(r: &JournalRecord, reason: String) -> SinkDeadLetter {
    SinkDeadLetter {
        seq: r.seq,
        key: r.key.clone(),
        reason,
    }
}

#[async_trait]
impl Sink for HecSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "splunk_hec"
    }

    fn batch_limits(&self) -> BatchLimits {
        self.opts.limits
    }

    async fn start(&self, ctx: &SinkContext) -> Result<(), SinkError> {
        let acks = self.acks(&ctx.journal);
        let (name, channel) = (self.name.clone(), self.channel.clone());
        let cursor = crate::journal::blocking(&ctx.journal, move |j| {
            j.set_sink_state(&name, "channel", &channel)?;
            j.sink_cursor(&name)
        })
        .await
        .map_err(journal_err)?;
        let recovered = acks.recover(cursor).await.map_err(journal_err)?;
        if recovered > 0 {
            HecAcksRecovered {
                sink: &self.name,
                count: recovered,
            }
            .emit();
        }
        let health = self.service.health().await?;
        self.service.probe_token(&self.channel).await?;
        tracing::info!(sink = %self.name, endpoint = self.service.event_url(), channel = %self.channel,
            health = %health, "Splunk HEC reachable and token accepted");
        Ok(())
    }

    async fn deliver(&self, batch: Batch, ctx: &SinkContext) -> Result<Delivery, SinkError> {
        let acks = self.acks(&ctx.journal);
        let span = batch.span();
        let (first_seq, last_seq) = (span.first_seq, span.last_seq);
        let mut dead: Vec<SinkDeadLetter> = self
            .dead_memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .range(first_seq..=last_seq)
            .map(|(_, d)| d.clone())
            .collect();
        let known: HashSet<u64> = dead.iter().map(|d| d.seq).collect();
        let all: Vec<usize> = (0..batch.len())
            .filter(|i| !known.contains(&batch.records[*i].seq))
            .collect();
        let mut queue: VecDeque<Vec<usize>> = VecDeque::new();
        if !all.is_empty() {
            queue.push_back(all);
        }
        let mut held = Some(batch);
        let result = self
            .deliver_chunks(&mut held, span, ctx, &acks, &mut queue, &mut dead)
            .await;
        if result.is_ok() {
            self.dead_memo
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|seq, _| *seq < first_seq || *seq > last_seq);
            acks.forget_confirmed(first_seq, last_seq).await;
            // The worker commits the cursor right after we return; clean up
            // this batch's ack records once it has.
            let a = acks.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if a.cleanup_committed().await == 0 {
                        break;
                    }
                }
            });
            return Ok(Delivery { dead });
        }
        let mut memo = self.dead_memo.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => Ok(Delivery { dead }),
            Err(e) => {
                for d in dead {
                    memo.insert(d.seq, d);
                }
                Err(e)
            }
        }
    }

    async fn check_connection(&self) -> Result<String, SinkError> {
        let health = self.service.health().await?;
        self.service.probe_token(&self.channel).await?;
        Ok(format!(
            "Splunk HEC {}: {health}; token accepted",
            self.service.event_url()
        ))
    }
}

impl HecSink {
    /// Sends every chunk in `queue` (positions in the batch), splitting on
    /// 413 and poison, waits for the acks, resends what was lost, until all
    /// is confirmed. The records are dropped while the acks are awaited
    /// (with 32 batches in flight they would be the sink's largest memory)
    /// and read again from the journal if a chunk must be resent.
    async fn deliver_chunks(
        &self,
        held: &mut Option<Batch>,
        span: BatchSpan,
        ctx: &SinkContext,
        acks: &Arc<Acks>,
        queue: &mut VecDeque<Vec<usize>>,
        dead: &mut Vec<SinkDeadLetter>,
    ) -> Result<(), SinkError> {
        loop {
            let mut waits = Vec::new();
            if !queue.is_empty() && held.is_none() {
                *held = Some(ctx.reread(span).await?);
            }
            let Some(batch) = held.as_ref() else {
                return Ok(());
            };
            while let Some(mut chunk) = queue.pop_front() {
                if chunk.is_empty() {
                    continue;
                }
                let seqs: Vec<u64> = chunk.iter().map(|i| batch.records[*i].seq).collect();
                // Carried by an earlier request (a retry of this batch, or
                // an ack recovered from a crashed process)? Then only wait.
                if let Some((k, covered)) = acks.covering(&seqs) {
                    let rest = chunk.split_off(k);
                    if !rest.is_empty() {
                        queue.push_front(rest);
                    }
                    if let Covered::Pending(rx) = covered {
                        waits.push((chunk, rx));
                    }
                    continue;
                }
                let body = self.encode(batch, &chunk).await?;
                let gzip = self.opts.gzip_level.is_some();
                match self.service.send(&self.channel, body, gzip).await {
                    SendOutcome::Accepted { ack_id } => match ack_id {
                        Some(id) if self.use_acks() => {
                            let rx = acks
                                .register(&self.channel, id, &seqs)
                                .await
                                .map_err(journal_err)?;
                            waits.push((chunk, rx));
                        }
                        None if self.use_acks() => {
                            self.fall_back(
                                "the HEC token does not acknowledge (200 without ackId)",
                            )?;
                        }
                        _ => {}
                    },
                    SendOutcome::Poison {
                        code,
                        text,
                        invalid_event,
                    } => match invalid_event.filter(|n| *n < chunk.len()) {
                        Some(n) => {
                            let r = &batch.records[chunk[n]];
                            dead.push(dead_letter(
                                r,
                                format!("hec_{code}: {text} (invalid-event-number {n})"),
                            ));
                            let rest: Vec<usize> = chunk
                                .iter()
                                .enumerate()
                                .filter(|(k, _)| *k != n)
                                .map(|(_, i)| *i)
                                .collect();
                            if !rest.is_empty() {
                                HecBatchSplit {
                                    sink: &self.name,
                                    reason: "poison",
                                    events: rest.len(),
                                }
                                .emit();
                                queue.push_front(rest);
                            }
                        }
                        None if chunk.len() == 1 => {
                            dead.push(dead_letter(
                                &batch.records[chunk[0]],
                                format!("hec_{code}: {text}"),
                            ));
                        }
                        None => self.split(chunk, "poison_bisect", queue),
                    },
                    SendOutcome::TooLarge if chunk.len() == 1 => {
                        dead.push(dead_letter(
                            &batch.records[chunk[0]],
                            "http_413: the event alone is larger than the server's max_content_length"
                                .into(),
                        ));
                    }
                    SendOutcome::TooLarge => self.split(chunk, "too_large", queue),
                    SendOutcome::AckDisabled => {
                        self.fall_back("the server answered code 14 (ACK is disabled)")?;
                        queue.push_front(chunk);
                    }
                    SendOutcome::Failed(e) => return Err(e),
                }
            }
            if waits.is_empty() {
                return Ok(());
            }
            *held = None;
            let settled = futures::future::join_all(
                waits
                    .into_iter()
                    .map(|(chunk, rx)| async move { (chunk, rx.await) }),
            )
            .await;
            for (chunk, outcome) in settled {
                match outcome {
                    Ok(AckOutcome::Indexed) => {}
                    Ok(AckOutcome::Disabled) => {
                        // The 200 was the only confirmation there will be.
                        self.fall_back("the server answered code 14 (ACK is disabled)")?;
                    }
                    Ok(AckOutcome::Lost) => queue.push_back(chunk),
                    Err(_) => {
                        return Err(SinkError::retryable(
                            "ack",
                            "ack tracking stopped (sink shutting down)",
                        ))
                    }
                }
            }
            if queue.is_empty() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn issues_for(dir: &std::path::Path, body: &str) -> Vec<String> {
        let text = format!(
            "[journal]\npath = \"{}\"\n[[sinks]]\nkind = \"splunk_hec\"\nname = \"hec\"\n{body}",
            dir.join("j.db").display()
        );
        let cfg = Config::from_toml_str(&text).expect("config");
        let mut issues = Vec::new();
        let sink = build(&cfg.sinks[0], &mut issues);
        assert_eq!(sink.is_some(), issues.is_empty());
        issues.iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn every_problem_named_by_key_path() {
        let dir = tempfile::tempdir().expect("tmp");
        let issues = issues_for(
            dir.path(),
            &format!(
                "endpoint = \"ftp://x\"\ntoken = {{ file = \"{0}/missing\" }}\nmax_events = 0\nack_timeout = \"0s\"\ntls_ca_file = \"{0}/ca.pem\"",
                dir.path().display()
            ),
        );
        let all = issues.join("\n");
        assert!(
            all.contains("sinks[0].token: cannot read secret file"),
            "{all}"
        );
        assert!(
            all.contains("sinks[0].endpoint: scheme `ftp` not supported"),
            "{all}"
        );
        assert!(
            all.contains("sinks[0].max_events: must be at least 1"),
            "{all}"
        );
        assert!(
            all.contains("sinks[0].ack_timeout: must be longer than 0"),
            "{all}"
        );
        assert!(
            all.contains("sinks[0].tls_ca_file: cannot read CA file"),
            "{all}"
        );
        assert!(!all.contains("hunter2"));
    }

    #[test]
    fn unknown_key_and_bad_ack_mode_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("t"), "hunter2").expect("write");
        let t = dir.path().join("t");
        let issues = issues_for(
            dir.path(),
            &format!(
                "endpoint = \"https://h:8088\"\ntoken = {{ file = \"{}\" }}\nack = \"maybe\"",
                t.display()
            ),
        );
        assert!(
            issues[0].starts_with("sinks[0].ack: unknown variant `maybe`"),
            "{issues:?}"
        );
        let issues = issues_for(
            dir.path(),
            &format!(
                "endpoint = \"https://h:8088\"\ntoken = {{ file = \"{}\" }}\nmax_wiat = \"1s\"",
                t.display()
            ),
        );
        assert!(
            issues[0].starts_with("sinks[0].max_wiat: unknown field"),
            "{issues:?}"
        );
    }

    #[test]
    fn example_config_parses_with_defaults() {
        let dir = tempfile::tempdir().expect("tmp");
        let token = dir.path().join("t");
        std::fs::write(&token, "tok").expect("write");
        let example = include_str!("../../../config/examples/splunk_hec.toml").replace(
            "token = { env = \"SPLUNK_HEC_TOKEN\" }",
            &format!("token = {{ file = \"{}\" }}", token.display()),
        );
        let text = format!(
            "[journal]\npath = \"{}\"\n{example}",
            dir.path().join("j.db").display()
        );
        let cfg = Config::from_toml_str(&text).expect("example parses");
        let s: Settings =
            parse_settings(&cfg.sinks[0].path, &cfg.sinks[0].settings, &mut Vec::new())
                .expect("settings");
        assert_eq!(s.max_bytes, default_max_bytes());
        assert_eq!(s.max_events, default_max_events());
        assert_eq!(s.max_in_flight, default_max_in_flight());
        assert_eq!(s.ack, AckMode::Auto);
        assert_eq!(s.compression, Compression::Gzip);
        assert_eq!(s.gzip_level, default_gzip_level());
        assert_eq!(s.ack_timeout, default_ack_timeout());
        assert_eq!(s.ack_poll_interval, default_ack_poll_interval());
        assert_eq!(s.request_timeout, default_request_timeout());
        assert!(!s.insecure_skip_verify);
        let mut issues = Vec::new();
        assert!(build(&cfg.sinks[0], &mut issues).is_some(), "{issues:?}");
    }
}
