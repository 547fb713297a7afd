//! The registry: every applied definition with its full history, in SQLite (the
//! default, `.quiver/registry.db`) or in a PostgreSQL database shared by a team
//! (`[registry] url`).
//!
//! Each object has a per-object version that grows by one whenever its *identity*
//! (query, schema, entities, TTL, keys, path, …) changes; a change to metadata only
//! (comment, tags, owner) updates the current version in place. Removed objects are
//! marked deleted, never erased, so `quiver history` can always answer.
//!
//! Safe for several processes and, on PostgreSQL, several machines: a writer excludes
//! every other writer before it reads and computes its diff *inside* its transaction, so
//! of two concurrent `apply`s one wins and the other sees its result and changes nothing.
//! The semantics live here once; [`database`] holds what differs between the two.

mod database;
mod plan;
mod postgres;
mod sqlite;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use database::{Database, Row, Session};
pub use database::{RegistryLocation, RunClaim};
pub use plan::{Action, Change, Plan, content_hash};

use crate::diagnostic::closest;
use crate::model::{Object, ObjectKind};
use crate::{Error, Result};

/// The registry file inside the state folder.
pub const REGISTRY_FILE: &str = "registry.db";

/// The registry schema this binary reads and writes; a newer database is refused.
const SCHEMA_VERSION: i64 = 3;

/// The registry's tables, for both databases: `{integer}` and `{serial}` (an id that
/// numbers rows in insertion order) are each database's own types.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL,
    current_version {integer} NOT NULL,
    deleted         {integer} NOT NULL DEFAULT 0,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS object_versions (
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      {integer} NOT NULL,
    content_hash TEXT NOT NULL,
    definition   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (kind, name, version)
);
CREATE TABLE IF NOT EXISTS history (
    id         {serial},
    applied_at TEXT NOT NULL,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    {integer} NOT NULL,
    action     TEXT NOT NULL,
    fields     TEXT NOT NULL,
    definition TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_name ON history (name, id);
CREATE TABLE IF NOT EXISTS watermarks (
    view      TEXT NOT NULL,
    version   {integer} NOT NULL,
    watermark {integer} NOT NULL,
    PRIMARY KEY (view, version)
);
CREATE TABLE IF NOT EXISTS runs (
    id          {serial},
    kind        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    details     TEXT NOT NULL
);
";

/// [`SCHEMA`] with each database's types put in.
fn schema(integer: &str, serial: &str) -> String {
    SCHEMA
        .replace("{serial}", serial)
        .replace("{integer}", integer)
}

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
    db: Database,
}

impl Registry {
    /// Opens (creating and migrating when needed) the registry at `location` for
    /// `project`; a PostgreSQL registry of another project is refused.
    pub fn open(location: &RegistryLocation, project: &str) -> Result<Registry> {
        Ok(Registry {
            db: Database::open(location, project)?,
        })
    }

    /// The database, for messages: the SQLite file, or the URL without its password.
    pub fn location(&self) -> &str {
        self.db.location()
    }

    fn corrupt(&self, message: impl Into<String>) -> Error {
        self.db.corrupt(message)
    }

    /// What [`apply`](Self::apply) would do with `desired`, without writing.
    pub fn plan(&self, desired: &[Object]) -> Result<Plan> {
        let current = self.db.read(|s| self.records(s, true))?;
        Ok(plan::diff(&current, desired))
    }

    /// Records `desired` as the new state: adds, versions, updates and removes objects.
    /// Returns what changed; applying the same definitions twice changes nothing.
    pub fn apply(&self, desired: &[Object], now: DateTime<Utc>) -> Result<Plan> {
        let now = timestamp(now);
        self.db.write(|s| {
            let current = self.records(s, true)?;
            let plan = plan::diff(&current, desired);
            for change in &plan.changes {
                write_change(s, change, &now)?;
            }
            Ok(plan)
        })
    }

    /// Every object (live ones only unless `with_deleted`), at its current version,
    /// sorted by kind and name.
    pub fn list(&self, with_deleted: bool) -> Result<Vec<ObjectRecord>> {
        self.db.read(|s| self.records(s, with_deleted))
    }

