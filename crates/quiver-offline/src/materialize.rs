//! Materialization of one view version into its offline table.
//!
//! A run over `[start, end]` (both inclusive) rewrites every date partition the interval touches: the
//! partition's rows outside the interval are kept, its rows inside come fresh from the
//! sources, so re-running an interval replaces it instead of duplicating rows. The
//! rows are sorted by (date, keys, event time, created, source order); rows equal on
//! (keys, event time, created) keep only the last in source order, the one the
//! point-in-time rules would pick, so the table is unique on those columns.
//!
//! A push to the offline store ([`push`]) goes through the same rewrite: its rows are
//! merged into the partitions of their dates, numbered after every source row so they
//! win ties, and kept in the table's push log, which every later materialization merges
//! into the interval it rewrites.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Schema, SchemaRef, TimestampMicrosecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::prelude::{DataFrame, Expr, ParquetReadOptions, SessionContext, cast, ident, lit};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use quiver_core::model::FeatureView;

use crate::normalize::{ViewColumns, normalize, timestamp_type};
use crate::table::{FileEntry, Interval, Manifest, TableDir};
use crate::{Error, Result};

const SEQ: &str = "__quiver_seq";
const DAY_MICROS: i64 = 86_400_000_000;
const MAX_FILE_ROWS: usize = 2_000_000;
/// Pushed rows are numbered from here, after any source row.
const PUSHED_SEQ_BASE: u64 = 1 << 48;
/// The push log's folder inside a table.
const PUSH_DIR: &str = "_pushed";

/// What a materialization run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaterializeStats {
    pub view: String,
    pub version: u32,
    pub interval: Interval,
    /// Rows the view query produced inside the interval.
    pub rows_in_interval: u64,
    /// Rows written (the rewritten partitions, including kept rows).
    pub rows_written: u64,
    pub files_written: usize,
    pub partitions_rewritten: usize,
    pub table_rows: u64,
    pub seconds: f64,
}

