//! The shared registry: a PostgreSQL database (`[registry] url = "postgres://…"`) that
//! every checkout and feature server of a project reads and writes.
//!
//! The tables live in their own schema, `quiver`, beside a one-row `quiver_schema` table
//! that records the schema version and the project the database belongs to: a newer
//! schema than this binary knows, or another project's registry, is refused. Writers
//! take a transaction-scoped advisory lock first, so of two `apply`s on two machines one
//! commits before the other reads. Run claims are session advisory locks held on their
//! own connection, released when the claim is dropped or the process dies.

use std::sync::Mutex;
use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, NoTls};

use super::SCHEMA_VERSION;
use super::database::{Held, Row, RunClaim, Session, Value, claim_key};
use crate::config::redact_url;
use crate::{Error, Result};

/// The PostgreSQL schema (namespace) of the registry's tables.
const NAMESPACE: &str = "quiver";

/// [`super::SCHEMA`] in PostgreSQL's types.
fn schema() -> String {
    super::schema("BIGINT", "BIGSERIAL PRIMARY KEY")
}

/// How long connecting waits when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a statement waits for a lock another session holds (SQLite's busy timeout).
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a writer waits to learn whether an idle connection still works.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle connections kept for the next operation.
const MAX_IDLE: usize = 4;

/// The advisory lock every writer takes (transaction-scoped).
fn write_lock() -> i64 {
    claim_key("quiver.registry.write")
}

pub(crate) struct PostgresDatabase {
    config: postgres::Config,
    location: String,
    idle: Mutex<Vec<Client>>,
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        on_own_thread(move || drop(idle));
    }
}

/// A connection that holds a session advisory lock (a run claim) until dropped.
pub(crate) struct LockSession(Option<Client>);

impl Drop for LockSession {
    fn drop(&mut self) {
        // Closing the session releases its locks.
        let client = self.0.take();
        on_own_thread(move || drop(client));
    }
}