    fn records(&self, s: &mut dyn Session, with_deleted: bool) -> Result<Vec<ObjectRecord>> {
        let rows = s.query(
            "SELECT o.kind, o.name, o.current_version, v.content_hash, o.deleted, v.created_at, o.updated_at, v.definition
             FROM objects o JOIN object_versions v
               ON v.kind = o.kind AND v.name = o.name AND v.version = o.current_version
             WHERE $1 = 1 OR o.deleted = 0
             ORDER BY o.kind, o.name",
            &[with_deleted.into()],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.record(row).map_err(|e| self.corrupt(e))?);
        }
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(out)
    }

    fn record(&self, row: &Row) -> Result<ObjectRecord, String> {
        let name = row.text(1)?;
        Ok(ObjectRecord {
            kind: kind(&row.text(0)?)?,
            version: row.version(2)?,
            content_hash: row.text(3)?,
            deleted: row.int(4)? != 0,
            created_at: row.text(5)?,
            updated_at: row.text(6)?,
            definition: decode(&name, &row.text(7)?)?,
            name,
        })
    }

    /// The object called `name` (any kind): the live one, else the most recently deleted.
    pub fn get(&self, name: &str) -> Result<ObjectRecord> {
        let records = self.list(true)?;
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
        let rows = self.db.read(|s| {
            s.query(
                "SELECT definition FROM object_versions WHERE kind = $1 AND name = $2 AND version = $3",
                &[kind.as_str().into(), name.into(), version.into()],
            )
        })?;
        rows.first()
            .map(|row| row.text(0).and_then(|d| decode(name, &d)))
            .transpose()
            .map_err(|e| self.corrupt(e))
    }

    /// Everything `apply` ever did to objects called `name`, oldest first.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryEntry>> {
        let rows = self.db.read(|s| {
            s.query(
                "SELECT applied_at, kind, version, action, fields, definition FROM history WHERE name = $1 ORDER BY id",
                &[name.into()],
            )
        })?;
        let entry = |row: &Row| -> Result<HistoryEntry, String> {
            Ok(HistoryEntry {
                applied_at: row.text(0)?,
                kind: kind(&row.text(1)?)?,
                name: name.to_string(),
                version: row.version(2)?,
                action: row.text(3)?,
                fields: serde_json::from_str(&row.text(4)?)
                    .map_err(|e| format!("history fields: {e}"))?,
                definition: decode(name, &row.text(5)?)?,
            })
        };
        let out = rows
            .iter()
            .map(entry)
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| self.corrupt(e))?;
        if out.is_empty() {
            let records = self.list(false)?;
            return Err(Error::UnknownObject {
                name: name.to_string(),
                suggestion: closest(name, records.iter().map(|r| r.name.as_str())),
            });
        }
        Ok(out)
    }
}

/// Writes one change of an `apply` (inside its transaction).
fn write_change(s: &mut dyn Session, change: &Change, now: &str) -> Result<()> {
    let kind = change.kind.as_str();
    let definition = serde_json::to_string(&change.definition)
        .expect("definition objects always serialize to JSON");
    let hash = plan::content_hash(&change.definition);
    let version = change.action.version();
    match change.action {
        Action::Add { .. } | Action::NewVersion { .. } => {
            s.execute(
                "INSERT INTO object_versions (kind, name, version, content_hash, definition, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
                &[
                    kind.into(),
                    change.name.as_str().into(),
                    version.into(),
                    hash.into(),
                    definition.as_str().into(),
                    now.into(),
                ],
            )?;
        }
        Action::UpdateMetadata { .. } | Action::Restore { .. } => {
            s.execute(
                "UPDATE object_versions SET definition = $4, updated_at = $5
                 WHERE kind = $1 AND name = $2 AND version = $3",
                &[
                    kind.into(),
                    change.name.as_str().into(),
                    version.into(),
                    definition.as_str().into(),
                    now.into(),
                ],
            )?;
        }
        Action::Remove { .. } => {}
    }
    let deleted = matches!(change.action, Action::Remove { .. });
    s.execute(
        "INSERT INTO objects (kind, name, current_version, deleted, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (kind, name) DO UPDATE SET current_version = $3, deleted = $4, updated_at = $5",
        &[
            kind.into(),
            change.name.as_str().into(),
            version.into(),
            deleted.into(),
            now.into(),
        ],
    )?;
    s.execute(
        "INSERT INTO history (applied_at, kind, name, version, action, fields, definition)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            now.into(),
            kind.into(),
            change.name.as_str().into(),
            version.into(),
            change.action.name().into(),
            serde_json::to_string(&change.fields)
                .expect("strings serialize")
                .into(),
            definition.into(),
        ],
    )?;
    Ok(())
}

fn kind(text: &str) -> Result<ObjectKind, String> {
    ObjectKind::parse(text).ok_or_else(|| format!("unknown object kind `{text}`"))
}

