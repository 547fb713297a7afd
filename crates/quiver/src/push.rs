//! Pushing rows (`POST /push`, Feast's push API): into a feature view (the rows are
//! already in the view's shape) or into a source (every view that reads the source gets
//! what its query makes of the rows), then to the online store (newer-wins), the offline
//! table (visible to later exports, kept by later materializations), or both. Every
//! value is checked first: one invalid row rejects the whole request and nothing is
//! written.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    Int8Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use quiver_core::diagnostic::closest;
use quiver_offline::normalize::timestamp_type;
use quiver_offline::{PushLog, PushStats};
use quiver_online::WriteStats;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::CatalogView;
use crate::{Error, FeatureStore, Result};

/// Where pushed rows go: Feast's `"to"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushTo {
    #[default]
    Online,
    Offline,
    /// Also accepted as `"both"`, an older Feast spelling.
    #[serde(alias = "both")]
    OnlineAndOffline,
}

impl PushTo {
    fn online(self) -> bool {
        matches!(self, PushTo::Online | PushTo::OnlineAndOffline)
    }

    fn offline(self) -> bool {
        matches!(self, PushTo::Offline | PushTo::OnlineAndOffline)
    }
}

/// What a push did to one view.
#[derive(Debug, Clone, Serialize)]
pub struct ViewPush {
    pub view: String,
    /// Rows the view received (for a source push: what its query made of the rows).
    pub rows: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<WriteStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline: Option<PushStats>,
}

impl FeatureStore {
    /// Pushes rows, given as columns (`name → values`), into the feature view or the
    /// source called `target`.
    ///
    /// Into a view, `columns` holds its key columns, its event-time column, optionally its
    /// created column, and every feature. Into a source, `columns` holds every column of
    /// the source, and each view reading the source receives the rows its query makes of
    /// them (with the view's other sources read as usual). Times are ISO 8601 strings
    /// (`2026-01-15T12:00:00Z`, `2026-01-15 12:00:00+00:00`; without a zone: UTC).
    /// Offline rows are written before online ones; a pushed row replaces an offline row
    /// equal on (keys, event time, created), and online the newer row wins.
    pub async fn push(
        &self,
        target: &str,
        columns: &[(String, Vec<Value>)],
        to: PushTo,
    ) -> Result<Vec<ViewPush>> {
        let catalog = self.catalog().await?;
        check_rows(columns)?;
        let mut targets: Vec<(&CatalogView, RecordBatch)> = Vec::new();
        let mut source_rows = None;
        if let Some(view) = catalog.views.get(target) {
            targets.push((view, view_batch(view, columns)?));
        } else if let Some(source) = catalog.sources.get(target) {
            let readers: Vec<&CatalogView> = catalog
                .views
                .values()
                .filter(|v| v.view.view.sources.contains(&source.name))
                .collect();
            if readers.is_empty() {
                return Err(Error::BadPush {
                    message: format!(
                        "no feature view reads source `{}`, so its rows would go nowhere",
                        source.name
                    ),
                });
            }
            let engine = catalog.engine(self.root(), &readers).await?;
            for view in &readers {
                if engine.view_aggregates(&view.view.view).await? {
                    return Err(Error::PushIntoAggregatingView {
                        source_name: source.name.clone(),
                        view: view.name().to_string(),
                    });
                }
            }
            let schema = engine.source_schema(&source.name).await?;
            let rows = source_batch(&source.name, &schema, columns)?;
            for view in readers {
                let batch = engine
                    .view_rows(&view.view.view, &view.columns(), &source.name, rows.clone())
                    .await?;
                targets.push((view, batch));
            }
            source_rows = Some((engine, source.name.clone(), rows));
        } else {
            let names = catalog.views.keys().chain(catalog.sources.keys());
            return Err(Error::UnknownPushTarget {
                name: target.to_string(),
                suggestion: closest(target, names.map(String::as_str)),
            });
        }

        let options = self.write_options();
        for (view, batch) in &targets {
            check_event_times(view, batch, options.max_event_time)?;
        }

        let mut out = Vec::new();
        // One engine for every view's offline write (it needs no sources).
        let offline = to
            .offline()
            .then(|| quiver_offline::OfflineEngine::new(self.root()));
        // Rows pushed into a source are kept in the source's log, so every view version
        // materialized later (not only the current ones) gets them.
        let log = match (&offline, source_rows) {
            (Some(_), Some((engine, source, rows))) => {
                engine
                    .push_source(&self.offline_root(), &source, &rows, options)
                    .await?;
                PushLog::Source
            }
            _ => PushLog::View,
        };
        for (view, batch) in targets {
            let mut report = ViewPush {
                view: view.name().to_string(),
                rows: batch.num_rows() as u64,
                online: None,
                offline: None,
            };
            if let Some(engine) = offline.as_ref().filter(|_| batch.num_rows() > 0) {
                let stats = engine
                    .push(
                        &self.offline_root(),
                        view.name(),
                        view.version,
                        &view.columns(),
                        batch.clone(),
                        log,
                        options,
                    )
                    .await?;
                report.offline = Some(stats);
            }
            if to.online() && batch.num_rows() > 0 {
                let rows = crate::online::online_rows(&batch, view)?;
                let now = self.clock().now().timestamp_micros();
                let stats = self
                    .online_store()
                    .await?
                    .write(view.online_ref()?, &rows, now)
                    .await?;
                report.online = Some(stats);
            }
            out.push(report);
        }
        Ok(out)
    }
}

