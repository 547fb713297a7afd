//! Materialization of one view version into its offline table, and pushes into it.
//!
//! A run over `[start, end]` (both inclusive) rewrites every date partition the interval
//! touches: the partition's rows outside the interval are kept, its rows inside come fresh
//! from the sources, so re-running an interval replaces it instead of duplicating rows. The
//! rows are sorted by (date, keys, event time, created, source order); rows equal on
//! (keys, event time, created) keep only the last in source order, the one the
//! point-in-time rules would pick, so the table is unique on those columns.
//!
//! A push to the offline store ([`push`]) goes through the same rewrite: its rows are
//! merged into the partitions of their dates, numbered after every source row so they
//! win ties. Rows pushed into a view are also kept in the table's push log, rows pushed
//! into a source in the source's log; every later materialization merges both logs into
//! the interval it rewrites, so re-materializing from the sources — or materializing a
//! new view version — never loses a pushed row. A push log with more than
//! [`PUSH_LOG_MAX_FILES`] files is compacted into one.
//!
//! Every write runs the table's vacuum first and commits through [`OfflineTable`].

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::SortOptions;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Schema, SchemaRef, TimestampMicrosecondType, UInt64Type};
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::common::runtime::SpawnedTask;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion::prelude::{DataFrame, Expr, ParquetReadOptions, SessionContext, cast, ident, lit};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::latest::{LatestRows, RunLasts};
use crate::normalize::{ViewColumns, timestamp_type};
use crate::source_order::{PartitionIn, ViewRows};
use crate::table::{FileEntry, Interval, Manifest, OfflineTable, PUSH_DIR, PUSH_LOG_EXTENSION};
use crate::window::WindowProgram;
use crate::window::tiles::TileBuilder;
use crate::{Error, Result};

pub(crate) const SEQ: &str = "__quiver_seq";
const DAY_MICROS: i64 = 86_400_000_000;
const MAX_FILE_ROWS: usize = 2_000_000;
/// Pushed rows are numbered from a multiple of this, after any source row: rows pushed
/// into a source from `1 × base`, rows pushed into the view from `2 × base`.
const PUSHED_SEQ_BASE: u64 = 1 << 48;
/// A push log with more files than this is compacted into one file.
pub const PUSH_LOG_MAX_FILES: usize = 16;

/// The clock and limits of one write.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// The writer's "now" (µs since the epoch).
    pub now: i64,
    /// How long superseded files are kept for readers of older snapshots (µs).
    pub retention: i64,
    /// Rows with a later event time are not written (materialize skips and counts them;
    /// pushes are refused before they get here).
    pub max_event_time: i64,
}

/// What a materialization run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaterializeStats {
    pub view: String,
    pub version: u32,
    pub interval: Interval,
    /// Rows the view query produced inside the interval.
    pub rows_in_interval: u64,
    /// Rows of the interval left out because their event time lies beyond now plus the
    /// allowed clock skew (`ingest.max_future_skew`).
    pub rows_skipped_future: u64,
    /// Rows written (the rewritten partitions, including kept rows).
    pub rows_written: u64,
    pub files_written: usize,
    pub partitions_rewritten: usize,
    pub table_rows: u64,
    pub seconds: f64,
}

/// What a materialization run did, and what its online write starts from.
#[derive(Debug)]
pub struct Materialized {
    pub stats: MaterializeStats,
    /// When asked for (a row view kept online): what the writers kept of the interval's
    /// rows as they wrote them, each key's latest row among them, so that the online
    /// write need not read the table back.
    pub latest: Option<LatestRows>,
}

/// Rows pushed into the view's sources, already run through the view's query: one
/// stream per source with a push log.
pub(crate) type SourcePushes = Vec<DataFrame>;

