//! The latest row of every entity within a materialized interval: what materialization
//! writes to the online store, taken from the rows as they are written offline.
//!
//! A materialization's writers receive the view's rows sorted by (date, keys, event
//! time, created), one writer per set of dates. The last row of each key's run inside a
//! date is that key's latest row in the date ([`RunLasts`] keeps those, in the interval,
//! as the writer goes), and the newest date in which a key appears holds its latest row
//! overall ([`LatestRows::merge`] takes the writers' dates newest first). So the online write
//! does not read back the table it follows, and memory holds one row per key and date.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::common::HashSet;

use crate::table::Interval;
use crate::{Error, Result};

/// The last row of each (date, key) run among rows with event time in an interval, fed
/// a writer's rows in their sorted order.
pub(crate) struct RunLasts {
    interval: Interval,
    keys: Vec<String>,
    timestamp: String,
    converter: Option<RowConverter>,
    /// Last rows of finished runs, with their date (days since the epoch).
    done: Vec<(i64, RecordBatch)>,
    /// The newest row so far, its date and encoded key: the last of its run unless the
    /// next row continues the run.
    open: Option<(i64, OwnedRow, RecordBatch)>,
}

impl RunLasts {
    pub(crate) fn new(interval: Interval, keys: Vec<String>, timestamp: String) -> Self {
        RunLasts {
            interval,
            keys,
            timestamp,
            converter: None,
            done: Vec::new(),
            open: None,
        }
    }

    /// Takes in the next rows of date `day` (unique on keys, event time and created, in
    /// the sorted order, with the table's columns).
    pub(crate) fn add(&mut self, day: i64, batch: &RecordBatch) -> Result<()> {
        let ts = column(batch, &self.timestamp)?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let start = self.interval.start.unwrap_or(i64::MIN);
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(ts.is_valid(i) && (start..=self.interval.end).contains(&ts.value(i))))
            .collect();
        let rows = if keep.true_count() == keep.len() {
            batch.clone()
        } else {
            filter_record_batch(batch, &keep).map_err(arrow_error)?
        };
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let keys = self.encode_keys(&rows)?;
        if let Some((open_day, key, row)) = self.open.take()
            && (open_day != day || key.row() != keys.row(0))
        {
            self.done.push((open_day, row));
        }
        let n = rows.num_rows();
        let last_of_runs: Vec<u32> = (0..n - 1)
            .filter(|&i| keys.row(i) != keys.row(i + 1))
            .map(|i| i as u32)
            .collect();
        if !last_of_runs.is_empty() {
            let taken =
                take_record_batch(&rows, &UInt32Array::from(last_of_runs)).map_err(arrow_error)?;
            self.done.push((day, taken));
        }
        // A copy: a slice would hold the whole batch in memory.
        let newest = take_record_batch(&rows, &UInt32Array::from(vec![n as u32 - 1]))
            .map_err(arrow_error)?;
        self.open = Some((day, keys.row(n - 1).owned(), newest));
        Ok(())
    }

    /// The last rows of every (date, key) run seen.
    pub(crate) fn finish(mut self) -> LatestRows {
        if let Some((day, _, row)) = self.open.take() {
            self.done.push((day, row));
        }
        LatestRows {
            keys: self.keys,
            dated: self.done,
        }
    }

    fn encode_keys(&mut self, batch: &RecordBatch) -> Result<Rows> {
        let columns: Vec<ArrayRef> = self
            .keys
            .iter()
            .map(|k| column(batch, k))
            .collect::<Result<_>>()?;
        if self.converter.is_none() {
            let fields = columns
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect();
            self.converter = Some(RowConverter::new(fields).map_err(arrow_error)?);
        }
        let converter = self.converter.as_ref().expect("created above");
        converter.convert_columns(&columns).map_err(arrow_error)
    }
}

/// The last rows of the (date, key) runs of a materialization's interval, from all its
/// writers: the latest row per key is the one of the newest date.
#[derive(Debug)]
pub struct LatestRows {
    keys: Vec<String>,
    dated: Vec<(i64, RecordBatch)>,
}

impl LatestRows {
    /// Adds what another writer of the same materialization kept (its dates are its own).
    pub(crate) fn append(&mut self, other: LatestRows) {
        self.dated.extend(other.dated);
    }

