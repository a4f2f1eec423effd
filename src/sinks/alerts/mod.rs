//! Alerts sink: sends a message for each journal event that an `[[alerts]]`
//! rule selects, to RingCentral SMS recipients, Team Messaging chats and
//! webhooks.
//!
//! Layout of the configuration (see docs/alerts.md):
//! - the `[[sinks]]` entry of kind `alerts` defines the channels
//!   (`[sinks.channels.<name>]`), the RingCentral credentials, the time zone,
//!   the message template and the category catalogue file;
//! - top-level `[[alerts]]` rules select events (categories and/or a
//!   `match` table) and name the channels they go to. `sinks::build_all`
//!   hands each alerts sink its rules (`attach_rules`); a rule names its
//!   sink with `sink = "..."` when there is more than one alerts sink.
//!
//! Delivery guarantees: the sink has its own journal cursor (the generic
//! `SinkWorker`). Each individual send (event seq + key, channel,
//! recipient) is recorded in the journal (`sink_state`) right after the
//! destination confirmed it and before the next send; on redelivery after
//! a crash or a retry, recorded sends are skipped. The one remaining
//! at-least-once window is a crash between the destination's confirmation
//! and that record (milliseconds): that one message may be sent again
//! (webhooks carry a stable `X-Trailkeep-Delivery` id for receivers that
//! want to drop it). A send the destination refuses for good (unknown chat,
//! from number not allowed) is recorded as failed, dead-lettered with the
//! reason and never blocks the other sends; a temporary failure (429 past
//! the retries, 5xx, network) lets the other sends of the batch go out and
//! then retries the batch, skipping what was already sent.

pub mod channels;
pub mod glob;
pub mod rules;
pub mod template;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use self::channels::{is_e164, Channel, ChannelKind, SendError, WebhookChannel};
use self::rules::{Catalogue, Rule};
use self::template::{fit_chars, fit_utf16, variables, Template, POST_LIMIT, SMS_LIMIT};
use super::{Batch, BatchLimits, Delivery, Sink, SinkContext, SinkError};
use crate::clients::ringcentral::{RcClient, RcCredentials, RcOptions};
use crate::config::{
    join_path, parse_settings, resolve_secret, Config, ConfigIssue, Secret, SecretRef, SinkEntry,
};
use crate::internal_events::{AlertChannelChecked, AlertSendOutcome, InternalEvent};
use crate::journal::{JournalError, SinkDeadLetter};
use crate::model::AuditEvent;
use crate::util::{rfc3339_ms, HumanDuration};

pub const KIND: &str = "alerts";

/// Keys `attach_rules` adds to an alerts sink entry's settings.
const RULES_KEY: &str = "__alerts";
const CATEGORIES_KEY: &str = "__alert_categories";

/// Most recipients per SMS channel and chats per Team Messaging channel
/// (what the seed's app allows).
pub const MAX_RECIPIENTS: usize = 5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    ringcentral: Option<RcSettings>,
    #[serde(default)]
    channels: BTreeMap<String, Value>,
    #[serde(default = "default_tz")]
    time_zone: String,
    #[serde(default)]
    template: Option<String>,
    #[serde(default = "default_opt_out")]
    sms_opt_out: String,
    #[serde(default)]
    categories_file: Option<PathBuf>,
    #[serde(default = "default_max_events")]
    max_events: usize,
    /// Events older than this (event time) are not alerted: a new sink on
    /// an old journal, or a source back-filling 180 days, must not text
    /// admins about last spring. "0s" = no limit.
    #[serde(default = "default_max_age")]
    max_age: HumanDuration,
    #[serde(default = "default_chat_page_size")]
    chat_page_size: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RcSettings {
    #[serde(default = "default_server")]
    server: String,
    client_id: String,
    client_secret: SecretRef,
    jwt: SecretRef,
    #[serde(default = "default_rc_timeout")]
    request_timeout: HumanDuration,
    #[serde(default = "default_rc_attempts")]
    max_attempts: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsSettings {
    from: String,
    to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatSettings {
    chats: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSettings {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_secret: Option<SecretRef>,
    #[serde(default)]
    secret: Option<SecretRef>,
    #[serde(default = "default_signature_header")]
    signature_header: String,
    #[serde(default = "default_hook_timeout")]
    timeout: HumanDuration,
    #[serde(default = "default_hook_attempts")]
    max_attempts: u32,
    #[serde(default = "yes")]
    include_event: bool,
}

fn default_tz() -> String {
    "UTC".into()
}
fn default_opt_out() -> String {
    template::DEFAULT_OPT_OUT.into()
}
fn default_max_events() -> usize {
    50
}
fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(86_400))
}
fn default_chat_page_size() -> u32 {
    250
}
fn default_server() -> String {
    "https://platform.ringcentral.com".into()
}
fn default_rc_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_rc_attempts() -> u32 {
    8
}
fn default_signature_header() -> String {
    "X-Trailkeep-Signature".into()
}
fn default_hook_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_hook_attempts() -> u32 {
    5
}
fn yes() -> bool {
    true
}

/// Gives an alerts sink entry the top-level `[[alerts]]` rules that belong
/// to it (and `[alert_categories]`), so `sinks::build` can build it from
/// the entry alone. Other entries are returned unchanged.
pub fn attach_rules<'a>(entry: &'a SinkEntry, cfg: &Config) -> Cow<'a, SinkEntry> {
    if entry.kind != KIND {
        return Cow::Borrowed(entry);
    }
    let alerts_sinks: Vec<&str> = cfg
        .sinks
        .iter()
        .filter(|s| s.kind == KIND && s.enabled)
        .map(|s| s.name.as_str())
        .collect();
    let mine: Vec<Value> = cfg
        .alerts
        .iter()
        .enumerate()
        .filter(|(_, r)| match rules::rule_sink(r) {
            Some(s) => s == entry.name,
            None => alerts_sinks.len() == 1,
        })
        .map(|(i, r)| json!({"index": i, "rule": r}))
        .collect();
    let mut e = entry.clone();
    e.settings.insert(RULES_KEY.into(), Value::Array(mine));
    if let Some(c) = cfg.extra.get("alert_categories") {
        e.settings.insert(CATEGORIES_KEY.into(), c.clone());
    }
    Cow::Owned(e)
}