fn decode(name: &str, definition: &str) -> Result<Object, String> {
    serde_json::from_str(definition).map_err(|e| format!("definition of `{name}`: {e}"))
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
        let rows = self.db.write(|s| {
            s.query(
                "INSERT INTO runs (kind, started_at, finished_at, details) VALUES ($1, $2, $3, $4) RETURNING id",
                &[
                    kind.into(),
                    timestamp(started_at).into(),
                    timestamp(finished_at).into(),
                    details.to_string().into(),
                ],
            )
        })?;
        first(&rows)
            .and_then(|row| row.int(0))
            .map_err(|e| self.corrupt(e))
    }

    /// A value that changes whenever `apply` changes anything or a view version becomes
    /// servable (its first materialization) or stops being so (`drop`): readers cache
    /// what they derived from the registry until it moves.
    pub fn change_stamp(&self) -> Result<(i64, i64)> {
        let rows = self.db.read(|s| {
            s.query(
                "SELECT (SELECT coalesce(max(id), 0) FROM history), (SELECT count(*) FROM watermarks)",
                &[],
            )
        })?;
        first(&rows)
            .and_then(|row| Ok((row.int(0)?, row.int(1)?)))
            .map_err(|e| self.corrupt(e))
    }

    /// Every (view, version) with a watermark: the versions materialization has
    /// completed for at least once, which lookups may read.
    pub fn materialized_versions(&self) -> Result<Vec<(String, u32)>> {
        let rows = self.db.read(|s| {
            s.query(
                "SELECT view, version FROM watermarks ORDER BY view, version",
                &[],
            )
        })?;
        rows.iter()
            .map(|row| Ok((row.text(0)?, row.version(1)?)))
            .collect::<Result<_, String>>()
            .map_err(|e| self.corrupt(e))
    }

    /// Forgets a view version's watermark (its online data was dropped): the next
    /// incremental materialization starts from the beginning.
    pub fn reset_watermark(&self, view: &str, version: u32) -> Result<bool> {
        let n = self.db.write(|s| {
            s.execute(
                "DELETE FROM watermarks WHERE view = $1 AND version = $2",
                &[view.into(), version.into()],
            )
        })?;
        Ok(n > 0)
    }

    /// Every version number an object ever had.
    pub fn versions(&self, kind: ObjectKind, name: &str) -> Result<Vec<u32>> {
        let rows = self.db.read(|s| {
            s.query(
                "SELECT version FROM object_versions WHERE kind = $1 AND name = $2 ORDER BY version",
                &[kind.as_str().into(), name.into()],
            )
        })?;
        rows.iter()
            .map(|row| row.version(0))
            .collect::<Result<_, String>>()
            .map_err(|e| self.corrupt(e))
    }

    /// The end (µs) of the last successful materialization of a view version.
    pub fn watermark(&self, view: &str, version: u32) -> Result<Option<i64>> {
        let rows = self.db.read(|s| {
            s.query(
                "SELECT watermark FROM watermarks WHERE view = $1 AND version = $2",
                &[view.into(), version.into()],
            )
        })?;
        rows.first()
            .map(|row| row.int(0))
            .transpose()
            .map_err(|e| self.corrupt(e))
    }

    /// Moves a view version's watermark forward to `end` (never backward).
    pub fn advance_watermark(&self, view: &str, version: u32, end: i64) -> Result<()> {
        self.db.write(|s| {
            s.execute(
                "INSERT INTO watermarks (view, version, watermark) VALUES ($1, $2, $3)
                 ON CONFLICT (view, version) DO UPDATE SET watermark =
                   CASE WHEN watermarks.watermark > excluded.watermark
                        THEN watermarks.watermark ELSE excluded.watermark END",
                &[view.into(), version.into(), end.into()],
            )
        })?;
        Ok(())
    }

    /// Runs of one kind (or all), newest first, at most `limit`.
    pub fn runs(&self, kind: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.db.read(|s| {
            s.query(
                "SELECT id, kind, started_at, finished_at, details FROM runs
                 WHERE $1 IS NULL OR kind = $1 ORDER BY id DESC LIMIT $2",
                &[kind.into(), limit.into()],
            )
        })?;
        let run = |row: &Row| -> Result<RunRecord, String> {
            let id = row.int(0)?;
            Ok(RunRecord {
                id,
                kind: row.text(1)?,
                started_at: row.text(2)?,
                finished_at: row.text(3)?,
                details: serde_json::from_str(&row.text(4)?)
                    .map_err(|e| format!("run {id}: {e}"))?,
            })
        };
        rows.iter()
            .map(run)
            .collect::<Result<_, String>>()
            .map_err(|e| self.corrupt(e))
    }

    /// Claims the run called `name` (a view's materialization) against every process
    /// sharing this registry — on PostgreSQL, every machine — for as long as the claim
    /// lives; `None` when another holds it. A process that dies releases its claims.
    pub fn try_claim_run(&self, name: &str) -> Result<Option<RunClaim>> {
        self.db.try_claim(name)
    }
}

/// The single row a statement returns.
fn first(rows: &[Row]) -> Result<&Row, String> {
    rows.first()
        .ok_or_else(|| "a statement returned no row".to_string())
}

/// RFC 3339 with microseconds and `Z`, as every Quiver timestamp is written.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}