/// No pushed event time lies beyond `max_event_time` (now plus `ingest.max_future_skew`):
/// such a row would pin the entity's online value until that time.
fn check_event_times(view: &CatalogView, batch: &RecordBatch, max_event_time: i64) -> Result<()> {
    let columns = view.columns();
    let Some(ts) = batch
        .column_by_name(&columns.timestamp)
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>())
    else {
        return Ok(());
    };
    match (0..ts.len()).find(|&i| ts.is_valid(i) && ts.value(i) > max_event_time) {
        None => Ok(()),
        Some(row) => Err(Error::BadPush {
            message: format!(
                "row {row}, column `{}`: the event time {} lies in the future beyond the allowed skew (ingest.max_future_skew); fix the producer's clock",
                columns.timestamp,
                DateTime::from_timestamp_micros(ts.value(row))
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ),
        }),
    }
}

/// Every column has the same number of rows, and there is at least one.
fn check_rows(columns: &[(String, Vec<Value>)]) -> Result<()> {
    let Some((first, values)) = columns.first() else {
        return Err(Error::BadPush {
            message: "`df` holds no columns".into(),
        });
    };
    if let Some((name, other)) = columns.iter().find(|(_, v)| v.len() != values.len()) {
        return Err(Error::BadPush {
            message: format!(
                "column `{name}` has {} values, column `{first}` has {}",
                other.len(),
                values.len()
            ),
        });
    }
    if values.is_empty() {
        return Err(Error::BadPush {
            message: "`df` holds no rows".into(),
        });
    }
    Ok(())
}

/// Rows given in a view's shape as the view's canonical batch (keys, event time,
/// created, features; times as `Timestamp(µs, UTC)`).
fn view_batch(view: &CatalogView, columns: &[(String, Vec<Value>)]) -> Result<RecordBatch> {
    let names = view.columns();
    let feature_types = &view.online_ref()?.features;
    for (name, _) in columns {
        let known = names.keys.iter().any(|(k, _)| k == name)
            || *name == names.timestamp
            || names.created.as_deref() == Some(name.as_str())
            || names.features.contains(name);
        if !known {
            let all = names
                .identity()
                .into_iter()
                .chain(names.features.iter().map(String::as_str));
            return Err(Error::BadPush {
                message: format!(
                    "feature view `{}` has no column `{name}`{}",
                    view.name(),
                    quiver_core::diagnostic::did_you_mean(&closest(name, all))
                ),
            });
        }
    }
    let column = |name: &str| -> Result<&Vec<Value>> {
        columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::BadPush {
                message: format!("missing column `{name}` of feature view `{}`", view.name()),
            })
    };
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    for (key, data_type) in &names.keys {
        let values = column(key)?;
        if let Some(row) = values.iter().position(Value::is_null) {
            return Err(Error::BadPush {
                message: format!("row {row}, column `{key}`: a key is null"),
            });
        }
        fields.push(Field::new(key, data_type.clone(), true));
        arrays.push(to_array(key, values, data_type, &bad_push(key))?);
    }
    let ts = column(&names.timestamp)?;
    if let Some(row) = ts.iter().position(Value::is_null) {
        return Err(Error::BadPush {
            message: format!(
                "row {row}, column `{}`: the event time is null",
                names.timestamp
            ),
        });
    }
    fields.push(Field::new(&names.timestamp, timestamp_type(), true));
    arrays.push(to_array(
        &names.timestamp,
        ts,
        &timestamp_type(),
        &bad_push(&names.timestamp),
    )?);
    if let Some(created) = &names.created {
        fields.push(Field::new(created, timestamp_type(), true));
        arrays.push(match columns.iter().find(|(n, _)| n == created) {
            Some((_, values)) => to_array(created, values, &timestamp_type(), &bad_push(created))?,
            None => arrow::array::new_null_array(&timestamp_type(), ts.len()),
        });
    }
    for (name, data_type) in feature_types {
        fields.push(Field::new(name, data_type.clone(), true));
        arrays.push(to_array(name, column(name)?, data_type, &bad_push(name))?);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| Error::BadPush {
        message: e.to_string(),
    })
}

