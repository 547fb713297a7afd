//! Training sets from aggregation views: for each spine row `(k, T)` and each window,
//! the merge of `k`'s whole tiles inside the window and its events in the tile the window
//! ends in — the states [`WindowProgram::window_states`] merges for online lookups, in the
//! same order, so exports and lookups agree to the last bit.
//!
//! Where a view's tiles hold few events each (sparse keys: a tile per event or so), the
//! tile files are no cheaper to read than the events; the export then reads only the
//! events and folds each tile's events into a tile state on the fly, exactly as
//! materialization built the tile. Where tiles are dense, it reads the tile files and, of
//! the events, only those in the tile a spine row's window ends in.
//!
//! Events are read in parallel, only the columns and row groups needed and only rows of
//! keys the spine asks for, one part per file, each already in key order as
//! materialization wrote it. The spine's rows are then evaluated key by key: a key's
//! events are gathered from the parts in table order (which is event order) into a small
//! buffer, so the events are held once and each window reads memory in cache. More
//! events than the memory budget holds are read in several passes, each for a share of
//! the spine's keys.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use arrow::util::display::FormatOptions;
use futures::StreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::columns::{NumericAggregates, NumericColumn};
use super::entity::decode_states;
use super::program::{Event, TilesPerHop, WindowProgram, scalars};
use super::state::{AggKind, EventOrder, Scalar, State};
use super::tiles::events_of;
use super::{SEQUENCE, TILE_HOP, TILE_START, TILE_STATE};
use crate::cores::map_on_every_core;
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

impl WindowRequest {
    /// Bytes a one-pass join of the view holds, roughly: its events' columns and sort.
    pub fn estimated_bytes(&self) -> u64 {
        let rows: u64 = self.files.iter().map(|f| f.rows).sum();
        rows.saturating_mul(BYTES_PER_EVENT as u64)
    }
}

fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::DataFusion(e.into())
}

/// Tiles pay off when they hold at least this many events on average.
const DENSE_EVENTS_PER_TILE: u64 = 4;
/// Bytes an event takes in memory while a pass holds it (its columns, with room to spare).
const BYTES_PER_EVENT: usize = 64;
/// Spine rows evaluated per task.
const CHUNK_ROWS: usize = 16 * 1024;

/// The values of one aggregate argument for a run of events.
#[derive(Debug, Clone)]
enum ArgColumn {
    Int { values: Vec<i64>, valid: Vec<bool> },
    Float { values: Vec<f64>, valid: Vec<bool> },
    Other(Vec<Scalar>),
}

impl ArgColumn {
    fn for_type(data_type: &DataType) -> ArgColumn {
        match data_type {
            DataType::Float32 | DataType::Float64 => ArgColumn::Float {
                values: Vec::new(),
                valid: Vec::new(),
            },
            t if t.is_integer() || t.is_temporal() => ArgColumn::Int {
                values: Vec::new(),
                valid: Vec::new(),
            },
            _ => ArgColumn::Other(Vec::new()),
        }
    }

    /// Appends the values of `array` at `rows`.
    fn extend(&mut self, array: &ArrayRef, rows: &[usize]) {
        match (self, array.data_type()) {
            (ArgColumn::Float { values, valid }, DataType::Float64) => {
                let array = array.as_primitive::<Float64Type>();
                values.extend(rows.iter().map(|i| array.value(*i)));
                valid.extend(rows.iter().map(|i| array.is_valid(*i)));
            }
            (ArgColumn::Int { values, valid }, DataType::Int64) => {
                let array = array.as_primitive::<Int64Type>();
                values.extend(rows.iter().map(|i| array.value(*i)));
                valid.extend(rows.iter().map(|i| array.is_valid(*i)));
            }
            (column, _) => {
                let values = scalars(array);
                for &i in rows {
                    column.push(&values[i]);
                }
            }
        }
    }

    /// Appends rows `range` of `other` (a column of the same argument).
    fn extend_from(&mut self, other: &ArgColumn, range: std::ops::Range<usize>) {
        match (self, other) {
            (
                ArgColumn::Int { values, valid },
                ArgColumn::Int {
                    values: from,
                    valid: ok,
                },
            ) => {
                values.extend_from_slice(&from[range.clone()]);
                valid.extend_from_slice(&ok[range]);
            }
            (
                ArgColumn::Float { values, valid },
                ArgColumn::Float {
                    values: from,
                    valid: ok,
                },
            ) => {
                values.extend_from_slice(&from[range.clone()]);
                valid.extend_from_slice(&ok[range]);
            }
            (column, other) => {
                for i in range {
                    column.push(&other.get(i));
                }
            }
        }
    }