#[allow(clippy::too_many_arguments)]
pub(crate) async fn materialize(
    ordered: &SessionContext,
    table: &OfflineTable,
    view_name: &str,
    fresh: ViewRows,
    source_pushes: SourcePushes,
    columns: &ViewColumns,
    window: Option<&Arc<WindowProgram>>,
    interval: Interval,
    options: WriteOptions,
    keep_latest: bool,
) -> Result<Materialized> {
    let started = Instant::now();
    let lock = table.lock().await?;
    let mut manifest = table.manifest_or_empty(&lock);
    table
        .vacuum_locked(&lock, &mut manifest, options.retention, options.now)
        .await?;
    let sequence = manifest.sequence + 1;

    // Partitions whose calendar day meets the interval are rewritten whole.
    let touched: Vec<String> = manifest
        .partitions
        .keys()
        .filter(|date| day_meets(date, interval))
        .cloned()
        .collect();

    let in_interval = |ts: Expr| -> Expr {
        let upper = ts.clone().lt_eq(timestamp_lit(interval.end));
        match interval.start {
            Some(start) => ts.gt_eq(timestamp_lit(start)).and(upper),
            None => upper,
        }
    };
    let mut all = with_sequence(
        fresh
            .numbered(
                ordered,
                not_null_identity(columns).and(in_interval(ident(&columns.timestamp))),
            )
            .await?,
        columns,
    )?;
    // Pushed rows are part of the interval too, and win ties with source rows.
    for pushed in source_pushes {
        let pushed = pushed.filter(in_interval(ident(&columns.timestamp)))?;
        all = all.union(with_sequence(numbered_after(pushed, 1)?, columns)?)?;
    }
    if !manifest.pushed.is_empty() {
        let pushed = read_push_log(ordered, table, &manifest.pushed)
            .await?
            .filter(in_interval(ident(&columns.timestamp)))?;
        all = all.union(with_sequence(numbered_after(pushed, 2)?, columns)?)?;
    }
    let written = rewrite_partitions(
        ordered,
        table,
        &manifest,
        columns,
        all,
        &touched,
        Some(!in_interval(ident(&columns.timestamp))),
        sequence,
        options.max_event_time,
        view_name,
        window,
        keep_latest.then_some(interval),
    )
    .await?;

    let partitions_rewritten = touched.len().max(written.files.len());
    let replaced = replace_partitions(&mut manifest, &touched, &written.files);
    // Coverage claims only what has happened: an interval ending in the future is
    // covered (and the watermark moved) up to now.
    manifest.add_coverage(Interval {
        start: interval.start,
        end: interval.end.min(options.now),
    });
    manifest.sequence = sequence;
    let added: Vec<&FileEntry> = written.files.values().flatten().collect();
    let manifest = table
        .commit(
            &lock,
            manifest.clone(),
            &added,
            replaced,
            Vec::new(),
            options.now,
        )
        .await?;
    let stats = MaterializeStats {
        view: view_name.to_string(),
        version: table.version(),
        interval,
        rows_in_interval: written.fresh_rows,
        rows_skipped_future: written.skipped_future,
        rows_written: written.rows(),
        files_written: added.len(),
        partitions_rewritten,
        table_rows: manifest.rows(),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Materialized {
        stats,
        latest: written.latest,
    })
}

/// What a push to the offline store did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushStats {
    pub view: String,
    pub version: u32,
    /// Rows pushed.
    pub rows: u64,
    /// Date partitions rewritten to take the rows in.
    pub partitions_rewritten: usize,
    pub table_rows: u64,
    pub seconds: f64,
}

/// Where a push keeps its rows for later materializations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushLog {
    /// Rows pushed into the view: the view's own push log keeps them.
    View,
    /// Rows pushed into a source (already run through the view's query): the source's
    /// push log keeps them.
    Source,
}

