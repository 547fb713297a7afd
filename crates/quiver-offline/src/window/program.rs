//! [`WindowProgram`]: an aggregation view compiled once (per catalog) for evaluation —
//! its windows and hops, its aggregates, and its outputs as DataFusion physical
//! expressions over the merged aggregates. Exports and online lookups evaluate the same
//! program on the same states.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use quiver_core::model::{FeatureView, WindowSchema};

use super::spec::{aggregates_schema, df_schema, kind_of};
use super::state::{AggKind, EventOrder, Scalar, State};
use crate::{Error, Result};

/// One window of a view: its length and hop (µs), its position among the view's distinct
/// hops, and its feature-name label.
#[derive(Debug, Clone)]
pub struct WindowDef {
    pub length: i64,
    pub hop: i64,
    pub hop_index: usize,
    pub label: String,
}

/// A tile: its start (µs) and one state per aggregate.
pub type Tile = (i64, Vec<State>);

/// A key's tiles, per hop (the program's order), each list sorted by start.
pub type TilesPerHop = Vec<Vec<Tile>>;

/// One event of a key: its order and its aggregate arguments (`__a0`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub order: EventOrder,
    pub args: Vec<Scalar>,
}

/// A compiled aggregation view.
pub struct WindowProgram {
    pub view: String,
    pub windows: Vec<WindowDef>,
    /// The view's distinct hops (µs), ascending; tiles are kept per hop.
    pub hops: Vec<i64>,
    /// The longest window per hop (µs).
    pub longest: Vec<i64>,
    pub aggregates: Vec<(AggKind, Option<usize>)>,
    aggregate_types: Vec<DataType>,
    agg_schema: SchemaRef,
    outputs: Vec<(String, Arc<dyn PhysicalExpr>, DataType)>,
}

impl std::fmt::Debug for WindowProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowProgram")
            .field("view", &self.view)
            .field("windows", &self.windows)
            .finish()
    }
}

/// The type of an output expression over the aggregates.
pub fn output_type(schema: &SchemaRef, expr: &str) -> Result<DataType> {
    let (_, data_type) = compile(schema, expr)?;
    Ok(data_type)
}

fn compile(schema: &SchemaRef, expr: &str) -> Result<(Arc<dyn PhysicalExpr>, DataType)> {
    use datafusion::logical_expr::simplify::SimplifyContext;
    use datafusion::optimizer::simplify_expressions::ExprSimplifier;
    let ctx = SessionContext::new();
    let df = df_schema(schema)?;
    let logical = ctx.parse_sql_expr(expr, &df)?;
    // Coerce and simplify as a query plan would (COALESCE, for one, only runs simplified).
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(df.clone()))
            .build(),
    );
    let logical = simplifier.simplify(simplifier.coerce(logical, &df)?)?;
    let physical = ctx.create_physical_expr(logical, &df)?;
    let data_type = physical.data_type(schema)?;
    Ok((physical, data_type))
}

