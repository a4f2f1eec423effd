//! Request building: one HEC envelope per journal record, newline
//! separated, optionally gzipped.
//!
//! ```text
//! {"time":1717200000.123,"host":"...","source":"...","sourcetype":"ringcentral:audittrail",
//!  "index":"audit","event":<canonical event JSON>,
//!  "fields":{"event_id":"<journal key>","tenant":"acme","stream":"audit-trail","action":"..."}}
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Deserialize;

use crate::journal::JournalRecord;
use crate::model::StreamId;

/// Sourcetypes by source kind, in the `vendor:product:type` convention of
/// Splunk add-ons.
pub const DEFAULT_SOURCETYPES: &[(&str, &str)] = &[
    ("ringcentral", "ringcentral:audittrail"),
    ("vbrick", "vbrick:rev:audit"),
    ("symphony", "symphony:audittrail:privileged"),
];

/// Sourcetype of events whose source kind has none configured.
pub const FALLBACK_SOURCETYPE: &str = "trailkeep:audit";

/// The per-event metadata the envelope carries.
#[derive(Clone, Debug)]
pub struct EnvelopeConfig {
    pub host: String,
    /// Fixed `source`; None = `trailkeep:<source kind>:<tenant>`.
    pub source: Option<String>,
    /// Default index; None = the token's default index.
    pub index: Option<String>,
    /// Index by source name (tenant) or source kind; name wins.
    pub indexes: BTreeMap<String, String>,
    /// Sourcetype by source name (tenant) or source kind; name wins; then
    /// the built-in defaults.
    pub sourcetypes: BTreeMap<String, String>,
}

/// The few fields of the canonical event the envelope needs; the rest of
/// the payload is skipped, not parsed into values.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    action: Cow<'a, str>,
}

impl EnvelopeConfig {
    pub fn sourcetype_for<'a>(&'a self, kind: &str, tenant: &str) -> &'a str {
        if let Some(s) = self.sourcetypes.get(tenant).or(self.sourcetypes.get(kind)) {
            return s;
        }
        DEFAULT_SOURCETYPES
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(FALLBACK_SOURCETYPE, |(_, v)| v)
    }

    pub fn index_for<'a>(&'a self, kind: &str, tenant: &str) -> Option<&'a str> {
        self.indexes
            .get(tenant)
            .or(self.indexes.get(kind))
            .or(self.index.as_ref())
            .map(String::as_str)
    }

    /// The per-stream parts of the envelope: `head` goes between `time`
    /// and the event (host, source, sourcetype, index), `mid` between the
    /// event id and the action (tenant, stream).
    fn stream_parts(&self, stream: &str) -> (Vec<u8>, Vec<u8>) {
        let id =
            StreamId::parse(stream).unwrap_or_else(|| StreamId::new("unknown", "unknown", stream));
        let mut head = Vec::with_capacity(160);
        head.extend_from_slice(b",\"host\":");
        put_str(&mut head, &self.host);
        head.extend_from_slice(b",\"source\":");
        match &self.source {
            Some(s) => put_str(&mut head, s),
            None => put_str(&mut head, &format!("trailkeep:{}:{}", id.source, id.tenant)),
        }
        head.extend_from_slice(b",\"sourcetype\":");
        put_str(&mut head, self.sourcetype_for(&id.source, &id.tenant));
        if let Some(index) = self.index_for(&id.source, &id.tenant) {
            head.extend_from_slice(b",\"index\":");
            put_str(&mut head, index);
        }
        head.extend_from_slice(b",\"event\":");
        let mut mid = Vec::with_capacity(64);
        mid.extend_from_slice(b",\"tenant\":");
        put_str(&mut mid, &id.tenant);
        mid.extend_from_slice(b",\"stream\":");
        put_str(&mut mid, &id.stream);
        mid.extend_from_slice(b",\"action\":");
        (head, mid)
    }

    /// Appends the envelope of one record and a newline.
    pub fn encode_into(&self, r: &JournalRecord, out: &mut Vec<u8>) {
        let (head, mid) = self.stream_parts(&r.stream);
        encode_with(r, &head, &mid, out);
    }

    /// The body of one request: the envelopes of `records`, gzipped when
    /// `gzip_level` is set.
    pub fn encode_body<'a>(
        &self,
        records: impl Iterator<Item = &'a JournalRecord> + Clone,
        gzip_level: Option<u32>,
    ) -> std::io::Result<Vec<u8>> {
        // Sized once (payloads plus the envelope's few hundred bytes each):
        // growing a megabyte buffer by doubling leaves holes in the heap.
        let estimate: usize = records.clone().map(|r| r.payload.len() + 320).sum();
        let mut raw = Vec::with_capacity(estimate);
        let mut parts: HashMap<&'a str, (Vec<u8>, Vec<u8>)> = HashMap::new();
        for r in records {
            let (head, mid) = parts
                .entry(r.stream.as_str())
                .or_insert_with(|| self.stream_parts(&r.stream));
            encode_with(r, head, mid, &mut raw);
        }
        match gzip_level {
            None => Ok(raw),
            Some(level) => gzip(&raw, level),
        }
    }
}

