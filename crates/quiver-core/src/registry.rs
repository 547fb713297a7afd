//! The registry: every applied definition with its full history, in SQLite.
//!
//! Each object has a per-object version that grows by one whenever its *identity*
//! (query, schema, entities, TTL, keys, path, …) changes; a change to metadata only
//! (comment, tags, owner) updates the current version in place. Removed objects are
//! marked deleted, never erased, so `quiver history` can always answer.
//!
//! Safe for several processes: the database runs in WAL mode, writers take the write
//! lock up front (`BEGIN IMMEDIATE`) and compute their diff *inside* the transaction, so
//! of two concurrent `apply`s one wins and the other sees its result and changes nothing.
//! A connection is opened per operation, which keeps [`Registry`] `Send + Sync`.

mod plan;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

pub use plan::{Action, Change, Plan, content_hash};

use crate::diagnostic::closest;
use crate::model::{Object, ObjectKind};
use crate::{Error, Result};

/// The registry file inside the state folder.
pub const REGISTRY_FILE: &str = "registry.db";

const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    deleted         INTEGER NOT NULL DEFAULT 0,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS object_versions (
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    definition   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (kind, name, version)
);
CREATE TABLE IF NOT EXISTS history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    applied_at TEXT NOT NULL,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    action     TEXT NOT NULL,
    fields     TEXT NOT NULL,
    definition TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_name ON history (name, id);
CREATE TABLE IF NOT EXISTS watermarks (
    view      TEXT NOT NULL,
    version   INTEGER NOT NULL,
    watermark INTEGER NOT NULL,
    PRIMARY KEY (view, version)
);
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    details     TEXT NOT NULL
);
";

/// A recorded run: a materialization or a training-set export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    /// `materialize` or `export`.
    pub kind: String,
    pub started_at: String,
    pub finished_at: String,
    /// What the run did (view versions, interval, rows, files, output path, …).
    pub details: serde_json::Value,
}

/// One object as the registry holds it now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectRecord {
    pub kind: ObjectKind,
    pub name: String,
    pub version: u32,
    pub content_hash: String,
    pub deleted: bool,
    pub created_at: String,
    pub updated_at: String,
    pub definition: Object,
}

/// One entry of an object's history: what an `apply` did to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub applied_at: String,
    pub kind: ObjectKind,
    pub name: String,
    pub version: u32,
    /// `added`, `new_version`, `metadata`, `removed` or `restored`.
    pub action: String,
    /// Top-level fields that changed.
    pub fields: Vec<String>,
    pub definition: Object,
}

/// The registry of one feature repository.
#[derive(Debug, Clone)]
pub struct Registry {
    path: PathBuf,
}