/// Issues about where the rules go that no single sink build can see: a
/// rule naming no (or an unknown) alerts sink.
pub fn placement_issues(cfg: &Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let sinks: Vec<&str> = cfg
        .sinks
        .iter()
        .filter(|s| s.kind == KIND && s.enabled)
        .map(|s| s.name.as_str())
        .collect();
    for (i, r) in cfg.alerts.iter().enumerate() {
        let enabled = r.get("enabled").and_then(Value::as_bool).unwrap_or(true);
        if !enabled {
            continue;
        }
        match (rules::rule_sink(r), sinks.len()) {
            (Some(s), _) if !sinks.contains(&s) => issues.push(ConfigIssue::new(
                format!("alerts[{i}].sink"),
                format!(
                    "no enabled sink of kind `alerts` is named `{s}` (alerts sinks: {})",
                    if sinks.is_empty() { "none".into() } else { sinks.join(", ") }
                ),
            )),
            (Some(_), _) | (None, 1) => {}
            (None, 0) => issues.push(ConfigIssue::new(
                format!("alerts[{i}]"),
                "no enabled sink of kind `alerts` to send this rule's alerts (add a [[sinks]] entry with kind = \"alerts\" and its channels)",
            )),
            (None, _) => issues.push(ConfigIssue::new(
                format!("alerts[{i}].sink"),
                format!(
                    "missing: there are several alerts sinks ({}), say which one this rule uses",
                    sinks.join(", ")
                ),
            )),
        }
    }
    if let Some(v) = cfg.extra.get("alert_categories") {
        if !v.is_object() {
            issues.push(ConfigIssue::new(
                "alert_categories",
                "must be a table of [alert_categories.<name>] tables",
            ));
        }
    }
    issues
}

/// Validates every `[[alerts]]` rule, the category catalogues and the
/// alerts sinks' settings without resolving secrets or touching the
/// network. `sinks::build_all` already reports all of these; this is for
/// callers that want the check without building.
pub fn validate(cfg: &Config) -> Vec<ConfigIssue> {
    let mut issues = placement_issues(cfg);
    for entry in cfg.sinks.iter().filter(|s| s.kind == KIND && s.enabled) {
        let entry = attach_rules(entry, cfg);
        let _ = parse_all(&entry, &mut issues, false);
    }
    issues
}

/// Everything the build needs, parsed and checked.
struct Parsed {
    settings: Settings,
    channels: Vec<Channel>,
    rules: Vec<Rule>,
    template: Template,
    tz: Tz,
    /// (channel name, timeout) of each webhook.
    hook_timeouts: Vec<(String, Duration)>,
    rc: Option<RcCredentials>,
}

fn load_catalogue(
    path: &str,
    file: Option<&PathBuf>,
    extra: Option<&Value>,
    issues: &mut Vec<ConfigIssue>,
) -> Catalogue {
    let mut cat = match file {
        None => rules::parse_catalogue(
            rules::BUILTIN_CATEGORIES,
            "built-in alert-categories.toml",
            issues,
        ),
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => rules::parse_catalogue(&text, &p.display().to_string(), issues),
            Err(e) => {
                issues.push(ConfigIssue::new(
                    join_path(path, "categories_file"),
                    format!("cannot read {}: {e}", p.display()),
                ));
                Catalogue::new()
            }
        },
    };
    if let Some(Value::Object(m)) = extra {
        rules::add_categories(&mut cat, m.clone(), "alert_categories", issues);
    }
    cat
}

