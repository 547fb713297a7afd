//! The latest row of every entity within a materialized interval: what materialization
//! writes to the online store, taken from the rows as they are written offline.
//!
//! A materialization's writers receive the view's rows sorted by (date, keys, event
//! time, created), one writer per set of dates. The last row of each key's run inside a
//! date is that key's latest row in the date ([`RunLasts`] keeps those, in the interval,
//! as the writer goes); a key's rows of different dates differ in event time, so its
//! latest row overall is the one with the greatest event time ([`LatestRows::merge`]).
//! So the online write does not read back the table it follows. Memory stays about one
//! row per key: a writer reduces what it kept to the latest per key whenever that
//! doubled.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{filter_record_batch, interleave_record_batch, take_record_batch};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::common::HashMap;

use crate::table::Interval;
use crate::{Error, Result};

/// Kept rows a writer holds before it first reduces them to the latest per key.
const FIRST_REDUCTION_ROWS: usize = 1 << 20;

/// The last row of each (date, key) run among rows with event time in an interval, fed
/// a writer's rows in their sorted order.
pub(crate) struct RunLasts {
    interval: Interval,
    keys: Vec<String>,
    timestamp: String,
    converter: Option<RowConverter>,
    /// Last rows of finished runs.
    done: Vec<RecordBatch>,
    done_rows: usize,
    /// `done` is reduced to the latest row per key when it reaches this many rows.
    reduce_at: usize,
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
            done_rows: 0,
            reduce_at: FIRST_REDUCTION_ROWS,
            open: None,
        }
    }

    /// Reduces kept rows from `rows` on (tests reach the reduction with few rows).
    #[cfg(test)]
    fn reducing_at(mut self, rows: usize) -> Self {
        self.reduce_at = rows;
        self
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
            self.keep(row)?;
        }
        let n = rows.num_rows();
        let last_of_runs: Vec<u32> = (0..n - 1)
            .filter(|&i| keys.row(i) != keys.row(i + 1))
            .map(|i| i as u32)
            .collect();
        if !last_of_runs.is_empty() {
            let taken =
                take_record_batch(&rows, &UInt32Array::from(last_of_runs)).map_err(arrow_error)?;
            self.keep(taken)?;
        }
        // A copy: a slice would hold the whole batch in memory.
        let newest = take_record_batch(&rows, &UInt32Array::from(vec![n as u32 - 1]))
            .map_err(arrow_error)?;
        self.open = Some((day, keys.row(n - 1).owned(), newest));
        Ok(())
    }

    fn keep(&mut self, rows: RecordBatch) -> Result<()> {
        self.done_rows += rows.num_rows();
        self.done.push(rows);
        if self.done_rows >= self.reduce_at {
            let reduced = latest_per_key(&self.done, &self.keys, &self.timestamp)?;
            self.done_rows = reduced.as_ref().map_or(0, RecordBatch::num_rows);
            self.done = reduced.into_iter().collect();
            self.reduce_at = self.reduce_at.max(2 * self.done_rows);
        }
        Ok(())
    }

    /// The last rows of every (date, key) run seen (or the latest per key of them).
    pub(crate) fn finish(mut self) -> Result<LatestRows> {
        if let Some((_, _, row)) = self.open.take() {
            self.keep(row)?;
        }
        Ok(LatestRows {
            keys: self.keys,
            timestamp: self.timestamp,
            kept: self.done,
        })
    }

    fn encode_keys(&mut self, batch: &RecordBatch) -> Result<Rows> {
        let columns = key_columns(batch, &self.keys)?;
        if self.converter.is_none() {
            self.converter = Some(converter(&columns)?);
        }
        let converter = self.converter.as_ref().expect("created above");
        converter.convert_columns(&columns).map_err(arrow_error)
    }
}

/// What a materialization's writers kept of the interval's rows: the latest row per key
/// is among them, the one with the greatest event time.
#[derive(Debug)]
pub struct LatestRows {
    keys: Vec<String>,
    timestamp: String,
    kept: Vec<RecordBatch>,
}

impl LatestRows {
    /// Adds what another writer of the same materialization kept (its dates are its own).
    pub(crate) fn append(&mut self, other: LatestRows) {
        self.kept.extend(other.kept);
    }

    /// The latest row per key (the table's columns, in key order); `None` when
    /// the interval held no rows. CPU-bound: run it off the async runtime.
    pub fn merge(self) -> Result<Option<RecordBatch>> {
        latest_per_key(&self.kept, &self.keys, &self.timestamp)
    }
}

/// Of `batches` (in a writer's order, so a later row of a key is at least as new), the
/// row with the greatest event time per key, in key order.
fn latest_per_key(
    batches: &[RecordBatch],
    keys: &[String],
    timestamp: &str,
) -> Result<Option<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let converter = converter(&key_columns(first, keys)?)?;
    let encoded: Vec<Rows> = batches
        .iter()
        .map(|batch| {
            converter
                .convert_columns(&key_columns(batch, keys)?)
                .map_err(arrow_error)
        })
        .collect::<Result<_>>()?;
    // Keys borrowed from their encodings (no allocation per key), with DataFusion's
    // hasher: millions of keys for a large table.
    let total = encoded.iter().map(Rows::num_rows).sum();
    // Per key: (batch, row, event time) of its newest row so far.
    type Newest = (usize, usize, i64);
    let mut newest: HashMap<&[u8], Newest> = HashMap::with_capacity(total);
    for (b, (batch, keys)) in batches.iter().zip(&encoded).enumerate() {
        let ts = column(batch, timestamp)?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        for (row, key) in keys.iter().enumerate() {
            let t = ts.value(row);
            newest
                .entry(key.data())
                .and_modify(|kept| {
                    if t >= kept.2 {
                        *kept = (b, row, t);
                    }
                })
                .or_insert((b, row, t));
        }
    }
    // In key order: stores write sorted keys faster (the embedded store's B-tree took
    // 1.2-1.3 s for 200 000 keys in hash order, 0.5-0.8 s sorted).
    let mut newest: Vec<(&[u8], Newest)> = newest.into_iter().collect();
    newest.sort_unstable_by_key(|(key, _)| *key);
    let picked: Vec<(usize, usize)> = newest.into_iter().map(|(_, (b, r, _))| (b, r)).collect();
    let batches: Vec<&RecordBatch> = batches.iter().collect();
    Ok(Some(
        interleave_record_batch(&batches, &picked).map_err(arrow_error)?,
    ))
}

fn key_columns(batch: &RecordBatch, keys: &[String]) -> Result<Vec<ArrayRef>> {
    keys.iter().map(|k| column(batch, k)).collect()
}

fn converter(columns: &[ArrayRef]) -> Result<RowConverter> {
    RowConverter::new(
        columns
            .iter()
            .map(|a| SortField::new(a.data_type().clone()))
            .collect(),
    )
    .map_err(arrow_error)
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
    /// several dates, kept rows reduced early or never: the merge gives each key's newest
    /// row in the interval.
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
        for (chunk, reduce_at) in (1..=4).flat_map(|c| [(c, 1), (c, 3), (c, usize::MAX)]) {
            // Even days to one writer, odd to the other, each in batches of `chunk`
            // rows within a day.
            let mut merged: Option<LatestRows> = None;
            for parity in 0..2 {
                let mut writer =
                    RunLasts::new(interval, vec!["k".into()], "ts".into()).reducing_at(reduce_at);
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
                let kept = writer.finish().unwrap();
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
            assert_eq!(
                actual, expected,
                "batches of {chunk} rows, reduced from {reduce_at} kept rows"
            );
        }
    }
}