    fn reserve(&mut self, rows: usize) {
        match self {
            ArgColumn::Int { values, valid } => {
                values.reserve(rows);
                valid.reserve(rows);
            }
            ArgColumn::Float { values, valid } => {
                values.reserve(rows);
                valid.reserve(rows);
            }
            ArgColumn::Other(values) => values.reserve(rows),
        }
    }

    fn clear(&mut self) {
        match self {
            ArgColumn::Int { values, valid } => {
                values.clear();
                valid.clear();
            }
            ArgColumn::Float { values, valid } => {
                values.clear();
                valid.clear();
            }
            ArgColumn::Other(values) => values.clear(),
        }
    }

    fn push(&mut self, value: &Scalar) {
        match (self, value) {
            (ArgColumn::Int { values, valid }, Scalar::Int(v)) => {
                values.push(*v);
                valid.push(true);
            }
            (ArgColumn::Float { values, valid }, Scalar::Float(v)) => {
                values.push(*v);
                valid.push(true);
            }
            (ArgColumn::Int { values, valid }, _) => {
                values.push(0);
                valid.push(false);
            }
            (ArgColumn::Float { values, valid }, _) => {
                values.push(0.0);
                valid.push(false);
            }
            (ArgColumn::Other(values), v) => values.push(v.clone()),
        }
    }

    fn get(&self, i: usize) -> Scalar {
        match self {
            ArgColumn::Int { values, valid } if valid[i] => Scalar::Int(values[i]),
            ArgColumn::Float { values, valid } if valid[i] => Scalar::Float(values[i]),
            ArgColumn::Other(values) => values[i].clone(),
            _ => Scalar::Null,
        }
    }

    /// The values as a numeric column, when they are numbers.
    fn numeric(&self) -> Option<NumericColumn<'_>> {
        match self {
            ArgColumn::Int { values, valid } => Some(NumericColumn::Int { values, valid }),
            ArgColumn::Float { values, valid } => Some(NumericColumn::Float { values, valid }),
            ArgColumn::Other(_) => None,
        }
    }

    fn empty_like(&self, capacity: usize) -> ArgColumn {
        match self {
            ArgColumn::Int { .. } => ArgColumn::Int {
                values: Vec::with_capacity(capacity),
                valid: Vec::with_capacity(capacity),
            },
            ArgColumn::Float { .. } => ArgColumn::Float {
                values: Vec::with_capacity(capacity),
                valid: Vec::with_capacity(capacity),
            },
            ArgColumn::Other(_) => ArgColumn::Other(Vec::with_capacity(capacity)),
        }
    }
}

/// Events in columns. A part read from one file is ordered by key group, each group's
/// events in table order, which is event order; one group's events, gathered from the
/// parts in table order, are in event order too.
#[derive(Debug, Default)]
struct Events {
    /// Key group of each event (empty for one group's events).
    groups: Vec<u32>,
    ts: Vec<i64>,
    /// Created times and source order, kept only when an aggregate needs event order
    /// (FIRST_VALUE, LAST_VALUE).
    created: Vec<i64>,
    seq: Vec<u64>,
    args: Vec<ArgColumn>,
}

impl Events {
    fn len(&self) -> usize {
        self.ts.len()
    }

    fn order(&self, i: usize) -> EventOrder {
        EventOrder {
            ts: self.ts[i],
            created: self.created.get(i).copied().unwrap_or(0),
            seq: self.seq.get(i).copied().unwrap_or(0),
        }
    }

    /// No events, with the argument columns of `self`.
    fn empty_like(&self) -> Events {
        Events {
            args: self.args.iter().map(|a| a.empty_like(0)).collect(),
            ..Events::default()
        }
    }

    /// Room for `rows` more events (with their order when `with_order`).
    fn reserve(&mut self, rows: usize, with_order: bool) {
        self.groups.reserve(rows);
        self.ts.reserve(rows);
        if with_order {
            self.created.reserve(rows);
            self.seq.reserve(rows);
        }
        self.args.iter_mut().for_each(|a| a.reserve(rows));
    }

    fn clear(&mut self) {
        self.groups.clear();
        self.ts.clear();
        self.created.clear();
        self.seq.clear();
        self.args.iter_mut().for_each(ArgColumn::clear);
    }

    /// Appends events `range` of `part` (without their groups).
    fn extend_from(&mut self, part: &Events, range: std::ops::Range<usize>) {
        self.ts.extend_from_slice(&part.ts[range.clone()]);
        if !part.created.is_empty() {
            self.created.extend_from_slice(&part.created[range.clone()]);
        }
        if !part.seq.is_empty() {
            self.seq.extend_from_slice(&part.seq[range.clone()]);
        }
        for (column, from) in self.args.iter_mut().zip(&part.args) {
            column.extend_from(from, range.clone());
        }
    }

