//! The embedded online store: one SQLite table in the repository's `.quiver/online.db`,
//! safe for several processes at once (WAL mode, a server reading while `materialize`
//! writes). No server to install; lookups are a few microseconds per key.
//!
//! Lookups never wait for writes: they run on a small pool of read connections, while
//! writes go through one writer connection (WAL lets readers and a writer work at once,
//! even across processes). The store remembers the identity of the file it opened; when
//! the file is removed or replaced underneath it (which would otherwise leave a server
//! reading a file nobody writes any more), the next operation notices, reopens the file
//! and fails once with a clear message. The file is checked with `quick_check` when it is
//! opened, so a corrupt file is an error at start, not a stream of failed lookups.
//!
//! Values expire like Redis keys: one TTL after they fall out of max age, and at least
//! one TTL after they were written (`expires_at`); expired rows are not served and are
//! swept by the next write to the view.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::codec::RowDecoder;
use crate::store::{
    BLOB_VERSION_BYTES, BlobWrite, Expect, OnlineRows, OnlineStore, ViewRead, ViewRef, ViewValues,
    WriteStats,
};
use crate::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS online_values (
    prefix     BLOB NOT NULL,
    key        BLOB NOT NULL,
    event_ts   INTEGER NOT NULL,
    created    INTEGER NOT NULL,
    value      BLOB NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (prefix, key)
) WITHOUT ROWID;
";

/// Newer-wins upsert: the stored row changes only for a greater (event time, created).
const UPSERT: &str = "
INSERT INTO online_values (prefix, key, event_ts, created, value, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (prefix, key) DO UPDATE
   SET event_ts = excluded.event_ts, created = excluded.created, value = excluded.value,
       expires_at = excluded.expires_at
 WHERE excluded.event_ts > online_values.event_ts
    OR (excluded.event_ts = online_values.event_ts AND excluded.created >= online_values.created)";

const SELECT: &str = "SELECT value FROM online_values
 WHERE prefix = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at >= ?3)";

/// Read connections kept open for lookups.
const READERS: usize = 8;
/// How often reads check that the file is still the one opened.
const IDENTITY_RECHECK: Duration = Duration::from_secs(1);

/// The embedded (SQLite) online store.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// How messages name the file (relative to the repository), never an absolute path.
    display: String,
    state: Mutex<Connections>,
    /// The writer connection and the generation it was opened in, under a lock of its
    /// own: a write waiting for SQLite's lock (another process writing) holds only this
    /// one, never the readers'.
    writer: Mutex<Option<(u64, Connection)>>,
}

#[derive(Debug)]
struct Connections {
    readers: Vec<Connection>,
    identity: Option<FileIdentity>,
    checked: Instant,
    /// Bumped on every reopen: connections of an older generation are discarded.
    generation: u64,
}

/// Device and inode of the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

fn identity(path: &Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| FileIdentity {
        device: m.dev(),
        inode: m.ino(),
    })
}