fn parse_channel(
    name: &str,
    value: &Value,
    prefix: &str,
    resolve: bool,
    issues: &mut Vec<ConfigIssue>,
) -> Option<(Channel, Option<Duration>)> {
    let Value::Object(map) = value else {
        issues.push(ConfigIssue::new(prefix, "must be a table"));
        return None;
    };
    let mut map = map.clone();
    let kind = match map.remove("type") {
        Some(Value::String(s)) => s,
        Some(_) => {
            issues.push(ConfigIssue::new(
                join_path(prefix, "type"),
                "must be a string",
            ));
            return None;
        }
        None => {
            issues.push(ConfigIssue::new(
                join_path(prefix, "type"),
                "missing (sms, team_messaging or webhook)",
            ));
            return None;
        }
    };
    let n = issues.len();
    let check_count = |key: &str, len: usize, issues: &mut Vec<ConfigIssue>| {
        if len == 0 || len > MAX_RECIPIENTS {
            issues.push(ConfigIssue::new(
                join_path(prefix, key),
                format!("needs 1 to {MAX_RECIPIENTS} entries, has {len}"),
            ));
        }
    };
    let out = match kind.as_str() {
        "sms" => {
            let s: SmsSettings = parse_section(prefix, map, issues)?;
            if !is_e164(&s.from) {
                issues.push(ConfigIssue::new(
                    join_path(prefix, "from"),
                    format!("`{}` is not an E.164 number like +16505550100", s.from),
                ));
            }
            check_count("to", s.to.len(), issues);
            let mut seen = HashSet::new();
            for (i, t) in s.to.iter().enumerate() {
                if !is_e164(t) {
                    issues.push(ConfigIssue::new(
                        format!("{}[{i}]", join_path(prefix, "to")),
                        format!("`{t}` is not an E.164 number like +16505550100"),
                    ));
                } else if !seen.insert(t) {
                    issues.push(ConfigIssue::new(
                        format!("{}[{i}]", join_path(prefix, "to")),
                        format!("`{t}` is listed twice"),
                    ));
                }
            }
            (
                Channel {
                    name: name.into(),
                    kind: ChannelKind::Sms {
                        from: s.from,
                        to: s.to,
                    },
                },
                None,
            )
        }
        "team_messaging" => {
            let s: ChatSettings = parse_section(prefix, map, issues)?;
            check_count("chats", s.chats.len(), issues);
            let mut seen = HashSet::new();
            for (i, c) in s.chats.iter().enumerate() {
                let ok = !c.is_empty()
                    && c.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
                if !ok {
                    issues.push(ConfigIssue::new(
                        format!("{}[{i}]", join_path(prefix, "chats")),
                        format!("`{c}` is not a chat id (digits, as the chat list API gives them)"),
                    ));
                } else if !seen.insert(c) {
                    issues.push(ConfigIssue::new(
                        format!("{}[{i}]", join_path(prefix, "chats")),
                        format!("`{c}` is listed twice"),
                    ));
                }
            }
            (
                Channel {
                    name: name.into(),
                    kind: ChannelKind::TeamMessaging { chats: s.chats },
                },
                None,
            )
        }
        "webhook" => {
            let s: WebhookSettings = parse_section(prefix, map, issues)?;
            let url = match (&s.url, &s.url_secret) {
                (Some(u), None) => Some(Secret::new(u.clone())),
                (None, Some(r)) if resolve => {
                    resolve_secret(&join_path(prefix, "url_secret"), r, issues)
                }
                (None, Some(_)) => Some(Secret::new("https://unresolved.invalid/")),
                _ => {
                    issues.push(ConfigIssue::new(
                        join_path(prefix, "url"),
                        "give either `url` or `url_secret` (for hook URLs that are secrets, like Slack's)",
                    ));
                    None
                }
            };
            let display = url
                .as_ref()
                .and_then(|u| match reqwest::Url::parse(u.expose()) {
                    Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => {
                        let port = p.port().map(|x| format!(":{x}")).unwrap_or_default();
                        Some(format!(
                            "{}://{}{port}",
                            p.scheme(),
                            p.host_str().unwrap_or_default()
                        ))
                    }
                    _ => {
                        issues.push(ConfigIssue::new(
                            join_path(prefix, if s.url.is_some() { "url" } else { "url_secret" }),
                            "must be an http:// or https:// URL",
                        ));
                        None
                    }
                });
            let secret = match (&s.secret, resolve) {
                (Some(r), true) => resolve_secret(&join_path(prefix, "secret"), r, issues),
                _ => None,
            };
            if reqwest::header::HeaderName::from_bytes(s.signature_header.as_bytes()).is_err() {
                issues.push(ConfigIssue::new(
                    join_path(prefix, "signature_header"),
                    "is not a valid HTTP header name",
                ));
            }
            if s.max_attempts == 0 {
                issues.push(ConfigIssue::new(
                    join_path(prefix, "max_attempts"),
                    "must be at least 1",
                ));
            }
            let (url, display) = (url?, display?);
            (
                Channel {
                    name: name.into(),
                    kind: ChannelKind::Webhook(WebhookChannel {
                        url,
                        display,
                        secret,
                        signature_header: s.signature_header,
                        max_attempts: s.max_attempts,
                        include_event: s.include_event,
                    }),
                },
                Some(s.timeout.0),
            )
        }
        other => {
            issues.push(ConfigIssue::new(
                join_path(prefix, "type"),
                format!("unknown channel type `{other}` (sms, team_messaging or webhook)"),
            ));
            return None;
        }
    };
    (issues.len() == n).then_some(out)
}

fn parse_section<T: serde::de::DeserializeOwned>(
    prefix: &str,
    map: Map<String, Value>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    crate::config::parse_section(prefix, Value::Object(map), issues)
}