    /// Orders the events by group, each group's in the order they were read.
    /// Materialization writes events sorted by key and groups are numbered in key order,
    /// so this is most often only the check.
    fn sort_by_group(&mut self) {
        if self.groups.is_sorted() {
            return;
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by_key(|i| self.groups[*i]);
        let mut sorted = self.empty_like();
        sorted.groups = order.iter().map(|i| self.groups[*i]).collect();
        for &i in &order {
            sorted.extend_from(self, i..i + 1);
        }
        *self = sorted;
    }
}

/// Walks the parts of a pass group by group, in ascending order of group.
struct GroupCursor<'a> {
    parts: &'a [Events],
    /// Per part, the first event not yet passed.
    at: Vec<usize>,
}

impl<'a> GroupCursor<'a> {
    /// A cursor at the first events of `first` or a later group.
    fn new(parts: &'a [Events], first: u32) -> Self {
        let at = parts
            .iter()
            .map(|p| p.groups.partition_point(|g| *g < first))
            .collect();
        GroupCursor { parts, at }
    }

    /// Replaces `out` with group `g`'s events, parts in table order; `g` must not be
    /// below a group already gathered.
    fn gather(&mut self, g: u32, out: &mut Events) {
        out.clear();
        for (part, at) in self.parts.iter().zip(&mut self.at) {
            let groups = &part.groups;
            while *at < groups.len() && groups[*at] < g {
                *at += 1;
            }
            let from = *at;
            while *at < groups.len() && groups[*at] == g {
                *at += 1;
            }
            if from < *at {
                out.extend_from(part, from..*at);
            }
        }
    }
}

/// What the evaluation reads for one pass: the events of its groups and, when tiles are
/// dense, their tiles.
struct PassData {
    /// The events, one part per file, each ordered by group.
    parts: Vec<Events>,
    tiles: Option<Vec<TilesPerHop>>,
}

impl PassData {
    /// No events (no spine row asks for any).
    fn empty() -> PassData {
        PassData {
            parts: Vec::new(),
            tiles: None,
        }
    }
}