impl Registry {
    /// Opens (creating when needed) the registry in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Registry> {
        std::fs::create_dir_all(state_dir).map_err(|source| Error::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let registry = Registry {
            path: state_dir.join(REGISTRY_FILE),
        };
        let mut conn = registry.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| registry.db_error(e))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| registry.db_error(e))?;
        if version > SCHEMA_VERSION {
            return Err(Error::CorruptRegistry {
                path: registry.path.clone(),
                message: format!(
                    "schema version {version}, this Quiver reads up to {SCHEMA_VERSION}"
                ),
            });
        }
        tx.execute_batch(SCHEMA).map_err(|e| registry.db_error(e))?;
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(|e| registry.db_error(e))?;
        tx.commit().map_err(|e| registry.db_error(e))?;
        Ok(registry)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path).map_err(|e| self.db_error(e))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| self.db_error(e))?;
        // Switching a new file to WAL takes a lock SQLite may refuse at once instead of
        // waiting the busy timeout (several first `apply`s at the same moment): retry.
        let started = Instant::now();
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Ok(()) => break,
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_RETRY => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(self.db_error(e)),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.db_error(e))?;
        Ok(conn)
    }

    fn db_error(&self, source: rusqlite::Error) -> Error {
        Error::Registry {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, message: impl Into<String>) -> Error {
        Error::CorruptRegistry {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// What [`apply`](Self::apply) would do with `desired`, without writing.
    pub fn plan(&self, desired: &[Object]) -> Result<Plan> {
        let conn = self.connect()?;
        let current = self.records(&conn, true)?;
        Ok(plan::diff(&current, desired))
    }

    /// Records `desired` as the new state: adds, versions, updates and removes objects.
    /// Returns what changed; applying the same definitions twice changes nothing.
    pub fn apply(&self, desired: &[Object], now: DateTime<Utc>) -> Result<Plan> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db_error(e))?;
        let current = self.records(&tx, true)?;
        let plan = plan::diff(&current, desired);
        let now = timestamp(now);
        for change in &plan.changes {
            self.write_change(&tx, change, &now)?;
        }
        tx.commit().map_err(|e| self.db_error(e))?;
        Ok(plan)
    }

    fn write_change(
        &self,
        tx: &rusqlite::Transaction<'_>,
        change: &Change,
        now: &str,
    ) -> Result<()> {
        let kind = change.kind.as_str();
        let definition = serde_json::to_string(&change.definition)
            .expect("definition objects always serialize to JSON");
        let hash = plan::content_hash(&change.definition);
        let version = change.action.version();
        let db = |e| self.db_error(e);
        match change.action {
            Action::Add { .. } | Action::NewVersion { .. } => {
                tx.execute(
                    "INSERT INTO object_versions (kind, name, version, content_hash, definition, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                    params![kind, change.name, version, hash, definition, now],
                )
                .map_err(db)?;
            }
            Action::UpdateMetadata { .. } | Action::Restore { .. } => {
                tx.execute(
                    "UPDATE object_versions SET definition = ?4, updated_at = ?5
                     WHERE kind = ?1 AND name = ?2 AND version = ?3",
                    params![kind, change.name, version, definition, now],
                )
                .map_err(db)?;
            }
            Action::Remove { .. } => {}
        }
        let deleted = matches!(change.action, Action::Remove { .. });
        tx.execute(
            "INSERT INTO objects (kind, name, current_version, deleted, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, name) DO UPDATE SET current_version = ?3, deleted = ?4, updated_at = ?5",
            params![kind, change.name, version, deleted, now],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO history (applied_at, kind, name, version, action, fields, definition)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                now,
                kind,
                change.name,
                version,
                change.action.name(),
                serde_json::to_string(&change.fields).expect("strings serialize"),
                definition
            ],
        )
        .map_err(db)?;
        Ok(())
    }

    /// Every object (live ones only unless `with_deleted`), at its current version,
    /// sorted by kind and name.
    pub fn list(&self, with_deleted: bool) -> Result<Vec<ObjectRecord>> {
        let conn = self.connect()?;
        self.records(&conn, with_deleted)
    }

    fn records(&self, conn: &Connection, with_deleted: bool) -> Result<Vec<ObjectRecord>> {
        let mut stmt = conn
            .prepare(
                "SELECT o.kind, o.name, o.current_version, v.content_hash, o.deleted, v.created_at, o.updated_at, v.definition
                 FROM objects o JOIN object_versions v
                   ON v.kind = o.kind AND v.name = o.name AND v.version = o.current_version
                 WHERE ?1 OR o.deleted = 0
                 ORDER BY o.kind, o.name",
            )
            .map_err(|e| self.db_error(e))?;
        let rows = stmt
            .query_map([with_deleted], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                ))
            })
            .map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, name, version, content_hash, deleted, created_at, updated_at, definition) =
                row.map_err(|e| self.db_error(e))?;
            out.push(ObjectRecord {
                kind: ObjectKind::parse(&kind)
                    .ok_or_else(|| self.corrupt(format!("unknown object kind `{kind}`")))?,
                definition: self.decode(&name, &definition)?,
                name,
                version,
                content_hash,
                deleted,
                created_at,
                updated_at,
            });
        }
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(out)
    }

    fn decode(&self, name: &str, definition: &str) -> Result<Object> {
        serde_json::from_str(definition)
            .map_err(|e| self.corrupt(format!("definition of `{name}`: {e}")))
    }

    /// The object called `name` (any kind): the live one, else the most recently deleted.
    pub fn get(&self, name: &str) -> Result<ObjectRecord> {
        let conn = self.connect()?;
        let records = self.records(&conn, true)?;
        let mut matching: Vec<_> = records.iter().filter(|r| r.name == name).collect();
        matching.sort_by_key(|r| (!r.deleted, r.updated_at.clone()));
        match matching.last() {
            Some(record) => Ok((*record).clone()),
            None => Err(Error::UnknownObject {
                name: name.to_string(),
                suggestion: closest(
                    name,
                    records
                        .iter()
                        .filter(|r| !r.deleted)
                        .map(|r| r.name.as_str()),
                ),
            }),
        }
    }

    /// A specific version of an object.
    pub fn version(&self, kind: ObjectKind, name: &str, version: u32) -> Result<Option<Object>> {
        let conn = self.connect()?;
        let definition: Option<String> = conn
            .query_row(
                "SELECT definition FROM object_versions WHERE kind = ?1 AND name = ?2 AND version = ?3",
                params![kind.as_str(), name, version],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_error(e))?;
        definition.map(|d| self.decode(name, &d)).transpose()
    }

    /// Everything `apply` ever did to objects called `name`, oldest first.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryEntry>> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare("SELECT applied_at, kind, version, action, fields, definition FROM history WHERE name = ?1 ORDER BY id")
            .map_err(|e| self.db_error(e))?;
        let rows = stmt
            .query_map([name], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (applied_at, kind, version, action, fields, definition) =
                row.map_err(|e| self.db_error(e))?;
            out.push(HistoryEntry {
                applied_at,
                kind: ObjectKind::parse(&kind)
                    .ok_or_else(|| self.corrupt(format!("unknown object kind `{kind}`")))?,
                name: name.to_string(),
                version,
                action,
                fields: serde_json::from_str(&fields)
                    .map_err(|e| self.corrupt(format!("history fields: {e}")))?,
                definition: self.decode(name, &definition)?,
            });
        }
        if out.is_empty() {
            let records = self.records(&conn, false)?;
            return Err(Error::UnknownObject {
                name: name.to_string(),
                suggestion: closest(name, records.iter().map(|r| r.name.as_str())),
            });
        }
        Ok(out)
    }
}