    /// The latest row per key (the table's columns); `None` when the interval held no
    /// rows. CPU-bound: run it off the async runtime.
    pub fn merge(mut self) -> Result<Option<RecordBatch>> {
        // Stable: a date's batches keep their order (each key appears once per date).
        self.dated.sort_by_key(|(day, _)| std::cmp::Reverse(*day));
        let Some((_, first)) = self.dated.first() else {
            return Ok(None);
        };
        let schema = first.schema();
        let key_columns = |batch: &RecordBatch| -> Result<Vec<ArrayRef>> {
            self.keys.iter().map(|k| column(batch, k)).collect()
        };
        let converter = RowConverter::new(
            key_columns(first)?
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect(),
        )
        .map_err(arrow_error)?;
        let keys: Vec<Rows> = self
            .dated
            .iter()
            .map(|(_, batch)| {
                converter
                    .convert_columns(&key_columns(batch)?)
                    .map_err(arrow_error)
            })
            .collect::<Result<_>>()?;
        // Keys borrowed from their encodings (no allocation per key), with DataFusion's
        // hasher: millions of keys for a large table.
        let total = keys.iter().map(Rows::num_rows).sum();
        let mut seen: HashSet<&[u8]> = HashSet::with_capacity(total);
        let mut out = Vec::with_capacity(self.dated.len());
        for ((_, batch), keys) in self.dated.iter().zip(&keys) {
            let picked: Vec<u32> = (0..batch.num_rows())
                .filter(|&i| seen.insert(keys.row(i).data()))
                .map(|i| i as u32)
                .collect();
            out.push(take_record_batch(batch, &UInt32Array::from(picked)).map_err(arrow_error)?);
        }
        Ok(Some(concat_batches(&schema, &out).map_err(arrow_error)?))
    }
}

fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| Error::TableIo {
            path: name.to_string(),
            message: "column missing from the offline table".to_string(),
        })
}

fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::DataFusion(e.into())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};

    use super::*;

    const DAY: i64 = 86_400_000_000;

    fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("value", DataType::Int64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    /// Runs of a key cut at every possible place between batches, over two writers and
    /// several dates: the merge gives each key's newest row in the interval.
    #[test]
    fn runs_cut_between_batches_and_writers_give_each_keys_newest_row() {
        // (key, ts, value), sorted by date, key, ts as a writer receives them; rows at
        // hour 23 of day 2 lie outside the interval.
        let mut rows = Vec::new();
        for day in 0..4 {
            for key in 0..5 {
                for hour in [1, 5, 23] {
                    if (key + day + hour) % 3 != 0 {
                        rows.push((key, day * DAY + hour * 3_600_000_000, rows.len() as i64));
                    }
                }
            }
        }
        let interval = Interval {
            start: Some(3_600_000_000),
            end: 2 * DAY + 6 * 3_600_000_000,
        };
        let mut expected: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for (key, ts, value) in &rows {
            if (interval.start.unwrap()..=interval.end).contains(ts) {
                expected.insert(*key, (*ts, *value));
            }
        }
        for chunk in 1..=4 {
            // Even days to one writer, odd to the other, each in batches of `chunk`
            // rows within a day.
            let mut merged: Option<LatestRows> = None;
            for parity in 0..2 {
                let mut writer = RunLasts::new(interval, vec!["k".into()], "ts".into());
                for day in (0..4).filter(|d| d % 2 == parity) {
                    let of_day: Vec<_> = rows
                        .iter()
                        .copied()
                        .filter(|r| r.1.div_euclid(DAY) == day)
                        .collect();
                    for piece in of_day.chunks(chunk) {
                        writer.add(day, &batch(piece)).unwrap();
                    }
                }
                let kept = writer.finish();
                match &mut merged {
                    Some(m) => m.append(kept),
                    None => merged = Some(kept),
                }
            }
            let latest = merged.unwrap().merge().unwrap().unwrap();
            let column = |i: usize| latest.column(i).as_primitive::<Int64Type>().clone();
            let (keys, values) = (column(0), column(2));
            let ts = latest.column(1).as_primitive::<TimestampMicrosecondType>();
            let actual: BTreeMap<i64, (i64, i64)> = (0..latest.num_rows())
                .map(|i| (keys.value(i), (ts.value(i), values.value(i))))
                .collect();
            assert_eq!(latest.num_rows(), actual.len(), "one row per key");
            assert_eq!(actual, expected, "batches of {chunk} rows");
        }
    }
}