/// The requested features of an aggregation view for every spine row (`times` are the
/// spine's times in µs), in spine order; `memory_budget` bounds the events held at once.
pub async fn join_windows(
    spine: &RecordBatch,
    times: &Arc<Vec<Option<i64>>>,
    request: &WindowRequest,
    memory_budget: usize,
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
    let program = Arc::clone(&request.program);
    let rows = spine.num_rows();

    // The event times any spine row can reach.
    let lookback = program
        .windows
        .iter()
        .map(|w| w.length.saturating_add(w.hop))
        .max()
        .unwrap_or(0);
    let answered = |row: usize| groups.spine_groups[row].is_some() && times[row].is_some();
    let min_t = (0..rows)
        .filter(|r| answered(*r))
        .filter_map(|r| times[r])
        .min();
    let max_t = (0..rows)
        .filter(|r| answered(*r))
        .filter_map(|r| times[r])
        .max();
    let reach = match (min_t, max_t) {
        (Some(min), Some(max)) => Some((min.saturating_sub(lookback), max)),
        _ => None,
    };

    let (tile_files, event_files): (Vec<DataFile>, Vec<DataFile>) =
        request.files.iter().cloned().partition(is_tile_file);
    let event_rows = total_rows(&event_files)?;
    let tile_rows = total_rows(&tile_files)?;
    let hops = program.hops.len() as u64;
    let dense = tile_rows > 0 && event_rows * hops >= DENSE_EVENTS_PER_TILE * tile_rows;
    let buckets = (event_rows as usize)
        .saturating_mul(BYTES_PER_EVENT)
        .div_ceil(memory_budget.max(1))
        .clamp(1, groups.group_count.max(1) as usize) as u32;

    // Each spine row's bucket, and its position within its bucket's rows.
    let bucket_of = |row: usize| match (groups.spine_groups[row], times[row]) {
        (Some(g), Some(_)) => KeyGroups::bucket(g, buckets),
        _ => 0,
    };
    let mut bucket_rows: Vec<Vec<usize>> = vec![Vec::new(); buckets as usize];
    for row in 0..rows {
        bucket_rows[bucket_of(row) as usize].push(row);
    }
    // Per group, the spine's times, sorted (to keep only the events dense tiles need).
    let spine_times: Option<Arc<Vec<Vec<i64>>>> = dense.then(|| {
        let mut by_group = vec![Vec::new(); groups.group_count as usize];
        for row in 0..rows {
            if let (Some(g), Some(t)) = (groups.spine_groups[row], times[row]) {
                by_group[g as usize].push(t);
            }
        }
        by_group.iter_mut().for_each(|t| t.sort_unstable());
        Arc::new(by_group)
    });

    let mut outputs: Vec<Evaluated> = Vec::new();
    for bucket in 0..buckets {
        let data = match reach {
            Some(reach) => {
                read_pass(
                    request,
                    &groups,
                    &event_files,
                    dense.then_some(&tile_files[..]),
                    spine_times.as_ref(),
                    reach,
                    (bucket, buckets),
                )
                .await?
            }
            None => PassData::empty(),
        };
        let rows = std::mem::take(&mut bucket_rows[bucket as usize]);
        let data = Arc::new(data);
        let groups = Arc::clone(&groups);
        let times = Arc::clone(times);
        let program = Arc::clone(&program);
        let evaluated =
            tokio::task::spawn_blocking(move || evaluate(&program, &groups, &times, &data, &rows))
                .await
                .map_err(|e| Error::TableIo {
                    path: request.view.clone(),
                    message: format!("evaluation task failed: {e}"),
                })??;
        outputs.extend(evaluated);
    }
    if outputs.is_empty() {
        // No spine rows: the features' empty arrays.
        let none = PassData::empty();
        let mut scratch = Scratch::new(&program, &none);
        let empty = evaluate_chunk(&program, &groups, times, &none, &[], &mut scratch)?;
        outputs.push((empty, Vec::new()));
    }
    // Back to spine order straight from the chunks: each spine row's (chunk, position).
    let mut indices = vec![(0usize, 0usize); rows];
    for (chunk, (_, order)) in outputs.iter().enumerate() {
        for (position, row) in order.iter().enumerate() {
            indices[*row] = (chunk, position);
        }
    }
    let view = request.view.clone();
    let all = tokio::task::spawn_blocking(move || in_spine_order(&view, &outputs, &indices))
        .await
        .map_err(|e| Error::TableIo {
            path: request.view.clone(),
            message: format!("evaluation task failed: {e}"),
        })??;
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

/// Each feature's values in spine order, from the evaluated chunks (`indices`: each spine
/// row's chunk and position), features spread over every core.
fn in_spine_order(
    view: &str,
    outputs: &[Evaluated],
    indices: &[(usize, usize)],
) -> Result<Vec<ArrayRef>> {
    let features = outputs.first().map_or(0, |(arrays, _)| arrays.len());
    let arrays = map_on_every_core(
        features,
        || (),
        |_, f| {
            let parts: Vec<&dyn Array> = outputs.iter().map(|(a, _)| a[f].as_ref()).collect();
            arrow::compute::interleave(&parts, indices).map_err(arrow_error)
        },
    )
    .ok_or_else(|| Error::TableIo {
        path: view.to_string(),
        message: "a thread putting features in spine order failed".to_string(),
    })?;
    arrays.into_iter().collect()
}

fn is_tile_file(file: &DataFile) -> bool {
    crate::materialize::is_tile_file(file.name())
}

/// The rows of some files, from their Parquet footers.
fn total_rows(files: &[DataFile]) -> Result<u64> {
    let mut rows = 0u64;
    for file in files {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file.open()?).map_err(|e| Error::TableIo {
                path: file.display().to_string(),
                message: e.to_string(),
            })?;
        rows += builder.metadata().file_metadata().num_rows().max(0) as u64;
    }
    Ok(rows)
}

/// Reads one pass: the events (and dense tiles) of the groups in `bucket`.
async fn read_pass(
    request: &WindowRequest,
    groups: &Arc<KeyGroups>,
    event_files: &[DataFile],
    tile_files: Option<&[DataFile]>,
    spine_times: Option<&Arc<Vec<Vec<i64>>>>,
    reach: (i64, i64),
    bucket: (u32, u32),
) -> Result<PassData> {
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
    let failed = |e: tokio::task::JoinError| Error::TableIo {
        path: request.view.clone(),
        message: format!("reader task failed: {e}"),
    };
    let tasks = event_files.iter().cloned().map(|file| {
        let groups = Arc::clone(groups);
        let request = request.clone();
        let spine_times = spine_times.cloned();
        tokio::task::spawn_blocking(move || {
            read_events(
                &file,
                &request,
                &groups,
                spine_times.as_deref(),
                reach,
                bucket,
            )
        })
    });
    let mut parts = Vec::with_capacity(event_files.len());
    let mut stream = futures::stream::iter(tasks).buffered(parallelism);
    while let Some(part) = stream.next().await {
        parts.push(part.map_err(failed)??);
    }
    let group_count = groups.group_count as usize;
    let tiles = match tile_files {
        None => None,
        Some(files) => {
            let mut tiles: Vec<TilesPerHop> =
                vec![vec![Vec::new(); request.program.hops.len()]; group_count];
            let tasks = files.iter().cloned().map(|file| {
                let groups = Arc::clone(groups);
                let request = request.clone();
                tokio::task::spawn_blocking(move || {
                    read_tiles(&file, &request, &groups, reach, bucket)
                })
            });
            let mut stream = futures::stream::iter(tasks).buffered(parallelism);
            while let Some(part) = stream.next().await {
                for (group, hop, start, states) in part.map_err(failed)?? {
                    tiles[group as usize][hop].push((start, states));
                }
            }
            Some(tiles)
        }
    };
    Ok(PassData { parts, tiles })
}

