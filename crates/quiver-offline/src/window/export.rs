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
//! keys the spine asks for, into columns grouped by key (a stable counting sort keeps
//! each key's events in table order, which is event order). More events than the memory
//! budget holds are read in several passes, each for a share of the spine's keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
/// Bytes an event takes in memory while a pass holds it (columns plus the sort).
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

    /// Appends, for each `(part, row)` of `sources`, that row of `parts[part]`.
    fn gather(&mut self, parts: &[&ArgColumn], sources: &[(u32, u32)]) {
        let all_int = parts.iter().all(|p| matches!(p, ArgColumn::Int { .. }));
        let all_float = parts.iter().all(|p| matches!(p, ArgColumn::Float { .. }));
        match self {
            ArgColumn::Int { values, valid } if all_int => {
                for &(p, row) in sources {
                    if let ArgColumn::Int {
                        values: v,
                        valid: ok,
                    } = parts[p as usize]
                    {
                        values.push(v[row as usize]);
                        valid.push(ok[row as usize]);
                    }
                }
            }
            ArgColumn::Float { values, valid } if all_float => {
                for &(p, row) in sources {
                    if let ArgColumn::Float {
                        values: v,
                        valid: ok,
                    } = parts[p as usize]
                    {
                        values.push(v[row as usize]);
                        valid.push(ok[row as usize]);
                    }
                }
            }
            column => {
                for &(p, row) in sources {
                    column.push(&parts[p as usize].get(row as usize));
                }
            }
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

/// Events in columns: each key group's events contiguous (`offsets`), in event order.
#[derive(Debug, Default)]
struct Events {
    groups: Vec<u32>,
    ts: Vec<i64>,
    /// Created times and source order, kept only when an aggregate needs event order
    /// (FIRST_VALUE, LAST_VALUE).
    created: Vec<i64>,
    seq: Vec<u64>,
    args: Vec<ArgColumn>,
    /// Start of each group's events (`group_count + 1` entries) once sorted.
    offsets: Vec<usize>,
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

    fn range(&self, group: u32) -> std::ops::Range<usize> {
        let g = group as usize;
        self.offsets[g]..self.offsets[g + 1]
    }

    /// Parts read file by file, in table order, into one set of columns grouped by key
    /// group (stable: each group's events keep their order).
    fn grouped(mut parts: Vec<Events>, group_count: usize) -> Events {
        let total: usize = parts.iter().map(Events::len).sum();
        let mut offsets = vec![0usize; group_count + 1];
        for part in &parts {
            for g in &part.groups {
                offsets[*g as usize + 1] += 1;
            }
        }
        for g in 0..group_count {
            offsets[g + 1] += offsets[g];
        }
        // For each destination, its (part, row): parts in table order, each group's
        // rows in the order met.
        let mut cursor = offsets.clone();
        let mut sources = vec![(0u32, 0u32); total];
        for (p, part) in parts.iter().enumerate() {
            for (row, g) in part.groups.iter().enumerate() {
                let slot = &mut cursor[*g as usize];
                sources[*slot] = (p as u32, row as u32);
                *slot += 1;
            }
        }
        drop(cursor);
        let with_order = parts.iter().any(|p| !p.created.is_empty());
        let mut out = Events {
            groups: Vec::new(),
            ts: Vec::new(),
            created: Vec::new(),
            seq: Vec::new(),
            args: parts
                .first()
                .map(|p| p.args.iter().map(|a| a.empty_like(total)).collect())
                .unwrap_or_default(),
            offsets,
        };
        // Column by column, each a gather of `sources`; the parts' copy of a column is
        // freed once gathered, so only one column is held twice at a time.
        let pick = |parts: &mut [Events], column: fn(&mut Events) -> &mut Vec<i64>| {
            let gathered: Vec<i64> = sources
                .iter()
                .map(|(p, row)| column(&mut parts[*p as usize])[*row as usize])
                .collect();
            parts.iter_mut().for_each(|p| *column(p) = Vec::new());
            gathered
        };
        out.ts = pick(&mut parts, |e| &mut e.ts);
        if with_order {
            out.created = pick(&mut parts, |e| &mut e.created);
            out.seq = sources
                .iter()
                .map(|(p, row)| parts[*p as usize].seq[*row as usize])
                .collect();
        }
        for (c, column) in out.args.iter_mut().enumerate() {
            let from: Vec<&ArgColumn> = parts.iter().map(|p| &p.args[c]).collect();
            column.gather(&from, &sources);
            for part in &mut parts {
                part.args[c] = part.args[c].empty_like(0);
            }
        }
        out
    }
}

/// What the evaluation reads for one pass: the events of its groups and, when tiles are
/// dense, their tiles.
struct PassData {
    events: Events,
    tiles: Option<Vec<TilesPerHop>>,
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

    let mut outputs: Vec<Vec<ArrayRef>> = Vec::with_capacity(buckets as usize);
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
            None => PassData {
                events: Events {
                    offsets: vec![0; groups.group_count as usize + 1],
                    ..Events::default()
                },
                tiles: None,
            },
        };
        let rows = std::mem::take(&mut bucket_rows[bucket as usize]);
        let data = Arc::new(data);
        let groups = Arc::clone(&groups);
        let times = Arc::clone(times);
        let program = Arc::clone(&program);
        let arrays =
            tokio::task::spawn_blocking(move || evaluate(&program, &groups, &times, &data, &rows))
                .await
                .map_err(|e| Error::TableIo {
                    path: request.view.clone(),
                    message: format!("evaluation task failed: {e}"),
                })??;
        outputs.push(arrays);
    }
    let all = if buckets == 1 {
        outputs.pop().unwrap_or_default()
    } else {
        // Back to spine order.
        let mut position = vec![0usize; buckets as usize];
        let indices: Vec<(usize, usize)> = (0..rows)
            .map(|row| {
                let b = bucket_of(row) as usize;
                position[b] += 1;
                (b, position[b] - 1)
            })
            .collect();
        let features = outputs.first().map_or(0, Vec::len);
        (0..features)
            .map(|f| {
                let parts: Vec<&dyn Array> = outputs.iter().map(|o| o[f].as_ref()).collect();
                arrow::compute::interleave(&parts, &indices).map_err(arrow_error)
            })
            .collect::<Result<Vec<_>>>()?
    };
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
    let events = tokio::task::spawn_blocking(move || Events::grouped(parts, group_count))
        .await
        .map_err(failed)?;
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
    Ok(PassData { events, tiles })
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

/// The features of spine rows `rows` (in that order), evaluated in chunks on every core.
fn evaluate(
    program: &WindowProgram,
    groups: &KeyGroups,
    times: &[Option<i64>],
    data: &PassData,
    rows: &[usize],
) -> Result<Vec<ArrayRef>> {
    let chunks: Vec<&[usize]> = rows.chunks(CHUNK_ROWS).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut results: Vec<(usize, Result<Vec<ArrayRef>>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(chunks.len()).max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    let mut scratch = Scratch::new(program);
                    loop {
                        let c = next.fetch_add(1, Ordering::Relaxed);
                        let Some(chunk) = chunks.get(c) else { break };
                        let arrays =
                            evaluate_chunk(program, groups, times, data, chunk, &mut scratch);
                        done.push((c, arrays));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    if chunks.is_empty() {
        return evaluate_chunk(
            program,
            groups,
            times,
            data,
            &[],
            &mut Scratch::new(program),
        );
    }
    results.sort_by_key(|(c, _)| *c);
    let chunk_arrays: Vec<Vec<ArrayRef>> =
        results.into_iter().map(|(_, r)| r).collect::<Result<_>>()?;
    if chunk_arrays.len() != chunks.len() {
        return Err(Error::TableIo {
            path: program.view.clone(),
            message: "an evaluation thread failed".to_string(),
        });
    }
    let features = chunk_arrays.first().map_or(0, Vec::len);
    (0..features)
        .map(|f| {
            let parts: Vec<&dyn Array> = chunk_arrays.iter().map(|c| c[f].as_ref()).collect();
            arrow::compute::concat(&parts).map_err(arrow_error)
        })
        .collect()
}

fn evaluate_chunk(
    program: &WindowProgram,
    groups: &KeyGroups,
    times: &[Option<i64>],
    data: &PassData,
    rows: &[usize],
    scratch: &mut Scratch,
) -> Result<Vec<ArrayRef>> {
    // Events folded into tiles here (no tile files): numbers take the column loops.
    let columns: Vec<Option<NumericColumn<'_>>> =
        data.events.args.iter().map(ArgColumn::numeric).collect();
    let numeric = data
        .tiles
        .is_none()
        .then(|| NumericAggregates::new(&program.aggregates, &columns))
        .flatten();
    let mut states = std::mem::take(&mut scratch.states);
    states.resize_with(program.windows.len(), Vec::new);
    for out in &mut states {
        out.clear();
    }
    for &row in rows {
        match (groups.spine_groups[row], times[row]) {
            (Some(g), Some(t)) => {
                for (w, out) in states.iter_mut().enumerate() {
                    window_states(program, numeric.as_ref(), w, data, (g, t), out, scratch);
                }
            }
            _ => {
                for out in &mut states {
                    out.extend(scratch.empty.iter().cloned());
                }
            }
        }
    }
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
}

impl Scratch {
    fn new(program: &WindowProgram) -> Scratch {
        Scratch {
            empty: program.empty(),
            tile: program.empty(),
            tile_ranges: Vec::new(),
            states: Vec::new(),
        }
    }
}

/// Appends to `out` the merged states of window `w` at time `t` for group `g`: whole
/// tiles in `[floor_h(t − w), floor_h(t))` — read from dense tile files, or folded from
/// the events of each tile as materialization built them (by `numeric`'s column loops
/// when it is given) — then the events in `[floor_h(t), t)`.
fn window_states(
    program: &WindowProgram,
    numeric: Option<&NumericAggregates<'_>>,
    w: usize,
    data: &PassData,
    (g, t): (u32, i64),
    out: &mut Vec<State>,
    scratch: &mut Scratch,
) {
    let def = &program.windows[w];
    let start = quiver_core::window::window_start(t, def.length, def.hop);
    let head = quiver_core::window::floor(t, def.hop);
    let events = &data.events;
    let range = events.range(g);
    let ts = &events.ts[range.clone()];
    let at = |offset: usize| range.start + offset;
    let head_from = ts.partition_point(|x| *x < head);
    let end = ts.partition_point(|x| *x < t).max(head_from);
    if let (None, Some(numeric)) = (&data.tiles, numeric) {
        scratch.tile_ranges.clear();
        let mut i = ts.partition_point(|x| *x < start);
        while i < head_from {
            let tile_start = quiver_core::window::floor(ts[i], def.hop);
            let from = i;
            while i < head_from && quiver_core::window::floor(ts[i], def.hop) == tile_start {
                i += 1;
            }
            scratch.tile_ranges.push(at(from)..at(i));
        }
        numeric.push_window_states(&scratch.tile_ranges, at(head_from)..at(end), out);
        return;
    }
    let from = out.len();
    out.extend(scratch.empty.iter().cloned());
    let states = &mut out[from..];
    match &data.tiles {
        Some(tiles) => {
            let tiles = tiles[g as usize]
                .get(def.hop_index)
                .map_or(&[][..], Vec::as_slice);
            let first = tiles.partition_point(|(s, _)| *s < start);
            let last = tiles.partition_point(|(s, _)| *s < head);
            for (_, t) in &tiles[first..last.max(first)] {
                program.merge(states, t);
            }
        }
        None => {
            let tile = &mut scratch.tile;
            let mut i = ts.partition_point(|x| *x < start);
            while i < head_from {
                let tile_start = quiver_core::window::floor(ts[i], def.hop);
                tile.clone_from_slice(&scratch.empty);
                while i < head_from && quiver_core::window::floor(ts[i], def.hop) == tile_start {
                    add(program, tile, events, at(i));
                    i += 1;
                }
                program.merge(states, tile);
            }
        }
    }
    for i in head_from..end {
        add(program, states, events, at(i));
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