fn parse_all(entry: &SinkEntry, issues: &mut Vec<ConfigIssue>, resolve: bool) -> Option<Parsed> {
    let path = entry.path.as_str();
    let mut settings = entry.settings.clone();
    let rules_raw = settings.remove(RULES_KEY);
    let cats_raw = settings.remove(CATEGORIES_KEY);
    let start = issues.len();
    let s: Settings = parse_settings(path, &settings, issues)?;
    let tz: Tz = match s.time_zone.parse() {
        Ok(tz) => tz,
        Err(_) => {
            issues.push(ConfigIssue::new(
                join_path(path, "time_zone"),
                format!(
                    "unknown time zone `{}` (IANA names like America/New_York)",
                    s.time_zone
                ),
            ));
            Tz::UTC
        }
    };
    let template = match &s.template {
        None => Template::default(),
        Some(t) => Template::parse(t).unwrap_or_else(|e| {
            issues.push(ConfigIssue::new(join_path(path, "template"), e));
            Template::default()
        }),
    };
    if s.sms_opt_out.encode_utf16().count() > 200 {
        issues.push(ConfigIssue::new(
            join_path(path, "sms_opt_out"),
            "must be at most 200 UTF-16 units (it is kept in every 1000-unit SMS)",
        ));
    }
    if s.max_events == 0 {
        issues.push(ConfigIssue::new(
            join_path(path, "max_events"),
            "must be at least 1",
        ));
    }
    if !(1..=250).contains(&s.chat_page_size) {
        issues.push(ConfigIssue::new(
            join_path(path, "chat_page_size"),
            "must be 1 to 250 (the chat list API's recordCount limit)",
        ));
    }
    let mut channels = Vec::new();
    let mut hook_timeouts = Vec::new();
    for (name, v) in &s.channels {
        let prefix = join_path(&join_path(path, "channels"), name);
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            issues.push(ConfigIssue::new(
                prefix.clone(),
                "channel names use letters, digits, `-` and `_`",
            ));
            continue;
        }
        if let Some((c, timeout)) = parse_channel(name, v, &prefix, resolve, issues) {
            if let Some(t) = timeout {
                hook_timeouts.push((name.clone(), t));
            }
            channels.push(c);
        }
    }
    if s.channels.is_empty() {
        issues.push(ConfigIssue::new(
            join_path(path, "channels"),
            "no channel defined (add [sinks.channels.<name>] tables of type sms, team_messaging or webhook)",
        ));
    }
    let needs_rc = channels.iter().any(Channel::uses_ringcentral)
        || s.channels.values().any(|v| {
            matches!(
                v.get("type").and_then(Value::as_str),
                Some("sms" | "team_messaging")
            )
        });
    let rc = match (&s.ringcentral, needs_rc) {
        (None, true) => {
            issues.push(ConfigIssue::new(
                join_path(path, "ringcentral"),
                "missing: SMS and Team Messaging channels need [sinks.ringcentral] credentials (server, client_id, client_secret, jwt)",
            ));
            None
        }
        (Some(r), _) => {
            let p = join_path(path, "ringcentral");
            if !(r.server.starts_with("https://") || r.server.starts_with("http://")) {
                issues.push(ConfigIssue::new(
                    join_path(&p, "server"),
                    "must be an http(s) URL",
                ));
            }
            if r.max_attempts == 0 {
                issues.push(ConfigIssue::new(
                    join_path(&p, "max_attempts"),
                    "must be at least 1",
                ));
            }
            if resolve {
                let secret =
                    resolve_secret(&join_path(&p, "client_secret"), &r.client_secret, issues);
                let jwt = resolve_secret(&join_path(&p, "jwt"), &r.jwt, issues);
                match (secret, jwt) {
                    (Some(client_secret), Some(jwt)) => Some(RcCredentials {
                        server: r.server.clone(),
                        client_id: r.client_id.clone(),
                        client_secret,
                        jwt,
                    }),
                    _ => None,
                }
            } else {
                None
            }
        }
        (None, false) => None,
    };
    let catalogue = load_catalogue(path, s.categories_file.as_ref(), cats_raw.as_ref(), issues);
    let channel_names: Vec<String> = s.channels.keys().cloned().collect();
    let mut rules_out = Vec::new();
    let raw: Vec<Value> = match rules_raw {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let any_rule = !raw.is_empty();
    for item in raw {
        let index = item.get("index").and_then(Value::as_u64).unwrap_or(0);
        let rule = item.get("rule").cloned().unwrap_or(Value::Null);
        // None for a disabled rule (no issue) or an invalid one (issues).
        if let Some(r) = rules::parse_rule(
            rule,
            &format!("alerts[{index}]"),
            &catalogue,
            Some(&channel_names),
            issues,
        ) {
            rules_out.push(r);
        }
    }
    // Every rule disabled is allowed (alerts paused); none at all is a
    // mistake.
    if !any_rule && issues.len() == start {
        issues.push(ConfigIssue::new(
            path,
            format!(
                "no [[alerts]] rule sends to the alerts sink `{}` (add [[alerts]] tables naming its channels)",
                entry.name
            ),
        ));
    }
    if issues.len() > start {
        return None;
    }
    Some(Parsed {
        settings: s,
        channels,
        rules: rules_out,
        template,
        tz,
        hook_timeouts,
        rc,
    })
}