/// The events of one file that a pass needs: keys of the bucket, times the spine can
/// reach (with dense tiles: only times in the tile a spine row's window ends in).
fn read_events(
    file: &DataFile,
    request: &WindowRequest,
    groups: &KeyGroups,
    spine_times: Option<&Vec<Vec<i64>>>,
    reach: (i64, i64),
    (bucket, buckets): (u32, u32),
) -> Result<Events> {
    let io = |message: String| Error::TableIo {
        path: file.display().to_string(),
        message,
    };
    let program = &request.program;
    let columns = &request.columns;
    let with_order = program
        .aggregates
        .iter()
        .any(|(kind, _)| matches!(kind, AggKind::First | AggKind::Last));
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file.open()?).map_err(|e| io(e.to_string()))?;
    let schema = Arc::clone(builder.schema());
    let index = |name: &str| {
        schema
            .index_of(name)
            .map_err(|_| io(format!("has no column `{name}`")))
    };
    let key_indices: Vec<usize> = columns
        .keys
        .iter()
        .map(|(k, _)| index(k))
        .collect::<Result<_>>()?;
    let ts_index = index(&columns.timestamp)?;
    let arg_indices: Vec<usize> = columns
        .features
        .iter()
        .map(|c| index(c))
        .collect::<Result<_>>()?;
    let mut order_indices = Vec::new();
    if with_order {
        if let Some(created) = &columns.created {
            order_indices.push(index(created)?);
        }
        if let Ok(seq) = schema.index_of(SEQUENCE) {
            order_indices.push(seq);
        }
    }
    let mut wanted: Vec<usize> = key_indices
        .iter()
        .chain([&ts_index])
        .chain(&arg_indices)
        .chain(&order_indices)
        .copied()
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let metadata = Arc::clone(builder.metadata());
    let row_groups = crate::export::row_groups_meeting(&metadata, ts_index, reach);
    // Columns sized for this pass's share of the rows read: growing them would copy
    // them and touch fresh memory, which the kernel must zero.
    let rows_read: i64 = row_groups
        .iter()
        .map(|i| metadata.row_group(*i).num_rows())
        .sum();
    let expected = (rows_read.max(0) as usize).div_ceil(buckets as usize);
    let mask = ProjectionMask::roots(metadata.file_metadata().schema_descr(), wanted);
    let reader = builder
        .with_projection(mask)
        .with_row_groups(row_groups)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| io(e.to_string()))?;
    // The tile a window ends in starts at floor_h(T) for its hop h: the earliest of
    // those is where a spine row at T needs raw events from.
    let tail_start = |t: i64| {
        program
            .hops
            .iter()
            .map(|h| quiver_core::window::floor(t, *h))
            .min()
            .unwrap_or(t)
    };
    let mut part = Events {
        args: arg_indices
            .iter()
            .map(|i| ArgColumn::for_type(schema.field(*i).data_type()))
            .collect(),
        ..Events::default()
    };
    part.reserve(expected, with_order);
    for batch in reader {
        let batch = batch.map_err(|e| io(e.to_string()))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| io(format!("has no column `{name}`")))
        };
        let keys: Vec<ArrayRef> = columns
            .keys
            .iter()
            .map(|(k, _)| column(k))
            .collect::<Result<_>>()?;
        let row_groups = groups.feature_groups(&keys).map_err(arrow_error)?;
        let ts = column(&columns.timestamp)?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let mut rows = Vec::with_capacity(batch.num_rows());
        for (i, group) in row_groups.iter().enumerate() {
            let Some(g) = group else { continue };
            if KeyGroups::bucket(*g, buckets) != bucket || ts.is_null(i) {
                continue;
            }
            let t = ts.value(i);
            if t < reach.0 || t > reach.1 {
                continue;
            }
            // Dense tiles hold the rest: keep what a window's last tile needs.
            if let Some(times) = spine_times {
                let times = &times[*g as usize];
                let next = times.partition_point(|s| *s <= t);
                // Tail starts only grow with T: the next spine time decides.
                let needed = times.get(next).is_some_and(|s| tail_start(*s) <= t);
                if !needed {
                    continue;
                }
            }
            rows.push(i);
            part.groups.push(*g);
            part.ts.push(t);
        }
        if rows.is_empty() {
            continue;
        }
        if with_order {
            let created = columns.created.as_deref().map(column).transpose()?;
            let created = created
                .as_ref()
                .map(|c| c.as_primitive::<TimestampMicrosecondType>());
            let seq = batch
                .column_by_name(SEQUENCE)
                .map(|c| c.as_primitive::<UInt64Type>().clone());
            for &i in &rows {
                part.created
                    .push(created.map_or(0, |c| if c.is_valid(i) { c.value(i) } else { 0 }));
                part.seq.push(seq.as_ref().map_or(0, |s| s.value(i)));
            }
        }
        for (arg, name) in part.args.iter_mut().zip(&columns.features) {
            arg.extend(&column(name)?, &rows);
        }
    }
    part.sort_by_group();
    Ok(part)
}

