//! The durable journal: SQLite in WAL mode.
//!
//! A page of events and the stream checkpoint that follows it are written
//! in ONE transaction, so a crash either keeps both or neither: the pull is
//! exactly-once into the journal. `event_key` is UNIQUE; a re-pulled record
//! is counted as a duplicate, never stored twice. Each sink has its own
//! cursor (the last `seq` it has confirmed) and its dead letters.

mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tokio::sync::Notify;

use crate::model::{AuditEvent, StreamId};
use crate::util::{from_millis, to_millis};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("journal {path} is full (max_bytes reached): pulling pauses until sinks drain and pruning frees space")]
    Full { path: String },
    #[error("journal {path} has schema version {found}, newer than this build supports ({supported}); use a newer trailkeep")]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("journal {path}: cannot encode event {key}: {detail}")]
    Encode {
        path: String,
        key: String,
        detail: String,
    },
    #[error("journal {path}: cannot create directory: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl JournalError {
    pub fn is_full(&self) -> bool {
        matches!(self, JournalError::Full { .. })
    }
}

/// Where a stream stands: the end of its last complete window, and the
/// window in progress (with the vendor cursor of the next page) if any.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Checkpoint {
    pub watermark: Option<DateTime<Utc>>,
    pub open_window: Option<OpenWindow>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpenWindow {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Opaque cursor of the next page to fetch; None = start of window.
    pub cursor: Option<String>,
}

/// A record the source could not turn into an event (malformed row,
/// unparsable item), kept with where it came from and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RejectedRecord {
    pub location: String,
    pub reason: String,
    pub raw: String,
}

/// What committing a page did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    pub inserted: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// An event as a sink reads it from the journal.
#[derive(Clone, Debug)]
pub struct JournalRecord {
    pub seq: u64,
    pub key: String,
    pub stream: String,
    pub time_ms: i64,
    /// When trailkeep stored it (for sink lag).
    pub ingested_ms: i64,
    /// The canonical event as JSON.
    pub payload: String,
    /// The event's `action` (None for records stored before the journal
    /// kept it separately: read it from the payload).
    pub action: Option<String>,
}

