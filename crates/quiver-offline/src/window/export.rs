//! Training sets from aggregation views: for each spine row `(k, T)` and each window,
//! the merge of `k`'s tiles wholly inside the window and its events in the tile the
//! window ends in — the same [`WindowProgram::window_states`] the online lookup runs.
//!
//! The tile and event files of the snapshot are read in parallel, only the rows of keys
//! the spine asks for; each key's tiles and events are kept in table order (dates
//! ascending, each sorted by keys then event order), which is the order merges need.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use arrow::util::display::FormatOptions;
use futures::StreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::entity::decode_states;
use super::program::{Event, TilesPerHop, WindowProgram};
use super::state::State;
use super::tiles::events_of;
use super::{TILE_HOP, TILE_PREFIX, TILE_START, TILE_STATE};
use crate::normalize::ViewColumns;
use crate::pit::KeyGroups;
use crate::table::DataFile;
use crate::{Error, Result};

/// One aggregation view to join onto a spine.
#[derive(Debug, Clone)]
pub struct WindowRequest {
    pub view: String,
    pub program: Arc<WindowProgram>,
    pub columns: ViewColumns,
    /// The snapshot's files (events and tiles) in table order.
    pub files: Vec<DataFile>,
    /// `(feature, name in the output)`.
    pub features: Vec<(String, String)>,
}

fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::DataFusion(e.into())
}

/// What one file holds for the spine's keys, per key group.
#[derive(Default)]
struct Part {
    events: Vec<(u32, Event)>,
    tiles: Vec<(u32, usize, i64, Vec<State>)>,
}

/// The requested features of an aggregation view for every spine row (`times` are the
/// spine's times in µs), in spine order.
pub async fn join_windows(
    spine: &RecordBatch,
    times: &Arc<Vec<Option<i64>>>,
    request: &WindowRequest,
) -> Result<Vec<ArrayRef>> {
    let mut keys = Vec::new();
    for (name, data_type) in &request.columns.keys {
        let column = spine
            .column_by_name(name)
            .ok_or_else(|| Error::InvalidSpine {
                message: format!(
                    "no key column `{name}` (feature view `{}` needs it)",
                    request.view
                ),
            })?;
        let options = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        keys.push(cast_with_options(column, data_type, &options).map_err(|e| {
            Error::InvalidSpine {
                message: format!(
                    "key column `{name}` is {}, which cannot be read as {data_type}: {e}",
                    column.data_type()
                ),
            }
        })?);
    }
    let groups = Arc::new(KeyGroups::new(&keys).map_err(arrow_error)?);
    let n_groups = groups.group_count as usize;

    // Read every file (in parallel, results in table order).
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tasks = request.files.iter().cloned().map(|file| {
        let groups = Arc::clone(&groups);
        let request = request.clone();
        tokio::task::spawn_blocking(move || read_part(&file, &request, &groups))
    });
    let mut parts = futures::stream::iter(tasks).buffered(parallelism);
    let mut events: Vec<Vec<Event>> = vec![Vec::new(); n_groups];
    let mut tiles: Vec<TilesPerHop> = vec![vec![Vec::new(); request.program.hops.len()]; n_groups];
    while let Some(part) = parts.next().await {
        let part = part.map_err(|e| Error::TableIo {
            path: request.view.clone(),
            message: format!("reader task failed: {e}"),
        })??;
        for (group, event) in part.events {
            events[group as usize].push(event);
        }
        for (group, hop, start, states) in part.tiles {
            tiles[group as usize][hop].push((start, states));
        }
    }

    // Evaluate every window at every spine row.
    let program = &request.program;
    let rows = spine.num_rows();
    let mut states: Vec<Vec<Vec<State>>> = vec![Vec::with_capacity(rows); program.windows.len()];
    for row in 0..rows {
        let group = groups.spine_groups[row];
        for (w, out) in states.iter_mut().enumerate() {
            out.push(match (group, times[row]) {
                (Some(g), Some(t)) => {
                    program.window_states(w, &tiles[g as usize], &events[g as usize], t)
                }
                _ => program.empty(),
            });
        }
    }
    let all = program.finalize(&states)?;
    let names: Vec<String> = program.features().into_iter().map(|(n, _)| n).collect();
    request
        .features
        .iter()
        .map(|(feature, _)| {
            names
                .iter()
                .position(|n| n == feature)
                .map(|i| Arc::clone(&all[i]))
                .ok_or_else(|| Error::TableIo {
                    path: request.view.clone(),
                    message: format!("no feature `{feature}`"),
                })
        })
        .collect()
}