/// A tile read for a key group: `(group, hop index, start, states)`.
type TileRow = (u32, usize, i64, Vec<State>);

/// The tiles of one tile file that a pass needs.
fn read_tiles(
    file: &DataFile,
    request: &WindowRequest,
    groups: &KeyGroups,
    reach: (i64, i64),
    (bucket, buckets): (u32, u32),
) -> Result<Vec<TileRow>> {
    let io = |message: String| Error::TableIo {
        path: file.display().to_string(),
        message,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file.open()?)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(|e| io(e.to_string()))?;
    let program = &request.program;
    let shapes = program.empty();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| io(e.to_string()))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| io(format!("has no column `{name}`")))
        };
        let keys: Vec<ArrayRef> = request
            .columns
            .keys
            .iter()
            .map(|(k, _)| column(k))
            .collect::<Result<_>>()?;
        let row_groups = groups.feature_groups(&keys).map_err(arrow_error)?;
        let hop = column(TILE_HOP)?;
        let hop = hop.as_primitive::<Int64Type>();
        let start = column(TILE_START)?;
        let start = start.as_primitive::<TimestampMicrosecondType>();
        let state = column(TILE_STATE)?;
        let state = state.as_binary::<i32>();
        for (i, group) in row_groups.iter().enumerate() {
            let Some(group) = group else { continue };
            if KeyGroups::bucket(*group, buckets) != bucket {
                continue;
            }
            let Some(h) = program.hops.iter().position(|x| *x == hop.value(i)) else {
                continue;
            };
            let tile_start = start.value(i);
            if tile_start.saturating_add(program.hops[h]) < reach.0 || tile_start > reach.1 {
                continue;
            }
            let states = decode_states(state.value(i), &shapes)
                .ok_or_else(|| io("a tile does not decode".to_string()))?;
            out.push((*group, h, tile_start, states));
        }
    }
    Ok(out)
}

/// The features of some spine rows, for a part of them: the arrays, and the spine row
/// of each of their positions.
type Evaluated = (Vec<ArrayRef>, Vec<usize>);