impl WindowProgram {
    /// Compiles a view (its windows) with its analysed [`WindowSchema`].
    pub fn new(view: &FeatureView, schema: &WindowSchema) -> Result<Self> {
        let broken = |message: String| Error::MaterializeFailed {
            view: view.name.clone(),
            message,
        };
        let mut hops: Vec<i64> = view
            .windows
            .iter()
            .map(|w| view.hop_of(*w) as i64 * 1_000_000)
            .collect();
        hops.sort_unstable();
        hops.dedup();
        let windows: Vec<WindowDef> = view
            .windows
            .iter()
            .map(|w| {
                let hop = view.hop_of(*w) as i64 * 1_000_000;
                WindowDef {
                    length: *w as i64 * 1_000_000,
                    hop,
                    hop_index: hops.iter().position(|h| *h == hop).unwrap_or(0),
                    label: quiver_core::window::label(*w),
                }
            })
            .collect();
        let longest = hops
            .iter()
            .map(|h| {
                windows
                    .iter()
                    .filter(|w| w.hop == *h)
                    .map(|w| w.length)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut aggregates = Vec::new();
        let mut aggregate_types = Vec::new();
        for a in &schema.aggregates {
            let kind = kind_of(&a.kind)
                .ok_or_else(|| broken(format!("unknown aggregate kind `{}`", a.kind)))?;
            aggregates.push((kind, a.arg));
            aggregate_types.push(
                a.data_type
                    .parse::<DataType>()
                    .map_err(|_| broken(format!("type `{}` does not parse", a.data_type)))?,
            );
        }
        let agg_schema = aggregates_schema(&schema.aggregates)?;
        let mut outputs = Vec::new();
        for output in &schema.outputs {
            let (expr, data_type) = compile(&agg_schema, &output.expr)?;
            outputs.push((output.name.clone(), expr, data_type));
        }
        Ok(WindowProgram {
            view: view.name.clone(),
            windows,
            hops,
            longest,
            aggregates,
            aggregate_types,
            agg_schema,
            outputs,
        })
    }

    /// The features, in the view's order (window-major): `(name, type)`.
    pub fn features(&self) -> Vec<(String, DataType)> {
        let mut out = Vec::new();
        for window in &self.windows {
            for (name, _, data_type) in &self.outputs {
                out.push((format!("{name}_{}", window.label), data_type.clone()));
            }
        }
        out
    }

    /// The states of no events, one per aggregate.
    pub fn empty(&self) -> Vec<State> {
        self.aggregates
            .iter()
            .map(|(kind, _)| State::empty(*kind))
            .collect()
    }

    /// Adds an event to one state per aggregate.
    pub fn add(&self, states: &mut [State], event: &Event) {
        for ((kind, arg), state) in self.aggregates.iter().zip(states) {
            let value = arg.and_then(|a| event.args.get(a)).unwrap_or(&Scalar::Null);
            state.add(*kind, value, event.order);
        }
    }

    /// Merges `other` into `states`.
    pub fn merge(&self, states: &mut [State], other: &[State]) {
        for ((kind, _), (state, other)) in self.aggregates.iter().zip(states.iter_mut().zip(other))
        {
            state.merge(*kind, other);
        }
    }

    /// The merged states of window `window` at time `t` for one key: its whole tiles
    /// (`tiles[hop_index]`, sorted by start) inside `[floor_h(t − w), floor_h(t))` and its
    /// events (sorted) inside `[floor_h(t), t)`.
    pub fn window_states(
        &self,
        window: usize,
        tiles: &[Vec<Tile>],
        events: &[Event],
        t: i64,
    ) -> Vec<State> {
        let def = &self.windows[window];
        let start = quiver_core::window::window_start(t, def.length, def.hop);
        let head = quiver_core::window::floor(t, def.hop);
        let mut states = self.empty();
        let tiles = tiles.get(def.hop_index).map_or(&[][..], Vec::as_slice);
        let first = tiles.partition_point(|(s, _)| *s < start);
        let last = tiles.partition_point(|(s, _)| *s < head);
        for (_, tile) in &tiles[first..last.max(first)] {
            self.merge(&mut states, tile);
        }
        let first = events.partition_point(|e| e.order.ts < head);
        let last = events.partition_point(|e| e.order.ts < t);
        for event in &events[first..last.max(first)] {
            self.add(&mut states, event);
        }
        states
    }

    /// The tiles of sorted events, per hop: `(start, states)` for every non-empty tile.
    pub fn tiles(&self, events: &[Event]) -> TilesPerHop {
        self.hops
            .iter()
            .map(|hop| {
                let mut out: Vec<Tile> = Vec::new();
                for event in events {
                    let start = quiver_core::window::floor(event.order.ts, *hop);
                    match out.last_mut() {
                        Some((s, states)) if *s == start => self.add(states, event),
                        _ => {
                            let mut states = self.empty();
                            self.add(&mut states, event);
                            out.push((start, states));
                        }
                    }
                }
                out
            })
            .collect()
    }

    /// The features of rows whose merged states are `states[window][row]` (one state per
    /// aggregate): one array per feature, in [`features`](Self::features) order.
    pub fn finalize(&self, states: &[Vec<Vec<State>>]) -> Result<Vec<ArrayRef>> {
        let rows = states.first().map_or(0, Vec::len);
        let flat: Vec<Vec<State>> = states.iter().map(|w| w.concat()).collect();
        self.finalize_flat(&flat, rows)
    }

    /// As [`finalize`](Self::finalize), with each window's states flat: `rows` rows of
    /// one state per aggregate, row after row.
    pub fn finalize_flat(&self, states: &[Vec<State>], rows: usize) -> Result<Vec<ArrayRef>> {
        let width = self.aggregates.len();
        let mut out = Vec::new();
        for window_states in states {
            let mut columns = Vec::with_capacity(width);
            for (i, (kind, _)) in self.aggregates.iter().enumerate() {
                let values: Vec<Scalar> = (0..rows)
                    .map(|row| window_states[row * width + i].finalize(*kind))
                    .collect();
                columns.push(to_array(&values, &self.aggregate_types[i])?);
            }
            let batch = RecordBatch::try_new_with_options(
                Arc::clone(&self.agg_schema),
                columns,
                &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
            )
            .map_err(|e| Error::DataFusion(e.into()))?;
            for (_, expr, data_type) in &self.outputs {
                let array = expr.evaluate(&batch)?.into_array(rows)?;
                let array = if array.data_type() == data_type {
                    array
                } else {
                    arrow::compute::cast(&array, data_type)
                        .map_err(|e| Error::DataFusion(e.into()))?
                };
                out.push(array);
            }
        }
        Ok(out)
    }
}

/// The values of an Arrow array as scalars (integers, dates and times as their integer
/// value, floats, booleans, strings; anything else NULL).
pub fn scalars(array: &ArrayRef) -> Vec<Scalar> {
    let n = array.len();
    macro_rules! ints {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Scalar::Null
                    } else {
                        Scalar::Int(a.value(i) as i64)
                    }
                })
                .collect()
        }};
    }
    match array.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        DataType::Date32 => ints!(Date32Type),
        DataType::Date64 => ints!(Date64Type),
        DataType::Timestamp(TimeUnit::Second, _) => ints!(TimestampSecondType),
        DataType::Timestamp(TimeUnit::Millisecond, _) => ints!(TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) => ints!(TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => ints!(TimestampNanosecondType),
        DataType::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Scalar::Null
                    } else {
                        Scalar::Float(f64::from(a.value(i)))
                    }
                })
                .collect()
        }
        DataType::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Scalar::Null
                    } else {
                        Scalar::Float(a.value(i))
                    }
                })
                .collect()
        }
        DataType::Boolean => {
            let a = array.as_boolean();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Scalar::Null
                    } else {
                        Scalar::Bool(a.value(i))
                    }
                })
                .collect()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let a = arrow::compute::cast(array, &DataType::Utf8)
                .unwrap_or_else(|_| arrow::array::new_null_array(&DataType::Utf8, n));
            let a = a.as_string::<i32>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Scalar::Null
                    } else {
                        Scalar::Str(a.value(i).to_string())
                    }
                })
                .collect()
        }
        _ => vec![Scalar::Null; n],
    }
}

