//! Versioned schema migrations, applied in order inside one transaction
//! each. `PRAGMA user_version` holds the version reached.

use rusqlite::Connection;

use super::JournalError;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     INSERT INTO meta (key, value) VALUES ('schema', 'trailkeep');
     CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_key TEXT NOT NULL UNIQUE,
        stream TEXT NOT NULL,
        event_time_ms INTEGER NOT NULL,
        ingested_ms INTEGER NOT NULL,
        payload TEXT NOT NULL
     );
     CREATE TABLE checkpoints (
        stream TEXT PRIMARY KEY,
        watermark_ms INTEGER,
        window_from_ms INTEGER,
        window_to_ms INTEGER,
        cursor TEXT,
        has_window INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL,
        fetched INTEGER NOT NULL DEFAULT 0,
        stored INTEGER NOT NULL DEFAULT 0,
        duplicates INTEGER NOT NULL DEFAULT 0,
        rejected INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_error_ms INTEGER
     );
     CREATE TABLE sink_cursors (
        sink TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        dead INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL,
        last_error TEXT
     );
     CREATE TABLE sink_state (
        sink TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (sink, key)
     );
     CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        origin TEXT NOT NULL,
        origin_kind TEXT NOT NULL,
        seq INTEGER,
        event_key TEXT,
        reason TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_ms INTEGER NOT NULL
     );
     CREATE INDEX dead_letters_origin ON dead_letters (origin);
     CREATE TABLE gaps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        from_ms INTEGER NOT NULL,
        to_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_ms INTEGER NOT NULL
     );",
    // 2: the event's action beside its payload, so sinks that only need it
    // (Splunk HEC's indexed `action` field) do not parse every payload.
    // Rows written before it read NULL and are parsed as before.
    "ALTER TABLE events ADD COLUMN action TEXT",
];

pub fn migrate(conn: &Connection, path: &str) -> Result<(), JournalError> {
    let sql = |source| JournalError::Sqlite {
        path: path.to_string(),
        source,
    };
    let supported = MIGRATIONS.len() as i64;
    for (i, m) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        // BEGIN IMMEDIATE takes the write lock before reading the version,
        // so two processes opening a new journal at once (the service and
        // `status`, or a restart racing a dying process) migrate it once.
        conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
        let current: i64 = match conn.query_row("PRAGMA user_version", [], |r| r.get(0)) {
            Ok(v) => v,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(sql(e));
            }
        };
        if current > supported {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(JournalError::TooNew {
                path: path.to_string(),
                found: current,
                supported,
            });
        }
        if current >= version {
            conn.execute_batch("COMMIT").map_err(sql)?;
            continue;
        }
        if let Err(e) = conn.execute_batch(&format!("{m}; PRAGMA user_version = {version};")) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(sql(e));
        }
        conn.execute_batch("COMMIT").map_err(sql)?;
    }
    Ok(())
}
