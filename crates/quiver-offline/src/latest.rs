//! The latest row of every entity within an interval, read from an offline table: what
//! materialization writes to the online store.
//!
//! Offline tables are date partitions, each sorted by (keys, event time, created) and
//! unique on those columns. The last row of each key's run inside a date is that key's
//! latest row in the date, and the newest date in which a key appears holds its latest
//! row overall. Dates are read and reduced to their last rows a few at a time, one per
//! core, then merged newest first; memory holds those dates plus the set of keys already
//! answered. Dates whose files lie wholly outside the interval are not read.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::row::{RowConverter, Rows, SortField};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::table::{DataFile, Interval};
use crate::{Error, Result};

/// Latest row per key with event time in `interval`, from `dates` (each a list of part
/// files in order), given oldest date first. Returns the table's columns.
pub fn latest_rows(
    dates: &[Vec<DataFile>],
    keys: &[String],
    timestamp: &str,
    interval: Interval,
) -> Result<Option<RecordBatch>> {
    let meets = |files: &&Vec<DataFile>| {
        files
            .iter()
            .any(|f| f.max_ts >= interval.start.unwrap_or(i64::MIN) && f.min_ts <= interval.end)
    };
    let dates: Vec<&Vec<DataFile>> = dates.iter().filter(meets).rev().collect();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut seen: HashSet<Box<[u8]>> = HashSet::new();
    let mut out: Vec<RecordBatch> = Vec::new();
    for group in dates.chunks(workers) {
        let lasts: Vec<Result<Option<DateLasts>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = group
                .iter()
                .map(|files| scope.spawn(|| last_of_runs(files, keys, timestamp, interval)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(worker_panicked())))
                .collect()
        });
        // Newest date first: a key's first appearance is its latest row.
        for date in lasts {
            let Some(date) = date? else { continue };
            let picked: Vec<u32> = (0..date.batch.num_rows())
                .filter(|i| seen.insert(date.keys.row(*i).as_ref().into()))
                .map(|i| i as u32)
                .collect();
            out.push(
                take_record_batch(&date.batch, &UInt32Array::from(picked)).map_err(arrow_error)?,
            );
        }
    }
    match out.first() {
        None => Ok(None),
        Some(first) => Ok(Some(
            concat_batches(&first.schema(), &out).map_err(arrow_error)?,
        )),
    }
}

/// The last row of each key inside one date (and the interval), with its encoded keys.
struct DateLasts {
    batch: RecordBatch,
    keys: Rows,
}

fn last_of_runs(
    files: &[DataFile],
    keys: &[String],
    timestamp: &str,
    interval: Interval,
) -> Result<Option<DateLasts>> {
    let Some(batch) = read_date(files)? else {
        return Ok(None);
    };
    let ts = batch
        .column_by_name(timestamp)
        .ok_or_else(|| missing(timestamp))?
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    let in_interval: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let t = ts.value(i);
            Some(ts.is_valid(i) && interval.start.is_none_or(|s| t >= s) && t <= interval.end)
        })
        .collect();
    let batch = filter_record_batch(&batch, &in_interval).map_err(arrow_error)?;
    if batch.num_rows() == 0 {
        return Ok(None);
    }
    let key_columns = |batch: &RecordBatch| -> Result<Vec<ArrayRef>> {
        keys.iter()
            .map(|k| batch.column_by_name(k).cloned().ok_or_else(|| missing(k)))
            .collect()
    };
    let converter = RowConverter::new(
        key_columns(&batch)?
            .iter()
            .map(|a| SortField::new(a.data_type().clone()))
            .collect(),
    )
    .map_err(arrow_error)?;
    let rows = converter
        .convert_columns(&key_columns(&batch)?)
        .map_err(arrow_error)?;
    let n = batch.num_rows();
    let last: Vec<u32> = (0..n)
        .filter(|&i| i + 1 == n || rows.row(i) != rows.row(i + 1))
        .map(|i| i as u32)
        .collect();
    let batch = take_record_batch(&batch, &UInt32Array::from(last)).map_err(arrow_error)?;
    let keys = converter
        .convert_columns(&key_columns(&batch)?)
        .map_err(arrow_error)?;
    Ok(Some(DateLasts { batch, keys }))
}

fn worker_panicked() -> Error {
    Error::TableIo {
        path: "offline table".to_string(),
        message: "a reader thread panicked".to_string(),
    }
}

fn read_date(files: &[DataFile]) -> Result<Option<RecordBatch>> {
    let mut batches = Vec::new();
    for data_file in files {
        let io = |message: String| Error::TableIo {
            path: data_file.display().to_string(),
            message,
        };
        let file = data_file.open()?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(64 * 1024).build())
            .map_err(|e| io(e.to_string()))?;
        for batch in reader {
            batches.push(batch.map_err(|e| io(e.to_string()))?);
        }
    }
    match batches.first() {
        None => Ok(None),
        Some(first) => Ok(Some(
            concat_batches(&Arc::clone(&first.schema()), &batches).map_err(arrow_error)?,
        )),
    }
}

fn missing(column: &str) -> Error {
    Error::TableIo {
        path: column.to_string(),
        message: "column missing from the offline table".to_string(),
    }
}

fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::DataFusion(e.into())
}