/// Rows given in a source's shape as a batch of the source's schema.
fn source_batch(
    source: &str,
    schema: &Schema,
    columns: &[(String, Vec<Value>)],
) -> Result<RecordBatch> {
    for (name, _) in columns {
        if schema.field_with_name(name).is_err() {
            return Err(Error::BadPush {
                message: format!(
                    "source `{source}` has no column `{name}`{}",
                    quiver_core::diagnostic::did_you_mean(&closest(
                        name,
                        schema.fields().iter().map(|f| f.name().as_str())
                    ))
                ),
            });
        }
    }
    let mut arrays = Vec::new();
    for field in schema.fields() {
        let values = columns
            .iter()
            .find(|(n, _)| n == field.name())
            .map(|(_, v)| v)
            .ok_or_else(|| Error::BadPush {
                message: format!("missing column `{}` of source `{source}`", field.name()),
            })?;
        arrays.push(to_array(
            field.name(),
            values,
            field.data_type(),
            &bad_push(field.name()),
        )?);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| Error::BadPush {
        message: e.to_string(),
    })
}

/// A time as ISO 8601: RFC 3339 (`2026-01-15T12:00:00Z`, any offset), a space instead of
/// the `T` (`2026-01-15 12:00:00+00:00`, as pandas writes it), no zone (read as UTC), or
/// a date (`2026-01-15`, midnight UTC).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Utc.from_utc_datetime(&t))
}

/// Builds the error for a value that does not fit: (row, value, what was expected).
pub(crate) type BadValue<'a> = &'a dyn Fn(usize, &Value, &str) -> Error;

/// The push flavour of [`BadValue`]: names the row and the column.
fn bad_push(column: &str) -> impl Fn(usize, &Value, &str) -> Error + '_ {
    move |row, value, expected| Error::BadPush {
        message: format!("row {row}, column `{column}`: {value} is not {expected}"),
    }
}

/// ISO 8601 strings ([`parse_time`]) as µs since the epoch (`null` as 0).
fn times(values: &[Value], bad: BadValue<'_>) -> Result<Vec<i64>> {
    const EXPECTED: &str = "a time such as \"2026-01-15T12:00:00Z\" (without a zone: UTC)";
    values
        .iter()
        .enumerate()
        .map(|(row, v)| match v {
            Value::String(s) => parse_time(s)
                .map(|t| t.timestamp_micros())
                .ok_or_else(|| bad(row, v, EXPECTED)),
            Value::Null => Ok(0),
            _ => Err(bad(row, v, EXPECTED)),
        })
        .collect()
}

macro_rules! integers {
    ($builder:ty, $bad:expr, $values:expr, $what:expr) => {{
        let mut b = <$builder>::new();
        for (row, v) in $values.iter().enumerate() {
            match v {
                Value::Null => b.append_null(),
                _ => {
                    let n = v
                        .as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                        .and_then(|n| n.try_into().ok())
                        .ok_or_else(|| $bad(row, v, $what))?;
                    b.append_value(n);
                }
            }
        }
        Arc::new(b.finish()) as ArrayRef
    }};
}

