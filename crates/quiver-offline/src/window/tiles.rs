//! Tile files: while materialization writes an aggregation view's events (sorted by date,
//! keys and event order), [`TileBuilder`] folds them into one tile per (key, hop, tile
//! start) — tiles never cross a day, because hops divide a day — and writes them next to
//! the events of the same date.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType, UInt64Type};
use arrow::row::{OwnedRow, RowConverter, SortField};

use super::entity::encode_states;
use super::program::{Event, WindowProgram, scalars};
use super::state::{EventOrder, State};
use super::{SEQUENCE, TILE_EVENTS, TILE_HOP, TILE_START, TILE_STATE};
use crate::normalize::ViewColumns;
use crate::{Error, Result};

fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::DataFusion(e.into())
}

/// The events of a batch of event rows (columns as [`ViewColumns`] names them).
pub fn events_of(batch: &RecordBatch, columns: &ViewColumns) -> Result<Vec<Event>> {
    let missing = |name: &str| Error::TableIo {
        path: name.to_string(),
        message: "column missing from the events".to_string(),
    };
    let ts = batch
        .column_by_name(&columns.timestamp)
        .ok_or_else(|| missing(&columns.timestamp))?
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    let created = match &columns.created {
        Some(c) => Some(
            batch
                .column_by_name(c)
                .ok_or_else(|| missing(c))?
                .as_primitive::<TimestampMicrosecondType>()
                .clone(),
        ),
        None => None,
    };
    let seq = batch
        .column_by_name(SEQUENCE)
        .map(|c| c.as_primitive::<UInt64Type>().clone());
    let args: Vec<Vec<super::state::Scalar>> = columns
        .features
        .iter()
        .map(|f| {
            batch
                .column_by_name(f)
                .map(scalars)
                .ok_or_else(|| missing(f))
        })
        .collect::<Result<_>>()?;
    Ok((0..batch.num_rows())
        .map(|i| Event {
            order: EventOrder {
                ts: ts.value(i),
                created: created
                    .as_ref()
                    .map_or(0, |c| if c.is_valid(i) { c.value(i) } else { 0 }),
                seq: seq.as_ref().map_or(i as u64, |s| s.value(i)),
            },
            args: args.iter().map(|a| a[i].clone()).collect(),
        })
        .collect())
}

/// The schema of tile files.
pub fn tile_schema(keys: &[(String, DataType)]) -> SchemaRef {
    let mut fields: Vec<Field> = keys
        .iter()
        .map(|(name, t)| Field::new(name, t.clone(), false))
        .collect();
    fields.push(Field::new(TILE_HOP, DataType::Int64, false));
    fields.push(Field::new(
        TILE_START,
        crate::normalize::timestamp_type(),
        false,
    ));
    fields.push(Field::new(TILE_EVENTS, DataType::Int64, false));
    fields.push(Field::new(TILE_STATE, DataType::Binary, false));
    Arc::new(Schema::new(fields))
}

/// Folds sorted events into tiles, one open tile per hop for the current key.
pub struct TileBuilder<'a> {
    program: &'a WindowProgram,
    columns: ViewColumns,
    converter: RowConverter,
    key: Option<OwnedRow>,
    /// Per hop: the open tile (start, events, states).
    open: Vec<Option<(i64, i64, Vec<State>)>>,
    /// Finished tiles of the current day.
    done: Vec<(OwnedRow, i64, i64, i64, Vec<u8>)>,
}

impl<'a> TileBuilder<'a> {
    pub fn new(program: &'a WindowProgram, columns: &ViewColumns) -> Result<Self> {
        let converter = RowConverter::new(
            columns
                .keys
                .iter()
                .map(|(_, t)| SortField::new(t.clone()))
                .collect(),
        )
        .map_err(arrow_error)?;
        Ok(TileBuilder {
            program,
            columns: columns.clone(),
            converter,
            key: None,
            open: vec![None; program.hops.len()],
            done: Vec::new(),
        })
    }

    /// Takes a slice of one day's events, sorted by keys then event order, continuing
    /// the previous slice.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys: Vec<ArrayRef> = self
            .columns
            .keys
            .iter()
            .map(|(k, _)| {
                batch
                    .column_by_name(k)
                    .cloned()
                    .ok_or_else(|| Error::TableIo {
                        path: k.clone(),
                        message: "key column missing from the events".to_string(),
                    })
            })
            .collect::<Result<_>>()?;
        let rows = self.converter.convert_columns(&keys).map_err(arrow_error)?;
        let events = events_of(batch, &self.columns)?;
        for (i, event) in events.iter().enumerate() {
            let row = rows.row(i);
            if self.key.as_ref().is_none_or(|k| k.row() != row) {
                self.close_all();
                self.key = Some(row.owned());
            }
            for h in 0..self.program.hops.len() {
                let start = quiver_core::window::floor(event.order.ts, self.program.hops[h]);
                if self.open[h].as_ref().is_some_and(|(s, _, _)| *s != start) {
                    self.close(h);
                }
                let (_, count, states) =
                    self.open[h].get_or_insert_with(|| (start, 0, self.program.empty()));
                *count += 1;
                self.program.add(states, event);
            }
        }
        Ok(())
    }

    fn close(&mut self, h: usize) {
        if let (Some((start, count, states)), Some(key)) = (self.open[h].take(), &self.key) {
            self.done.push((
                key.clone(),
                self.program.hops[h],
                start,
                count,
                encode_states(&states),
            ));
        }
    }

    fn close_all(&mut self) {
        for h in 0..self.open.len() {
            self.close(h);
        }
    }

    /// Closes the open tiles and returns the day's tiles as a batch (`None` when empty).
    pub fn finish_day(&mut self) -> Result<Option<RecordBatch>> {
        self.close_all();
        self.key = None;
        if self.done.is_empty() {
            return Ok(None);
        }
        let done = std::mem::take(&mut self.done);
        let rows: Vec<_> = done.iter().map(|(k, ..)| k.row()).collect();
        let mut columns = self.converter.convert_rows(rows).map_err(arrow_error)?;
        columns.push(Arc::new(Int64Array::from_iter_values(
            done.iter().map(|(_, hop, ..)| *hop),
        )));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_iter_values(done.iter().map(|(_, _, s, ..)| *s))
                .with_timezone("UTC"),
        ));
        columns.push(Arc::new(Int64Array::from_iter_values(
            done.iter().map(|(_, _, _, n, _)| *n),
        )));
        columns.push(Arc::new(BinaryArray::from_iter_values(
            done.iter().map(|(.., bytes)| bytes.as_slice()),
        )));
        RecordBatch::try_new(tile_schema(&self.columns.keys), columns)
            .map(Some)
            .map_err(arrow_error)
    }
}
