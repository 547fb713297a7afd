//! Training-set export: reads a spine, joins each requested view's offline table onto
//! it with the point-in-time kernel ([`crate::pit`]), and returns the spine's rows, in
//! the spine's order, with the spine's columns first and one column per feature.
//!
//! Offline files are decoded in parallel (one blocking task per file, results kept in
//! table order), only the needed columns, and only row groups whose event times can
//! matter; rows whose keys the spine does not ask for are dropped as they are read.
//! When the matching history may not fit the memory budget, the spine's keys are split
//! into buckets and each bucket is one pass over the files.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options, filter, interleave};
use arrow::datatypes::{DataType, Field, Schema, TimestampMicrosecondType};
use arrow::util::display::FormatOptions;
use futures::StreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;

use crate::normalize::timestamp_type;
use crate::pit::{DROPPED, GroupedFeatures, KeyGroups, take_indices};
use crate::table::DataFile;
use crate::{Error, Result};

/// One view to join: where its table is and which features to take.
#[derive(Debug, Clone)]
pub struct ViewRequest {
    pub view: String,
    /// The committed files of the snapshot the export reads, in table order (dates
    /// ascending, parts ascending).
    pub files: Vec<DataFile>,
    /// Key columns and their canonical types.
    pub keys: Vec<(String, DataType)>,
    /// The event-time column of the table.
    pub timestamp: String,
    /// `(column in the table, name in the output)`.
    pub features: Vec<(String, String)>,
    /// TTL in µs.
    pub ttl_micros: Option<i64>,
}

impl ViewRequest {
    /// Bytes a one-pass join of the view holds, roughly: per row of its files, the row's
    /// group and event time twice (as read, and grouped: 24 bytes) and its features (8
    /// bytes a value, plus a margin for NULLs and wider types).
    pub fn estimated_bytes(&self) -> u64 {
        let rows: u64 = self.files.iter().map(|f| f.rows).sum();
        rows.saturating_mul(24 + 12 * self.features.len() as u64)
    }
}

/// Rows of the spine, which must fit in memory; the feature side need not.
pub fn spine_times(spine: &RecordBatch, column: &str) -> Result<Vec<Option<i64>>> {
    let array = spine
        .column_by_name(column)
        .ok_or_else(|| Error::InvalidSpine {
            message: format!(
                "no timestamp column `{column}`; the spine has {}. Name the spine's timestamp column",
                column_list(spine)
            ),
        })?;
    let usable = matches!(
        array.data_type(),
        DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
    );
    if !usable {
        return Err(Error::InvalidSpine {
            message: format!(
                "column `{column}` is {}, not a timestamp; use a timestamp, a date or ISO-8601 strings",
                array.data_type()
            ),
        });
    }
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let cast =
        cast_with_options(array, &timestamp_type(), &options).map_err(|e| Error::InvalidSpine {
            message: format!("column `{column}` cannot be read as timestamps: {e}"),
        })?;
    let values = cast.as_primitive::<TimestampMicrosecondType>();
    Ok((0..values.len())
        .map(|i| values.is_valid(i).then(|| values.value(i)))
        .collect())
}

fn column_list(batch: &RecordBatch) -> String {
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| format!("`{}`", f.name()))
        .collect();
    format!("columns {}", names.join(", "))
}

/// Joins every view onto the spine. `memory_budget` bounds the bytes of matching feature
/// history held at once (roughly; it decides how many passes to make).
pub async fn point_in_time_join(
    spine: &RecordBatch,
    timestamp_column: &str,
    views: &[ViewRequest],
    memory_budget: usize,
) -> Result<RecordBatch> {
    let times = Arc::new(spine_times(spine, timestamp_column)?);
    let mut fields: Vec<Arc<Field>> = spine.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = spine.columns().to_vec();
    for request in views {
        let joined = join_view(spine, &times, request, memory_budget).await?;
        for ((_, output), array) in request.features.iter().zip(joined) {
            fields.push(Arc::new(Field::new(
                output,
                array.data_type().clone(),
                true,
            )));
            columns.push(array);
        }
    }
    let schema = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, columns).map_err(arrow_error)
}