pub(crate) async fn materialize(
    ordered: &SessionContext,
    table: &TableDir,
    view: &FeatureView,
    version: u32,
    columns: &ViewColumns,
    interval: Interval,
    run_id: &str,
) -> Result<MaterializeStats> {
    let started = Instant::now();
    let (view_name, query) = (view.name.as_str(), view.query.as_str());
    let _lock = table.lock_async().await?;
    let mut manifest = table
        .read_manifest()?
        .unwrap_or_else(|| Manifest::empty(view_name, version));
    table.remove_unreferenced(&manifest)?;

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

    let fresh = normalize(
        ordered
            .sql(query)
            .await
            .map_err(|e| plan_error(view_name, e))?,
        columns,
    )?;
    let fresh = fresh
        .filter(not_null_identity(columns).and(in_interval(ident(&columns.timestamp))))?
        .window(vec![row_number().alias(SEQ)])?;
    let fresh_count = fresh
        .clone()
        .count()
        .await
        .map_err(|e| failed(view_name, e))?;
    let mut fresh = fresh;
    if !manifest.pushed.is_empty() {
        // Pushed rows are part of the interval too, and win ties with source rows.
        let pushed = ordered
            .read_parquet(
                manifest
                    .pushed
                    .iter()
                    .map(|f| table.file_path(f).display().to_string())
                    .collect::<Vec<_>>(),
                ParquetReadOptions::default(),
            )
            .await?
            .filter(in_interval(ident(&columns.timestamp)))?;
        fresh = fresh.union(after_sources(pushed)?)?;
    }
    let written = rewrite_partitions(
        ordered,
        table,
        &manifest,
        columns,
        fresh,
        &touched,
        Some(!in_interval(ident(&columns.timestamp))),
        run_id,
        view_name,
    )
    .await?;

    let rows_written: u64 = written.values().flatten().map(|f| f.rows).sum();
    let files_written = written.values().map(Vec::len).sum();
    let partitions_rewritten = touched.len().max(written.len());
    replace_partitions(&mut manifest, &touched, written);
    manifest.add_coverage(interval);
    table.commit(&manifest)?;
    table.remove_unreferenced(&manifest)?;
    Ok(MaterializeStats {
        view: view_name.to_string(),
        version,
        interval,
        rows_in_interval: fresh_count as u64,
        rows_written,
        files_written,
        partitions_rewritten,
        table_rows: manifest.rows(),
        seconds: started.elapsed().as_secs_f64(),
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

/// Appends rows (in the table's canonical shape, keys and event time not null) to a view
/// version's offline table: they go to the push log and are merged into the date
/// partitions they fall in, where a pushed row replaces a row with the same (keys, event
/// time, created). Coverage does not change: pushing rows does not materialize an interval.
pub(crate) async fn push(
    ordered: &SessionContext,
    table: &TableDir,
    view_name: &str,
    version: u32,
    columns: &ViewColumns,
    rows: RecordBatch,
    run_id: &str,
) -> Result<PushStats> {
    let started = Instant::now();
    let _lock = table.lock_async().await?;
    let mut manifest = table
        .read_manifest()?
        .unwrap_or_else(|| Manifest::empty(view_name, version));
    table.remove_unreferenced(&manifest)?;
    // Unique even when two pushes share a clock reading.
    let run_id = format!("{run_id}-p{}", manifest.pushed.len());
    let log = write_push_log(table, &run_id, columns, &rows)?;

    let ts = rows
        .column_by_name(&columns.timestamp)
        .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone())
        .ok_or_else(|| Error::MaterializeFailed {
            view: view_name.to_string(),
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
        after_sources(ordered.read_batch(rows)?)?,
        &touched,
        None,
        &run_id,
        view_name,
    )
    .await?;
    let partitions_rewritten = touched.len().max(written.len());
    replace_partitions(&mut manifest, &touched, written);
    manifest.pushed.push(log.clone());
    table.commit(&manifest)?;
    table.remove_unreferenced(&manifest)?;
    Ok(PushStats {
        view: view_name.to_string(),
        version,
        rows: log.rows,
        partitions_rewritten,
        table_rows: manifest.rows(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Sorts `fresh` (which carries [`SEQ`]) together with the rows of the `touched`
/// partitions that pass `keep_old` (all when `None`), drops superseded rows and writes
/// new files per date. Returns the files per date; the manifest is not changed.
#[allow(clippy::too_many_arguments)]
async fn rewrite_partitions(
    ordered: &SessionContext,
    table: &TableDir,
    manifest: &Manifest,
    columns: &ViewColumns,
    fresh: DataFrame,
    touched: &[String],
    keep_old: Option<Expr>,
    run_id: &str,
    view_name: &str,
) -> Result<BTreeMap<String, Vec<FileEntry>>> {
    let old_files: Vec<String> = touched
        .iter()
        .flat_map(|d| &manifest.partitions[d])
        .map(|f| table.file_path(f).display().to_string())
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
    let mut order = vec![cast(ident(&columns.timestamp), DataType::Date32).sort(true, false)];
    order.extend(
        columns
            .identity()
            .into_iter()
            .map(|c| ident(c).sort(true, false)),
    );
    order.push(ident(SEQ).sort(true, false));
    let mut stream = all.sort(order)?.execute_stream().await?;

    let mut writer = PartitionWriter::new(table, run_id, columns)?;
    while let Some(batch) = stream.next().await {
        writer.push(batch.map_err(|e| failed(view_name, e))?)?;
    }
    writer.finish()
}

/// Swaps the files of the rewritten partitions for the new ones.
fn replace_partitions(
    manifest: &mut Manifest,
    touched: &[String],
    written: BTreeMap<String, Vec<FileEntry>>,
) {
    for date in touched {
        manifest.partitions.remove(date);
    }
    for (date, files) in written {
        manifest.partitions.insert(date, files);
    }
}

/// Writes pushed rows to a new file of the push log (`_pushed/push-<run>.parquet`).
fn write_push_log(
    table: &TableDir,
    run_id: &str,
    columns: &ViewColumns,
    rows: &RecordBatch,
) -> Result<FileEntry> {
    let relative = format!("{PUSH_DIR}/push-{run_id}.parquet");
    let path = table.path.join(&relative);
    let io = |e: std::io::Error| Error::TableIo {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let write_error = |e: parquet::errors::ParquetError| Error::WriteParquet {
        path: relative.clone(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(table.path.join(PUSH_DIR)).map_err(io)?;
    let file = File::create(&path).map_err(io)?;
    let mut writer = ArrowWriter::try_new(file, rows.schema(), Some(writer_properties()))
        .map_err(write_error)?;
    writer.write(rows).map_err(write_error)?;
    let file = writer.into_inner().map_err(write_error)?;
    file.sync_all().map_err(io)?;
    let ts = rows
        .column_by_name(&columns.timestamp)
        .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone());
    let (min_ts, max_ts) = ts
        .map(|ts| (arrow::compute::min(&ts), arrow::compute::max(&ts)))
        .unwrap_or_default();
    Ok(FileEntry {
        path: relative.clone(),
        rows: rows.num_rows() as u64,
        min_ts: min_ts.unwrap_or(i64::MAX),
        max_ts: max_ts.unwrap_or(i64::MIN),
    })
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(256 * 1024))
        .build()
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

/// Numbers pushed rows in their order after every source row (`SEQ` + 2^48), so that
/// among rows equal on (keys, event time, created) the pushed one is kept.
fn after_sources(df: DataFrame) -> Result<DataFrame> {
    let df = df.window(vec![row_number().alias(SEQ)])?;
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            if f.name() == SEQ {
                (ident(SEQ) + lit(PUSHED_SEQ_BASE)).alias(SEQ)
            } else {
                ident(f.name())
            }
        })
        .collect();
    Ok(df.select(exprs)?)
}

fn plan_error(view: &str, e: datafusion::error::DataFusionError) -> Error {
    Error::UnplannableView {
        view: view.to_string(),
        message: e.strip_backtrace().to_string(),
    }
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
/// equal on (keys, event time, created).
struct PartitionWriter<'a> {
    table: &'a TableDir,
    run_id: String,
    identity: Vec<usize>,
    ts_index: usize,
    seq_index: usize,
    schema: Option<SchemaRef>,
    converter: Option<RowConverter>,
    pending: Option<RecordBatch>,
    current: Option<OpenFile>,
    files: BTreeMap<String, Vec<FileEntry>>,
    columns: ViewColumns,
}

struct OpenFile {
    day: i64,
    part: usize,
    relative: String,
    writer: ArrowWriter<File>,
    rows: u64,
    min_ts: i64,
    max_ts: i64,
}

impl<'a> PartitionWriter<'a> {
    fn new(table: &'a TableDir, run_id: &str, columns: &ViewColumns) -> Result<Self> {
        Ok(PartitionWriter {
            table,
            run_id: run_id.to_string(),
            identity: Vec::new(),
            ts_index: 0,
            seq_index: 0,
            schema: None,
            converter: None,
            pending: None,
            current: None,
            files: BTreeMap::new(),
            columns: columns.clone(),
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
        let batch = match self.pending.take() {
            Some(pending) => {
                concat_batches(&batch.schema(), [&pending, &batch]).map_err(df_error)?
            }
            None => batch,
        };
        // Hold back the last row: the next batch may repeat its identity.
        let n = batch.num_rows();
        self.pending = Some(batch.slice(n - 1, 1));
        let unique = self.drop_superseded(&batch.slice(0, n - 1), &batch)?;
        self.write_sorted(unique)
    }

    /// Rows of `head` (all rows of `full` but the last) that are not followed by a row
    /// with the same identity.
    fn drop_superseded(&self, head: &RecordBatch, full: &RecordBatch) -> Result<RecordBatch> {
        let converter = self
            .converter
            .as_ref()
            .expect("initialized on the first batch");
        let columns: Vec<ArrayRef> = self
            .identity
            .iter()
            .map(|i| Arc::clone(full.column(*i)))
            .collect();
        let rows = converter.convert_columns(&columns).map_err(df_error)?;
        let keep: arrow::array::BooleanArray = (0..head.num_rows())
            .map(|i| Some(rows.row(i) != rows.row(i + 1)))
            .collect();
        filter_record_batch(head, &keep).map_err(df_error)
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
        let ts = slice
            .column(self.ts_index)
            .as_primitive::<TimestampMicrosecondType>();
        let (min, max) = (arrow::compute::min(ts), arrow::compute::max(ts));
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
        if let (Some(min), Some(max)) = (min, max) {
            open.min_ts = open.min_ts.min(min);
            open.max_ts = open.max_ts.max(max);
        }
        Ok(())
    }

    fn open(&mut self, day: i64, part: usize) -> Result<()> {
        let date = day_name(day);
        let relative = format!("date={date}/part-{}-{part}.parquet", self.run_id);
        let path = self.table.path.join(&relative);
        let io = |e: std::io::Error| Error::TableIo {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(path.parent().expect("files live in a date folder")).map_err(io)?;
        let file = File::create(&path).map_err(io)?;
        let props = writer_properties();
        let schema = Arc::clone(
            self.schema
                .as_ref()
                .expect("initialized on the first batch"),
        );
        let writer =
            ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| Error::WriteParquet {
                path: relative.clone(),
                message: e.to_string(),
            })?;
        self.current = Some(OpenFile {
            day,
            part,
            relative,
            writer,
            rows: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
        });
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(open) = self.current.take() {
            let file = open.writer.close().map_err(|e| Error::WriteParquet {
                path: open.relative.clone(),
                message: e.to_string(),
            });
            file?;
            self.files
                .entry(day_name(open.day))
                .or_default()
                .push(FileEntry {
                    path: open.relative,
                    rows: open.rows,
                    min_ts: open.min_ts,
                    max_ts: open.max_ts,
                });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<BTreeMap<String, Vec<FileEntry>>> {
        if let Some(last) = self.pending.take() {
            self.write_sorted(last)?;
        }
        self.close_current()?;
        // Make the files durable before the manifest names them.
        for entry in self.files.values().flatten() {
            if let Ok(file) = File::open(self.table.path.join(&entry.path)) {
                let _ = file.sync_all();
            }
        }
        Ok(self.files)
    }
}

fn df_error(e: arrow::error::ArrowError) -> Error {
    Error::DataFusion(e.into())
}
