//! RingCentral Audit Trail source: one stream per account, read with
//! `POST /restapi/v1.0/account/{accountId}/audit-trail/search` (Heavy
//! group) in windows of up to the whole retention horizon, pages of up to
//! 1,000 records.

mod lenient;
mod normalize;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use lenient::RawList;

use crate::clients::ringcentral::{Group, RcClient, RcCredentials, RcError, RcOptions};
use crate::config::{parse_settings, resolve_secret, ConfigIssue, SecretRef, SourceEntry};
use crate::model::StreamId;
use crate::sources::{Page, Source, SourceError, StreamLimits, StreamSource, Window};
use crate::util::{rfc3339_ms, HumanDuration};

pub use normalize::normalize;

/// The API keeps 180 days...
pub const HORIZON: Duration = Duration::from_secs(180 * 86_400);
/// ...and at most the last 10,000 records.
pub const RECORD_CAP: u64 = 10_000;
pub const STREAM: &str = "audit-trail";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_server")]
    server: String,
    client_id: String,
    client_secret: SecretRef,
    jwt: SecretRef,
    #[serde(default = "default_account")]
    account_id: String,
    #[serde(default = "default_per_page")]
    per_page: u32,
    #[serde(default)]
    action_ids: Vec<String>,
    #[serde(default)]
    exclude_action_ids: Vec<String>,
    #[serde(default = "default_timeout")]
    request_timeout: HumanDuration,
    #[serde(default)]
    access_token_ttl: Option<u64>,
    /// The API's record cap (10,000). Only simulators differ; 0 = none.
    #[serde(default = "default_cap")]
    record_cap: u64,
}

fn default_cap() -> u64 {
    RECORD_CAP
}

fn default_server() -> String {
    "https://platform.ringcentral.com".into()
}
fn default_account() -> String {
    "~".into()
}
fn default_per_page() -> u32 {
    1_000
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

pub fn build(entry: &SourceEntry, issues: &mut Vec<ConfigIssue>) -> Option<Arc<dyn Source>> {
    let p = &entry.path;
    let s: Settings = parse_settings(p, &entry.settings, issues)?;
    let before = issues.len();
    if !(s.server.starts_with("https://") || s.server.starts_with("http://")) {
        issues.push(ConfigIssue::new(
            format!("{p}.server"),
            format!("`{}` is not an http(s) URL", s.server),
        ));
    }
    if s.per_page == 0 || s.per_page > 1_000 {
        issues.push(ConfigIssue::new(
            format!("{p}.per_page"),
            format!(
                "{} is out of range (1-1000, the API's page limit)",
                s.per_page
            ),
        ));
    }
    if let Some(ttl) = s.access_token_ttl {
        if !(600..=3600).contains(&ttl) {
            issues.push(ConfigIssue::new(
                format!("{p}.access_token_ttl"),
                "must be 600-3600 seconds",
            ));
        }
    }
    if s.client_id.trim().is_empty() {
        issues.push(ConfigIssue::new(
            format!("{p}.client_id"),
            "must not be empty",
        ));
    }
    let secret = resolve_secret(&format!("{p}.client_secret"), &s.client_secret, issues);
    let jwt = resolve_secret(&format!("{p}.jwt"), &s.jwt, issues);
    if issues.len() > before {
        return None;
    }
    let (secret, jwt) = (secret?, jwt?);
    let creds = RcCredentials {
        server: s.server.clone(),
        client_id: s.client_id.clone(),
        client_secret: secret,
        jwt,
    };
    let opts = RcOptions {
        request_timeout: s.request_timeout.0,
        access_token_ttl: s.access_token_ttl,
        ..RcOptions::default()
    };
    let client = match RcClient::new("ringcentral", &entry.name, creds, opts) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            issues.push(ConfigIssue::new(p.clone(), e.to_string()));
            return None;
        }
    };
    let record_cap = (s.record_cap > 0).then_some(s.record_cap);
    Some(Arc::new(RingCentralSource::new(
        &entry.name,
        client,
        s.account_id,
        s.per_page,
        s.action_ids,
        s.exclude_action_ids,
        record_cap,
    )))
}

pub struct RingCentralSource {
    name: String,
    client: Arc<RcClient>,
    stream: Arc<AuditTrailStream>,
}

impl RingCentralSource {
    pub fn new(
        name: &str,
        client: Arc<RcClient>,
        account_id: String,
        per_page: u32,
        action_ids: Vec<String>,
        exclude_action_ids: Vec<String>,
        record_cap: Option<u64>,
    ) -> Self {
        let stream = Arc::new(AuditTrailStream {
            id: StreamId::new("ringcentral", name, STREAM),
            client: client.clone(),
            account_id,
            per_page: per_page.clamp(1, 1_000),
            action_ids,
            exclude_action_ids,
            record_cap,
        });
        RingCentralSource {
            name: name.to_string(),
            client,
            stream,
        }
    }
}

#[async_trait]
impl Source for RingCentralSource {
    fn kind(&self) -> &'static str {
        "ringcentral"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn streams(&self) -> Vec<Arc<dyn StreamSource>> {
        vec![self.stream.clone()]
    }