pub fn build(entry: &SinkEntry, issues: &mut Vec<ConfigIssue>) -> Option<Arc<dyn Sink>> {
    let p = parse_all(entry, issues, true)?;
    let rc = match p.rc {
        Some(creds) => {
            let opts = RcOptions {
                request_timeout: p
                    .settings
                    .ringcentral
                    .as_ref()
                    .map_or(Duration::from_secs(30), |r| r.request_timeout.0),
                max_attempts: p
                    .settings
                    .ringcentral
                    .as_ref()
                    .map_or(8, |r| r.max_attempts),
                access_token_ttl: None,
            };
            match RcClient::new("ringcentral-alerts", &entry.name, creds, opts) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    issues.push(ConfigIssue::new(
                        join_path(&entry.path, "ringcentral"),
                        e.to_string(),
                    ));
                    return None;
                }
            }
        }
        None => None,
    };
    let mut http = HashMap::new();
    for (name, timeout) in &p.hook_timeouts {
        match crate::net::http::client(*timeout) {
            Ok(c) => {
                http.insert(name.clone(), c);
            }
            Err(e) => {
                issues.push(ConfigIssue::new(
                    join_path(&join_path(&entry.path, "channels"), name),
                    format!("cannot build HTTP client: {e}"),
                ));
                return None;
            }
        }
    }
    let inner = Inner {
        name: entry.name.clone(),
        rc,
        channels: p
            .channels
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect(),
        rules: p.rules,
        template: p.template,
        tz: p.tz,
        opt_out: p.settings.sms_opt_out,
        max_events: p.settings.max_events,
        max_age: p.settings.max_age.0,
        chat_page_size: p.settings.chat_page_size,
        http,
        problems: Mutex::new(Vec::new()),
    };
    Some(Arc::new(AlertsSink {
        inner: Arc::new(inner),
        inflight: Arc::new(tokio::sync::Mutex::new(())),
    }))
}

/// The alerts sink. Each send runs in its own task holding `inflight`:
/// if the worker drops a delivery mid-send (shutdown), the send still
/// completes and is recorded, and the next delivery waits for it before
/// looking at the records, so a graceful restart never sends twice.
pub struct AlertsSink {
    inner: Arc<Inner>,
    inflight: Arc<tokio::sync::Mutex<()>>,
}

