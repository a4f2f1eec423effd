//! Local archive sink: NDJSON (one canonical event per line) in gzip files
//! `<dir>/<source>/<tenant>/YYYY/MM/DD.ndjson.gz` by event date. Each batch
//! is appended as a new gzip member, so `zcat` reads a file whole.
//!
//! Exactly-once across crashes: before appending, the sink records in the
//! journal which files it will touch and their lengths (an intent); after
//! the data is fsynced it records the batch's last seq as committed. A
//! restart that finds an intent truncates those files back to the recorded
//! lengths, so a batch is never half-written or written twice.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::Datelike;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use super::{Batch, BatchLimits, Delivery, Sink, SinkContext, SinkError};
use crate::config::{parse_settings, ConfigIssue, SinkEntry};
use crate::model::StreamId;
use crate::util::from_millis;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    dir: PathBuf,
    #[serde(default = "default_max_events")]
    max_events: usize,
    /// gzip level 0-9 (higher = smaller, slower).
    #[serde(default = "default_level")]
    gzip_level: u32,
}

fn default_max_events() -> usize {
    5_000
}
fn default_level() -> u32 {
    4
}

pub fn build(entry: &SinkEntry, issues: &mut Vec<ConfigIssue>) -> Option<std::sync::Arc<dyn Sink>> {
    let s: Settings = parse_settings(&entry.path, &entry.settings, issues)?;
    if s.gzip_level > 9 {
        issues.push(ConfigIssue::new(
            format!("{}.gzip_level", entry.path),
            "must be 0-9",
        ));
        return None;
    }
    if s.max_events == 0 {
        issues.push(ConfigIssue::new(
            format!("{}.max_events", entry.path),
            "must be at least 1",
        ));
        return None;
    }
    Some(std::sync::Arc::new(ArchiveSink::new(
        &entry.name,
        s.dir,
        s.max_events,
        s.gzip_level,
    )))
}

pub struct ArchiveSink {
    name: String,
    dir: PathBuf,
    max_events: usize,
    level: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Intent {
    last_seq: u64,
    files: Vec<(PathBuf, u64)>,
}

const INTENT: &str = "archive.intent";
const COMMITTED: &str = "archive.committed_seq";

impl ArchiveSink {
    pub fn new(name: &str, dir: PathBuf, max_events: usize, level: u32) -> Self {
        ArchiveSink {
            name: name.to_string(),
            dir,
            max_events,
            level,
        }
    }

    /// The file an event of this stream and time goes to.
    pub fn file_for(dir: &Path, stream: &str, time_ms: i64) -> PathBuf {
        let id =
            StreamId::parse(stream).unwrap_or_else(|| StreamId::new("unknown", "unknown", stream));
        let t = from_millis(time_ms);
        dir.join(&id.source)
            .join(&id.tenant)
            .join(format!("{:04}", t.year()))
            .join(format!("{:02}", t.month()))
            .join(format!("{:02}.ndjson.gz", t.day()))
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> SinkError {
    // A full or read-only disk is an operator problem: halt, keep pulling.
    let code = match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission_denied",
        _ if e.raw_os_error() == Some(libc::ENOSPC) => "disk_full",
        _ => "io",
    };
    let msg = format!("{what} {}: {e}", path.display());
    if code == "io" {
        SinkError::retryable(code, msg)
    } else {
        SinkError::halt(code, msg)
    }
}

fn sync_dir(path: &Path) {
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
}

/// Truncates the files an interrupted batch touched back to their lengths.
fn roll_back(intent: &Intent) -> Result<(), SinkError> {
    for (path, len) in &intent.files {
        match OpenOptions::new().write(true).open(path) {
            Ok(f) => {
                f.set_len(*len).map_err(|e| io_err("truncating", path, e))?;
                f.sync_all().map_err(|e| io_err("syncing", path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("opening", path, e)),
        }
    }
    Ok(())
}

fn journal_err(e: crate::journal::JournalError) -> SinkError {
    SinkError::retryable("journal", e.to_string())
}

#[async_trait]
impl Sink for ArchiveSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "archive"
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.max_events,
            max_bytes: 16 * 1024 * 1024,
            max_in_flight: 1,
            ..BatchLimits::default()
        }
    }