impl Registry {
    /// Records a finished run; returns its id.
    pub fn record_run(
        &self,
        kind: &str,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        details: &serde_json::Value,
    ) -> Result<i64> {
        let conn = self.connect()?;
        conn.execute(
            "INSERT INTO runs (kind, started_at, finished_at, details) VALUES (?1, ?2, ?3, ?4)",
            params![
                kind,
                timestamp(started_at),
                timestamp(finished_at),
                details.to_string()
            ],
        )
        .map_err(|e| self.db_error(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// A value that changes whenever `apply` changes anything or a view version becomes
    /// servable (its first materialization) or stops being so (`drop`): readers cache
    /// what they derived from the registry until it moves.
    pub fn change_stamp(&self) -> Result<(i64, i64)> {
        let conn = self.connect()?;
        conn.query_row(
            "SELECT (SELECT coalesce(max(id), 0) FROM history), (SELECT count(*) FROM watermarks)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| self.db_error(e))
    }

    /// Every (view, version) with a watermark: the versions materialization has
    /// completed for at least once, which lookups may read.
    pub fn materialized_versions(&self) -> Result<Vec<(String, u32)>> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare("SELECT view, version FROM watermarks ORDER BY view, version")
            .map_err(|e| self.db_error(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.db_error(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.db_error(e))
    }

    /// Forgets a view version's watermark (its online data was dropped): the next
    /// incremental materialization starts from the beginning.
    pub fn reset_watermark(&self, view: &str, version: u32) -> Result<bool> {
        let conn = self.connect()?;
        let n = conn
            .execute(
                "DELETE FROM watermarks WHERE view = ?1 AND version = ?2",
                params![view, version],
            )
            .map_err(|e| self.db_error(e))?;
        Ok(n > 0)
    }

    /// Every version number an object ever had.
    pub fn versions(&self, kind: ObjectKind, name: &str) -> Result<Vec<u32>> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare("SELECT version FROM object_versions WHERE kind = ?1 AND name = ?2 ORDER BY version")
            .map_err(|e| self.db_error(e))?;
        let rows = stmt
            .query_map(params![kind.as_str(), name], |r| r.get(0))
            .map_err(|e| self.db_error(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.db_error(e))
    }

    /// The end (µs) of the last successful materialization of a view version.
    pub fn watermark(&self, view: &str, version: u32) -> Result<Option<i64>> {
        let conn = self.connect()?;
        conn.query_row(
            "SELECT watermark FROM watermarks WHERE view = ?1 AND version = ?2",
            params![view, version],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.db_error(e))
    }

    /// Moves a view version's watermark forward to `end` (never backward).
    pub fn advance_watermark(&self, view: &str, version: u32, end: i64) -> Result<()> {
        let conn = self.connect()?;
        conn.execute(
            "INSERT INTO watermarks (view, version, watermark) VALUES (?1, ?2, ?3)
             ON CONFLICT (view, version) DO UPDATE SET watermark = max(watermark, ?3)",
            params![view, version, end],
        )
        .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Runs of one kind (or all), newest first, at most `limit`.
    pub fn runs(&self, kind: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(
                "SELECT id, kind, started_at, finished_at, details FROM runs
                 WHERE ?1 IS NULL OR kind = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.db_error(e))?;
        let rows = stmt
            .query_map(params![kind, limit as i64], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, started_at, finished_at, details) = row.map_err(|e| self.db_error(e))?;
            out.push(RunRecord {
                id,
                kind,
                started_at,
                finished_at,
                details: serde_json::from_str(&details)
                    .map_err(|e| self.corrupt(format!("run {id}: {e}")))?,
            });
        }
        Ok(out)
    }
}

/// RFC 3339 with microseconds and `Z`, as every Quiver timestamp is written.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// How long opening the registry retries a lock SQLite refused without waiting.
const BUSY_RETRY: Duration = Duration::from_secs(30);

/// Whether SQLite refused a lock another connection holds.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
