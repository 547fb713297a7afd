//! The two databases a registry can live in — a SQLite file inside the repository (the
//! default) and a PostgreSQL database shared by every checkout and server of a project —
//! behind one small interface, so the registry's semantics are written once.
//!
//! Statements use `$1`-style parameters and SQL both databases accept; every value is an
//! integer (`BIGINT`), text or NULL. Each backend owns its connections, its schema
//! migrations, how a writer excludes other writers, and run claims.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::postgres::{LockSession, PostgresDatabase};
use super::sqlite::SqliteDatabase;
use crate::{Error, Result};

/// Where a registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    /// `registry.db` (SQLite) in the repository's state folder.
    Sqlite { state_dir: PathBuf },
    /// A PostgreSQL database, `postgres://user[:password]@host[:port]/database`.
    Postgres { url: String },
}

/// A statement parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    Text(String),
    Null,
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<u32> for Value {
    fn from(value: u32) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_string())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<Option<&str>> for Value {
    fn from(value: Option<&str>) -> Self {
        value.map_or(Value::Null, Value::from)
    }
}

/// One result row.
#[derive(Debug)]
pub(crate) struct Row(pub(crate) Vec<Value>);

impl Row {
    /// The integer in column `index`.
    pub(crate) fn int(&self, index: usize) -> Result<i64, String> {
        match self.0.get(index) {
            Some(Value::Int(value)) => Ok(*value),
            other => Err(format!(
                "column {index}: expected an integer, found {other:?}"
            )),
        }
    }

    /// The text in column `index`.
    pub(crate) fn text(&self, index: usize) -> Result<String, String> {
        match self.0.get(index) {
            Some(Value::Text(value)) => Ok(value.clone()),
            other => Err(format!("column {index}: expected text, found {other:?}")),
        }
    }

    /// The version number in column `index`.
    pub(crate) fn version(&self, index: usize) -> Result<u32, String> {
        let value = self.int(index)?;
        u32::try_from(value).map_err(|_| format!("column {index}: version {value} out of range"))
    }
}

/// A connection (or an open transaction) to run statements on.
pub(crate) trait Session {
    /// Runs a statement that returns rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
}

/// An open registry database.
#[derive(Debug, Clone)]
pub(crate) enum Database {
    Sqlite(Arc<SqliteDatabase>),
    Postgres(Arc<PostgresDatabase>),
}

impl Database {
    /// Opens (creating and migrating when needed) the registry at `location` for `project`.
    pub(crate) fn open(location: &RegistryLocation, project: &str) -> Result<Database> {
        Ok(match location {
            RegistryLocation::Sqlite { state_dir } => {
                Database::Sqlite(Arc::new(SqliteDatabase::open(state_dir)?))
            }
            RegistryLocation::Postgres { url } => {
                Database::Postgres(Arc::new(PostgresDatabase::open(url, project)?))
            }
        })
    }

    /// The database for messages: the SQLite file, or the URL without its password.
    pub(crate) fn location(&self) -> &str {
        match self {
            Database::Sqlite(db) => db.location(),
            Database::Postgres(db) => db.location(),
        }
    }

    /// Runs `f`, which only reads, on a connection outside any write transaction; it may
    /// run twice (once more on a new connection when an idle one had died).
    pub(crate) fn read<T: Send>(
        &self,
        f: impl Fn(&mut dyn Session) -> Result<T> + Send + Sync,
    ) -> Result<T> {
        match self {
            Database::Sqlite(db) => db.read(f),
            Database::Postgres(db) => db.read(f),
        }
    }

    /// Runs `f` in a transaction that excludes every other writer of this registry, on
    /// any machine, from before `f` reads until it commits; an error rolls it back.
    pub(crate) fn write<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Session) -> Result<T> + Send,
    ) -> Result<T> {
        match self {
            Database::Sqlite(db) => db.write(f),
            Database::Postgres(db) => db.write(f),
        }
    }

    /// Claims the run named `name` for as long as the returned claim lives, against every
    /// process sharing this registry; `None` when another process holds it. A process that
    /// dies releases its claims.
    pub(crate) fn try_claim(&self, name: &str) -> Result<Option<RunClaim>> {
        match self {
            Database::Sqlite(db) => db.try_claim(name),
            Database::Postgres(db) => db.try_claim(name),
        }
    }

    pub(crate) fn corrupt(&self, message: impl Into<String>) -> Error {
        Error::CorruptRegistry {
            location: self.location().to_string(),
            message: message.into(),
        }
    }
}

/// A held run claim (see [`Registry::try_claim_run`](super::Registry::try_claim_run)):
/// a locked file next to a SQLite registry, or a PostgreSQL session holding an advisory
/// lock. Dropping it releases the claim.
#[derive(Debug)]
pub struct RunClaim {
    pub(crate) _held: Held,
}

pub(crate) enum Held {
    File(#[allow(dead_code, reason = "held for its lock")] std::fs::File),
    Postgres(#[allow(dead_code, reason = "held for its session")] LockSession),
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Held::File(_) => "Held::File",
            Held::Postgres(_) => "Held::Postgres",
        })
    }
}

/// A run name's 64-bit key (the first 8 bytes of its SHA-256): the PostgreSQL advisory
/// lock, or the claim file's name, of any name in any script.
pub(crate) fn claim_key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}