impl std::ops::Deref for AlertsSink {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

pub struct Inner {
    name: String,
    rc: Option<Arc<RcClient>>,
    channels: BTreeMap<String, Channel>,
    rules: Vec<Rule>,
    template: Template,
    tz: Tz,
    opt_out: String,
    max_events: usize,
    max_age: Duration,
    chat_page_size: u32,
    http: HashMap<String, reqwest::Client>,
    problems: Mutex<Vec<String>>,
}

/// One message to one recipient.
#[derive(Clone, Debug)]
pub struct Planned {
    pub channel: Channel,
    pub recipient: String,
    pub text: String,
    pub rule: String,
    pub category: Option<String>,
}

const SENT_PREFIX: &str = "sent/";

/// Journal state key of one send: ordered by seq so delivered ones can be
/// pruned once the cursor has passed them.
fn state_key(seq: u64, channel: &str, recipient: &str) -> String {
    format!("{SENT_PREFIX}{seq:020}/{channel}/{recipient}")
}

fn seq_of_key(key: &str) -> Option<u64> {
    key.strip_prefix(SENT_PREFIX)?.get(..20)?.parse().ok()
}

/// A stable id of one send, for receivers that de-duplicate.
pub fn delivery_id(event_key: &str, channel: &str, recipient: &str) -> String {
    let mut h = Sha256::new();
    for p in [event_key, channel, recipient] {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

fn journal_err(e: JournalError) -> SinkError {
    SinkError::retryable("journal", e.to_string())
}

impl Inner {
    /// The sends an event calls for: every matching rule's channels and
    /// recipients, each (channel, recipient) once (the first matching rule
    /// words the message).
    pub fn plan(&self, ev: &AuditEvent) -> Vec<Planned> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for rule in &self.rules {
            let Some(m) = rule.matches(ev) else { continue };
            let vars = variables(ev, &m, self.tz);
            let text = rule
                .template
                .as_ref()
                .unwrap_or(&self.template)
                .render(&vars);
            for cname in &rule.channels {
                let Some(channel) = self.channels.get(cname) else {
                    continue;
                };
                for r in channel.recipients() {
                    if seen.insert((cname.clone(), r.clone())) {
                        out.push(Planned {
                            channel: channel.clone(),
                            recipient: r,
                            text: text.clone(),
                            rule: rule.name.clone(),
                            category: m.category.map(|c| c.name.clone()),
                        });
                    }
                }
            }
        }
        out
    }

    /// The exact text a channel sends (SMS: 1000 UTF-16 units with the
    /// opt-out line; posts: 10,000 characters).
    pub fn channel_text(&self, channel: &Channel, text: &str) -> String {
        match channel.kind {
            ChannelKind::Sms { .. } => fit_utf16(text, &self.opt_out, SMS_LIMIT),
            ChannelKind::TeamMessaging { .. } => fit_chars(text, POST_LIMIT),
            ChannelKind::Webhook(_) => text.to_string(),
        }
    }

    async fn send(&self, p: &Planned, ev: &AuditEvent) -> Result<String, SendError> {
        let text = self.channel_text(&p.channel, &p.text);
        let rc = || {
            self.rc
                .as_deref()
                .ok_or_else(|| SendError::Permanent("no RingCentral credentials configured".into()))
        };
        match &p.channel.kind {
            ChannelKind::Sms { from, .. } => {
                channels::send_sms(rc()?, from, &p.recipient, &text).await
            }
            ChannelKind::TeamMessaging { .. } => {
                channels::post_to_chat(rc()?, &p.recipient, &text).await
            }
            ChannelKind::Webhook(hook) => {
                let Some(http) = self.http.get(&p.channel.name) else {
                    return Err(SendError::Permanent("webhook client missing".into()));
                };
                let mut body = json!({ "text": text });
                if hook.include_event {
                    body["trailkeep"] = json!({
                        "event_key": ev.key,
                        "rule": p.rule,
                        "category": p.category,
                        "source": ev.source,
                        "tenant": ev.tenant,
                        "stream": ev.stream,
                        "time": rfc3339_ms(ev.time),
                        "action": ev.action,
                        "action_label": ev.action_label,
                        "kind": ev.kind,
                        "actor": ev.actor,
                        "target": ev.target,
                        "changes": ev.changes,
                    });
                }
                let id = delivery_id(&ev.key, &p.channel.name, &p.recipient);
                channels::send_webhook(http, hook, &body, &id, &ev.key).await
            }
        }
    }

    /// Drops the send records of events the cursor has passed.
    fn prune_sent(&self, ctx: &SinkContext) -> Result<(), SinkError> {
        let cursor = ctx.journal.sink_cursor(&self.name).map_err(journal_err)?;
        for (key, _) in ctx
            .journal
            .sink_state_prefix(&self.name, SENT_PREFIX)
            .map_err(journal_err)?
        {
            if seq_of_key(&key).is_some_and(|s| s <= cursor) {
                ctx.journal
                    .delete_sink_state(&self.name, &key)
                    .map_err(journal_err)?;
            }
        }
        Ok(())
    }

    /// Checks the channels against RingCentral: the SMS from numbers are
    /// the extension's and SMS-capable, the chats exist. Returns the
    /// problems found (also logged and put in a metric).
    pub async fn check_channels(&self) -> Result<Vec<String>, SinkError> {
        let mut problems = Vec::new();
        let Some(rc) = &self.rc else {
            return Ok(problems);
        };
        let to_sink = |e: SendError| match e {
            SendError::Auth(r) => SinkError::halt("auth", r),
            SendError::Permanent(r) => SinkError::halt("channel_check", r),
            SendError::Transient {
                reason,
                retry_after,
            } => SinkError::Retryable {
                code: "channel_check".into(),
                reason,
                retry_after,
            },
        };
        rc.access_token().await.map_err(|e| to_sink(e.into()))?;
        let sms: Vec<&Channel> = self
            .channels
            .values()
            .filter(|c| matches!(c.kind, ChannelKind::Sms { .. }))
            .collect();
        let chats: Vec<&Channel> = self
            .channels
            .values()
            .filter(|c| matches!(c.kind, ChannelKind::TeamMessaging { .. }))
            .collect();
        if !sms.is_empty() {
            let numbers = channels::phone_numbers(rc).await.map_err(to_sink)?;
            for c in sms {
                let ChannelKind::Sms { from, .. } = &c.kind else {
                    continue;
                };
                let problem = match numbers.iter().find(|(n, _)| n == from) {
                    None => Some(format!(
                        "SMS channel `{}`: from number {from} is not one of this extension's numbers ({} listed); every SMS would be refused (MSG-242)",
                        c.name,
                        numbers.len()
                    )),
                    Some((_, f)) if !f.iter().any(|x| x == "SmsSender") => Some(format!(
                        "SMS channel `{}`: from number {from} is not SMS-capable (its features: {}); every SMS would be refused (MSG-304). Pick a number with the SmsSender feature",
                        c.name,
                        if f.is_empty() { "none".into() } else { f.join(", ") }
                    )),
                    Some(_) => None,
                };
                AlertChannelChecked {
                    sink: &self.name,
                    channel: &c.name,
                    problem: problem.as_deref(),
                }
                .emit();
                problems.extend(problem);
            }
        }
        if !chats.is_empty() {
            let known = channels::chat_ids(rc, self.chat_page_size)
                .await
                .map_err(to_sink)?;
            for c in chats {
                let ChannelKind::TeamMessaging { chats } = &c.kind else {
                    continue;
                };
                let missing: Vec<&str> = chats
                    .iter()
                    .filter(|id| !known.iter().any(|(k, _)| k == *id))
                    .map(String::as_str)
                    .collect();
                let problem = (!missing.is_empty()).then(|| {
                    format!(
                        "Team Messaging channel `{}`: chat(s) {} not found among the {} chats this user can see; posts to them will fail (other chats are still posted)",
                        c.name,
                        missing.join(", "),
                        known.len()
                    )
                });
                AlertChannelChecked {
                    sink: &self.name,
                    channel: &c.name,
                    problem: problem.as_deref(),
                }
                .emit();
                problems.extend(problem);
            }
        }
        Ok(problems)
    }

    /// Problems found by the last start-up check.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Sink for AlertsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.max_events,
            max_bytes: 4 * 1024 * 1024,
            max_in_flight: 1,
            ..BatchLimits::default()
        }
    }