/// gzip of a request body.
pub fn gzip(raw: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(raw.len() / 5), Compression::new(level));
    enc.write_all(raw)?;
    enc.finish()
}

fn encode_with(r: &JournalRecord, head: &[u8], mid: &[u8], out: &mut Vec<u8>) {
    let head_fields: Option<Head<'_>> = match r.action {
        Some(_) => None,
        None => serde_json::from_str(&r.payload).ok(),
    };
    let action = match (&r.action, &head_fields) {
        (Some(a), _) => a.as_str(),
        (None, Some(h)) => h.action.as_ref(),
        (None, None) => "",
    };
    let secs = r.time_ms.div_euclid(1000);
    let millis = r.time_ms.rem_euclid(1000);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{{\"time\":{secs}.{millis:03}");
    out.extend_from_slice(head);
    let payload = r.payload.trim();
    if payload.is_empty() {
        // Never the case for journal records; keeps the body valid JSON.
        out.extend_from_slice(b"null");
    } else {
        out.extend_from_slice(payload.as_bytes());
    }
    out.extend_from_slice(b",\"fields\":{\"event_id\":");
    put_str(out, &r.key);
    out.extend_from_slice(mid);
    put_str(out, action);
    out.extend_from_slice(b"}}\n");
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes strings exactly as JSON requires; a Vec writer
    // never fails.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn cfg() -> EnvelopeConfig {
        EnvelopeConfig {
            host: "h1".into(),
            source: None,
            index: Some("audit".into()),
            indexes: BTreeMap::from([("acme-vb".to_string(), "vb_idx".to_string())]),
            sourcetypes: BTreeMap::new(),
        }
    }

    fn record(stream: &str, time_ms: i64) -> JournalRecord {
        JournalRecord {
            seq: 1,
            key: "ringcentral:acme:42".into(),
            stream: stream.into(),
            time_ms,
            ingested_ms: 0,
            payload:
                r#"{"key":"ringcentral:acme:42","action":"User \"x\" Update","raw":{"a":[1,2]}}"#
                    .into(),
            // As in journals written before the action had its own column.
            action: None,
        }
    }

    #[test]
    fn action_column_is_used_when_present() {
        let mut r = record("ringcentral/acme/audit-trail", 1);
        r.action = Some("FROM_COLUMN".into());
        let mut out = Vec::new();
        cfg().encode_into(&r, &mut out);
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["fields"]["action"], "FROM_COLUMN");
    }

    #[test]
    fn envelope_fields() {
        let mut out = Vec::new();
        cfg().encode_into(
            &record("ringcentral/acme/audit-trail", 1_717_200_000_123),
            &mut out,
        );
        assert_eq!(out.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["time"].as_f64(), Some(1_717_200_000.123));
        assert_eq!(v["sourcetype"], "ringcentral:audittrail");
        assert_eq!(v["index"], "audit");
        assert_eq!(v["host"], "h1");
        assert_eq!(v["source"], "trailkeep:ringcentral:acme");
        assert_eq!(v["event"]["raw"]["a"][1], 2);
        assert_eq!(v["fields"]["event_id"], "ringcentral:acme:42");
        assert_eq!(v["fields"]["tenant"], "acme");
        assert_eq!(v["fields"]["stream"], "audit-trail");
        assert_eq!(v["fields"]["action"], "User \"x\" Update");
    }

    #[test]
    fn overrides_and_millis_padding() {
        let mut c = cfg();
        c.sourcetypes.insert("vbrick".into(), "vb:custom".into());
        let mut out = Vec::new();
        c.encode_into(&record("vbrick/acme-vb/userAccess", 5_007), &mut out);
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["time"].as_f64(), Some(5.007));
        assert_eq!(v["index"], "vb_idx");
        assert_eq!(v["sourcetype"], "vb:custom");
        assert_eq!(
            c.sourcetype_for("symphony", "pod1"),
            "symphony:audittrail:privileged"
        );
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let r = record("ringcentral/acme/audit-trail", 1);
        let plain = cfg().encode_body([&r, &r].into_iter(), None).expect("body");
        let gz = cfg()
            .encode_body([&r, &r].into_iter(), Some(1))
            .expect("gz");
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, plain);
        assert_eq!(
            serde_json::Deserializer::from_slice(&plain)
                .into_iter::<Value>()
                .count(),
            2
        );
    }
}
