//! The latest row of every entity within an interval, read from an offline table: what
//! materialization writes to the online store.
//!
//! Offline tables are date partitions, each sorted by (keys, event time, created) and
//! unique on those columns. Walking the dates newest first, the last row of each key's
//! run inside a date is that key's latest row in the date, and the first date in which a
//! key appears holds its latest row overall. So memory holds one date at a time plus the
//! set of keys already answered.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::row::{RowConverter, SortField};
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
    let mut seen: HashSet<Box<[u8]>> = HashSet::new();
    let mut out: Vec<RecordBatch> = Vec::new();
    let mut converter: Option<RowConverter> = None;
    for files in dates.iter().rev() {
        let Some(batch) = read_date(files)? else {
            continue;
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
            continue;
        }
        let key_columns: Vec<ArrayRef> = keys
            .iter()
            .map(|k| batch.column_by_name(k).cloned().ok_or_else(|| missing(k)))
            .collect::<Result<_>>()?;
        let converter = match &mut converter {
            Some(c) => c,
            None => converter.insert(
                RowConverter::new(
                    key_columns
                        .iter()
                        .map(|a| SortField::new(a.data_type().clone()))
                        .collect(),
                )
                .map_err(arrow_error)?,
            ),
        };
        let rows = converter
            .convert_columns(&key_columns)
            .map_err(arrow_error)?;
        let n = batch.num_rows();
        let mut picked = Vec::new();
        for i in 0..n {
            let last_of_run = i + 1 == n || rows.row(i) != rows.row(i + 1);
            if last_of_run && seen.insert(rows.row(i).as_ref().into()) {
                picked.push(i as u32);
            }
        }
        out.push(take_record_batch(&batch, &UInt32Array::from(picked)).map_err(arrow_error)?);
    }
    match out.first() {
        None => Ok(None),
        Some(first) => Ok(Some(
            concat_batches(&first.schema(), &out).map_err(arrow_error)?,
        )),
    }
}

fn read_date(files: &[DataFile]) -> Result<Option<RecordBatch>> {
    let mut batches = Vec::new();
    for data_file in files {
        let io = |message: String| Error::TableIo {
            path: data_file.path().display().to_string(),
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