/// Scalars as an Arrow array of `data_type` (integers reinterpreted as dates and times).
pub fn to_array(values: &[Scalar], data_type: &DataType) -> Result<ArrayRef> {
    let cast = |array: ArrayRef| -> Result<ArrayRef> {
        if array.data_type() == data_type {
            Ok(array)
        } else {
            arrow::compute::cast(&array, data_type).map_err(|e| Error::DataFusion(e.into()))
        }
    };
    match data_type {
        DataType::Float32 | DataType::Float64 => cast(Arc::new(
            values
                .iter()
                .map(|v| match v {
                    Scalar::Float(f) => Some(*f),
                    Scalar::Int(i) => Some(*i as f64),
                    _ => None,
                })
                .collect::<Float64Array>(),
        )),
        DataType::Boolean => Ok(Arc::new(
            values
                .iter()
                .map(|v| match v {
                    Scalar::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect::<BooleanArray>(),
        )),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => cast(Arc::new(
            values
                .iter()
                .map(|v| match v {
                    Scalar::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect::<StringArray>(),
        )),
        _ => {
            let ints: Int64Array = values
                .iter()
                .map(|v| match v {
                    Scalar::Int(i) => Some(*i),
                    _ => None,
                })
                .collect();
            let ints: ArrayRef = Arc::new(ints);
            match data_type {
                DataType::Timestamp(_, _) | DataType::Date64 => {
                    // Reinterpret the raw integers as the time type.
                    let data = ints
                        .to_data()
                        .into_builder()
                        .data_type(data_type.clone())
                        .build()
                        .map_err(|e| Error::DataFusion(e.into()))?;
                    Ok(arrow::array::make_array(data))
                }
                DataType::Date32 => {
                    let days = arrow::compute::cast(&ints, &DataType::Int32)
                        .map_err(|e| Error::DataFusion(e.into()))?;
                    let data = days
                        .to_data()
                        .into_builder()
                        .data_type(DataType::Date32)
                        .build()
                        .map_err(|e| Error::DataFusion(e.into()))?;
                    Ok(arrow::array::make_array(data))
                }
                _ => cast(ints),
            }
        }
    }
}