    async fn start(&self, ctx: &SinkContext) -> Result<(), SinkError> {
        self.prune_sent(ctx)?;
        let problems = self.check_channels().await?;
        *self.problems.lock().unwrap_or_else(|p| p.into_inner()) = problems;
        Ok(())
    }

    async fn deliver(&self, batch: Batch, ctx: &SinkContext) -> Result<Delivery, SinkError> {
        let batch = &batch;
        self.prune_sent(ctx)?;
        let mut dead = Vec::new();
        let mut retry: Option<(String, Option<Duration>)> = None;
        // Chronological within the batch (newest-first sources commit
        // pages newest first); records are keyed by seq, so order does not
        // matter for crash safety.
        let mut records: Vec<_> = batch.records.iter().collect();
        records.sort_by_key(|r| (r.time_ms, r.seq));
        let now = Utc::now();
        for rec in records {
            let ev = match rec.event() {
                Ok(e) => e,
                Err(e) => {
                    dead.push(SinkDeadLetter {
                        seq: rec.seq,
                        key: rec.key.clone(),
                        reason: format!("invalid_event: stored payload is not an event: {e}"),
                    });
                    continue;
                }
            };
            if too_old(ev.time, now, self.max_age) {
                AlertSendOutcome {
                    sink: &self.name,
                    channel: "",
                    outcome: "too_old",
                    event_key: &ev.key,
                    error: None,
                }
                .emit();
                continue;
            }
            let mut failed = Vec::new();
            let ev = Arc::new(ev);
            for p in self.plan(&ev) {
                let key = state_key(rec.seq, &p.channel.name, &p.recipient);
                let what = format!(
                    "{} `{}` {}",
                    p.channel.type_name(),
                    p.channel.name,
                    recipient_label(&p)
                );
                // Waits for a send left running by a delivery the worker
                // dropped (shutdown), so its record is seen below.
                let guard = self.inflight.clone().lock_owned().await;
                if let Some(done) = ctx
                    .journal
                    .sink_state(&self.name, &key)
                    .map_err(journal_err)?
                {
                    let v: Value = serde_json::from_str(&done).unwrap_or(Value::Null);
                    if v.get("outcome").and_then(Value::as_str) == Some("failed") {
                        let err = v.get("error").and_then(Value::as_str).unwrap_or("failed");
                        failed.push(format!("{what}: {err}"));
                    }
                    AlertSendOutcome {
                        sink: &self.name,
                        channel: &p.channel.name,
                        outcome: "skipped",
                        event_key: &ev.key,
                        error: None,
                    }
                    .emit();
                    continue;
                }
                let task = tokio::spawn(send_and_record(
                    self.inner.clone(),
                    ctx.journal.clone(),
                    ev.clone(),
                    p,
                    key,
                    guard,
                ));
                let result = task.await.map_err(|e| {
                    SinkError::retryable("alert_task", format!("send task failed: {e}"))
                })?;
                match result? {
                    Ok(_) => {}
                    Err(SendError::Permanent(reason)) => failed.push(format!("{what}: {reason}")),
                    Err(SendError::Transient {
                        reason,
                        retry_after,
                    }) => {
                        let ra = retry.as_ref().and_then(|r| r.1).max(retry_after);
                        retry = Some((format!("{what}: {reason}"), ra));
                    }
                    Err(SendError::Auth(reason)) => {
                        return Err(SinkError::halt("auth", reason));
                    }
                }
            }
            if !failed.is_empty() {
                dead.push(SinkDeadLetter {
                    seq: rec.seq,
                    key: ev.key.clone(),
                    reason: format!("alert_send_failed: {}", failed.join("; ")),
                });
            }
        }
        if let Some((reason, retry_after)) = retry {
            // Sends already made are recorded: the retry skips them.
            return Err(SinkError::Retryable {
                code: "alert_channel_unavailable".into(),
                reason,
                retry_after,
            });
        }
        Ok(Delivery { dead })
    }

    async fn check_connection(&self) -> Result<String, SinkError> {
        let problems = self.check_channels().await?;
        if !problems.is_empty() {
            return Err(SinkError::halt("channel_check", problems.join("; ")));
        }
        let count = |t: &str| {
            self.channels
                .values()
                .filter(|c| c.type_name() == t)
                .count()
        };
        Ok(format!(
            "{} rule(s); {} SMS channel(s) with SMS-capable from numbers, {} Team Messaging channel(s) with every chat found, {} webhook(s) (not called)",
            self.rules.len(),
            count("sms"),
            count("team_messaging"),
            count("webhook")
        ))
    }
}