/// Appends rows (in the table's canonical shape, keys and event time not null) to a view
/// version's offline table: they are merged into the date partitions they fall in, where
/// a pushed row replaces a row with the same (keys, event time, created), and, for
/// [`PushLog::View`], appended to the push log. Coverage does not change: pushing rows
/// does not materialize an interval.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn push(
    ordered: &SessionContext,
    table: &OfflineTable,
    columns: &ViewColumns,
    window: Option<&Arc<WindowProgram>>,
    rows: RecordBatch,
    log: PushLog,
    options: WriteOptions,
) -> Result<PushStats> {
    let started = Instant::now();
    let view_name = table.view().to_string();
    let lock = table.lock().await?;
    let mut manifest = table.manifest_or_empty(&lock);
    table
        .vacuum_locked(&lock, &mut manifest, options.retention, options.now)
        .await?;
    let sequence = manifest.sequence + 1;

    let ts = rows
        .column_by_name(&columns.timestamp)
        .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone())
        .ok_or_else(|| Error::MaterializeFailed {
            view: view_name.clone(),
            message: format!(
                "pushed rows lack the event-time column `{}`",
                columns.timestamp
            ),
        })?;
    let days: std::collections::BTreeSet<String> = ts
        .iter()
        .flatten()
        .map(|t| day_name(t.div_euclid(DAY_MICROS)))
        .collect();
    let touched: Vec<String> = days
        .into_iter()
        .filter(|d| manifest.partitions.contains_key(d))
        .collect();
    let written = rewrite_partitions(
        ordered,
        table,
        &manifest,
        columns,
        with_sequence(
            numbered_after(ordered.read_batch(rows.clone())?, 2)?,
            columns,
        )?,
        &touched,
        None,
        sequence,
        options.max_event_time,
        &view_name,
        window,
        None,
    )
    .await?;
    let partitions_rewritten = touched.len().max(written.files.len());
    let replaced = replace_partitions(&mut manifest, &touched, &written.files);
    let mut added: Vec<&FileEntry> = written.files.values().flatten().collect();
    let mut dropped = Vec::new();
    let log_entry;
    if log == PushLog::View {
        let (entry, compacted) = append_push_log(
            ordered,
            table,
            &manifest.pushed,
            sequence,
            Some(&columns.timestamp),
            &rows,
        )
        .await?;
        log_entry = entry;
        if compacted {
            dropped = std::mem::take(&mut manifest.pushed);
        }
        manifest.pushed.push(log_entry.clone());
        added.push(&log_entry);
    }
    manifest.sequence = sequence;
    let manifest = table
        .commit(&lock, manifest, &added, replaced, dropped, options.now)
        .await?;
    Ok(PushStats {
        view: view_name,
        version: table.version(),
        rows: rows.num_rows() as u64,
        partitions_rewritten,
        table_rows: manifest.rows(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Appends rows pushed into a source to the source's push log (`table` is the source's
/// log, see [`OfflineTable::for_source`]).
pub(crate) async fn push_source_log(
    ordered: &SessionContext,
    table: &OfflineTable,
    rows: &RecordBatch,
    options: WriteOptions,
) -> Result<()> {
    let lock = table.lock().await?;
    let mut manifest = table.manifest_or_empty(&lock);
    table
        .vacuum_locked(&lock, &mut manifest, options.retention, options.now)
        .await?;
    let sequence = manifest.sequence + 1;
    let (entry, compacted) =
        append_push_log(ordered, table, &manifest.pushed, sequence, None, rows).await?;
    let dropped = if compacted {
        std::mem::take(&mut manifest.pushed)
    } else {
        Vec::new()
    };
    manifest.pushed.push(entry.clone());
    manifest.sequence = sequence;
    table
        .commit(&lock, manifest, &[&entry], Vec::new(), dropped, options.now)
        .await?;
    Ok(())
}

/// The rows of a push log, in push order.
pub(crate) async fn read_push_log(
    ordered: &SessionContext,
    table: &OfflineTable,
    files: &[FileEntry],
) -> Result<DataFrame> {
    // Push log files are named after their commit, zero-padded, and the scan lists them
    // in name order: the order they were pushed.
    let paths: Vec<String> = files.iter().map(|f| table.file_url(&f.path)).collect();
    Ok(ordered
        .read_parquet(paths, ParquetReadOptions::default().file_extension(""))
        .await?)
}

/// Writes a new push log file holding `rows`: a small file of its own, or — when the
/// log would exceed [`PUSH_LOG_MAX_FILES`] — one file with every logged row followed by
/// `rows` (then the caller drops the old files). Returns the entry and whether it
/// compacted.
async fn append_push_log(
    ordered: &SessionContext,
    table: &OfflineTable,
    log: &[FileEntry],
    sequence: u64,
    timestamp: Option<&str>,
    rows: &RecordBatch,
) -> Result<(FileEntry, bool)> {
    let relative = format!(
        "{PUSH_DIR}/push-{}.{PUSH_LOG_EXTENSION}",
        table.commit_name(sequence)
    );
    let path = table.staging_path(&relative)?;
    let write_error = |e: parquet::errors::ParquetError| Error::WriteParquet {
        path: relative.clone(),
        message: e.to_string(),
    };
    let file = File::create(&path).map_err(|e| Error::TableIo {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut writer =
        ArrowWriter::try_new(file, rows.schema(), Some(writer_properties(&rows.schema())))
            .map_err(write_error)?;
    let compact = log.len() >= PUSH_LOG_MAX_FILES;
    let mut count = 0u64;
    let mut range = TimeRange::default();
    if compact {
        let mut stream = read_push_log(ordered, table, log)
            .await?
            .execute_stream()
            .await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let batch = conform(&batch, &rows.schema())?;
            range.add(&batch, timestamp);
            count += batch.num_rows() as u64;
            writer.write(&batch).map_err(write_error)?;
        }
    }
    range.add(rows, timestamp);
    count += rows.num_rows() as u64;
    writer.write(rows).map_err(write_error)?;
    writer.close().map_err(write_error)?;
    Ok((
        FileEntry {
            path: relative,
            rows: count,
            min_ts: range.min,
            max_ts: range.max,
        },
        compact,
    ))
}

/// `batch` with the columns (and column types) of `schema`, by name.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns = Vec::new();
    for field in schema.fields() {
        let column = batch
            .column_by_name(field.name())
            .ok_or_else(|| Error::TableIo {
                path: PUSH_DIR.to_string(),
                message: format!("a push log file lacks column `{}`", field.name()),
            })?;
        columns.push(arrow::compute::cast(column, field.data_type()).map_err(df_error)?);
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(df_error)
}

/// The range of event times of written rows.
#[derive(Debug, Clone, Copy)]
struct TimeRange {
    min: i64,
    max: i64,
}

impl Default for TimeRange {
    fn default() -> Self {
        TimeRange {
            min: i64::MAX,
            max: i64::MIN,
        }
    }
}

impl TimeRange {
    /// Widens the range by the event times in `batch`'s `timestamp` column (a no-op
    /// without one, or when it is not a µs timestamp).
    fn add(&mut self, batch: &RecordBatch, timestamp: Option<&str>) {
        let Some(ts) = timestamp
            .and_then(|name| batch.column_by_name(name))
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        else {
            return;
        };
        if let Some(min) = arrow::compute::min(ts) {
            self.min = self.min.min(min);
        }
        if let Some(max) = arrow::compute::max(ts) {
            self.max = self.max.max(max);
        }
    }
}

/// The files a rewrite wrote, and what it counted on the way.
#[derive(Default)]
struct Written {
    files: BTreeMap<String, Vec<FileEntry>>,
    /// Rows that came from the view's query (not kept or pushed rows).
    fresh_rows: u64,
    /// Fresh or pushed rows left out for an event time beyond the limit.
    skipped_future: u64,
    /// The last row of each (date, key) run in the interval, when collected.
    latest: Option<LatestRows>,
}

impl Written {
    /// Adds what another writer of the same rewrite wrote (its dates are its own).
    fn merge(&mut self, other: Written) {
        for (date, files) in other.files {
            self.files.entry(date).or_default().extend(files);
        }
        self.fresh_rows += other.fresh_rows;
        self.skipped_future += other.skipped_future;
        match (&mut self.latest, other.latest) {
            (Some(mine), Some(theirs)) => mine.append(theirs),
            (mine, theirs) => *mine = mine.take().or(theirs),
        }
    }

    fn rows(&self) -> u64 {
        self.files
            .values()
            .flatten()
            .filter(|f| !is_tile_file(&f.path))
            .map(|f| f.rows)
            .sum()
    }
}

/// Sorts `fresh` (which carries [`SEQ`]) together with the rows of the `touched`
/// partitions that pass `keep_old` (all when `None`), drops superseded rows and writes
/// new files per date. The manifest is not changed.
///
/// The rows are split by date over one stream per core (a date never spans two), each
/// sorted and written by its own task: sorting and Parquet encoding, the bulk of a run,
/// use every core while the scan feeds them.
#[allow(clippy::too_many_arguments)]
async fn rewrite_partitions(
    ordered: &SessionContext,
    table: &OfflineTable,
    manifest: &Manifest,
    columns: &ViewColumns,
    fresh: DataFrame,
    touched: &[String],
    keep_old: Option<Expr>,
    sequence: u64,
    max_event_time: i64,
    view_name: &str,
    window: Option<&Arc<WindowProgram>>,
    keep_latest_in: Option<Interval>,
) -> Result<Written> {
    // Tile files are derived from the events: they are written again, never read here.
    let old_files: Vec<String> = touched
        .iter()
        .flat_map(|d| &manifest.partitions[d])
        .filter(|f| !is_tile_file(&f.path))
        .map(|f| table.file_url(&f.path))
        .collect();
    let mut all = fresh;
    if !old_files.is_empty() {
        let mut old = ordered
            .read_parquet(old_files, ParquetReadOptions::default())
            .await?;
        if let Some(keep) = keep_old {
            old = old.filter(keep)?;
        }
        all = all.union(with_seq_zero(old)?)?;
    }
    // The day of each row (days since the epoch, floored) by integer arithmetic: a cast
    // to a date converts every timestamp through its time zone, a fifth of a run's CPU.
    let micros = cast(ident(&columns.timestamp), DataType::Int64);
    let day = lit(DAY_MICROS);
    let date = (micros.clone() - (micros % day.clone() + day.clone()) % day.clone()) / day;
    let mut order = vec![date.clone().sort(true, false)];
    order.extend(
        columns
            .identity()
            .into_iter()
            .map(|c| ident(c).sort(true, false)),
    );
    if columns.sequence.is_none() {
        // (An aggregation view's identity already ends with its stored sequence.)
        order.push(ident(SEQ).sort(true, false));
    }
    let writers = writer_count();
    // Planned here, after DataFusion's optimizer: its one-partition session would
    // otherwise drop the split (or pass the union's inputs on as they are).
    let schema = all.schema().clone();
    let physical = |e: &Expr| ordered.create_physical_expr(e.clone(), &schema);
    let mut ordering = Vec::new();
    for sort in &order {
        ordering.push(PhysicalSortExpr::new(
            physical(&sort.expr)?,
            SortOptions::new(false, false),
        ));
    }
    let by_date: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        all.create_physical_plan().await?,
        Partitioning::Hash(vec![physical(&date)?], writers),
    )?);
    let ordering = LexOrdering::new(ordering).expect("the order starts with the date");
    // The split feeds every writer's sort from a memory pool of its own. Run inside the
    // writers' plans, it took its buffers (which can spill) from the pool of the writer
    // that started first, and that writer's sort then failed in its in-memory merge
    // (which cannot spill) with "Resources exhausted … ExternalSorterMerge" instead of
    // spilling (3 of 5 runs of the benchmark's 10 M events beside a compile). The sort
    // memory is shared in halves of a writer's share: one for the split, two per writer.
    let halves = 2 * writers + 1;
    let split = pool_context(ordered, 1, halves)?;
    let schema = by_date.schema();

    let mut tasks = Vec::new();
    for partition in 0..writers {
        let input = StreamingTableExec::try_new(
            Arc::clone(&schema),
            vec![Arc::new(PartitionIn::new(
                Arc::clone(&by_date),
                partition,
                Arc::clone(&split),
            )) as Arc<dyn PartitionStream>],
            None,
            Vec::<LexOrdering>::new(),
            false,
            None,
        )?;
        let sorted = SortExec::new(ordering.clone(), Arc::new(input));
        let mut stream = sorted.execute(0, pool_context(ordered, 2, halves)?)?;
        let table = table.clone();
        let columns = columns.clone();
        let window = window.cloned();
        let view_name = view_name.to_string();
        let latest = keep_latest_in.map(|interval| {
            let keys = columns.keys.iter().map(|(k, _)| k.clone()).collect();
            RunLasts::new(interval, keys, columns.timestamp.clone())
        });
        tasks.push(SpawnedTask::spawn(async move {
            let mut writer = PartitionWriter::new(
                &table,
                sequence,
                &columns,
                max_event_time,
                window.as_deref(),
                latest,
            )?;
            while let Some(batch) = stream.next().await {
                writer.push(batch.map_err(|e| failed(&view_name, e))?)?;
            }
            writer.finish()
        }));
    }
    let mut written = Written::default();
    for task in tasks {
        let part = task.join().await.map_err(|e| Error::MaterializeFailed {
            view: view_name.to_string(),
            message: format!("a writer task failed: {e}"),
        })??;
        written.merge(part);
    }
    Ok(written)
}

/// How many streams a rewrite sorts and writes at once: one per core.
pub(crate) fn writer_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A task context of `ordered`'s settings with a memory pool of its own, `share / of` of
/// the session's limit: each sort stream has one (sorts sharing one pool fail instead of
/// spilling when one holds memory for its in-memory merge while another grows), and so
/// has the split feeding them.
fn pool_context(ordered: &SessionContext, share: usize, of: usize) -> Result<Arc<TaskContext>> {
    let session = ordered.runtime_env();
    let mut runtime = RuntimeEnvBuilder::from_runtime_env(&session);
    if let MemoryLimit::Finite(bytes) = session.memory_pool.memory_limit() {
        runtime = runtime.with_memory_limit(bytes / of.max(1) * share, 1.0);
    }
    Ok(Arc::new(
        TaskContext::from(&ordered.state()).with_runtime(runtime.build_arc()?),
    ))
}

/// Swaps the files of the rewritten partitions for the new ones; returns the files
/// replaced.
fn replace_partitions(
    manifest: &mut Manifest,
    touched: &[String],
    written: &BTreeMap<String, Vec<FileEntry>>,
) -> Vec<FileEntry> {
    let mut replaced = Vec::new();
    for date in touched {
        replaced.extend(manifest.partitions.remove(date).unwrap_or_default());
    }
    for (date, files) in written {
        manifest.partitions.insert(date.clone(), files.clone());
    }
    replaced
}

/// How table files are written: Snappy, row groups of 256 Ki rows, and no dictionary for
/// floating-point, time and binary columns. Their values are nearly all distinct, so a
/// dictionary filled up in every row group and was dropped for plain encoding: interning
/// the values first was a sixth of a materialization's CPU (the benchmark's table came out
/// 6 % larger without it; exports read it no slower).
fn writer_properties(schema: &Schema) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(256 * 1024));
    for field in schema.fields() {
        let distinct_values = matches!(
            field.data_type(),
            DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::Timestamp(..)
                | DataType::Binary
                | DataType::LargeBinary
        );
        if distinct_values {
            builder = builder
                .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    builder.build()
}

/// Keys and event time are not null: such rows cannot be looked up or joined.
pub(crate) fn not_null_identity(columns: &ViewColumns) -> Expr {
    let mut keep = ident(&columns.timestamp).is_not_null();
    for (key, _) in &columns.keys {
        keep = keep.and(ident(key).is_not_null());
    }
    keep
}

fn failed(view: &str, e: datafusion::error::DataFusionError) -> Error {
    Error::MaterializeFailed {
        view: view.to_string(),
        message: e.strip_backtrace().to_string(),
    }
}

/// Numbers pushed rows in their order after every source row (`SEQ` + `rank` × 2^48),
/// so that among rows equal on (keys, event time, created) the pushed one is kept.
fn numbered_after(df: DataFrame, rank: u64) -> Result<DataFrame> {
    let df = df.window(vec![row_number().alias(SEQ)])?;
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            if f.name() == SEQ {
                (ident(SEQ) + lit(rank * PUSHED_SEQ_BASE)).alias(SEQ)
            } else {
                ident(f.name())
            }
        })
        .collect();
    Ok(df.select(exprs)?)
}