impl JournalRecord {
    pub fn event(&self) -> Result<AuditEvent, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// An event a sink gave up on, with the reason.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkDeadLetter {
    pub seq: u64,
    pub key: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub origin: String,
    pub origin_kind: String,
    pub seq: Option<u64>,
    pub event_key: Option<String>,
    pub reason: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StreamStatus {
    pub stream: String,
    pub watermark: Option<DateTime<Utc>>,
    pub open_window: Option<OpenWindow>,
    pub fetched: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub gaps: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SinkStatus {
    pub sink: String,
    pub cursor: u64,
    pub pending: u64,
    pub delivered: u64,
    pub dead_letters: u64,
    pub last_error: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JournalStatus {
    pub path: String,
    pub max_seq: u64,
    pub events: u64,
    pub streams: Vec<StreamStatus>,
    pub sinks: Vec<SinkStatus>,
}

/// A horizon gap: an interval the source no longer serves and that was
/// never read.
#[derive(Clone, Debug, Serialize)]
pub struct Gap {
    pub stream: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reason: String,
    pub recorded_at: DateTime<Utc>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    new_events: Notify,
}

/// Cheap to clone; all clones share the same connections.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal and brings its schema up to
    /// date. `max_bytes` bounds the file size.
    pub fn open(path: &Path, max_bytes: Option<u64>) -> Result<Journal, JournalError> {
        let display = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| JournalError::Io {
                path: display.clone(),
                source,
            })?;
        }
        let sql = |source| JournalError::Sqlite {
            path: display.clone(),
            source,
        };
        let writer = Connection::open(path).map_err(sql)?;
        // The busy timeout first: switching a new file to WAL takes a lock
        // that another process opening it at the same moment may hold.
        writer
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        // SQLite answers SQLITE_BUSY at once (no busy handler) when two
        // connections race to turn a new file into WAL or to migrate it:
        // retry those first steps for a while.
        let mut tries = 0;
        loop {
            let step = writer
                .execute_batch(
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
                )
                .map_err(sql)
                .and_then(|_| schema::migrate(&writer, &display));
            match step {
                Err(JournalError::Sqlite {
                    source: rusqlite::Error::SqliteFailure(f, _),
                    ..
                }) if f.code == rusqlite::ErrorCode::DatabaseBusy && tries < 500 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        }
        if let Some(max) = max_bytes {
            let page_size: i64 = writer
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(sql)?;
            let pages = (max as i64 / page_size.max(512)).max(16);
            writer
                .query_row(&format!("PRAGMA max_page_count={pages}"), [], |_| Ok(()))
                .map_err(sql)?;
        }
        let reader = Connection::open(path).map_err(sql)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        reader
            .execute_batch("PRAGMA busy_timeout=5000; PRAGMA query_only=ON;")
            .map_err(sql)?;
        Ok(Journal {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                new_events: Notify::new(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Changes the size bound at run time (the disk-full test frees space
    /// this way; an operator does it by restarting with a new limit).
    pub fn set_max_bytes(&self, max_bytes: u64) -> Result<(), JournalError> {
        let conn = self.writer();
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let pages = (max_bytes as i64 / page_size.max(512)).max(16);
        conn.query_row(&format!("PRAGMA max_page_count={pages}"), [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> JournalError {
        if let rusqlite::Error::SqliteFailure(f, _) = &source {
            if f.code == rusqlite::ErrorCode::DiskFull {
                return JournalError::Full {
                    path: self.inner.path.display().to_string(),
                };
            }
        }
        JournalError::Sqlite {
            path: self.inner.path.display().to_string(),
            source,
        }
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (the transaction rolls back on drop), so a poisoned lock is safe.
        self.inner.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.inner.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when events were committed since the last call (or after a
    /// spurious wake-up: callers re-check).
    pub async fn wait_for_events(&self) {
        self.inner.new_events.notified().await
    }

    pub fn checkpoint(&self, stream: &StreamId) -> Result<Option<Checkpoint>, JournalError> {
        let conn = self.reader();
        conn.query_row(
            "SELECT watermark_ms, window_from_ms, window_to_ms, cursor, has_window FROM checkpoints WHERE stream = ?1",
            params![stream.to_string()],
            |r| {
                let wm: Option<i64> = r.get(0)?;
                let from: Option<i64> = r.get(1)?;
                let to: Option<i64> = r.get(2)?;
                let cursor: Option<String> = r.get(3)?;
                let has_window: bool = r.get(4)?;
                Ok(Checkpoint {
                    watermark: wm.map(from_millis),
                    open_window: match (has_window, from, to) {
                        (true, Some(f), Some(t)) => Some(OpenWindow { from: from_millis(f), to: from_millis(t), cursor }),
                        _ => None,
                    },
                })
            },
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// Appends one page of events, the rejected records of that page, and
    /// the stream's new checkpoint, atomically.
    pub fn commit_page(
        &self,
        stream: &StreamId,
        events: &[AuditEvent],
        rejected: &[RejectedRecord],
        checkpoint: &Checkpoint,
    ) -> Result<CommitOutcome, JournalError> {
        let now = to_millis(Utc::now());
        let stream_key = stream.to_string();
        let mut outcome = CommitOutcome::default();
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (event_key, stream, event_time_ms, ingested_ms, payload, action) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(|e| self.err(e))?;
            // One buffer for every payload of the page.
            let mut payload: Vec<u8> = Vec::with_capacity(4096);
            for ev in events {
                payload.clear();
                serde_json::to_writer(&mut payload, ev).map_err(|e| JournalError::Encode {
                    path: self.inner.path.display().to_string(),
                    key: ev.key.clone(),
                    detail: e.to_string(),
                })?;
                // serde_json writes UTF-8 only.
                let text = std::str::from_utf8(&payload).map_err(|e| JournalError::Encode {
                    path: self.inner.path.display().to_string(),
                    key: ev.key.clone(),
                    detail: e.to_string(),
                })?;
                let n = insert
                    .execute(params![
                        ev.key,
                        stream_key,
                        to_millis(ev.time),
                        now,
                        text,
                        ev.action
                    ])
                    .map_err(|e| self.err(e))?;
                if n == 1 {
                    outcome.inserted += 1;
                } else {
                    outcome.duplicates += 1;
                }
            }
            let mut dead = tx
                .prepare_cached(
                    "INSERT INTO dead_letters (origin, origin_kind, seq, event_key, reason, payload, created_ms) VALUES (?1, 'stream', NULL, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| self.err(e))?;
            for r in rejected {
                dead.execute(params![stream_key, r.location, r.reason, r.raw, now])
                    .map_err(|e| self.err(e))?;
                outcome.rejected += 1;
            }
        }
        let (has_window, from, to, cursor) = match &checkpoint.open_window {
            Some(w) => (
                true,
                Some(to_millis(w.from)),
                Some(to_millis(w.to)),
                w.cursor.clone(),
            ),
            None => (false, None, None, None),
        };
        tx.execute(
            "INSERT INTO checkpoints (stream, watermark_ms, window_from_ms, window_to_ms, cursor, has_window, updated_ms, fetched, stored, duplicates, rejected)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(stream) DO UPDATE SET watermark_ms = excluded.watermark_ms, window_from_ms = excluded.window_from_ms,
               window_to_ms = excluded.window_to_ms, cursor = excluded.cursor, has_window = excluded.has_window,
               updated_ms = excluded.updated_ms, fetched = fetched + excluded.fetched, stored = stored + excluded.stored,
               duplicates = duplicates + excluded.duplicates, rejected = rejected + excluded.rejected,
               last_error = NULL, last_error_ms = NULL",
            params![
                stream_key,
                checkpoint.watermark.map(to_millis),
                from,
                to,
                cursor,
                has_window,
                now,
                events.len() as i64 + rejected.len() as i64,
                outcome.inserted as i64,
                outcome.duplicates as i64,
                outcome.rejected as i64
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        drop(conn);
        if outcome.inserted > 0 {
            self.inner.new_events.notify_waiters();
        }
        Ok(outcome)
    }

    /// Records the last error of a stream (shown by `status`).
    pub fn record_stream_error(&self, stream: &StreamId, error: &str) -> Result<(), JournalError> {
        let now = to_millis(Utc::now());
        self.writer()
            .execute(
                "INSERT INTO checkpoints (stream, updated_ms, last_error, last_error_ms) VALUES (?1, ?2, ?3, ?2)
                 ON CONFLICT(stream) DO UPDATE SET last_error = excluded.last_error, last_error_ms = excluded.last_error_ms",
                params![stream.to_string(), now, error],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Records a horizon gap: an interval that will never be read.
    pub fn record_gap(
        &self,
        stream: &StreamId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), JournalError> {
        self.writer()
            .execute(
                "INSERT INTO gaps (stream, from_ms, to_ms, reason, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![stream.to_string(), to_millis(from), to_millis(to), reason, to_millis(Utc::now())],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn gaps(&self) -> Result<Vec<Gap>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare("SELECT stream, from_ms, to_ms, reason, created_ms FROM gaps ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(Gap {
                    stream: r.get(0)?,
                    from: from_millis(r.get(1)?),
                    to: from_millis(r.get(2)?),
                    reason: r.get(3)?,
                    recorded_at: from_millis(r.get(4)?),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The last `seq` the sink has confirmed (0 = nothing yet).
    pub fn sink_cursor(&self, sink: &str) -> Result<u64, JournalError> {
        let conn = self.reader();
        conn.query_row(
            "SELECT seq FROM sink_cursors WHERE sink = ?1",
            params![sink],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map(|v| v.unwrap_or(0) as u64)
        .map_err(|e| self.err(e))
    }

    /// Events after `after`, oldest first, at most `limit` of them and
    /// (past the first) at most `max_bytes` of payload.
    pub fn read_after(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<JournalRecord>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT seq, event_key, stream, event_time_ms, ingested_ms, payload, action FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = st
            .query(params![after as i64, limit as i64])
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let payload: String = r.get(5).map_err(|e| self.err(e))?;
            if !out.is_empty() && bytes + payload.len() > max_bytes {
                break;
            }
            bytes += payload.len();
            out.push(JournalRecord {
                seq: r.get::<_, i64>(0).map_err(|e| self.err(e))? as u64,
                key: r.get(1).map_err(|e| self.err(e))?,
                stream: r.get(2).map_err(|e| self.err(e))?,
                time_ms: r.get(3).map_err(|e| self.err(e))?,
                ingested_ms: r.get(4).map_err(|e| self.err(e))?,
                payload,
                action: r.get(6).map_err(|e| self.err(e))?,
            });
        }
        Ok(out)
    }

    /// Moves a sink's cursor to `to_seq` and stores its dead letters, in
    /// one transaction. The cursor never moves backwards.
    pub fn advance_sink(
        &self,
        sink: &str,
        to_seq: u64,
        delivered: u64,
        dead: &[SinkDeadLetter],
    ) -> Result<(), JournalError> {
        let now = to_millis(Utc::now());
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO dead_letters (origin, origin_kind, seq, event_key, reason, payload, created_ms)
                     SELECT ?1, 'sink', ?2, ?3, ?4, COALESCE((SELECT payload FROM events WHERE seq = ?2), ''), ?5",
                )
                .map_err(|e| self.err(e))?;
            for d in dead {
                st.execute(params![sink, d.seq as i64, d.key, d.reason, now])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.execute(
            "INSERT INTO sink_cursors (sink, seq, delivered, dead, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(sink) DO UPDATE SET seq = MAX(seq, excluded.seq), delivered = delivered + excluded.delivered,
               dead = dead + excluded.dead, updated_ms = excluded.updated_ms, last_error = NULL",
            params![sink, to_seq as i64, delivered as i64, dead.len() as i64, now],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    pub fn record_sink_error(&self, sink: &str, error: &str) -> Result<(), JournalError> {
        self.writer()
            .execute(
                "INSERT INTO sink_cursors (sink, seq, updated_ms, last_error) VALUES (?1, 0, ?2, ?3)
                 ON CONFLICT(sink) DO UPDATE SET last_error = excluded.last_error",
                params![sink, to_millis(Utc::now()), error],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// A sink's private durable state (e.g. the Splunk channel and its
    /// pending ackIds).
    pub fn sink_state(&self, sink: &str, key: &str) -> Result<Option<String>, JournalError> {
        self.reader()
            .query_row(
                "SELECT value FROM sink_state WHERE sink = ?1 AND key = ?2",
                params![sink, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_sink_state(&self, sink: &str, key: &str, value: &str) -> Result<(), JournalError> {
        self.writer()
            .execute(
                "INSERT INTO sink_state (sink, key, value) VALUES (?1, ?2, ?3) ON CONFLICT(sink, key) DO UPDATE SET value = excluded.value",
                params![sink, key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn delete_sink_state(&self, sink: &str, key: &str) -> Result<(), JournalError> {
        self.writer()
            .execute(
                "DELETE FROM sink_state WHERE sink = ?1 AND key = ?2",
                params![sink, key],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// All state keys of a sink starting with `prefix`.
    pub fn sink_state_prefix(
        &self,
        sink: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare("SELECT key, value FROM sink_state WHERE sink = ?1 AND substr(key, 1, length(?2)) = ?2 ORDER BY key")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![sink, prefix], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    pub fn max_seq(&self) -> Result<u64, JournalError> {
        self.reader()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(|e| self.err(e))
    }

    /// Deletes events delivered to every sink and older than `retention`.
    /// Returns how many were removed.
    pub fn prune(&self, retention: Duration, sinks: &[String]) -> Result<u64, JournalError> {
        if sinks.is_empty() {
            return Ok(0);
        }
        let mut min_cursor = u64::MAX;
        for s in sinks {
            min_cursor = min_cursor.min(self.sink_cursor(s)?);
        }
        let cutoff = to_millis(Utc::now() - crate::util::chrono_duration(retention));
        let n = self
            .writer()
            .execute(
                "DELETE FROM events WHERE seq <= ?1 AND ingested_ms <= ?2",
                params![min_cursor as i64, cutoff],
            )
            .map_err(|e| self.err(e))?;
        Ok(n as u64)
    }

    pub fn dead_letters(
        &self,
        origin: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare(
                "SELECT id, origin, origin_kind, seq, event_key, reason, payload, created_ms FROM dead_letters
                 WHERE ?1 IS NULL OR origin = ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![origin, limit as i64], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    origin: r.get(1)?,
                    origin_kind: r.get(2)?,
                    seq: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    event_key: r.get(4)?,
                    reason: r.get(5)?,
                    payload: r.get(6)?,
                    created_at: from_millis(r.get(7)?),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Per-stream and per-sink figures for `trailkeep status`.
    pub fn status(&self, sinks: &[String]) -> Result<JournalStatus, JournalError> {
        let max_seq = self.max_seq()?;
        let conn = self.reader();
        let events: i64 = conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let mut st = conn
            .prepare(
                "SELECT c.stream, c.watermark_ms, c.window_from_ms, c.window_to_ms, c.cursor, c.has_window, c.fetched, c.stored,
                        c.duplicates, c.rejected, c.last_error, c.last_error_ms, c.updated_ms,
                        (SELECT COUNT(*) FROM gaps g WHERE g.stream = c.stream)
                 FROM checkpoints c ORDER BY c.stream",
            )
            .map_err(|e| self.err(e))?;
        let streams = st
            .query_map([], |r| {
                let has_window: bool = r.get(5)?;
                let from: Option<i64> = r.get(2)?;
                let to: Option<i64> = r.get(3)?;
                Ok(StreamStatus {
                    stream: r.get(0)?,
                    watermark: r.get::<_, Option<i64>>(1)?.map(from_millis),
                    open_window: match (has_window, from, to) {
                        (true, Some(f), Some(t)) => Some(OpenWindow {
                            from: from_millis(f),
                            to: from_millis(t),
                            cursor: r.get(4)?,
                        }),
                        _ => None,
                    },
                    fetched: r.get::<_, i64>(6)? as u64,
                    stored: r.get::<_, i64>(7)? as u64,
                    duplicates: r.get::<_, i64>(8)? as u64,
                    rejected: r.get::<_, i64>(9)? as u64,
                    last_error: r.get(10)?,
                    last_error_at: r.get::<_, Option<i64>>(11)?.map(from_millis),
                    updated_at: r.get::<_, Option<i64>>(12)?.map(from_millis),
                    gaps: r.get::<_, i64>(13)? as u64,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        let mut sink_rows = Vec::new();
        let mut names: Vec<String> = sinks.to_vec();
        {
            let mut st = conn
                .prepare("SELECT sink FROM sink_cursors ORDER BY sink")
                .map_err(|e| self.err(e))?;
            let known = st
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| self.err(e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err(e))?;
            for k in known {
                if !names.contains(&k) {
                    names.push(k);
                }
            }
        }
        for name in names {
            let row = conn
                .query_row(
                    "SELECT seq, delivered, dead, last_error, updated_ms FROM sink_cursors WHERE sink = ?1",
                    params![name],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)? as u64,
                            r.get::<_, i64>(1)? as u64,
                            r.get::<_, i64>(2)? as u64,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(|e| self.err(e))?;
            let (cursor, delivered, dead, last_error, updated) =
                row.unwrap_or((0, 0, 0, None, None));
            sink_rows.push(SinkStatus {
                pending: max_seq.saturating_sub(cursor),
                sink: name,
                cursor,
                delivered,
                dead_letters: dead,
                last_error,
                updated_at: updated.map(from_millis),
            });
        }
        Ok(JournalStatus {
            path: self.inner.path.display().to_string(),
            max_seq,
            events: events as u64,
            streams,
            sinks: sink_rows,
        })
    }

    /// Checks the journal accepts writes (for `/readyz`).
    pub fn is_writable(&self) -> bool {
        self.writer()
            .execute("UPDATE meta SET value = value WHERE key = 'schema'", [])
            .is_ok()
    }

    /// All stored event keys of a stream (tests and `replay` checks).
    pub fn event_keys(&self) -> Result<Vec<String>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare("SELECT event_key FROM events ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

/// Runs a journal call off the async threads.
pub async fn blocking<T, F>(journal: &Journal, f: F) -> Result<T, JournalError>
where
    T: Send + 'static,
    F: FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
{
    let j = journal.clone();
    match tokio::task::spawn_blocking(move || f(&j)).await {
        Ok(r) => r,
        Err(e) => Err(JournalError::Io {
            path: journal.path().display().to_string(),
            source: std::io::Error::other(format!("journal task failed: {e}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, EventKind, Target};

    fn ev(id: &str, t_ms: i64) -> AuditEvent {
        AuditEvent {
            key: crate::model::event_key("ringcentral", "t", id),
            source: "ringcentral".into(),
            tenant: "t".into(),
            stream: "audit-trail".into(),
            time: from_millis(t_ms),
            ingested_at: Utc::now(),
            action: "X".into(),
            action_label: None,
            kind: EventKind::Update,
            actor: Actor::default(),
            target: Target::default(),
            changes: vec![],
            client_ip: None,
            raw: serde_json::json!({"id": id, "pad": "x".repeat(200)}).into(),
        }
    }

    #[test]
    fn journal_from_schema_1_gains_the_action_column_and_keeps_its_rows() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("old.db");
        {
            let c = rusqlite::Connection::open(&path).expect("sqlite");
            c.execute_batch(schema::MIGRATIONS[0]).expect("schema 1");
            c.execute_batch(
                "PRAGMA user_version = 1;
                 INSERT INTO events (event_key, stream, event_time_ms, ingested_ms, payload)
                 VALUES ('ringcentral:t:old', 'ringcentral/t/audit-trail', 1, 1, '{\"action\":\"OLD\"}');",
            )
            .expect("old row");
        }
        let j = Journal::open(&path, None).expect("migrates");
        j.commit_page(&sid(), &[ev("new", 2)], &[], &Checkpoint::default())
            .expect("commit");
        let rows = j.read_after(0, 10, usize::MAX).expect("read");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key, "ringcentral:t:old");
        assert_eq!(rows[0].action, None, "rows from before keep NULL");
        assert_eq!(rows[1].action.as_deref(), Some("X"));
    }

    fn sid() -> StreamId {
        StreamId::new("ringcentral", "t", "audit-trail")
    }

    fn open() -> (tempfile::TempDir, Journal) {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&d.path().join("j.db"), None).expect("open");
        (d, j)
    }

    #[test]
    fn duplicates_are_counted_not_stored() {
        let (_d, j) = open();
        let cp = Checkpoint::default();
        let a = j
            .commit_page(&sid(), &[ev("1", 1), ev("2", 2)], &[], &cp)
            .expect("commit");
        assert_eq!((a.inserted, a.duplicates), (2, 0));
        let b = j
            .commit_page(&sid(), &[ev("2", 2), ev("3", 3)], &[], &cp)
            .expect("commit");
        assert_eq!((b.inserted, b.duplicates), (1, 1));
        assert_eq!(j.event_keys().expect("keys").len(), 3);
        let st = j.status(&[]).expect("status");
        assert_eq!(
            (
                st.streams[0].stored,
                st.streams[0].duplicates,
                st.streams[0].fetched
            ),
            (3, 1, 4)
        );
    }

    #[test]
    fn checkpoint_round_trips_and_survives_reopen() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("j.db");
        let w = OpenWindow {
            from: from_millis(1_000),
            to: from_millis(9_000),
            cursor: Some("4".into()),
        };
        let cp = Checkpoint {
            watermark: Some(from_millis(500)),
            open_window: Some(w),
        };
        {
            let j = Journal::open(&path, None).expect("open");
            j.commit_page(&sid(), &[ev("1", 1)], &[], &cp)
                .expect("commit");
        }
        let j = Journal::open(&path, None).expect("reopen");
        assert_eq!(j.checkpoint(&sid()).expect("read"), Some(cp));
        assert_eq!(
            j.checkpoint(&StreamId::new("x", "y", "z")).expect("read"),
            None
        );
    }

    #[test]
    fn failed_page_leaves_checkpoint_untouched() {
        // A page whose commit fails (journal full) must not move the checkpoint.
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&d.path().join("j.db"), Some(64 * 1024)).expect("open");
        let first = Checkpoint {
            watermark: Some(from_millis(1)),
            open_window: None,
        };
        j.commit_page(&sid(), &[ev("a", 1)], &[], &first)
            .expect("small page fits");
        let big: Vec<AuditEvent> = (0..2_000).map(|i| ev(&format!("b{i}"), i)).collect();
        let second = Checkpoint {
            watermark: Some(from_millis(2)),
            open_window: None,
        };
        let err = j.commit_page(&sid(), &big, &[], &second).unwrap_err();
        assert!(err.is_full(), "{err}");
        assert_eq!(j.checkpoint(&sid()).expect("read"), Some(first));
        assert_eq!(
            j.event_keys().expect("keys").len(),
            1,
            "no half page stored"
        );
        j.set_max_bytes(64 * 1024 * 1024).expect("grow");
        j.commit_page(&sid(), &big, &[], &second)
            .expect("fits after space returns");
        assert_eq!(j.checkpoint(&sid()).expect("read"), Some(second));
    }

    #[test]
    fn sink_cursor_moves_forward_only_and_records_dead_letters() {
        let (_d, j) = open();
        j.commit_page(
            &sid(),
            &[ev("1", 1), ev("2", 2), ev("3", 3)],
            &[],
            &Checkpoint::default(),
        )
        .expect("commit");
        assert_eq!(j.sink_cursor("s").expect("cursor"), 0);
        let batch = j.read_after(0, 2, usize::MAX).expect("read");
        assert_eq!(batch.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(batch[0].action.as_deref(), Some("X"), "action column");
        let dead = vec![SinkDeadLetter {
            seq: 2,
            key: batch[1].key.clone(),
            reason: "invalid_event: blank".into(),
        }];
        j.advance_sink("s", 2, 1, &dead).expect("advance");
        j.advance_sink("s", 1, 0, &[])
            .expect("stale advance is harmless");
        assert_eq!(j.sink_cursor("s").expect("cursor"), 2);
        let dl = j.dead_letters(Some("s"), 10).expect("dead letters");
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0].seq, Some(2));
        assert!(
            dl[0].payload.contains("\"id\":\"2\""),
            "payload kept with the dead letter"
        );
        let st = j.status(&["s".into()]).expect("status");
        assert_eq!(
            (
                st.sinks[0].pending,
                st.sinks[0].delivered,
                st.sinks[0].dead_letters
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn read_after_respects_byte_budget_but_returns_at_least_one() {
        let (_d, j) = open();
        j.commit_page(
            &sid(),
            &[ev("1", 1), ev("2", 2)],
            &[],
            &Checkpoint::default(),
        )
        .expect("commit");
        assert_eq!(j.read_after(0, 10, 1).expect("read").len(), 1);
    }

    #[test]
    fn prune_keeps_what_any_sink_still_needs() {
        let (_d, j) = open();
        j.commit_page(
            &sid(),
            &[ev("1", 1), ev("2", 2), ev("3", 3)],
            &[],
            &Checkpoint::default(),
        )
        .expect("commit");
        j.advance_sink("a", 3, 3, &[]).expect("a");
        j.advance_sink("b", 1, 1, &[]).expect("b");
        // Retention zero: everything delivered to every sink may go.
        let n = j
            .prune(Duration::ZERO, &["a".into(), "b".into()])
            .expect("prune");
        assert_eq!(n, 1);
        assert_eq!(j.event_keys().expect("keys").len(), 2);
        // Nothing is pruned inside the retention period.
        assert_eq!(
            j.prune(Duration::from_secs(3600), &["a".into()])
                .expect("prune"),
            0
        );
    }

    #[test]
    fn rejected_records_become_stream_dead_letters() {
        let (_d, j) = open();
        let rej = RejectedRecord {
            location: "page 1 row 7".into(),
            reason: "bad When".into(),
            raw: "a,b,c".into(),
        };
        let o = j
            .commit_page(&sid(), &[], &[rej], &Checkpoint::default())
            .expect("commit");
        assert_eq!(o.rejected, 1);
        let dl = j.dead_letters(Some(&sid().to_string()), 10).expect("dl");
        assert_eq!(
            (
                dl[0].origin_kind.as_str(),
                dl[0].reason.as_str(),
                dl[0].payload.as_str()
            ),
            ("stream", "bad When", "a,b,c")
        );
        assert_eq!(dl[0].event_key.as_deref(), Some("page 1 row 7"));
    }

    #[test]
    fn newer_schema_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("j.db");
        {
            let c = Connection::open(&p).expect("open");
            c.execute_batch("PRAGMA user_version = 99;").expect("set");
        }
        let e = Journal::open(&p, None).unwrap_err();
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }

    #[test]
    fn concurrent_first_opens_migrate_once() {
        for _ in 0..20 {
            let d = tempfile::tempdir().expect("tempdir");
            let p = d.path().join("j.db");
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let p = p.clone();
                    std::thread::spawn(move || Journal::open(&p, None).map(|_| ()))
                })
                .collect();
            for h in handles {
                h.join()
                    .expect("thread")
                    .expect("every concurrent open succeeds");
            }
        }
    }
}