    async fn check_connection(&self) -> Result<String, SourceError> {
        self.client.access_token().await.map_err(to_source_error)?;
        Ok(format!("authenticated at {}", self.client.server()))
    }
}

pub struct AuditTrailStream {
    id: StreamId,
    client: Arc<RcClient>,
    account_id: String,
    per_page: u32,
    action_ids: Vec<String>,
    exclude_action_ids: Vec<String>,
    record_cap: Option<u64>,
}

fn to_source_error(e: RcError) -> SourceError {
    match e {
        RcError::Auth(m) => SourceError::Auth(m),
        RcError::Rejected {
            status,
            code,
            message,
            method,
            path,
        } => SourceError::Rejected(format!(
            "{method} {path} answered {status} {code}: {message}"
        )),
        RcError::Transient(m) => SourceError::Transient(m),
        RcError::Malformed(m) => SourceError::Malformed(m),
    }
}

#[async_trait]
impl StreamSource for AuditTrailStream {
    fn id(&self) -> &StreamId {
        &self.id
    }

    fn limits(&self) -> StreamLimits {
        // One window may span the whole horizon: the 10,000-record cap
        // bounds it anyway, and fewer windows mean fewer Heavy requests.
        StreamLimits {
            max_window: HORIZON,
            horizon: Some(HORIZON),
            record_cap: self.record_cap,
        }
    }

    async fn fetch_page(&self, window: &Window, cursor: Option<&str>) -> Result<Page, SourceError> {
        let page_no: u64 = match cursor {
            None => 1,
            Some(c) => c.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                SourceError::Malformed(format!("saved cursor `{c}` is not a page number"))
            })?,
        };
        let mut body = json!({
            "eventTimeFrom": rfc3339_ms(window.from),
            "eventTimeTo": rfc3339_ms(window.to),
            "page": page_no,
            "perPage": self.per_page,
        });
        if !self.action_ids.is_empty() {
            body["actionIds"] = json!(self.action_ids);
        }
        if !self.exclude_action_ids.is_empty() {
            body["excludeActionIds"] = json!(self.exclude_action_ids);
        }
        let path = format!(
            "/restapi/v1.0/account/{}/audit-trail/search",
            self.account_id
        );
        let (_, resp) = self
            .client
            .call_bytes(
                Group::Heavy,
                Method::POST,
                &path,
                &[],
                Some(&body),
                Some(&self.id),
            )
            .await
            .map_err(to_source_error)?;
        parse_page(&resp, &self.id, page_no, self.per_page, window)
    }
}

/// The parts of a search response the source reads; records stay JSON text.
#[derive(Deserialize)]
struct SearchResponse<'a> {
    #[serde(borrow, default)]
    records: RawList<'a>,
    #[serde(borrow, default)]
    paging: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Paging {
    total: Option<Value>,
    total_found: Option<Value>,
}

/// Turns one search response body into a page. Records that cannot be
/// normalised are rejected one by one; a response without `records` is
/// malformed as a whole.
pub fn parse_page(
    body: &[u8],
    id: &StreamId,
    page_no: u64,
    per_page: u32,
    window: &Window,
) -> Result<Page, SourceError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| SourceError::Malformed(format!("search response is not UTF-8: {e}")))?;
    // (Checked first: serde would also accept a struct written as an array.)
    if !text.trim_start().starts_with('{') {
        return Err(SourceError::Malformed(
            "search response is not a JSON object".into(),
        ));
    }
    let resp: SearchResponse<'_> = serde_json::from_str(text).map_err(|e| {
        SourceError::Malformed(format!("search response is not a JSON object: {e}"))
    })?;
    let records: Vec<&RawValue> = resp
        .records
        .0
        .ok_or_else(|| SourceError::Malformed("search response has no `records` array".into()))?;
    // Paging is advisory (the record count decides when it is absent): a
    // field of the wrong type counts as missing.
    let paging: Paging = resp
        .paging
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let total_pages = paging.total.as_ref().and_then(Value::as_u64);
    let total_found = paging.total_found.as_ref().and_then(Value::as_u64);
    let mut page = Page {
        total_found,
        ..Page::default()
    };
    page.events.reserve(records.len());
    for (i, r) in records.iter().enumerate() {
        match normalize(r, &id.tenant) {
            Ok(ev) => page.events.push(ev),
            Err(reason) => page.rejected.push(crate::journal::RejectedRecord {
                location: format!(
                    "window {}..{} page {page_no} record {}",
                    rfc3339_ms(window.from),
                    rfc3339_ms(window.to),
                    i + 1
                ),
                reason,
                raw: r.get().to_string(),
            }),
        }
    }
    let more = match (total_pages, total_found) {
        (Some(total), _) => page_no < total,
        (None, Some(found)) => page_no * u64::from(per_page) < found,
        (None, None) => records.len() as u64 >= u64::from(per_page),
    };
    page.next = more.then(|| (page_no + 1).to_string());
    Ok(page)
}
