//! The default registry: `registry.db`, a SQLite file in the repository's state folder.
//!
//! Safe for several processes on one machine: the database runs in WAL mode, writers
//! take the write lock up front (`BEGIN IMMEDIATE`) so they compute their diff *inside*
//! the transaction, and a connection is opened per operation. Run claims are locked files
//! in `.quiver/claims/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use super::database::{Held, Row, RunClaim, Session, Value, claim_key};
use super::{REGISTRY_FILE, SCHEMA_VERSION};
use crate::{Error, Result};

/// [`super::SCHEMA`] in SQLite's types (`INTEGER PRIMARY KEY` is the rowid).
fn schema() -> String {
    super::schema("INTEGER", "INTEGER PRIMARY KEY AUTOINCREMENT")
}

/// The folder of run claim files inside the state folder.
const CLAIMS_DIR: &str = "claims";

/// How long opening the registry retries a lock SQLite refused without waiting.
const BUSY_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct SqliteDatabase {
    path: PathBuf,
    location: String,
}

impl SqliteDatabase {
    /// Opens (creating when needed) `registry.db` in `state_dir`.
    pub(crate) fn open(state_dir: &Path) -> Result<SqliteDatabase> {
        std::fs::create_dir_all(state_dir).map_err(|source| Error::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(REGISTRY_FILE);
        let db = SqliteDatabase {
            location: path.display().to_string(),
            path,
        };
        let mut conn = db.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db.error(e))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| db.error(e))?;
        if version > SCHEMA_VERSION {
            return Err(Error::CorruptRegistry {
                location: db.location.clone(),
                message: format!(
                    "schema version {version}, this Quiver reads up to {SCHEMA_VERSION}: upgrade Quiver"
                ),
            });
        }
        tx.execute_batch(&schema()).map_err(|e| db.error(e))?;
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(|e| db.error(e))?;
        tx.commit().map_err(|e| db.error(e))?;
        Ok(db)
    }

    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut dyn Session) -> Result<T>) -> Result<T> {
        let conn = self.connect()?;
        f(&mut SqliteSession {
            conn: &conn,
            db: self,
        })
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut dyn Session) -> Result<T>) -> Result<T> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error(e))?;
        let out = f(&mut SqliteSession {
            conn: &tx,
            db: self,
        })?;
        tx.commit().map_err(|e| self.error(e))?;
        Ok(out)
    }

    pub(crate) fn try_claim(&self, name: &str) -> Result<Option<RunClaim>> {
        let dir = self
            .path
            .parent()
            .expect("the registry file is in the state folder")
            .join(CLAIMS_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        // Any name (any script, any length) maps to a short, safe file name.
        let path = dir.join(format!("{:016x}.lock", claim_key(name) as u64));
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RunClaim {
                _held: Held::File(file),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(Error::Io { path, source }),
        }
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path).map_err(|e| self.error(e))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| self.error(e))?;
        // Switching a new file to WAL takes a lock SQLite may refuse at once instead of
        // waiting the busy timeout (several first `apply`s at the same moment): retry.
        let started = Instant::now();
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Ok(()) => break,
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_RETRY => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(self.error(e)),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.error(e))?;
        Ok(conn)
    }

    fn error(&self, source: rusqlite::Error) -> Error {
        Error::Registry {
            location: self.location.clone(),
            source: Box::new(source),
        }
    }
}

struct SqliteSession<'a> {
    conn: &'a Connection,
    db: &'a SqliteDatabase,
}

impl SqliteSession<'_> {
    /// `$1` → `?1`: SQLite's numbered parameters.
    fn statement(&self, sql: &str) -> Result<rusqlite::CachedStatement<'_>> {
        self.conn
            .prepare_cached(&sql.replace('$', "?"))
            .map_err(|e| self.db.error(e))
    }
}

impl Session for SqliteSession<'_> {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut statement = self.statement(sql)?;
        let columns = statement.column_count();
        let mut rows = statement
            .query(rusqlite::params_from_iter(params))
            .map_err(|e| self.db.error(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.db.error(e))? {
            let mut values = Vec::with_capacity(columns);
            for index in 0..columns {
                values.push(match row.get_ref(index).map_err(|e| self.db.error(e))? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(value) => Value::Int(value),
                    ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into()),
                    ValueRef::Real(_) | ValueRef::Blob(_) => {
                        return Err(Error::CorruptRegistry {
                            location: self.db.location.clone(),
                            message: format!("column {index} of `{sql}` holds a real or a blob"),
                        });
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut statement = self.statement(sql)?;
        let changed = statement
            .execute(rusqlite::params_from_iter(params))
            .map_err(|e| self.db.error(e))?;
        Ok(changed as u64)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Int(value) => ToSqlOutput::Borrowed(ValueRef::Integer(*value)),
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// Whether SQLite refused a lock another connection holds.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
