//! The embedded online store: one SQLite table in the repository's `.quiver/online.db`,
//! safe for several processes at once (WAL mode, a server reading while `materialize`
//! writes). No server to install; lookups are a few microseconds per key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::codec::RowDecoder;
use crate::store::{OnlineRows, OnlineStore, ViewRead, ViewRef, ViewValues, WriteStats};
use crate::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS online_values (
    prefix   BLOB NOT NULL,
    key      BLOB NOT NULL,
    event_ts INTEGER NOT NULL,
    created  INTEGER NOT NULL,
    value    BLOB NOT NULL,
    PRIMARY KEY (prefix, key)
) WITHOUT ROWID;
";

/// Newer-wins upsert: the stored row changes only for a greater (event time, created).
const UPSERT: &str = "
INSERT INTO online_values (prefix, key, event_ts, created, value) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (prefix, key) DO UPDATE
   SET event_ts = excluded.event_ts, created = excluded.created, value = excluded.value
 WHERE excluded.event_ts > online_values.event_ts
    OR (excluded.event_ts = online_values.event_ts AND excluded.created >= online_values.created)";

/// The embedded (SQLite) online store.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl EmbeddedStore {
    /// Opens (creating when needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |e: rusqlite::Error| Error::Embedded {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::Embedded {
                path: parent.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(EmbeddedStore {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn error(&self, e: rusqlite::Error) -> Error {
        Error::Embedded {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }
}

#[async_trait]
impl OnlineStore for EmbeddedStore {
    async fn write(&self, view: &ViewRef, rows: &OnlineRows, now: i64) -> Result<WriteStats> {
        let prefix = view.key_prefix();
        let mut encoded = Vec::with_capacity(rows.len());
        for row in 0..rows.len() {
            let Some(key) = &rows.keys[row] else { continue };
            let value = rows.encode_value(row)?;
            encoded.push((key.clone(), rows.event_ts[row], rows.created[row], value));
        }
        let ttl = view.ttl_micros;
        let store = self.clone();
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| store.error(e))?;
            let mut written = 0;
            {
                let mut upsert = tx.prepare_cached(UPSERT).map_err(|e| store.error(e))?;
                for (key, ts, created, value) in &encoded {
                    written += upsert
                        .execute(params![prefix, key, ts, created, value])
                        .map_err(|e| store.error(e))? as u64;
                }
                // Dead entities do not accumulate: drop values one TTL past their max age.
                if let Some(ttl) = ttl {
                    tx.execute(
                        "DELETE FROM online_values WHERE prefix = ?1 AND event_ts < ?2",
                        params![prefix, now.saturating_sub(ttl.saturating_mul(2))],
                    )
                    .map_err(|e| store.error(e))?;
                }
            }
            tx.commit().map_err(|e| store.error(e))?;
            Ok(WriteStats {
                rows: encoded.len() as u64,
                written,
            })
        })
        .await
    }

    async fn read(&self, reads: &[ViewRead<'_>]) -> Result<Vec<ViewValues>> {
        let requests: Vec<(
            Vec<u8>,
            Vec<Option<Vec<u8>>>,
            Vec<arrow::datatypes::DataType>,
        )> = reads
            .iter()
            .map(|r| {
                (
                    r.view.key_prefix(),
                    r.keys.to_vec(),
                    r.view.features.iter().map(|(_, t)| t.clone()).collect(),
                )
            })
            .collect();
        let store = self.clone();
        self.with_conn(move |conn| {
            let mut out = Vec::with_capacity(requests.len());
            let mut select = conn
                .prepare_cached("SELECT value FROM online_values WHERE prefix = ?1 AND key = ?2")
                .map_err(|e| store.error(e))?;
            for (prefix, keys, types) in requests {
                let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(keys.len());
                for key in &keys {
                    values.push(match key {
                        Some(key) => select
                            .query_row(params![prefix, key], |r| r.get::<_, Vec<u8>>(0))
                            .optional()
                            .map_err(|e| store.error(e))?,
                        None => None,
                    });
                }
                out.push(decode_values(&values, types)?);
            }
            Ok(out)
        })
        .await
    }

    async fn drop_view(&self, view: &ViewRef) -> Result<u64> {
        let prefix = view.key_prefix();
        let store = self.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "DELETE FROM online_values WHERE prefix = ?1",
                params![prefix],
            )
            .map(|n| n as u64)
            .map_err(|e| store.error(e))
        })
        .await
    }

    async fn health(&self) -> Result<()> {
        let store = self.clone();
        self.with_conn(move |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| store.error(e))
        })
        .await
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}

/// Decodes found values (or `None`) into event times and feature arrays.
pub(crate) fn decode_values(
    values: &[Option<Vec<u8>>],
    types: Vec<arrow::datatypes::DataType>,
) -> Result<ViewValues> {
    let mut event_ts = Vec::with_capacity(values.len());
    for value in values {
        event_ts.push(match value {
            Some(v) => Some(crate::codec::decode_times(v)?.0),
            None => None,
        });
    }
    let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
    let features = RowDecoder::new(types).decode(&refs)?;
    Ok(ViewValues { event_ts, features })
}