    async fn start(&self, ctx: &SinkContext) -> Result<(), SinkError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err("creating", &self.dir, e))?;
        if let Some(text) = ctx
            .journal
            .sink_state(&self.name, INTENT)
            .map_err(journal_err)?
        {
            let intent: Intent = serde_json::from_str(&text).map_err(|e| {
                SinkError::halt(
                    "state",
                    format!("unreadable archive intent in journal: {e}"),
                )
            })?;
            tracing::warn!(sink = %self.name, last_seq = intent.last_seq, files = intent.files.len(),
                "rolling back a batch interrupted by a crash");
            roll_back(&intent)?;
            ctx.journal
                .delete_sink_state(&self.name, INTENT)
                .map_err(journal_err)?;
        }
        Ok(())
    }

    async fn deliver(&self, batch: Batch, ctx: &SinkContext) -> Result<Delivery, SinkError> {
        let committed: u64 = ctx
            .journal
            .sink_state(&self.name, COMMITTED)
            .map_err(journal_err)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Group the batch's lines by file, skipping what a previous run
        // already made durable (crash between fsync and cursor move).
        // First the file of each record and each file's size, so every
        // buffer is allocated once at its final size (growing megabyte
        // buffers by doubling fragments the heap); consecutive records
        // mostly share a stream and day, so the path is rarely rebuilt.
        let pending: Vec<&crate::journal::JournalRecord> =
            batch.records.iter().filter(|r| r.seq > committed).collect();
        let mut files: Vec<(PathBuf, usize)> = Vec::new();
        let mut slots: Vec<usize> = Vec::with_capacity(pending.len());
        let mut last: Option<(&str, i64, usize)> = None;
        for r in &pending {
            let day = r.time_ms.div_euclid(86_400_000);
            let slot = match last {
                Some((stream, d, slot)) if stream == r.stream && d == day => slot,
                _ => {
                    let path = Self::file_for(&self.dir, &r.stream, r.time_ms);
                    match files.iter().position(|(p, _)| *p == path) {
                        Some(i) => i,
                        None => {
                            files.push((path, 0));
                            files.len() - 1
                        }
                    }
                }
            };
            last = Some((r.stream.as_str(), day, slot));
            files[slot].1 += r.payload.len() + 1;
            slots.push(slot);
        }
        let mut buffers: Vec<Vec<u8>> = files.iter().map(|(_, n)| Vec::with_capacity(*n)).collect();
        for (r, slot) in pending.iter().zip(&slots) {
            buffers[*slot].extend_from_slice(r.payload.as_bytes());
            buffers[*slot].push(b'\n');
        }
        let by_file: BTreeMap<PathBuf, Vec<u8>> =
            files.into_iter().map(|(p, _)| p).zip(buffers).collect();
        if by_file.is_empty() {
            return Ok(Delivery::default());
        }
        let mut intent = Intent {
            last_seq: batch.last_seq(),
            files: Vec::new(),
        };
        // The lines are all that is written from here on.
        drop(batch);
        for path in by_file.keys() {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            intent.files.push((path.clone(), len));
        }
        let intent_text = serde_json::to_string(&intent)
            .map_err(|e| SinkError::retryable("state", e.to_string()))?;
        ctx.journal
            .set_sink_state(&self.name, INTENT, &intent_text)
            .map_err(journal_err)?;

        let level = self.level;
        let written = tokio::task::spawn_blocking(move || -> Result<(), SinkError> {
            for (path, lines) in by_file {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
                }
                let mut enc =
                    GzEncoder::new(Vec::with_capacity(lines.len() / 4), Compression::new(level));
                enc.write_all(&lines)
                    .map_err(|e| io_err("compressing for", &path, e))?;
                let member = enc
                    .finish()
                    .map_err(|e| io_err("compressing for", &path, e))?;
                let existed = path.exists();
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io_err("opening", &path, e))?;
                f.write_all(&member)
                    .map_err(|e| io_err("writing", &path, e))?;
                f.sync_data().map_err(|e| io_err("syncing", &path, e))?;
                if !existed {
                    sync_dir(&path);
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| SinkError::retryable("io", format!("archive writer failed: {e}")))?;
        if let Err(e) = written {
            // Undo a partial append before the batch is retried.
            roll_back(&intent)?;
            ctx.journal
                .delete_sink_state(&self.name, INTENT)
                .map_err(journal_err)?;
            return Err(e);
        }
        ctx.journal
            .set_sink_state(&self.name, COMMITTED, &intent.last_seq.to_string())
            .map_err(journal_err)?;
        ctx.journal
            .delete_sink_state(&self.name, INTENT)
            .map_err(journal_err)?;
        Ok(Delivery::default())
    }

    async fn check_connection(&self) -> Result<String, SinkError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err("creating", &self.dir, e))?;
        let probe = self.dir.join(".trailkeep-write-test");
        std::fs::write(&probe, b"ok").map_err(|e| io_err("writing", &probe, e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(format!("directory {} is writable", self.dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_layout_by_event_date() {
        let p = ArchiveSink::file_for(
            Path::new("/a"),
            "ringcentral/acme/audit-trail",
            1_717_200_000_000,
        );
        assert_eq!(p, PathBuf::from("/a/ringcentral/acme/2024/06/01.ndjson.gz"));
    }

    /// A batch mixing tenants and days, interleaved: every line lands in
    /// the file of its own tenant and day, in batch order.
    #[tokio::test]
    async fn interleaved_batch_lines_go_to_their_own_files() {
        use std::io::Read;
        let dir = tempfile::tempdir().expect("tmp");
        let journal = crate::journal::Journal::open(&dir.path().join("j.db"), None).expect("j");
        let ctx = SinkContext {
            journal,
            sink: "archive".into(),
        };
        let day = 86_400_000i64;
        let t0 = 1_717_200_000_000i64;
        let plan = [
            ("ringcentral/a/audit-trail", t0),
            ("ringcentral/b/audit-trail", t0),
            ("ringcentral/a/audit-trail", t0 + day),
            ("ringcentral/a/audit-trail", t0),
            ("ringcentral/b/audit-trail", t0),
            ("ringcentral/a/audit-trail", t0 + day),
        ];
        let records: Vec<crate::journal::JournalRecord> = plan
            .iter()
            .enumerate()
            .map(|(i, (stream, t))| crate::journal::JournalRecord {
                seq: i as u64 + 1,
                key: format!("k{i}"),
                stream: stream.to_string(),
                time_ms: *t,
                ingested_ms: 0,
                payload: format!("{{\"key\":\"k{i}\"}}"),
                action: None,
            })
            .collect();
        let sink = ArchiveSink::new("archive", dir.path().join("arch"), 100, 4);
        sink.deliver(Batch { records }, &ctx)
            .await
            .expect("deliver");
        let read = |stream: &str, t: i64| {
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(
                std::fs::File::open(ArchiveSink::file_for(&dir.path().join("arch"), stream, t))
                    .expect("file"),
            )
            .read_to_string(&mut text)
            .expect("gunzip");
            text
        };
        assert_eq!(
            read("ringcentral/a/audit-trail", t0),
            "{\"key\":\"k0\"}\n{\"key\":\"k3\"}\n"
        );
        assert_eq!(
            read("ringcentral/a/audit-trail", t0 + day),
            "{\"key\":\"k2\"}\n{\"key\":\"k5\"}\n"
        );
        assert_eq!(
            read("ringcentral/b/audit-trail", t0),
            "{\"key\":\"k1\"}\n{\"key\":\"k4\"}\n"
        );
    }
}