/// Sends one message and records the outcome in the journal (sent, or
/// failed for good) before releasing `inflight`. Runs as its own task so a
/// dropped delivery cannot interrupt it between the send and the record.
async fn send_and_record(
    inner: Arc<Inner>,
    journal: crate::journal::Journal,
    ev: Arc<AuditEvent>,
    p: Planned,
    key: String,
    inflight: tokio::sync::OwnedMutexGuard<()>,
) -> Result<Result<String, SendError>, SinkError> {
    let result = inner.send(&p, &ev).await;
    let cname = p.channel.name.as_str();
    let record = |outcome: &str, detail: &str| {
        let mut v = json!({
            "event": ev.key, "channel": cname, "type": p.channel.type_name(),
            "outcome": outcome, "at": rfc3339_ms(Utc::now()),
        });
        v[if outcome == "failed" { "error" } else { "id" }] = json!(detail);
        journal
            .set_sink_state(&inner.name, &key, &v.to_string())
            .map_err(journal_err)
    };
    let (outcome, error) = match &result {
        Ok(id) => {
            record("sent", id)?;
            ("sent", None)
        }
        Err(SendError::Permanent(reason)) => {
            record("failed", reason)?;
            ("failed", Some(reason.as_str()))
        }
        Err(SendError::Transient { reason, .. }) => ("retry", Some(reason.as_str())),
        Err(SendError::Auth(reason)) => ("retry", Some(reason.as_str())),
    };
    AlertSendOutcome {
        sink: &inner.name,
        channel: cname,
        outcome,
        event_key: &ev.key,
        error,
    }
    .emit();
    drop(inflight);
    Ok(result)
}

/// Whether an event is past `max_age` (zero = no limit).
pub fn too_old(time: chrono::DateTime<Utc>, now: chrono::DateTime<Utc>, max_age: Duration) -> bool {
    !max_age.is_zero() && (now - time).to_std().is_ok_and(|age| age > max_age)
}

/// How a recipient appears in errors and dead letters: chats by id,
/// webhooks by host; phone numbers only by their last 4 digits (personal
/// data).
fn recipient_label(p: &Planned) -> String {
    match p.channel.kind {
        ChannelKind::Sms { .. } => {
            let tail: String = p
                .recipient
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("to …{tail}")
        }
        ChannelKind::TeamMessaging { .. } => format!("chat {}", p.recipient),
        ChannelKind::Webhook(_) => p.recipient.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_toml_str(&format!("[journal]\npath = \"/tmp/x.db\"\n{text}")).expect("parses")
    }

    #[test]
    fn validate_names_misplaced_rules_and_bad_channels() {
        let c = cfg(r#"
[[sinks]]
kind = "alerts"
name = "a"
time_zone = "Mars/Olympus"
[sinks.channels.sms]
type = "sms"
from = "6505550100"
to = ["+14155550123", "+14155550123", "+1", "+2", "+3", "+4"]
[sinks.channels.hook]
type = "webhook"
url = "ftp://example.com/x"

[[alerts]]
name = "r"
categories = "rc_user_info_email"
channels = ["hook"]

[[alerts]]
name = "s"
sink = "b"
categories = "rc_user_info_email"
channels = ["hook"]
"#);
        let all: Vec<String> = validate(&c).iter().map(|i| i.to_string()).collect();
        let all = all.join("\n");
        for needle in [
            "alerts[1].sink: no enabled sink of kind `alerts` is named `b`",
            "sinks[0].time_zone: unknown time zone `Mars/Olympus`",
            "sinks[0].channels.sms.from: `6505550100` is not an E.164 number",
            "sinks[0].channels.sms.to: needs 1 to 5 entries, has 6",
            "sinks[0].channels.sms.to[1]: `+14155550123` is listed twice",
            "sinks[0].channels.sms.to[2]: `+1` is not an E.164 number",
            "sinks[0].channels.hook.url: must be an http:// or https:// URL",
            "sinks[0].ringcentral: missing",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
    }

    #[test]
    fn the_example_config_is_valid() {
        let c = cfg(include_str!("../../../config/examples/alerts.toml"));
        let issues = validate(&c);
        assert!(issues.is_empty(), "{issues:?}");
        let entry = attach_rules(&c.sinks[0], &c);
        let mut issues = Vec::new();
        let p = parse_all(&entry, &mut issues, false).expect("parses");
        assert_eq!(p.rules.len(), 3);
        assert_eq!(p.channels.len(), 3);
    }

    #[test]
    fn rules_without_an_alerts_sink_are_reported() {
        let c = cfg(r#"
[[alerts]]
name = "r"
categories = "rc_user_info_email"
channels = ["hook"]
"#);
        let all: Vec<String> = validate(&c).iter().map(|i| i.to_string()).collect();
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(
            all[0].starts_with("alerts[0]: no enabled sink of kind `alerts`"),
            "{all:?}"
        );
    }

    #[test]
    fn max_age() {
        let now = Utc::now();
        let day = Duration::from_secs(86_400);
        assert!(too_old(now - chrono::Duration::days(2), now, day));
        assert!(!too_old(now - chrono::Duration::hours(2), now, day));
        assert!(!too_old(now + chrono::Duration::hours(2), now, day));
        assert!(!too_old(
            now - chrono::Duration::days(400),
            now,
            Duration::ZERO
        ));
    }

    #[test]
    fn state_keys_sort_and_parse() {
        let k = state_key(42, "sms", "+16505550100");
        assert_eq!(seq_of_key(&k), Some(42));
        assert!(state_key(9, "a", "b") < state_key(10, "a", "b"));
    }
}