impl EmbeddedStore {
    /// Opens (creating when needed) the store at `path`, named `display` in messages.
    pub fn open(path: &Path, display: &str) -> Result<Self> {
        let inner = Inner {
            path: path.to_path_buf(),
            display: display.to_string(),
            state: Mutex::new(Connections {
                readers: Vec::new(),
                identity: None,
                checked: Instant::now(),
                generation: 0,
            }),
            writer: Mutex::new(None),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| inner.error(e.to_string()))?;
        }
        let writer = inner.connect_writer()?;
        let check: String = writer
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| inner.sqlite(e))?;
        if check != "ok" {
            return Err(inner.error(format!(
                "the file is corrupt ({check}); remove it and materialize again"
            )));
        }
        inner.lock().identity = identity(path);
        *inner.lock_writer() = Some((0, writer));
        Ok(EmbeddedStore {
            inner: Arc::new(inner),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Option<(u64, Connection)>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, message: String) -> Error {
        Error::Embedded {
            path: self.display.clone(),
            message,
        }
    }

    fn sqlite(&self, e: rusqlite::Error) -> Error {
        self.error(e.to_string())
    }

    fn connect(&self, flags: OpenFlags) -> Result<Connection> {
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| self.sqlite(e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| self.sqlite(e))?;
        Ok(conn)
    }

    fn connect_writer(&self) -> Result<Connection> {
        let conn =
            self.connect(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| self.sqlite(e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.sqlite(e))?;
        conn.execute_batch(SCHEMA).map_err(|e| self.sqlite(e))?;
        // Files written before values carried an expiry.
        let has_expiry: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('online_values') WHERE name = 'expires_at'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.sqlite(e))?;
        if !has_expiry {
            conn.execute_batch("ALTER TABLE online_values ADD COLUMN expires_at INTEGER")
                .map_err(|e| self.sqlite(e))?;
        }
        Ok(conn)
    }

    /// Fails (once) when the file was removed or replaced since it was opened, after
    /// dropping every connection so the next operation opens the file there now.
    fn check_identity(&self, state: &mut Connections, always: bool) -> Result<()> {
        if state.identity.is_none() {
            return Ok(()); // reopened: the next connection opens the file as it is now
        }
        if !always && state.checked.elapsed() < IDENTITY_RECHECK {
            return Ok(());
        }
        state.checked = Instant::now();
        let now = identity(&self.path);
        if now.is_some() && now == state.identity {
            return Ok(());
        }
        state.readers.clear();
        state.generation += 1;
        state.identity = None;
        let what = if now.is_none() { "removed" } else { "replaced" };
        Err(self.error(format!(
            "the file was {what} while the store was open; it is reopened now, so values written since then are where this store reads them again"
        )))
    }

    /// Runs `f` with the writer connection (opened again after a reopen). Only the
    /// writer's lock is held while `f` runs.
    fn with_writer<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let generation = {
            let mut state = self.lock();
            self.check_identity(&mut state, true)?;
            state.generation
        };
        let mut writer = self.lock_writer();
        if !matches!(&*writer, Some((opened, _)) if *opened == generation) {
            *writer = Some((generation, self.connect_writer()?));
            let mut state = self.lock();
            if state.generation == generation && state.identity.is_none() {
                state.identity = identity(&self.path);
            }
        }
        let (_, conn) = writer.as_mut().expect("opened above");
        f(conn)
    }

    /// Runs `f` with a pooled read connection; writes never hold it up.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let (conn, generation) = {
            let mut state = self.lock();
            self.check_identity(&mut state, false)?;
            if state.identity.is_none() {
                // Reopened: create the file (and schema) before readers open it; the
                // writer opens its own connection on its next write.
                drop(self.connect_writer()?);
                state.identity = identity(&self.path);
            }
            (state.readers.pop(), state.generation)
        };
        let conn = match conn {
            Some(conn) => conn,
            None => {
                self.connect(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?
            }
        };
        let result = f(&conn);
        let mut state = self.lock();
        if state.generation == generation && state.readers.len() < READERS {
            state.readers.push(conn);
        }
        result
    }
}

/// When a value written at `now` with event time `event_ts` expires: one TTL after it
/// falls out of max age, and at least one TTL after it was written (as in Redis).
pub(crate) fn expires_at(event_ts: i64, ttl: Option<i64>, now: i64) -> Option<i64> {
    ttl.map(|ttl| event_ts.saturating_add(ttl).max(now).saturating_add(ttl))
}

