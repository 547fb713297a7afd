//! Pushing rows straight into the online store (`POST /push`): validated against the
//! view's schema, all or nothing, then written newer-wins like a materialization.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int8Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, UInt8Builder, UInt16Builder,
    UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::DateTime;
use quiver_online::WriteStats;
use quiver_online::codec::encode_entity_keys;
use serde_json::Value;

use crate::{Error, FeatureStore, Result};

impl FeatureStore {
    /// Writes rows of one view to the online store. `columns` holds the view's key
    /// columns, its event-time column (RFC 3339 strings), optionally its created column,
    /// and every feature; any invalid value rejects the whole request, naming the row and
    /// the column.
    pub async fn push_online(
        &self,
        view: &str,
        columns: &[(String, Vec<Value>)],
    ) -> Result<WriteStats> {
        let catalog = self.catalog().await?;
        let view = catalog.view(view)?;
        let view_ref = self.view_ref(view)?;
        let names = view.columns();
        let rows = columns.first().map_or(0, |(_, v)| v.len());
        if rows == 0 {
            return Err(Error::BadPush {
                message: "`df` holds no rows".into(),
            });
        }
        let column = |name: &str| -> Result<&Vec<Value>> {
            let values = columns
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| Error::BadPush {
                    message: format!("missing column `{name}` of feature view `{}`", view.name()),
                })?;
            if values.len() != rows {
                return Err(Error::BadPush {
                    message: format!(
                        "column `{name}` has {} values, the first column has {rows}",
                        values.len()
                    ),
                });
            }
            Ok(values)
        };
        for (name, _) in columns {
            let known = names.keys.iter().any(|(k, _)| k == name)
                || *name == names.timestamp
                || names.created.as_deref() == Some(name.as_str())
                || names.features.contains(name);
            if !known {
                return Err(Error::BadPush {
                    message: format!("feature view `{}` has no column `{name}`", view.name()),
                });
            }
        }
        let mut keys = Vec::new();
        for (key, data_type) in &names.keys {
            keys.push(to_array(key, column(key)?, data_type, &bad_push(key))?);
        }
        let event_ts = times(
            column(&names.timestamp)?,
            false,
            &bad_push(&names.timestamp),
        )?;
        let created = match &names.created {
            Some(c) if columns.iter().any(|(n, _)| n == c) => {
                times(column(c)?, true, &bad_push(c))?
            }
            _ => vec![0; rows],
        };
        let mut features = Vec::new();
        for (name, data_type) in &view_ref.features {
            features.push(to_array(name, column(name)?, data_type, &bad_push(name))?);
        }
        let encoded = encode_entity_keys(&keys)?;
        if let Some(row) = encoded.iter().position(Option::is_none) {
            return Err(Error::BadPush {
                message: format!("row {row}: a key column is null"),
            });
        }
        let rows = quiver_online::OnlineRows {
            keys: encoded,
            event_ts,
            created,
            features,
        };
        let now = self.clock().now().timestamp_micros();
        Ok(self
            .online_store()
            .await?
            .write(&view_ref, &rows, now)
            .await?)
    }
}

/// Builds the error for a value that does not fit: (row, value, what was expected).
pub(crate) type BadValue<'a> = &'a dyn Fn(usize, &Value, &str) -> Error;

/// The push flavour of [`BadValue`]: names the row and the column.
fn bad_push(column: &str) -> impl Fn(usize, &Value, &str) -> Error + '_ {
    move |row, value, expected| Error::BadPush {
        message: format!("row {row}, column `{column}`: {value} is not {expected}"),
    }
}

/// RFC 3339 strings as µs since the epoch (`null` allowed, as 0, when `nullable`).
fn times(values: &[Value], nullable: bool, bad: BadValue<'_>) -> Result<Vec<i64>> {
    values
        .iter()
        .enumerate()
        .map(|(row, v)| match v {
            Value::String(s) => DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_micros())
                .map_err(|_| bad(row, v, "an RFC 3339 time such as \"2026-01-15T12:00:00Z\"")),
            Value::Null if nullable => Ok(0),
            _ => Err(bad(
                row,
                v,
                "an RFC 3339 time such as \"2026-01-15T12:00:00Z\"",
            )),
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
            let micros = times(values, true, bad)?;
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