/// For an aggregation view's events, stores [`SEQ`] as the events' source order
/// (`__seq`), right before `SEQ`: the column order of its offline table.
fn with_sequence(df: DataFrame, columns: &ViewColumns) -> Result<DataFrame> {
    let Some(sequence) = &columns.sequence else {
        return Ok(df);
    };
    let mut exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != SEQ && f.name() != sequence)
        .map(|f| ident(f.name()))
        .collect();
    exprs.push(ident(SEQ).alias(sequence));
    exprs.push(ident(SEQ));
    Ok(df.select(exprs)?)
}

/// Whether a table file holds an aggregation view's tiles (not rows).
pub(crate) fn is_tile_file(relative: &str) -> bool {
    relative
        .rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with(crate::window::TILE_PREFIX))
}

fn with_seq_zero(df: DataFrame) -> Result<DataFrame> {
    let mut exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| ident(f.name()))
        .collect();
    exprs.push(lit(0u64).alias(SEQ));
    Ok(df.select(exprs)?)
}

fn timestamp_lit(micros: i64) -> Expr {
    cast(lit(micros), timestamp_type())
}

/// Whether the calendar day `YYYY-MM-DD` overlaps `[start, end]`.
fn day_meets(date: &str, interval: Interval) -> bool {
    let Some(day_start) = parse_day(date) else {
        return false;
    };
    let day_end = day_start + DAY_MICROS;
    interval.start.is_none_or(|s| s < day_end) && day_start <= interval.end
}