#[async_trait]
impl OnlineStore for EmbeddedStore {
    async fn write(&self, view: &ViewRef, rows: &OnlineRows, now: i64) -> Result<WriteStats> {
        let prefix = view.key_prefix();
        let ttl = view.ttl_micros;
        let mut encoded = Vec::with_capacity(rows.len());
        for row in 0..rows.len() {
            let Some(key) = &rows.keys[row] else { continue };
            let value = rows.encode_value(row)?;
            let ts = rows.event_ts[row];
            encoded.push((
                key.clone(),
                ts,
                rows.created[row],
                value,
                expires_at(ts, ttl, now),
            ));
        }
        self.blocking(move |inner| {
            inner.with_writer(|conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| inner.sqlite(e))?;
                let mut written = 0;
                {
                    let mut upsert = tx.prepare_cached(UPSERT).map_err(|e| inner.sqlite(e))?;
                    for (key, ts, created, value, expires) in &encoded {
                        written += upsert
                            .execute(params![prefix, key, ts, created, value, expires])
                            .map_err(|e| inner.sqlite(e))?
                            as u64;
                    }
                    // Dead entities do not accumulate.
                    tx.execute(
                        "DELETE FROM online_values WHERE prefix = ?1 AND expires_at < ?2",
                        params![prefix, now],
                    )
                    .map_err(|e| inner.sqlite(e))?;
                }
                tx.commit().map_err(|e| inner.sqlite(e))?;
                Ok(WriteStats {
                    rows: encoded.len() as u64,
                    written,
                })
            })
        })
        .await
    }

    async fn read(&self, reads: &[ViewRead<'_>], now: i64) -> Result<Vec<ViewValues>> {
        let requests: Vec<(
            Vec<u8>,
            Vec<Option<Vec<u8>>>,
            Option<Vec<arrow::datatypes::DataType>>,
        )> = reads
            .iter()
            .map(|r| {
                (
                    r.view.key_prefix(),
                    r.keys.to_vec(),
                    (!r.raw).then(|| r.view.features.iter().map(|(_, t)| t.clone()).collect()),
                )
            })
            .collect();
        self.blocking(move |inner| {
            inner.with_reader(|conn| {
                let mut out = Vec::with_capacity(requests.len());
                let mut select = conn.prepare_cached(SELECT).map_err(|e| inner.sqlite(e))?;
                for (prefix, keys, types) in requests {
                    let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(keys.len());
                    for key in &keys {
                        values.push(match key {
                            Some(key) => select
                                .query_row(params![prefix, key, now], |r| r.get::<_, Vec<u8>>(0))
                                .optional()
                                .map_err(|e| inner.sqlite(e))?,
                            None => None,
                        });
                    }
                    out.push(match types {
                        Some(types) => decode_values(&values, types)?,
                        None => raw_values(values),
                    });
                }
                Ok(out)
            })
        })
        .await
    }

    async fn compare_and_set(
        &self,
        view: &ViewRef,
        writes: &[BlobWrite],
        now: i64,
    ) -> Result<Vec<bool>> {
        let prefix = view.key_prefix();
        let writes = writes.to_vec();
        self.blocking(move |inner| {
            inner.with_writer(|conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| inner.sqlite(e))?;
                let mut out = Vec::with_capacity(writes.len());
                {
                    let mut current = tx
                        .prepare_cached(
                            "SELECT value FROM online_values WHERE prefix = ?1 AND key = ?2
                              AND (expires_at IS NULL OR expires_at >= ?3)",
                        )
                        .map_err(|e| inner.sqlite(e))?;
                    let mut put = tx
                        .prepare_cached(
                            "INSERT INTO online_values (prefix, key, event_ts, created, value, expires_at)
                             VALUES (?1, ?2, 0, 0, ?3, ?4)
                             ON CONFLICT (prefix, key) DO UPDATE
                                SET value = excluded.value, expires_at = excluded.expires_at",
                        )
                        .map_err(|e| inner.sqlite(e))?;
                    let mut delete = tx
                        .prepare_cached("DELETE FROM online_values WHERE prefix = ?1 AND key = ?2")
                        .map_err(|e| inner.sqlite(e))?;
                    for write in &writes {
                        let stored: Option<Vec<u8>> = current
                            .query_row(params![prefix, write.key, now], |r| r.get(0))
                            .optional()
                            .map_err(|e| inner.sqlite(e))?;
                        if !expected(&write.expect, stored.as_deref()) {
                            out.push(false);
                            continue;
                        }
                        match &write.value {
                            Some(value) => put
                                .execute(params![prefix, write.key, value, write.expires_at])
                                .map_err(|e| inner.sqlite(e))?,
                            None => delete
                                .execute(params![prefix, write.key])
                                .map_err(|e| inner.sqlite(e))?,
                        };
                        out.push(true);
                    }
                }
                tx.commit().map_err(|e| inner.sqlite(e))?;
                Ok(out)
            })
        })
        .await
    }

    async fn drop_view(&self, view: &ViewRef) -> Result<u64> {
        let prefix = view.key_prefix();
        self.blocking(move |inner| {
            inner.with_writer(|conn| {
                conn.execute(
                    "DELETE FROM online_values WHERE prefix = ?1",
                    params![prefix],
                )
                .map(|n| n as u64)
                .map_err(|e| inner.sqlite(e))
            })
        })
        .await
    }

    /// Answers what lookups need: the file is the one opened, and the table reads.
    async fn health(&self) -> Result<()> {
        self.blocking(|inner| {
            {
                let mut state = inner.lock();
                inner.check_identity(&mut state, true)?;
            }
            inner.with_reader(|conn| {
                conn.query_row(
                    "SELECT count(*) FROM (SELECT 1 FROM online_values LIMIT 1)",
                    [],
                    |_| Ok(()),
                )
                .map_err(|e| inner.sqlite(e))
            })
        })
        .await
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}

/// Whether a stored blob (or its absence) is what a write expects.
pub(crate) fn expected(expect: &Expect, stored: Option<&[u8]>) -> bool {
    match (expect, stored) {
        (Expect::Anything, _) | (Expect::Absent, None) => true,
        (Expect::Absent, Some(_)) | (Expect::Version(_), None) => false,
        (Expect::Version(v), Some(stored)) => stored.get(..BLOB_VERSION_BYTES) == Some(&v[..]),
    }
}

/// Found blobs as a raw read's answer.
pub(crate) fn raw_values(values: Vec<Option<Vec<u8>>>) -> ViewValues {
    ViewValues {
        event_ts: vec![None; values.len()],
        features: Vec::new(),
        raw: values,
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
    Ok(ViewValues {
        event_ts,
        features,
        raw: Vec::new(),
    })
}