/// The features of spine rows `rows`, evaluated in chunks of key groups on every core
/// (`rows` ordered by group, rows that no window answers first).
fn evaluate(
    program: &WindowProgram,
    groups: &KeyGroups,
    times: &[Option<i64>],
    data: &PassData,
    rows: &[usize],
) -> Result<Vec<Evaluated>> {
    // `rows` by group (a stable counting sort; 0 for rows without a group or time).
    let slot = |row: usize| match (groups.spine_groups[row], times[row]) {
        (Some(g), Some(_)) => g as usize + 1,
        _ => 0,
    };
    let mut starts = vec![0usize; groups.group_count as usize + 2];
    for &row in rows {
        starts[slot(row) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut order = vec![0usize; rows.len()];
    for &row in rows {
        let at = &mut starts[slot(row)];
        order[*at] = row;
        *at += 1;
    }
    drop(starts);
    // Chunks of about CHUNK_ROWS rows, never splitting a group.
    let mut chunks: Vec<&[usize]> = Vec::new();
    let mut rest = &order[..];
    while !rest.is_empty() {
        let mut end = CHUNK_ROWS.min(rest.len());
        while end < rest.len() && slot(rest[end]) == slot(rest[end - 1]) {
            end += 1;
        }
        let (chunk, tail) = rest.split_at(end);
        chunks.push(chunk);
        rest = tail;
    }
    let chunk_arrays = map_on_every_core(
        chunks.len(),
        || Scratch::new(program, data),
        |scratch, c| evaluate_chunk(program, groups, times, data, chunks[c], scratch),
    )
    .ok_or_else(|| Error::TableIo {
        path: program.view.clone(),
        message: "an evaluation thread failed".to_string(),
    })?;
    chunk_arrays
        .into_iter()
        .zip(chunks)
        .map(|(arrays, rows)| Ok((arrays?, rows.to_vec())))
        .collect()
}

/// The features of spine rows `rows` (ordered by group), in that order.
fn evaluate_chunk(
    program: &WindowProgram,
    groups: &KeyGroups,
    times: &[Option<i64>],
    data: &PassData,
    rows: &[usize],
    scratch: &mut Scratch,
) -> Result<Vec<ArrayRef>> {
    let mut states = std::mem::take(&mut scratch.states);
    states.resize_with(program.windows.len(), Vec::new);
    for out in &mut states {
        out.clear();
    }
    let key = |row: usize| match (groups.spine_groups[row], times[row]) {
        (Some(g), Some(t)) => Some((g, t)),
        _ => None,
    };
    let first = rows.iter().find_map(|r| key(*r)).map_or(0, |(g, _)| g);
    let mut cursor = GroupCursor::new(&data.parts, first);
    let mut events = std::mem::take(&mut scratch.events);
    let mut rest = rows;
    while let Some(&row) = rest.first() {
        let Some((g, _)) = key(row) else {
            for out in &mut states {
                out.extend(scratch.empty.iter().cloned());
            }
            rest = &rest[1..];
            continue;
        };
        let same = rest
            .iter()
            .position(|r| key(*r).map(|(k, _)| k) != Some(g))
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(same);
        rest = tail;
        cursor.gather(g, &mut events);
        // Events folded into tiles here (no tile files): numbers take the column loops.
        let columns: Vec<Option<NumericColumn<'_>>> =
            events.args.iter().map(ArgColumn::numeric).collect();
        let numeric = data
            .tiles
            .is_none()
            .then(|| NumericAggregates::new(&program.aggregates, &columns))
            .flatten();
        let group = GroupEvents {
            events: &events,
            tiles: data.tiles.as_ref().map(|tiles| &tiles[g as usize]),
            numeric: numeric.as_ref(),
        };
        for t in run.iter().filter_map(|r| key(*r).map(|(_, t)| t)) {
            for (w, out) in states.iter_mut().enumerate() {
                window_states(program, w, &group, t, out, scratch);
            }
        }
    }
    scratch.events = events;
    let arrays = program.finalize_flat(&states, rows.len());
    scratch.states = states;
    arrays
}

/// Buffers an evaluation thread reuses from chunk to chunk.
struct Scratch {
    /// The states of no events.
    empty: Vec<State>,
    /// One tile's states (the generic fold).
    tile: Vec<State>,
    /// Event ranges of a window's tiles (the column loops).
    tile_ranges: Vec<std::ops::Range<usize>>,
    /// Per window, the chunk's merged states, row after row.
    states: Vec<Vec<State>>,
    /// The events of the group being evaluated.
    events: Events,
}

impl Scratch {
    fn new(program: &WindowProgram, data: &PassData) -> Scratch {
        Scratch {
            empty: program.empty(),
            tile: program.empty(),
            tile_ranges: Vec::new(),
            states: Vec::new(),
            events: data
                .parts
                .first()
                .map(Events::empty_like)
                .unwrap_or_default(),
        }
    }
}

/// One key group's events (in event order) and, when tiles are dense, its tiles.
struct GroupEvents<'a> {
    events: &'a Events,
    tiles: Option<&'a TilesPerHop>,
    /// The column loops over `events`, when every aggregate has one and tiles are
    /// folded from the events.
    numeric: Option<&'a NumericAggregates<'a>>,
}

/// Appends to `out` the merged states of window `w` at time `t` for a group: whole
/// tiles in `[floor_h(t − w), floor_h(t))` — read from dense tile files, or folded from
/// the events of each tile as materialization built them (by the column loops when
/// there are some) — then the events in `[floor_h(t), t)`.
fn window_states(
    program: &WindowProgram,
    w: usize,
    group: &GroupEvents<'_>,
    t: i64,
    out: &mut Vec<State>,
    scratch: &mut Scratch,
) {
    let def = &program.windows[w];
    let start = quiver_core::window::window_start(t, def.length, def.hop);
    let head = quiver_core::window::floor(t, def.hop);
    let events = group.events;
    let ts = &events.ts[..];
    let head_from = ts.partition_point(|x| *x < head);
    let end = ts.partition_point(|x| *x < t).max(head_from);
    // The events of each tile before the head: those below the end of the first one's
    // tile (times are sorted, so one division per tile).
    let ranges = &mut scratch.tile_ranges;
    ranges.clear();
    let mut i = ts.partition_point(|x| *x < start);
    while group.tiles.is_none() && i < head_from {
        let tile_end = quiver_core::window::floor(ts[i], def.hop).saturating_add(def.hop);
        let from = i;
        while i < head_from && ts[i] < tile_end {
            i += 1;
        }
        ranges.push(from..i);
    }
    if let (None, Some(numeric)) = (group.tiles, group.numeric) {
        numeric.push_window_states(ranges, head_from..end, out);
        return;
    }
    let from = out.len();
    out.extend(scratch.empty.iter().cloned());
    let states = &mut out[from..];
    match group.tiles {
        Some(tiles) => {
            let tiles = tiles.get(def.hop_index).map_or(&[][..], Vec::as_slice);
            let first = tiles.partition_point(|(s, _)| *s < start);
            let last = tiles.partition_point(|(s, _)| *s < head);
            for (_, t) in &tiles[first..last.max(first)] {
                program.merge(states, t);
            }
        }
        None => {
            for range in scratch.tile_ranges.iter() {
                scratch.tile.clone_from_slice(&scratch.empty);
                for i in range.clone() {
                    add(program, &mut scratch.tile, events, i);
                }
                program.merge(states, &scratch.tile);
            }
        }
    }
    for i in head_from..end {
        add(program, states, events, i);
    }
}

/// Adds event `i` to one state per aggregate (as [`WindowProgram::add`] does).
fn add(program: &WindowProgram, states: &mut [State], events: &Events, i: usize) {
    let order = events.order(i);
    for ((kind, arg), state) in program.aggregates.iter().zip(states) {
        let value = arg.map_or(Scalar::Null, |a| events.args[a].get(i));
        state.add(*kind, &value, order);
    }
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
            path: file.display().to_string(),
            message,
        };
        let is_tiles = is_tile_file(file);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A part with `(group, ts, value)` rows as read (value NULL when negative).
    fn part(rows: &[(u32, i64, i64)]) -> Events {
        let mut part = Events {
            args: vec![ArgColumn::for_type(&DataType::Int64)],
            ..Events::default()
        };
        for (g, ts, v) in rows {
            part.groups.push(*g);
            part.ts.push(*ts);
            let value = if *v < 0 {
                Scalar::Null
            } else {
                Scalar::Int(*v)
            };
            part.args[0].push(&value);
        }
        part
    }

    fn rows(events: &Events) -> Vec<(i64, Scalar)> {
        (0..events.len())
            .map(|i| (events.ts[i], events.args[0].get(i)))
            .collect()
    }

    /// Parts not written in key order are sorted stably; a group's events come from
    /// every part in table order; groups without events gather nothing.
    #[test]
    fn groups_are_gathered_from_every_part_in_table_order() {
        let mut first = part(&[(2, 10, 1), (0, 11, 2), (2, 12, -1), (0, 13, 4), (1, 14, 5)]);
        first.sort_by_group();
        assert_eq!(first.groups, [0, 0, 1, 2, 2]);
        assert_eq!(first.ts, [11, 13, 14, 10, 12]);
        let mut second = part(&[(0, 20, 6), (2, 21, 7), (5, 22, 8)]);
        second.sort_by_group();
        let parts = [first, second];
        let mut out = parts[0].empty_like();
        let mut cursor = GroupCursor::new(&parts, 0);
        cursor.gather(0, &mut out);
        assert_eq!(
            rows(&out),
            [
                (11, Scalar::Int(2)),
                (13, Scalar::Int(4)),
                (20, Scalar::Int(6))
            ]
        );
        cursor.gather(2, &mut out);
        assert_eq!(
            rows(&out),
            [
                (10, Scalar::Int(1)),
                (12, Scalar::Null),
                (21, Scalar::Int(7))
            ]
        );
        cursor.gather(3, &mut out);
        assert!(out.ts.is_empty());
        cursor.gather(5, &mut out);
        assert_eq!(rows(&out), [(22, Scalar::Int(8))]);
        // A cursor starting past the first groups.
        let mut late = GroupCursor::new(&parts, 2);
        late.gather(2, &mut out);
        assert_eq!(out.ts, [10, 12, 21]);
    }
}