fn read_part(file: &DataFile, request: &WindowRequest, groups: &KeyGroups) -> Result<Part> {
    let io = |message: String| Error::TableIo {
        path: file.path().display().to_string(),
        message,
    };
    let is_tiles = file
        .path()
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(TILE_PREFIX));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file.open()?)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(|e| io(e.to_string()))?;
    let program = &request.program;
    let shapes = program.empty();
    let mut part = Part::default();
    for batch in reader {
        let batch = batch.map_err(|e| io(e.to_string()))?;
        let keys: Vec<ArrayRef> = request
            .columns
            .keys
            .iter()
            .map(|(k, _)| {
                batch
                    .column_by_name(k)
                    .cloned()
                    .ok_or_else(|| io(format!("has no column `{k}`")))
            })
            .collect::<Result<_>>()?;
        let row_groups = groups.feature_groups(&keys).map_err(arrow_error)?;
        if is_tiles {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or_else(|| io(format!("has no column `{name}`")))
            };
            let hop = column(TILE_HOP)?;
            let hop = hop.as_primitive::<Int64Type>();
            let start = column(TILE_START)?;
            let start = start.as_primitive::<TimestampMicrosecondType>();
            let state = column(TILE_STATE)?;
            let state = state.as_binary::<i32>();
            for (i, group) in row_groups.iter().enumerate() {
                let Some(group) = group else { continue };
                let Some(h) = program.hops.iter().position(|x| *x == hop.value(i)) else {
                    continue;
                };
                let states = decode_states(state.value(i), &shapes)
                    .ok_or_else(|| io("a tile does not decode".to_string()))?;
                part.tiles.push((*group, h, start.value(i), states));
            }
        } else {
            let events = events_of(&batch, &request.columns)?;
            for (event, group) in events.into_iter().zip(row_groups) {
                if let Some(group) = group {
                    part.events.push((group, event));
                }
            }
        }
    }
    Ok(part)
}

/// Every entity's online state from an aggregation view's files (all of them), pruned at
/// `now`: the key columns (one row per entity) and the states.
pub fn entity_states(
    files: &[DataFile],
    program: &WindowProgram,
    columns: &ViewColumns,
    now: i64,
) -> Result<(Vec<ArrayRef>, Vec<super::EntityState>)> {
    use arrow::row::{RowConverter, SortField};
    use std::collections::HashMap;
    let converter = RowConverter::new(
        columns
            .keys
            .iter()
            .map(|(_, t)| SortField::new(t.clone()))
            .collect(),
    )
    .map_err(arrow_error)?;
    /// Entities in order of first appearance.
    struct Entities {
        index: HashMap<Box<[u8]>, usize>,
        rows: Vec<arrow::row::OwnedRow>,
        tiles: Vec<TilesPerHop>,
        events: Vec<Vec<Event>>,
        hops: usize,
    }
    impl Entities {
        fn slot(&mut self, row: arrow::row::Row<'_>) -> usize {
            if let Some(i) = self.index.get(row.as_ref()) {
                return *i;
            }
            self.index.insert(row.as_ref().into(), self.rows.len());
            self.rows.push(row.owned());
            self.tiles.push(vec![Vec::new(); self.hops]);
            self.events.push(Vec::new());
            self.rows.len() - 1
        }
    }
    let mut all = Entities {
        index: HashMap::new(),
        rows: Vec::new(),
        tiles: Vec::new(),
        events: Vec::new(),
        hops: program.hops.len(),
    };
    let shapes = program.empty();
    for file in files {
        let io = |message: String| Error::TableIo {
            path: file.path().display().to_string(),
            message,
        };
        let is_tiles = file
            .path()
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(TILE_PREFIX));
        let reader = ParquetRecordBatchReaderBuilder::try_new(file.open()?)
            .and_then(|b| b.with_batch_size(64 * 1024).build())
            .map_err(|e| io(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| io(e.to_string()))?;
            let keys: Vec<ArrayRef> = columns
                .keys
                .iter()
                .map(|(k, _)| {
                    batch
                        .column_by_name(k)
                        .cloned()
                        .ok_or_else(|| io(format!("has no column `{k}`")))
                })
                .collect::<Result<_>>()?;
            let converted = converter.convert_columns(&keys).map_err(arrow_error)?;
            if is_tiles {
                let column = |name: &str| {
                    batch
                        .column_by_name(name)
                        .cloned()
                        .ok_or_else(|| io(format!("has no column `{name}`")))
                };
                let hop = column(TILE_HOP)?;
                let hop = hop.as_primitive::<Int64Type>();
                let start = column(TILE_START)?;
                let start = start.as_primitive::<TimestampMicrosecondType>();
                let state = column(TILE_STATE)?;
                let state = state.as_binary::<i32>();
                for i in 0..batch.num_rows() {
                    let Some(h) = program.hops.iter().position(|x| *x == hop.value(i)) else {
                        continue;
                    };
                    let oldest =
                        quiver_core::window::window_start(now, program.longest[h], program.hops[h]);
                    if start.value(i) < oldest {
                        continue;
                    }
                    let states = decode_states(state.value(i), &shapes)
                        .ok_or_else(|| io("a tile does not decode".to_string()))?;
                    let e = all.slot(converted.row(i));
                    all.tiles[e][h].push((start.value(i), states));
                }
            } else {
                let keep_from = program
                    .hops
                    .iter()
                    .map(|h| quiver_core::window::floor(now, *h))
                    .min()
                    .unwrap_or(now);
                for (i, event) in events_of(&batch, columns)?.into_iter().enumerate() {
                    if event.order.ts >= keep_from {
                        let e = all.slot(converted.row(i));
                        all.events[e].push(event);
                    }
                }
            }
        }
    }
    let keys = converter
        .convert_rows(all.rows.iter().map(|r| r.row()))
        .map_err(arrow_error)?;
    let states = all
        .tiles
        .into_iter()
        .zip(all.events)
        .map(|(tiles, events)| program.entity(tiles, events, now))
        .collect();
    Ok((keys, states))
}