fn parse_day(date: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp_micros(day * DAY_MICROS)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day{day}"))
}

/// Streams sorted rows into per-date Parquet files, dropping all but the last of rows
/// equal on (keys, event time, created), and rows beyond the event-time limit.
struct PartitionWriter<'a> {
    table: &'a OfflineTable,
    sequence: u64,
    max_event_time: i64,
    identity: Vec<usize>,
    ts_index: usize,
    seq_index: usize,
    schema: Option<SchemaRef>,
    converter: Option<RowConverter>,
    /// The last row so far, held back with its encoded identity.
    pending: Option<(RecordBatch, OwnedRow)>,
    current: Option<OpenFile>,
    files: BTreeMap<String, Vec<FileEntry>>,
    columns: ViewColumns,
    fresh_rows: u64,
    skipped_future: u64,
    /// For an aggregation view: the tiles of the day being written.
    tiles: Option<(TileBuilder<'a>, Option<i64>)>,
    /// For the online write: the last row of each (date, key) run in the interval.
    latest: Option<RunLasts>,
}

struct OpenFile {
    day: i64,
    part: usize,
    relative: String,
    writer: ArrowWriter<File>,
    rows: u64,
    range: TimeRange,
}

impl<'a> PartitionWriter<'a> {
    fn new(
        table: &'a OfflineTable,
        sequence: u64,
        columns: &ViewColumns,
        max_event_time: i64,
        window: Option<&'a WindowProgram>,
        latest: Option<RunLasts>,
    ) -> Result<Self> {
        let tiles = match window {
            Some(program) => Some((TileBuilder::new(program, columns)?, None)),
            None => None,
        };
        Ok(PartitionWriter {
            table,
            sequence,
            max_event_time,
            identity: Vec::new(),
            ts_index: 0,
            seq_index: 0,
            schema: None,
            converter: None,
            pending: None,
            current: None,
            files: BTreeMap::new(),
            columns: columns.clone(),
            fresh_rows: 0,
            skipped_future: 0,
            tiles,
            latest,
        })
    }