/// One view's requested features for every spine row (`times` from [`spine_times`]),
/// in spine order.
pub async fn join_view(
    spine: &RecordBatch,
    times: &Arc<Vec<Option<i64>>>,
    request: &ViewRequest,
    memory_budget: usize,
) -> Result<Vec<ArrayRef>> {
    let mut keys = Vec::new();
    for (name, data_type) in &request.keys {
        let column = spine
            .column_by_name(name)
            .ok_or_else(|| Error::InvalidSpine {
                message: format!(
                    "no key column `{name}` (feature view `{}` needs it); the spine has {}",
                    request.view,
                    column_list(spine)
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
    let max_t = times.iter().flatten().max().copied();
    let min_t = times.iter().flatten().min().copied();
    let (Some(min_t), Some(max_t)) = (min_t, max_t) else {
        return Ok(request
            .features
            .iter()
            .map(|_| new_null_array(&DataType::Null, spine.num_rows()))
            .collect());
    };
    let window = (
        request
            .ttl_micros
            .map_or(i64::MIN, |ttl| min_t.saturating_sub(ttl)),
        max_t,
    );

    let buckets = (request.estimated_bytes() / memory_budget.max(1) as u64 + 1)
        .min(u64::from(groups.group_count.max(1))) as u32;

    let n = spine.num_rows();
    // For each spine row: (source array, row) for `interleave`; the last source is a
    // one-row NULL array for rows without a match.
    let mut pick: Vec<(usize, usize)> = vec![(buckets as usize, 0); n];
    let mut per_bucket: Vec<Vec<ArrayRef>> = Vec::new();
    let mut feature_types: Option<Vec<DataType>> = None;
    for bucket in 0..buckets {
        let rows: Vec<u32> = (0..n as u32)
            .filter(|&r| {
                groups.spine_groups[r as usize]
                    .is_some_and(|g| KeyGroups::bucket(g, buckets) == bucket)
            })
            .collect();
        let pass = read_pass(request, &groups, bucket, buckets, window).await?;
        if feature_types.is_none() {
            feature_types = pass.types.clone();
        }
        let part_groups: Vec<&[u32]> = pass.groups.iter().map(Vec::as_slice).collect();
        let part_times: Vec<&[i64]> = pass.times.iter().map(Vec::as_slice).collect();
        let grouped = GroupedFeatures::new(&part_groups, &part_times, groups.group_count);
        let indices = take_indices(
            &grouped,
            &rows,
            &groups.spine_groups,
            times,
            request.ttl_micros,
        );
        let arrays = pass.take(&indices)?;
        for (position, row) in rows.iter().enumerate() {
            pick[*row as usize] = (bucket as usize, position);
        }
        per_bucket.push(arrays);
    }
    let types = feature_types.unwrap_or_else(|| vec![DataType::Null; request.features.len()]);
    let mut out = Vec::new();
    for (f, data_type) in types.iter().enumerate() {
        let null = new_null_array(data_type, 1);
        let mut sources: Vec<&dyn Array> = per_bucket
            .iter()
            .map(|arrays| arrays.get(f).map_or(null.as_ref(), |a| a.as_ref()))
            .collect();
        sources.push(null.as_ref());
        out.push(interleave(&sources, &pick).map_err(arrow_error)?);
    }
    Ok(out)
}

/// The feature rows of one bucket, in table order: per file, the key group and event
/// time of each row of its batches (`DROPPED` for rows the pass does not use), and the
/// batches holding their features.
struct Pass {
    groups: Vec<Vec<u32>>,
    times: Vec<Vec<i64>>,
    /// One array per requested feature, per batch.
    batches: Vec<Vec<ArrayRef>>,
    types: Option<Vec<DataType>>,
}

impl Pass {
    /// The features of the kept rows at `indices` (positions in table order; NULL: no
    /// row), straight from the batches: no concatenated copy of the history is made.
    fn take(&self, indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
        let Some(types) = &self.types else {
            return Ok(Vec::new());
        };
        let mut starts = Vec::with_capacity(self.batches.len());
        let mut start = 0usize;
        for batch in &self.batches {
            starts.push(start);
            start += batch.first().map_or(0, |a| a.len());
        }
        let null_source = self.batches.len();
        let pairs: Vec<(usize, usize)> = indices
            .iter()
            .map(|index| match index {
                None => (null_source, 0),
                Some(index) => {
                    let index = index as usize;
                    let batch = starts.partition_point(|s| *s <= index) - 1;
                    (batch, index - starts[batch])
                }
            })
            .collect();
        types
            .iter()
            .enumerate()
            .map(|(f, data_type)| {
                let null = new_null_array(data_type, 1);
                let mut sources: Vec<&dyn Array> =
                    self.batches.iter().map(|b| b[f].as_ref()).collect();
                sources.push(null.as_ref());
                interleave(&sources, &pairs).map_err(arrow_error)
            })
            .collect()
    }
}

struct FilePart {
    groups: Vec<u32>,
    times: Vec<i64>,
    batches: Vec<Vec<ArrayRef>>,
    types: Option<Vec<DataType>>,
}

async fn read_pass(
    request: &ViewRequest,
    groups: &Arc<KeyGroups>,
    bucket: u32,
    buckets: u32,
    window: (i64, i64),
) -> Result<Pass> {
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tasks = request.files.iter().cloned().map(|file| {
        let groups = Arc::clone(groups);
        let request = request.clone();
        tokio::task::spawn_blocking(move || {
            read_file(&file, &request, &groups, bucket, buckets, window)
        })
    });
    let mut parts = futures::stream::iter(tasks).buffered(parallelism);
    let mut pass = Pass {
        groups: Vec::new(),
        times: Vec::new(),
        batches: Vec::new(),
        types: None,
    };
    while let Some(part) = parts.next().await {
        let part = part.map_err(|e| Error::TableIo {
            path: request.view.clone(),
            message: format!("reader task failed: {e}"),
        })??;
        pass.groups.push(part.groups);
        pass.times.push(part.times);
        pass.batches.extend(part.batches);
        if pass.types.is_none() {
            pass.types = part.types;
        }
    }
    Ok(pass)
}

fn read_file(
    data_file: &DataFile,
    request: &ViewRequest,
    groups: &KeyGroups,
    bucket: u32,
    buckets: u32,
    window: (i64, i64),
) -> Result<FilePart> {
    let io = |message: String| Error::TableIo {
        path: data_file.display().to_string(),
        message,
    };
    let file = data_file.open()?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| io(e.to_string()))?;
    let schema = Arc::clone(builder.schema());
    let index = |name: &str| {
        schema
            .index_of(name)
            .map_err(|_| io(format!("has no column `{name}`")))
    };
    let key_indices: Vec<usize> = request
        .keys
        .iter()
        .map(|(k, _)| index(k))
        .collect::<Result<_>>()?;
    let ts_index = index(&request.timestamp)?;
    let feature_indices: Vec<usize> = request
        .features
        .iter()
        .map(|(c, _)| index(c))
        .collect::<Result<_>>()?;
    let mut wanted: Vec<usize> = key_indices
        .iter()
        .chain([&ts_index])
        .chain(&feature_indices)
        .copied()
        .collect();
    wanted.sort_unstable();
    wanted.dedup();

    // Skip row groups whose event times all fall outside the window.
    let metadata = Arc::clone(builder.metadata());
    let row_groups = row_groups_meeting(&metadata, ts_index, window);
    let rows: i64 = row_groups
        .iter()
        .map(|rg| metadata.row_group(*rg).num_rows())
        .sum();
    let mask = ProjectionMask::roots(
        metadata.file_metadata().schema_descr(),
        wanted.iter().copied(),
    );
    let reader = builder
        .with_projection(mask)
        .with_row_groups(row_groups)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| io(e.to_string()))?;
    let position = |original: usize| {
        wanted
            .iter()
            .position(|w| *w == original)
            .expect("projected columns include it")
    };
    let types = feature_indices
        .iter()
        .map(|i| schema.field(*i).data_type().clone())
        .collect();
    // Most rows are usually kept: room for all of them up front, no regrowth.
    let capacity = if buckets == 1 {
        rows.max(0) as usize
    } else {
        0
    };
    let mut part = FilePart {
        groups: Vec::with_capacity(capacity),
        times: Vec::with_capacity(capacity),
        batches: Vec::new(),
        types: Some(types),
    };
    for batch in reader {
        let batch = batch.map_err(|e| io(e.to_string()))?;
        let keys: Vec<ArrayRef> = key_indices
            .iter()
            .map(|i| Arc::clone(batch.column(position(*i))))
            .collect();
        let row_groups = groups.feature_groups(&keys).map_err(arrow_error)?;
        let ts = batch
            .column(position(ts_index))
            .as_primitive::<TimestampMicrosecondType>();
        // Each row's group, or `DROPPED` (another bucket, outside the window, a key the
        // spine does not ask for).
        let hits: Vec<u32> = row_groups
            .iter()
            .enumerate()
            .map(|(i, group)| {
                let t = ts.value(i);
                match group {
                    Some(g)
                        if ts.is_valid(i)
                            && t >= window.0
                            && t <= window.1
                            && KeyGroups::bucket(*g, buckets) == bucket =>
                    {
                        *g
                    }
                    _ => DROPPED,
                }
            })
            .collect();
        let kept = hits.iter().filter(|g| **g != DROPPED).count();
        if kept == 0 {
            continue;
        }
        let feature_columns = feature_indices.iter().map(|i| batch.column(position(*i)));
        let columns = if kept * 2 >= batch.num_rows() {
            // Most rows kept (the usual case): the decoded arrays themselves, no copy;
            // the dropped rows stay in place, marked, so that positions still count rows.
            part.groups.extend_from_slice(&hits);
            part.times.extend_from_slice(ts.values());
            feature_columns.cloned().collect()
        } else {
            let mut keep = Vec::with_capacity(batch.num_rows());
            for (i, group) in hits.iter().enumerate() {
                keep.push(*group != DROPPED);
                if *group != DROPPED {
                    part.groups.push(*group);
                    part.times.push(ts.value(i));
                }
            }
            let mask = BooleanArray::from(keep);
            feature_columns
                .map(|column| filter(column, &mask).map_err(arrow_error))
                .collect::<Result<_>>()?
        };
        part.batches.push(columns);
    }
    Ok(part)
}

/// The file formats an export writes, from the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Parquet,
    Csv,
}

impl OutputFormat {
    /// `.parquet`/`.pq` or `.csv`; anything else is an error naming the path.
    pub fn of(path: &Path) -> Result<Self> {
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match extension.as_str() {
            "parquet" | "pq" => Ok(OutputFormat::Parquet),
            "csv" => Ok(OutputFormat::Csv),
            _ => Err(Error::UnsupportedOutput {
                path: path.display().to_string(),
            }),
        }
    }
}

/// Writes a batch as one file in the format its extension names ([`OutputFormat`]),
/// atomically (temporary file, then rename).
pub fn write_output(path: &Path, batch: &RecordBatch) -> Result<()> {
    match OutputFormat::of(path)? {
        OutputFormat::Parquet => write_parquet(path, batch),
        OutputFormat::Csv => write_csv(path, batch),
    }
}

fn write_csv(path: &Path, batch: &RecordBatch) -> Result<()> {
    let tmp = path.with_extension(format!("csv.tmp-{}", std::process::id()));
    let failed = |message: String| Error::WriteParquet {
        path: path.display().to_string(),
        message,
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| failed(e.to_string()))?;
    }
    let file = File::create(&tmp).map_err(|e| failed(e.to_string()))?;
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(file);
    writer.write(batch).map_err(|e| failed(e.to_string()))?;
    let file = writer.into_inner();
    file.sync_all().map_err(|e| failed(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| failed(e.to_string()))
}

/// Writes a batch as one Parquet file, atomically (temporary file, then rename).
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let tmp = path.with_extension(format!("parquet.tmp-{}", std::process::id()));
    let failed = |message: String| Error::WriteParquet {
        path: path.display().to_string(),
        message,
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| failed(e.to_string()))?;
    }
    let file = File::create(&tmp).map_err(|e| failed(e.to_string()))?;
    let written =
        encode_parquet(file, batch, EXPORT_ROW_GROUP_ROWS).map_err(|e| failed(e.to_string()));
    let file = match written {
        Ok(file) => file,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    file.sync_all().map_err(|e| failed(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| failed(e.to_string()))
}

/// Rows per row group of an exported file (the Parquet writer's default).
const EXPORT_ROW_GROUP_ROWS: usize = 1024 * 1024;

/// Encodes `batch` into `file` as Snappy Parquet, the columns of each row group encoded
/// in parallel (one thread per core pulls the next column), then appended in order: a
/// training set is wide and written once, so the encoding is most of the write.
fn encode_parquet(
    file: File,
    batch: &RecordBatch,
    row_group_rows: usize,
) -> parquet::errors::Result<File> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let schema = batch.schema();
    // The Arrow writer sets up the file (schema, Arrow metadata); its parts encode.
    let (mut writer, factory) =
        ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))?.into_serialized_writer()?;
    let mut start = 0;
    let mut row_group = 0;
    // An empty batch gives a file with the schema and no row groups, as `ArrowWriter` does.
    while start < batch.num_rows() {
        let rows = batch.slice(start, row_group_rows.min(batch.num_rows() - start));
        let mut work = Vec::new();
        let mut column_writers = factory.create_column_writers(row_group)?.into_iter();
        for (field, column) in schema.fields().iter().zip(rows.columns()) {
            for leaf in compute_leaves(field, column)? {
                let writer = column_writers.next().ok_or_else(|| {
                    parquet::errors::ParquetError::General(format!(
                        "no column writer for `{}`",
                        field.name()
                    ))
                })?;
                work.push(std::sync::Mutex::new(Some((writer, leaf))));
            }
        }
        let chunks = crate::cores::map_on_every_core(
            work.len(),
            || (),
            |_, i| {
                let taken = work[i].lock().map(|mut s| s.take()).ok().flatten();
                taken.map(|(mut writer, leaf)| writer.write(&leaf).and_then(|()| writer.close()))
            },
        )
        .ok_or_else(|| {
            parquet::errors::ParquetError::General("a column encoder stopped".to_string())
        })?;
        let mut row_group_writer = writer.next_row_group()?;
        for chunk in chunks {
            let chunk = chunk.ok_or_else(|| {
                parquet::errors::ParquetError::General("a column encoder stopped".to_string())
            })??;
            chunk.append_to_row_group(&mut row_group_writer)?;
        }
        row_group_writer.close()?;
        start += rows.num_rows();
        row_group += 1;
    }
    writer.into_inner()
}

fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::DataFusion(e.into())
}

/// The row groups of a file whose event times (column `ts_index`, by the row groups'
/// statistics) can meet `[range.0, range.1]`; a row group without statistics can.
pub(crate) fn row_groups_meeting(
    metadata: &parquet::file::metadata::ParquetMetaData,
    ts_index: usize,
    range: (i64, i64),
) -> Vec<usize> {
    (0..metadata.num_row_groups())
        .filter(
            |&rg| match metadata.row_group(rg).column(ts_index).statistics() {
                Some(Statistics::Int64(stats)) => match (stats.min_opt(), stats.max_opt()) {
                    (Some(min), Some(max)) => *max >= range.0 && *min <= range.1,
                    _ => true,
                },
                _ => true,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Float64Array, Int64Array, ListArray, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::Int64Type;

    fn training_set(rows: usize) -> RecordBatch {
        let ids = Int64Array::from_iter_values((0..rows as i64).map(|i| 1000 + i));
        let times = TimestampMicrosecondArray::from_iter_values((0..rows as i64).map(|i| i * 7))
            .with_timezone("UTC");
        let rates =
            Float64Array::from_iter((0..rows).map(|i| (i % 3 != 0).then_some(i as f64 / 4.0)));
        let names =
            StringArray::from_iter((0..rows).map(|i| (i % 5 != 0).then(|| format!("n{i}"))));
        let lists = ListArray::from_iter_primitive::<Int64Type, _, _>(
            (0..rows).map(|i| (i % 4 != 0).then(|| vec![Some(i as i64), None])),
        );
        RecordBatch::try_from_iter(vec![
            ("driver_id", Arc::new(ids) as ArrayRef),
            ("event_timestamp", Arc::new(times) as ArrayRef),
            ("conv_rate", Arc::new(rates) as ArrayRef),
            ("name", Arc::new(names) as ArrayRef),
            ("recent", Arc::new(lists) as ArrayRef),
        ])
        .unwrap()
    }

    fn read_back(path: &Path) -> (Vec<RecordBatch>, usize) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let row_groups = builder.metadata().num_row_groups();
        let batches = builder
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        (batches, row_groups)
    }

    #[test]
    fn parallel_encoding_round_trips_every_column_and_row_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.parquet");
        let batch = training_set(2_500);
        let file = encode_parquet(File::create(&path).unwrap(), &batch, 1_000).unwrap();
        drop(file);
        let (batches, row_groups) = read_back(&path);
        assert_eq!(row_groups, 3);
        let read = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_eq!(read, batch);
    }

    #[test]
    fn an_empty_training_set_keeps_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.parquet");
        let batch = training_set(0);
        write_parquet(&path, &batch).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        assert_eq!(builder.metadata().num_row_groups(), 0);
        assert_eq!(builder.schema().fields(), batch.schema().fields());
    }
}