/// Runs `f` on a thread of its own and waits for it. The synchronous client drives a
/// small runtime of its own, which tokio refuses to start (or even to close a connection
/// with) on a thread that runs async code — and the CLI and the server call the registry
/// from async code. A thread costs tens of µs, a round trip to PostgreSQL more.
fn on_own_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl std::fmt::Debug for PostgresDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresDatabase")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PostgresDatabase {
    /// Connects, then creates or checks the registry schema for `project`.
    pub(crate) fn open(url: &str, project: &str) -> Result<PostgresDatabase> {
        on_own_thread(|| PostgresDatabase::open_here(url, project))
    }

    fn open_here(url: &str, project: &str) -> Result<PostgresDatabase> {
        let location = redact_url(url);
        let mut config: postgres::Config = url.parse().map_err(|e| Error::Registry {
            location: location.clone(),
            source: Box::new(e),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let db = PostgresDatabase {
            config,
            location,
            idle: Mutex::new(Vec::new()),
        };
        let mut client = db.connect()?;
        let mut tx = db.locked_transaction(&mut client)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {NAMESPACE};
             CREATE TABLE IF NOT EXISTS quiver_schema (version BIGINT NOT NULL, project TEXT NOT NULL);"
        ))
        .map_err(|e| db.error(e))?;
        let rows = tx
            .query("SELECT version, project FROM quiver_schema", &[])
            .map_err(|e| db.error(e))?;
        match rows.first() {
            None => {
                tx.batch_execute(&schema()).map_err(|e| db.error(e))?;
                tx.execute(
                    "INSERT INTO quiver_schema (version, project) VALUES ($1, $2)",
                    &[&SCHEMA_VERSION, &project],
                )
                .map_err(|e| db.error(e))?;
            }
            Some(row) => {
                let version: i64 = row.try_get(0).map_err(|e| db.error(e))?;
                let owner: String = row.try_get(1).map_err(|e| db.error(e))?;
                if version > SCHEMA_VERSION {
                    return Err(Error::CorruptRegistry {
                        location: db.location.clone(),
                        message: format!(
                            "schema version {version}, this Quiver reads up to {SCHEMA_VERSION}: upgrade Quiver"
                        ),
                    });
                }
                if owner != project {
                    return Err(Error::ForeignRegistry {
                        location: db.location.clone(),
                        owner,
                        project: project.to_string(),
                    });
                }
                // Every schema change after version 3 (the first on PostgreSQL) gets a
                // step here, applied under the same lock; until then this is a no-op.
                tx.batch_execute(&schema()).map_err(|e| db.error(e))?;
                tx.execute("UPDATE quiver_schema SET version = $1", &[&SCHEMA_VERSION])
                    .map_err(|e| db.error(e))?;
            }
        }
        tx.commit().map_err(|e| db.error(e))?;
        db.give_back(client);
        Ok(db)
    }

    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    pub(crate) fn read<T: Send>(
        &self,
        f: impl Fn(&mut dyn Session) -> Result<T> + Send + Sync,
    ) -> Result<T> {
        on_own_thread(|| self.read_here(f))
    }

    fn read_here<T>(&self, f: impl Fn(&mut dyn Session) -> Result<T>) -> Result<T> {
        let (mut client, pooled) = self.client()?;
        let mut out = f(&mut PostgresSession {
            client: &mut client,
            db: self,
        });
        if out.is_err() && pooled && client.is_closed() {
            // The idle connection had died (a restart, a failover, an idle timeout) and
            // reads change nothing: once more on a new connection.
            client = self.connect()?;
            out = f(&mut PostgresSession {
                client: &mut client,
                db: self,
            });
        }
        self.give_back(client);
        out
    }

    pub(crate) fn write<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Session) -> Result<T> + Send,
    ) -> Result<T> {
        on_own_thread(|| self.write_here(f))
    }

    fn write_here<T>(&self, f: impl FnOnce(&mut dyn Session) -> Result<T>) -> Result<T> {
        let (mut client, pooled) = self.client()?;
        if pooled && client.is_valid(VALIDATE_TIMEOUT).is_err() {
            // Not retried after the fact: a write may have happened.
            client = self.connect()?;
        }
        let out = (|| {
            let mut tx = self.locked_transaction(&mut client)?;
            // On an error the transaction is dropped, which rolls it back.
            let out = f(&mut PostgresSession {
                client: &mut tx,
                db: self,
            })?;
            tx.commit().map_err(|e| self.error(e))?;
            Ok(out)
        })();
        self.give_back(client);
        out
    }

    pub(crate) fn try_claim(&self, name: &str) -> Result<Option<RunClaim>> {
        let session = on_own_thread(|| -> Result<Option<Client>> {
            // Its own connection: the lock lives as long as the session.
            let mut client = self.connect()?;
            let key = claim_key(&format!("quiver.run:{name}"));
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .map_err(|e| self.error(e))?;
            let claimed: bool = row.try_get(0).map_err(|e| self.error(e))?;
            Ok(claimed.then_some(client))
        })?;
        Ok(session.map(|client| RunClaim {
            _held: Held::Postgres(LockSession(Some(client))),
        }))
    }

    fn connect(&self) -> Result<Client> {
        let mut client = self.config.connect(NoTls).map_err(|e| self.error(e))?;
        let mut setup = format!("SET search_path TO {NAMESPACE};");
        // A writer that holds the registry's lock (a stuck `apply`, an operator's open
        // transaction) makes others fail after a while rather than wait forever, as
        // SQLite's busy timeout does; `?options=-c lock_timeout=…` in the URL wins.
        if !self
            .config
            .get_options()
            .is_some_and(|o| o.contains("lock_timeout"))
        {
            setup.push_str(&format!(
                "SET lock_timeout = '{}s';",
                LOCK_TIMEOUT.as_secs()
            ));
        }
        client.batch_execute(&setup).map_err(|e| self.error(e))?;
        Ok(client)
    }

    /// An idle connection, or a new one.
    /// A transaction holding the registry's write lock (transaction-scoped, so a crash
    /// or a rollback releases it).
    fn locked_transaction<'a>(&self, client: &'a mut Client) -> Result<postgres::Transaction<'a>> {
        let mut tx = client.transaction().map_err(|e| self.error(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&write_lock()])
            .map_err(|e| self.error(e))?;
        Ok(tx)
    }

    /// An idle connection (`true`), or a new one.
    fn client(&self) -> Result<(Client, bool)> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(client) if !client.is_closed() => Ok((client, true)),
            _ => Ok((self.connect()?, false)),
        }
    }

    fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !client.is_closed() && idle.len() < MAX_IDLE {
            idle.push(client);
        }
    }

    fn error(&self, source: postgres::Error) -> Error {
        // The client's own message is only its kind ("db error"); the server's words
        // ("FATAL: database \"x\" does not exist") are in its sources.
        let mut message = source.to_string();
        let mut cause = std::error::Error::source(&source);
        while let Some(inner) = cause {
            message.push_str(&format!(": {inner}"));
            cause = inner.source();
        }
        Error::Registry {
            location: self.location.clone(),
            source: message.into(),
        }
    }
}

struct PostgresSession<'a, C> {
    client: &'a mut C,
    db: &'a PostgresDatabase,
}

/// A NULL text parameter.
static NULL_TEXT: Option<String> = None;

/// Parameters with their types, so PostgreSQL never has to guess one.
fn typed(params: &[Value]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|value| -> (&(dyn ToSql + Sync), Type) {
            match value {
                Value::Int(value) => (value, Type::INT8),
                Value::Text(text) => (text, Type::TEXT),
                Value::Null => (&NULL_TEXT, Type::TEXT),
            }
        })
        .collect()
}

impl<C: GenericClient> Session for PostgresSession<'_, C> {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let rows = self
            .client
            .query_typed(sql, &typed(params))
            .map_err(|e| self.db.error(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (index, column) in row.columns().iter().enumerate() {
                let value = match *column.type_() {
                    Type::INT8 => row
                        .try_get::<_, Option<i64>>(index)
                        .map(|v| v.map(Value::Int)),
                    Type::INT4 => row
                        .try_get::<_, Option<i32>>(index)
                        .map(|v| v.map(|v| Value::Int(v.into()))),
                    Type::BOOL => row
                        .try_get::<_, Option<bool>>(index)
                        .map(|v| v.map(|v| Value::Int(v.into()))),
                    _ => row
                        .try_get::<_, Option<String>>(index)
                        .map(|v| v.map(Value::Text)),
                }
                .map_err(|e| self.db.error(e))?;
                values.push(value.unwrap_or(Value::Null));
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        self.client
            .execute_typed(sql, &typed(params))
            .map_err(|e| self.db.error(e))
    }
}