/// JSON values as an Arrow array of `data_type`; a value that does not fit becomes
/// `bad(row, value, expected)`. Integers given as strings (`"1001"`) and strings given as
/// numbers are accepted, bytes are base64, times RFC 3339.
pub(crate) fn to_array(
    column: &str,
    values: &[Value],
    data_type: &DataType,
    bad: BadValue<'_>,
) -> Result<ArrayRef> {
    Ok(match data_type {
        DataType::Int8 => integers!(Int8Builder, bad, values, "an 8-bit integer"),
        DataType::Int16 => integers!(Int16Builder, bad, values, "a 16-bit integer"),
        DataType::Int32 => integers!(Int32Builder, bad, values, "a 32-bit integer"),
        DataType::Int64 => integers!(Int64Builder, bad, values, "an integer"),
        DataType::UInt8 => integers!(UInt8Builder, bad, values, "an unsigned 8-bit integer"),
        DataType::UInt16 => integers!(UInt16Builder, bad, values, "an unsigned 16-bit integer"),
        DataType::UInt32 => integers!(UInt32Builder, bad, values, "an unsigned 32-bit integer"),
        DataType::UInt64 => {
            let mut b = UInt64Builder::new();
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    _ => b.append_value(
                        v.as_u64()
                            .ok_or_else(|| bad(row, v, "an unsigned integer"))?,
                    ),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Float32 | DataType::Float64 => {
            let mut out = Vec::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    _ => Some(v.as_f64().ok_or_else(|| bad(row, v, "a number"))?),
                });
            }
            if data_type == &DataType::Float32 {
                let mut b = Float32Builder::new();
                out.iter()
                    .for_each(|v| b.append_option(v.map(|f| f as f32)));
                Arc::new(b.finish())
            } else {
                let mut b = Float64Builder::new();
                out.iter().for_each(|v| b.append_option(*v));
                Arc::new(b.finish())
            }
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Bool(x) => b.append_value(*x),
                    _ => return Err(bad(row, v, "true or false")),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let mut b = StringBuilder::new();
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::String(s) => b.append_value(s),
                    Value::Number(n) => b.append_value(n.to_string()),
                    _ => return Err(bad(row, v, "a string")),
                }
            }
            let array: ArrayRef = Arc::new(b.finish());
            if data_type == &DataType::Utf8 {
                array
            } else {
                arrow::compute::cast(&array, data_type).map_err(|e| Error::BadPush {
                    message: e.to_string(),
                })?
            }
        }
        DataType::Binary | DataType::LargeBinary => {
            let mut b = BinaryBuilder::new();
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::String(s) => b.append_value(
                        crate::online::base64_decode(s)
                            .ok_or_else(|| bad(row, v, "base64 bytes"))?,
                    ),
                    _ => return Err(bad(row, v, "base64 bytes")),
                }
            }
            let array: ArrayRef = Arc::new(b.finish());
            arrow::compute::cast(&array, data_type).map_err(|e| Error::BadPush {
                message: e.to_string(),
            })?
        }
        DataType::Timestamp(unit, tz) => {
            let micros = times(values, bad)?;
            let mut b = Int64Builder::new();
            for (row, v) in values.iter().enumerate() {
                if v.is_null() {
                    b.append_null();
                } else {
                    b.append_value(match unit {
                        TimeUnit::Second => micros[row] / 1_000_000,
                        TimeUnit::Millisecond => micros[row] / 1_000,
                        TimeUnit::Microsecond => micros[row],
                        TimeUnit::Nanosecond => micros[row].saturating_mul(1_000),
                    });
                }
            }
            let data = b
                .finish()
                .into_data()
                .into_builder()
                .data_type(DataType::Timestamp(*unit, tz.clone()));
            arrow::array::make_array(data.build().map_err(|e| Error::BadPush {
                message: e.to_string(),
            })?)
        }
        other => {
            return Err(Error::BadPush {
                message: format!("column `{column}` has type {other}, which push does not accept"),
            });
        }
    })
}
