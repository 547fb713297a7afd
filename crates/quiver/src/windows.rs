//! The online side of aggregation views: each entity's tiles and recent events are one
//! blob in the online store (see `quiver_offline::window::entity`), written by
//! materialization from the offline table, updated by pushes (read, add the events,
//! compare-and-set: atomic per entity), and merged at lookup time by the same
//! [`WindowProgram`] exports use.
//!
//! A blob is an 8-byte version followed by the entity state; every write stores a new
//! version, and a push writes only over the version it read, retrying when a concurrent
//! writer got there first.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use futures::StreamExt;
use quiver_offline::table::{Interval, OfflineTable};
use quiver_offline::window::tiles::events_of;
use quiver_offline::window::{EntityState, Event, WindowProgram};
use quiver_online::codec::encode_entity_keys;
use quiver_online::{
    BLOB_VERSION_BYTES, BlobWrite, Expect, OnlineStore, ViewRead, ViewRef, WriteStats,
};

use crate::catalog::CatalogView;
use crate::online::OnlineWrite;
use crate::{Error, FeatureStore, Result};

/// Attempts of a push's compare-and-set before giving up on an entity.
const PUSH_ATTEMPTS: usize = 20;
/// Entities per write call when materializing.
const WRITE_CHUNK: usize = 20_000;
/// Entities per read–add–compare-and-set step of a push, and steps in flight at once: a
/// push of 1 000 entities into Redis spent as long waiting for Redis as decoding and
/// encoding, one after the other; in steps, the two overlap.
const PUSH_CHUNK_ENTITIES: usize = 200;
const PUSH_CHUNKS_IN_FLIGHT: usize = 3;

/// A version no earlier write of this process used (time-seeded, then counting).
fn next_version() -> [u8; BLOB_VERSION_BYTES] {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = chrono::Utc::now().timestamp_micros() as u64;
    let _ = NEXT.compare_exchange(0, seed << 8, Ordering::AcqRel, Ordering::Acquire);
    NEXT.fetch_add(1, Ordering::AcqRel).to_be_bytes()
}

/// A blob: the version, then the encoded state.
fn blob(
    program: &WindowProgram,
    version: [u8; BLOB_VERSION_BYTES],
    state: &EntityState,
) -> Vec<u8> {
    let mut out = version.to_vec();
    program.encode_entity(state, &mut out);
    out
}

/// The version and state of a stored blob.
pub(crate) fn unblob(
    program: &WindowProgram,
    bytes: &[u8],
) -> Result<([u8; BLOB_VERSION_BYTES], EntityState)> {
    let (version, body) = bytes
        .split_at_checked(BLOB_VERSION_BYTES)
        .ok_or_else(|| Error::Task("an online entity state is truncated".into()))?;
    let version: [u8; BLOB_VERSION_BYTES] = version
        .try_into()
        .map_err(|_| Error::Task("an online entity state is truncated".into()))?;
    Ok((version, program.decode_entity(body)?))
}