    fn init(&mut self, batch: &RecordBatch) -> Result<()> {
        let schema = batch.schema();
        let index = |name: &str| {
            schema
                .index_of(name)
                .map_err(datafusion::error::DataFusionError::from)
        };
        self.identity = self
            .columns
            .identity()
            .iter()
            .map(|c| index(c))
            .collect::<Result<_, _>>()?;
        self.ts_index = index(&self.columns.timestamp)?;
        self.seq_index = index(SEQ)?;
        let fields = self
            .identity
            .iter()
            .map(|i| SortField::new(schema.field(*i).data_type().clone()))
            .collect();
        self.converter =
            Some(RowConverter::new(fields).map_err(datafusion::error::DataFusionError::from)?);
        let kept: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != SEQ)
            .cloned()
            .collect();
        self.schema = Some(Arc::new(Schema::new(kept)));
        Ok(())
    }

    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.converter.is_none() {
            self.init(&batch)?;
        }
        let batch = self.count_and_limit(batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let identities = self.identities(&batch)?;
        // The row held back from the previous batch is superseded when this batch starts
        // with its identity.
        if let Some((pending, identity)) = self.pending.take()
            && identity.row() != identities.row(0)
        {
            self.write_sorted(pending)?;
        }
        // Hold back the last row: the next batch may repeat its identity.
        let n = batch.num_rows();
        self.pending = Some((batch.slice(n - 1, 1), identities.row(n - 1).owned()));
        let head = batch.slice(0, n - 1);
        let keep: BooleanArray = (0..n - 1)
            .map(|i| Some(identities.row(i) != identities.row(i + 1)))
            .collect();
        let unique = if keep.true_count() == keep.len() {
            head
        } else {
            filter_record_batch(&head, &keep).map_err(df_error)?
        };
        self.write_sorted(unique)
    }

    /// The identity columns of `batch`'s rows, encoded for comparison.
    fn identities(&self, batch: &RecordBatch) -> Result<Rows> {
        let converter = self
            .converter
            .as_ref()
            .expect("initialized on the first batch");
        let columns: Vec<ArrayRef> = self
            .identity
            .iter()
            .map(|i| Arc::clone(batch.column(*i)))
            .collect();
        converter.convert_columns(&columns).map_err(df_error)
    }

    /// Counts the rows that came from the query and drops new rows (not kept ones,
    /// `SEQ` 0) whose event time lies beyond the limit.
    fn count_and_limit(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let seq = batch.column(self.seq_index).as_primitive::<UInt64Type>();
        let ts = batch
            .column(self.ts_index)
            .as_primitive::<TimestampMicrosecondType>();
        let mut skipped = 0;
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                let s = seq.value(i);
                let future = s != 0 && ts.value(i) > self.max_event_time;
                if future {
                    skipped += 1;
                } else if (1..PUSHED_SEQ_BASE).contains(&s) {
                    self.fresh_rows += 1;
                }
                Some(!future)
            })
            .collect();
        self.skipped_future += skipped;
        if skipped == 0 {
            return Ok(batch);
        }
        filter_record_batch(&batch, &keep).map_err(df_error)
    }

    fn write_sorted(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let ts = batch
            .column(self.ts_index)
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let mut start = 0;
        while start < batch.num_rows() {
            let day = ts.value(start).div_euclid(DAY_MICROS);
            let mut end = start + 1;
            while end < batch.num_rows() && ts.value(end).div_euclid(DAY_MICROS) == day {
                end += 1;
            }
            self.write_day(day, &batch.slice(start, end - start))?;
            start = end;
        }
        Ok(())
    }

    fn write_day(&mut self, day: i64, slice: &RecordBatch) -> Result<()> {
        let roll = match &self.current {
            Some(open) => open.day != day || open.rows as usize >= MAX_FILE_ROWS,
            None => true,
        };
        if roll {
            let part = match &self.current {
                Some(open) if open.day == day => open.part + 1,
                _ => 0,
            };
            self.close_current()?;
            self.open(day, part)?;
        }
        let without_seq = slice
            .project(
                &(0..slice.num_columns())
                    .filter(|i| *i != self.seq_index)
                    .collect::<Vec<_>>(),
            )
            .map_err(df_error)?;
        let open = self.current.as_mut().expect("a file is open after roll");
        open.writer
            .write(&without_seq)
            .map_err(|e| Error::WriteParquet {
                path: open.relative.clone(),
                message: e.to_string(),
            })?;
        open.rows += slice.num_rows() as u64;
        open.range.add(&without_seq, Some(&self.columns.timestamp));
        if let Some(latest) = &mut self.latest {
            latest.add(day, &without_seq)?;
        }
        if self.tiles.as_ref().is_some_and(|(_, d)| *d != Some(day)) {
            self.write_tiles()?;
        }
        if let Some((builder, tiles_day)) = &mut self.tiles {
            *tiles_day = Some(day);
            builder.add(&without_seq)?;
        }
        Ok(())
    }

    /// Writes the tiles of the day the tile builder holds (`tiles-<commit>-0.parquet`).
    fn write_tiles(&mut self) -> Result<()> {
        let Some((builder, Some(day))) = &mut self.tiles else {
            return Ok(());
        };
        let day = *day;
        let Some(batch) = builder.finish_day()? else {
            return Ok(());
        };
        let relative = format!(
            "date={}/{}{}-0.parquet",
            day_name(day),
            crate::window::TILE_PREFIX,
            self.table.commit_name(self.sequence)
        );
        let path = self.table.staging_path(&relative)?;
        let write_error = |e: parquet::errors::ParquetError| Error::WriteParquet {
            path: relative.clone(),
            message: e.to_string(),
        };
        let file = File::create(&path).map_err(|e| Error::TableIo {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut writer = ArrowWriter::try_new(
            file,
            batch.schema(),
            Some(writer_properties(&batch.schema())),
        )
        .map_err(write_error)?;
        writer.write(&batch).map_err(write_error)?;
        writer.close().map_err(write_error)?;
        let range = batch
            .column_by_name(crate::window::TILE_START)
            .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone());
        self.files
            .entry(day_name(day))
            .or_default()
            .push(FileEntry {
                path: relative,
                rows: batch.num_rows() as u64,
                min_ts: range
                    .as_ref()
                    .and_then(arrow::compute::min)
                    .unwrap_or(i64::MAX),
                max_ts: range
                    .as_ref()
                    .and_then(arrow::compute::max)
                    .unwrap_or(i64::MIN),
            });
        Ok(())
    }

    fn open(&mut self, day: i64, part: usize) -> Result<()> {
        let date = day_name(day);
        let relative = format!(
            "date={date}/part-{}-{part}.parquet",
            self.table.commit_name(self.sequence)
        );
        let path = self.table.staging_path(&relative)?;
        let file = File::create(&path).map_err(|e| Error::TableIo {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let schema = Arc::clone(
            self.schema
                .as_ref()
                .expect("initialized on the first batch"),
        );
        let properties = writer_properties(&schema);
        let writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(|e| {
            Error::WriteParquet {
                path: relative.clone(),
                message: e.to_string(),
            }
        })?;
        self.current = Some(OpenFile {
            day,
            part,
            relative,
            writer,
            rows: 0,
            range: TimeRange::default(),
        });
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(open) = self.current.take() {
            open.writer.close().map_err(|e| Error::WriteParquet {
                path: open.relative.clone(),
                message: e.to_string(),
            })?;
            self.files
                .entry(day_name(open.day))
                .or_default()
                .push(FileEntry {
                    path: open.relative,
                    rows: open.rows,
                    min_ts: open.range.min,
                    max_ts: open.range.max,
                });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Written> {
        if let Some((last, _)) = self.pending.take() {
            self.write_sorted(last)?;
        }
        self.close_current()?;
        self.write_tiles()?;
        Ok(Written {
            files: self.files,
            fresh_rows: self.fresh_rows,
            skipped_future: self.skipped_future,
            latest: self.latest.map(RunLasts::finish).transpose()?,
        })
    }
}

fn df_error(e: arrow::error::ArrowError) -> Error {
    Error::DataFusion(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};

    #[test]
    fn dictionaries_only_for_columns_that_repeat_values() {
        let schema = Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("city", DataType::Utf8, true),
            Field::new(
                "event_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("conv_rate", DataType::Float64, true),
            Field::new("__state", DataType::Binary, true),
        ]);
        let properties = writer_properties(&schema);
        let dictionary = |name: &str| properties.dictionary_enabled(&ColumnPath::from(name));
        assert!(dictionary("driver_id") && dictionary("city"));
        assert!(
            !dictionary("event_timestamp") && !dictionary("conv_rate") && !dictionary("__state")
        );
    }
}