impl FeatureStore {
    /// Writes every entity's state of an aggregation view, as its offline table holds it,
    /// to the online store.
    pub(crate) async fn materialize_window_online(
        &self,
        view: &CatalogView,
        program: &Arc<WindowProgram>,
        _interval: Interval,
    ) -> Result<OnlineWrite> {
        let started = Instant::now();
        let store = self.online_store().await?;
        let view_ref = view.online_ref()?;
        let files = OfflineTable::new(&self.offline_root()?, view.name(), view.version)
            .snapshot()
            .await?
            .files();
        let now = self.clock().now().timestamp_micros();
        let columns = view.columns().clone();
        let reader = Arc::clone(program);
        let (keys, states) = tokio::task::spawn_blocking(move || {
            quiver_offline::window::export::entity_states(&files, &reader, &columns, now)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        let encoded = encode_entity_keys(&keys)?;
        let mut report = OnlineWrite {
            store: store.name(),
            rows: 0,
            written: 0,
            seconds: 0.0,
            write_seconds: 0.0,
        };
        let mut writes = Vec::with_capacity(WRITE_CHUNK);
        for (key, state) in encoded.into_iter().zip(&states) {
            let Some(key) = key else { continue };
            let expires_at = program.expires_at(state);
            if expires_at.is_none_or(|at| at < now) {
                continue; // nothing a window can still reach
            }
            writes.push(BlobWrite {
                key,
                expect: Expect::Anything,
                value: Some(blob(program, next_version(), state)),
                expires_at,
            });
            if writes.len() == WRITE_CHUNK {
                let writing = Instant::now();
                let done = store.compare_and_set(view_ref, &writes, now).await?;
                report.write_seconds += writing.elapsed().as_secs_f64();
                report.rows += writes.len() as u64;
                report.written += done.iter().filter(|d| **d).count() as u64;
                writes.clear();
            }
        }
        if !writes.is_empty() {
            let writing = Instant::now();
            let done = store.compare_and_set(view_ref, &writes, now).await?;
            report.write_seconds += writing.elapsed().as_secs_f64();
            report.rows += writes.len() as u64;
            report.written += done.iter().filter(|d| **d).count() as u64;
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Adds pushed events (the view's event rows) to their entities' online states:
    /// read, add, compare-and-set, retrying entities a concurrent writer changed.
    pub(crate) async fn push_window_online(
        &self,
        view: &CatalogView,
        program: &WindowProgram,
        rows: &RecordBatch,
    ) -> Result<WriteStats> {
        let store = self.online_store().await?;
        let view_ref = view.online_ref()?;
        let columns = view.columns();
        let key_arrays: Vec<ArrayRef> = columns
            .keys
            .iter()
            .map(|(k, _)| {
                rows.column_by_name(k)
                    .cloned()
                    .ok_or_else(|| Error::BadPush {
                        message: format!("the events lack key column `{k}`"),
                    })
            })
            .collect::<Result<_>>()?;
        let keys = encode_entity_keys(&key_arrays)?;
        let mut events = events_of(rows, columns)?;
        // Pushed events come after every stored one among equal (time, created).
        for (i, event) in events.iter_mut().enumerate() {
            event.order.seq = (1 << 62) + i as u64;
        }
        let mut pending: HashMap<Vec<u8>, Vec<Event>> = HashMap::new();
        for (key, event) in keys.into_iter().zip(events) {
            if let Some(key) = key {
                pending.entry(key).or_default().push(event);
            }
        }
        let mut stats = WriteStats {
            rows: rows.num_rows() as u64,
            written: 0,
        };
        for _ in 0..PUSH_ATTEMPTS {
            if pending.is_empty() {
                return Ok(stats);
            }
            let now = self.clock().now().timestamp_micros();
            let entity_keys: Vec<Vec<u8>> = pending.keys().cloned().collect();
            // A few chunks in flight: while one waits for the store, the next is decoded,
            // added to and encoded.
            let chunks = (0..entity_keys.len())
                .step_by(PUSH_CHUNK_ENTITIES)
                .map(|from| from..(from + PUSH_CHUNK_ENTITIES).min(entity_keys.len()));
            let mut steps = futures::stream::iter(chunks)
                .map(|chunk| {
                    push_step(
                        &*store,
                        view_ref,
                        program,
                        &entity_keys[chunk],
                        &pending,
                        now,
                    )
                })
                .buffer_unordered(PUSH_CHUNKS_IN_FLIGHT);
            let mut written = Vec::with_capacity(entity_keys.len());
            while let Some(step) = steps.next().await {
                written.extend(step?);
            }
            drop(steps);
            for key in written {
                stats.written += pending.remove(&key).map_or(0, |e| e.len() as u64);
            }
        }
        if pending.is_empty() {
            return Ok(stats);
        }
        Err(Error::Online(quiver_online::Error::Task(format!(
            "{} entities of `{}` changed under every one of {PUSH_ATTEMPTS} attempts to add the pushed events; push them again",
            pending.len(),
            view.name()
        ))))
    }
}

/// One step of a push for some of its entities: read their blobs, add their pending
/// events, compare-and-set; the keys written (the others changed under it and are
/// retried).
async fn push_step(
    store: &dyn OnlineStore,
    view_ref: &ViewRef,
    program: &WindowProgram,
    entity_keys: &[Vec<u8>],
    pending: &HashMap<Vec<u8>, Vec<Event>>,
    now: i64,
) -> Result<Vec<Vec<u8>>> {
    let lookup: Vec<Option<Vec<u8>>> = entity_keys.iter().cloned().map(Some).collect();
    let found = store
        .read(
            &[ViewRead {
                view: view_ref,
                keys: &lookup,
                raw: true,
            }],
            now,
        )
        .await?;
    let stored = found.into_iter().next().map(|v| v.raw).unwrap_or_default();
    let mut writes = Vec::with_capacity(entity_keys.len());
    for (key, stored) in entity_keys.iter().zip(stored) {
        let (expect, mut state, version) = match stored {
            Some(bytes) => {
                let (version, state) = unblob(program, &bytes)?;
                let next = u64::from_be_bytes(version).wrapping_add(1).to_be_bytes();
                (Expect::Version(version), state, next)
            }
            None => (Expect::Absent, EntityState::default(), next_version()),
        };
        program.add_events(&mut state, &pending[key], now);
        let expires_at = program.expires_at(&state);
        let value = expires_at
            .filter(|at| *at >= now)
            .map(|_| blob(program, version, &state));
        writes.push(BlobWrite {
            key: key.clone(),
            expect,
            value,
            expires_at,
        });
    }
    let done = store.compare_and_set(view_ref, &writes, now).await?;
    Ok(writes
        .into_iter()
        .zip(done)
        .filter_map(|(write, ok)| ok.then_some(write.key))
        .collect())
}

/// The features a lookup asked of an aggregation view, from the entities' stored blobs
/// (`None`: nothing stored), at `now`: every feature of the view and each entity's latest
/// event time.
pub(crate) fn lookup_features(
    program: &WindowProgram,
    blobs: &[Option<Vec<u8>>],
    now: i64,
) -> Result<(Vec<ArrayRef>, Vec<Option<i64>>)> {
    let mut states = Vec::with_capacity(blobs.len());
    let mut latest = Vec::with_capacity(blobs.len());
    for blob in blobs {
        match blob {
            Some(bytes) => {
                let (_, state) = unblob(program, bytes)?;
                latest.push(state.latest().filter(|t| *t <= now));
                states.push(Some(state));
            }
            None => {
                latest.push(None);
                states.push(None);
            }
        }
    }
    let arrays = program.finalize(&program.lookup_states(&states, now))?;
    Ok((arrays, latest))
}
