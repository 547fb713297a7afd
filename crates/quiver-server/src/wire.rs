//! Feast's feature-server JSON, and its conversion to and from Arrow. The facade speaks
//! Arrow; this module is the one place that knows the wire format:
//!
//! - request bodies as Feast 0.67's server takes them: fields Quiver does not know are
//!   ignored (as Feast's pydantic models do), `null` stands for an absent optional list;
//!   a body must be a JSON object;
//! - JSON columns (`{"driver_id": [1001, 1002]}`) → Arrow arrays of the types the facade
//!   asks for (a lookup plan's inputs, a push schema), every value checked, errors naming
//!   the column and row;
//! - Arrow → Feast's lookup response (`metadata.feature_names` and one result per name,
//!   entity columns first, converted to their key types as Feast does).
//!
//! `quiver get --json` renders through the same code, so the CLI prints exactly what
//! the server answers.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    Int8Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Field, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use quiver::{FeatureStatus, OnlineFeatures};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A body or value that does not fit the wire format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("invalid request body: {0}")]
    BadJson(String),

    /// A value that does not fit its column's type.
    #[error("{context} column `{column}` row {row}: {value} is not {expected}")]
    BadValue {
        /// `entity` or `df`.
        context: &'static str,
        column: String,
        row: usize,
        value: String,
        expected: String,
    },

    /// Columns of different lengths.
    #[error(
        "{context} columns differ in length: `{first}` has {first_len} values, `{column}` has {len}"
    )]
    Ragged {
        context: &'static str,
        first: String,
        first_len: usize,
        column: String,
        len: usize,
    },

    /// No columns, or no rows.
    #[error("\"{field}\" holds no {missing}")]
    Empty {
        field: &'static str,
        missing: &'static str,
    },

    /// A column whose type the wire format cannot carry.
    #[error("column `{column}` has type {data_type}, which the JSON API does not carry")]
    UnsupportedType { column: String, data_type: String },

    /// A time field that is not a time.
    #[error("\"{field}\": `{value}` is not a time; use RFC 3339 such as \"2026-01-15T12:00:00Z\"")]
    BadTime { field: String, value: String },
}

/// `{"a": [..], "b": [..]}` in request order; a column named twice is an error (a JSON
/// object with a repeated key would otherwise silently keep the last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns(pub Vec<(String, Vec<Value>)>);

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ColumnsVisitor;
        impl<'de> Visitor<'de> for ColumnsVisitor {
            type Value = Columns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of columns, each an array of values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Columns, A::Error> {
                let mut out: Vec<(String, Vec<Value>)> = Vec::new();
                while let Some((key, values)) = map.next_entry::<String, Vec<Value>>()? {
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!(
                            "column `{key}` appears twice"
                        )));
                    }
                    out.push((key, values));
                }
                Ok(Columns(out))
            }
        }
        deserializer.deserialize_map(ColumnsVisitor)
    }
}

impl Serialize for Columns {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Columns {
    /// The number of rows, the same in every column; `field` is the request field that
    /// holds the columns (`entities`, `df`).
    pub fn rows(&self, field: &'static str) -> Result<usize, WireError> {
        let Some((first, values)) = self.0.first() else {
            return Err(WireError::Empty {
                field,
                missing: "columns",
            });
        };
        if let Some((column, other)) = self.0.iter().find(|(_, v)| v.len() != values.len()) {
            return Err(WireError::Ragged {
                context: context(field),
                first: first.clone(),
                first_len: values.len(),
                column: column.clone(),
                len: other.len(),
            });
        }
        if values.is_empty() {
            return Err(WireError::Empty {
                field,
                missing: "rows",
            });
        }
        Ok(values.len())
    }

    pub fn get(&self, name: &str) -> Option<&[Value]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The columns named in `types` (those present), converted to those types, in the
    /// order of `types`; `field` names the request field in messages.
    pub fn to_batch(
        &self,
        field: &'static str,
        types: &[(String, DataType)],
    ) -> Result<RecordBatch, WireError> {
        let rows = self.0.first().map_or(0, |(_, v)| v.len());
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for (name, data_type) in types {
            if let Some(values) = self.get(name) {
                arrays.push(to_array(context(field), name, values, data_type)?);
                fields.push(Field::new(name, data_type.clone(), true));
            }
        }
        RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            arrays,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| WireError::BadJson(e.to_string()))
    }
}

/// How a column of a request field is named in messages.
fn context(field: &str) -> &'static str {
    match field {
        "entities" => "entity",
        _ => "df",
    }
}

/// Parses a request body: a JSON object of the endpoint's fields.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(WireError::BadJson(
            "the body is empty; send a JSON object".into(),
        )),
        Some(b'{') => serde_json::from_slice(body).map_err(|e| WireError::BadJson(e.to_string())),
        Some(_) => Err(WireError::BadJson(
            "the body must be a JSON object ({\"field\": …})".into(),
        )),
    }
}

/// `POST /get-online-features`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct LookupRequest {
    /// `view:feature` references.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<String>,
    /// Entity columns in request order: name → one value per entity row.
    pub entities: Columns,
    #[serde(default, deserialize_with = "null_as_false")]
    pub full_feature_names: bool,
    /// Feast's flag: answer `metadata.feature_view_metadata` (each view read, with the
    /// version served).
    #[serde(
        default,
        deserialize_with = "null_as_false",
        skip_serializing_if = "is_false"
    )]
    pub include_feature_view_version_metadata: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// `POST /push`.
#[derive(Debug, Deserialize)]
pub struct PushRequest {
    #[serde(default)]
    pub push_source_name: Option<String>,
    #[serde(default)]
    pub feature_view: Option<String>,
    pub df: Columns,
    /// `online` (default), `offline`, `online_and_offline` (also `both`).
    #[serde(default)]
    pub to: Option<String>,
}

/// `POST /write-to-online-store`: rows of one view, online only. Feast's client names the
/// time columns `event_timestamp` and `created` whatever the view calls them.
#[derive(Debug, Deserialize)]
pub struct WriteRequest {
    pub feature_view_name: String,
    pub df: Columns,
}

/// `POST /materialize`.
#[derive(Debug, Default, Deserialize)]
pub struct MaterializeRequest {
    #[serde(default)]
    pub start_ts: Option<String>,
    #[serde(default)]
    pub end_ts: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub feature_views: Vec<String>,
    /// Feast: materialize all history up to now (rows keep their event times).
    #[serde(default, deserialize_with = "null_as_false")]
    pub disable_event_timestamp: bool,
    /// Sent by Feast's client; materialization has no feature names to choose.
    #[serde(default, deserialize_with = "null_as_false")]
    pub full_feature_names: bool,
    /// Feast's view version (`"v2"` or `"2"`): must name the applied version.
    #[serde(default)]
    pub version: Option<String>,
}

/// `POST /materialize-incremental`.
#[derive(Debug, Default, Deserialize)]
pub struct IncrementalRequest {
    #[serde(default)]
    pub end_ts: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub feature_views: Vec<String>,
    #[serde(default, deserialize_with = "null_as_false")]
    pub full_feature_names: bool,
    #[serde(default)]
    pub version: Option<String>,
}

fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

fn null_as_false<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(false))
}

/// A time in a request body ([`parse_time`]).
pub fn time(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, WireError> {
    text.map(|t| {
        parse_time(t).ok_or_else(|| WireError::BadTime {
            field: field.to_string(),
            value: t.to_string(),
        })
    })
    .transpose()
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

/// Feast's lookup response: one result per name (entity columns first), one entry per
/// entity row. It holds the lookup's Arrow columns and is written as JSON straight from
/// them (no `serde_json::Value` tree in between: a lookup's answer is built once per
/// request, and its allocations showed in the server's profile).
#[derive(Debug, Clone)]
pub struct LookupResponse {
    /// Entity columns (and request fields) of the request, in request order, converted
    /// to their types as Feast answers; columns the lookup does not read are left out,
    /// as Feast does.
    entities: Vec<(String, ArrayRef)>,
    found: OnlineFeatures,
    /// Per feature column, the index of its formatted event times in `times`.
    times_of: Vec<usize>,
    /// Event times formatted once per view (the features of a view share them).
    times: Vec<Vec<String>>,
    with_view_metadata: bool,
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// The response to `request`, whose entity columns were read as `entities` (the typed
/// batch given to the lookup), answered with `found`.
pub fn lookup_response(
    request: &LookupRequest,
    entities: &RecordBatch,
    found: OnlineFeatures,
) -> LookupResponse {
    let entities = request
        .entities
        .0
        .iter()
        .filter_map(|(name, _)| Some((name.clone(), Arc::clone(entities.column_by_name(name)?))))
        .collect();
    let mut times_of = Vec::with_capacity(found.columns.len());
    let mut times: Vec<Vec<String>> = Vec::new();
    let mut last: Option<&[Option<i64>]> = None;
    for column in &found.columns {
        if last != Some(column.event_timestamps.as_slice()) {
            times.push(
                column
                    .event_timestamps
                    .iter()
                    .map(|t| t.map_or_else(|| EPOCH.to_string(), rfc3339_micros))
                    .collect(),
            );
            last = Some(&column.event_timestamps);
        }
        times_of.push(times.len() - 1);
    }
    LookupResponse {
        entities,
        found,
        times_of,
        times,
        with_view_metadata: request.include_feature_view_version_metadata,
    }
}

impl LookupResponse {
    /// `metadata.feature_names`: entity columns first, then the features.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        let entities = self.entities.iter().map(|(name, _)| name.as_str());
        entities.chain(self.found.columns.iter().map(|c| c.name.as_str()))
    }

    /// How many entity columns lead the results.
    pub fn entity_columns(&self) -> usize {
        self.entities.len()
    }

    /// Entity rows.
    pub fn rows(&self) -> usize {
        let entities = self.entities.first().map(|(_, values)| values.len());
        let features = || self.found.columns.first().map(|c| c.values.len());
        entities.or_else(features).unwrap_or(0)
    }

    /// Result `result` (in `feature_names` order) at `row`: its value as JSON, status
    /// and event time.
    pub fn cell(&self, result: usize, row: usize) -> (Value, FeatureStatus, &str) {
        match result.checked_sub(self.entities.len()) {
            None => (
                json_value(&self.entities[result].1, row),
                FeatureStatus::Present,
                EPOCH,
            ),
            Some(f) => {
                let column = &self.found.columns[f];
                (
                    json_value(&column.values, row),
                    column.statuses[row],
                    &self.times[self.times_of[f]][row],
                )
            }
        }
    }
}

impl Serialize for LookupResponse {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;

        /// A JSON array of the items `items()` yields.
        struct Seq<F>(F);
        impl<F: Fn() -> I, I: Iterator<Item = T>, T: Serialize> Serialize for Seq<F> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq((self.0)())
            }
        }
        fn seq<F: Fn() -> I, I: Iterator>(items: F) -> Seq<F> {
            Seq(items)
        }

        struct FeatureResult<'a> {
            values: &'a ArrayRef,
            statuses: Option<&'a [FeatureStatus]>,
            times: Option<&'a [String]>,
        }
        impl Serialize for FeatureResult<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let rows = self.values.len();
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry(
                    "values",
                    &seq(|| (0..rows).map(|row| JsonCell(self.values, row))),
                )?;
                match self.statuses {
                    Some(statuses) => map.serialize_entry("statuses", statuses)?,
                    None => map.serialize_entry(
                        "statuses",
                        &seq(|| (0..rows).map(|_| FeatureStatus::Present)),
                    )?,
                }
                match self.times {
                    Some(times) => map.serialize_entry("event_timestamps", times)?,
                    None => {
                        map.serialize_entry("event_timestamps", &seq(|| (0..rows).map(|_| EPOCH)))?
                    }
                }
                map.end()
            }
        }

        #[derive(Serialize)]
        struct ViewMetadata<'a> {
            name: &'a str,
            version: &'a u32,
        }

        struct Metadata<'a>(&'a LookupResponse);
        impl Serialize for Metadata<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let response = self.0;
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("feature_names", &seq(|| response.feature_names()))?;
                if response.with_view_metadata {
                    let views = || {
                        let views = response.found.views.iter();
                        views.map(|(name, version)| ViewMetadata { name, version })
                    };
                    map.serialize_entry("feature_view_metadata", &seq(views))?;
                }
                map.end()
            }
        }

        let results = || {
            let entities = self.entities.iter().map(|(_, values)| FeatureResult {
                values,
                statuses: None,
                times: None,
            });
            let features = self.found.columns.iter().zip(&self.times_of);
            entities.chain(features.map(|(column, &times)| FeatureResult {
                values: &column.values,
                statuses: Some(&column.statuses),
                times: Some(&self.times[times]),
            }))
        };
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("metadata", &Metadata(self))?;
        map.serialize_entry("results", &seq(results))?;
        map.end()
    }
}

fn rfc3339_micros(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| EPOCH.to_string())
}

/// One Arrow value as JSON: integers and floats as numbers (NaN and infinities as
/// `null`), strings, booleans, bytes as base64, dates and timestamps as RFC 3339.
pub fn json_value(array: &ArrayRef, row: usize) -> Value {
    serde_json::to_value(JsonCell(array, row)).unwrap_or(Value::Null)
}

/// One Arrow value written as JSON ([`json_value`]).
struct JsonCell<'a>(&'a ArrayRef, usize);

impl Serialize for JsonCell<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let JsonCell(array, row) = *self;
        if array.is_null(row) {
            return serializer.serialize_unit();
        }
        match array.data_type() {
            DataType::Int8 => serializer.serialize_i8(array.as_primitive::<Int8Type>().value(row)),
            DataType::Int16 => {
                serializer.serialize_i16(array.as_primitive::<Int16Type>().value(row))
            }
            DataType::Int32 => {
                serializer.serialize_i32(array.as_primitive::<Int32Type>().value(row))
            }
            DataType::Int64 => {
                serializer.serialize_i64(array.as_primitive::<Int64Type>().value(row))
            }
            DataType::UInt8 => {
                serializer.serialize_u8(array.as_primitive::<UInt8Type>().value(row))
            }
            DataType::UInt16 => {
                serializer.serialize_u16(array.as_primitive::<UInt16Type>().value(row))
            }
            DataType::UInt32 => {
                serializer.serialize_u32(array.as_primitive::<UInt32Type>().value(row))
            }
            DataType::UInt64 => {
                serializer.serialize_u64(array.as_primitive::<UInt64Type>().value(row))
            }
            DataType::Float32 => float(
                serializer,
                array.as_primitive::<Float32Type>().value(row).into(),
            ),
            DataType::Float64 => float(serializer, array.as_primitive::<Float64Type>().value(row)),
            DataType::Boolean => serializer.serialize_bool(array.as_boolean().value(row)),
            DataType::Utf8 => serializer.serialize_str(array.as_string::<i32>().value(row)),
            DataType::LargeUtf8 => serializer.serialize_str(array.as_string::<i64>().value(row)),
            DataType::Utf8View => serializer.serialize_str(array.as_string_view().value(row)),
            DataType::Binary => {
                serializer.serialize_str(&base64_encode(array.as_binary::<i32>().value(row)))
            }
            DataType::LargeBinary => {
                serializer.serialize_str(&base64_encode(array.as_binary::<i64>().value(row)))
            }
            DataType::Date32 => {
                let days = array.as_primitive::<Date32Type>().value(row);
                day(
                    serializer,
                    DateTime::from_timestamp(i64::from(days) * 86_400, 0),
                )
            }
            DataType::Date64 => {
                let ms = array.as_primitive::<Date64Type>().value(row);
                day(serializer, DateTime::from_timestamp_millis(ms))
            }
            DataType::Timestamp(unit, _) => {
                let micros = match unit {
                    TimeUnit::Second => array
                        .as_primitive::<TimestampSecondType>()
                        .value(row)
                        .saturating_mul(1_000_000),
                    TimeUnit::Millisecond => array
                        .as_primitive::<TimestampMillisecondType>()
                        .value(row)
                        .saturating_mul(1_000),
                    TimeUnit::Microsecond => {
                        array.as_primitive::<TimestampMicrosecondType>().value(row)
                    }
                    TimeUnit::Nanosecond => {
                        array.as_primitive::<TimestampNanosecondType>().value(row) / 1_000
                    }
                };
                serializer.serialize_str(&rfc3339_micros(micros))
            }
            _ => serializer.serialize_unit(),
        }
    }
}

/// A float as a number; NaN and infinities as `null` (serde_json writes them so; said
/// here for any format).
fn float<S: serde::Serializer>(serializer: S, f: f64) -> Result<S::Ok, S::Error> {
    if f.is_finite() {
        serializer.serialize_f64(f)
    } else {
        serializer.serialize_unit()
    }
}

/// A date as `YYYY-MM-DD`.
fn day<S: serde::Serializer>(serializer: S, d: Option<DateTime<Utc>>) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => serializer.collect_str(&d.format("%Y-%m-%d")),
        None => serializer.serialize_unit(),
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = BASE64.iter().position(|b| *b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// ISO 8601 strings ([`parse_time`]) as µs since the epoch (`null` as 0).
fn times(
    values: &[Value],
    bad: &dyn Fn(usize, &Value, &str) -> WireError,
) -> Result<Vec<i64>, WireError> {
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
        let mut b = <$builder>::with_capacity($values.len());
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

/// JSON values as an Arrow array of `data_type`; a value that does not fit is an error
/// naming the column and row. Integers given as strings (`"1001"`) and strings given as
/// numbers are accepted, bytes are base64, times ISO 8601 ([`parse_time`]).
pub fn to_array(
    context: &'static str,
    column: &str,
    values: &[Value],
    data_type: &DataType,
) -> Result<ArrayRef, WireError> {
    let bad = |row: usize, value: &Value, expected: &str| WireError::BadValue {
        context,
        column: column.to_string(),
        row,
        value: value.to_string(),
        expected: expected.to_string(),
    };
    let bad = &bad;
    let other = |e: arrow::error::ArrowError| WireError::BadJson(format!("column `{column}`: {e}"));
    Ok(match data_type {
        DataType::Int8 => integers!(Int8Builder, bad, values, "an 8-bit integer"),
        DataType::Int16 => integers!(Int16Builder, bad, values, "a 16-bit integer"),
        DataType::Int32 => integers!(Int32Builder, bad, values, "a 32-bit integer"),
        DataType::Int64 => integers!(Int64Builder, bad, values, "an integer"),
        DataType::UInt8 => integers!(UInt8Builder, bad, values, "an unsigned 8-bit integer"),
        DataType::UInt16 => integers!(UInt16Builder, bad, values, "an unsigned 16-bit integer"),
        DataType::UInt32 => integers!(UInt32Builder, bad, values, "an unsigned 32-bit integer"),
        DataType::UInt64 => {
            let mut b = UInt64Builder::with_capacity(values.len());
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
                // Entity rows may carry numbers as strings (Feast's CLI sends every
                // value so); pushed rows may not.
                let text = (context == "entity").then(|| v.as_str()).flatten();
                out.push(match v {
                    Value::Null => None,
                    _ => Some(
                        v.as_f64()
                            .or_else(|| text.and_then(|t| t.trim().parse::<f64>().ok()))
                            .ok_or_else(|| bad(row, v, "a number"))?,
                    ),
                });
            }
            if data_type == &DataType::Float32 {
                let mut b = Float32Builder::with_capacity(values.len());
                out.iter()
                    .for_each(|v| b.append_option(v.map(|f| f as f32)));
                Arc::new(b.finish())
            } else {
                let mut b = Float64Builder::with_capacity(values.len());
                out.iter().for_each(|v| b.append_option(*v));
                Arc::new(b.finish())
            }
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Bool(x) => b.append_value(*x),
                    Value::String(t) if context == "entity" && (t == "true" || t == "false") => {
                        b.append_value(t == "true")
                    }
                    _ => return Err(bad(row, v, "true or false")),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let mut b = StringBuilder::with_capacity(values.len(), 16 * values.len());
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
                arrow::compute::cast(&array, data_type).map_err(other)?
            }
        }
        DataType::Binary | DataType::LargeBinary => {
            let mut b = BinaryBuilder::with_capacity(values.len(), 16 * values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::String(s) => {
                        b.append_value(base64_decode(s).ok_or_else(|| bad(row, v, "base64 bytes"))?)
                    }
                    _ => return Err(bad(row, v, "base64 bytes")),
                }
            }
            let array: ArrayRef = Arc::new(b.finish());
            arrow::compute::cast(&array, data_type).map_err(other)?
        }
        DataType::Timestamp(unit, tz) => {
            let micros = times(values, bad)?;
            let mut b = Int64Builder::with_capacity(values.len());
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
            arrow::array::make_array(data.build().map_err(other)?)
        }
        unsupported => {
            return Err(WireError::UnsupportedType {
                column: column.to_string(),
                data_type: unsupported.to_string(),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for bytes in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\x00\xff\x10"] {
            assert_eq!(base64_decode(&base64_encode(bytes)).as_deref(), Some(bytes));
        }
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn integer_keys_accept_numeric_strings() {
        let array = to_array(
            "entity",
            "driver_id",
            &[Value::from(1001), Value::from("1002")],
            &DataType::Int64,
        )
        .unwrap();
        assert_eq!(
            array.as_primitive::<Int64Type>().values().to_vec(),
            vec![1001, 1002]
        );
        let err = to_array("entity", "driver_id", &[Value::from("x")], &DataType::Int64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("entity column `driver_id` row 0"), "{err}");
    }

    #[test]
    fn a_column_named_twice_is_an_error() {
        let err = serde_json::from_str::<Columns>(r#"{"a": [1], "a": [2]}"#).unwrap_err();
        assert!(
            err.to_string().contains("column `a` appears twice"),
            "{err}"
        );
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(parse_body::<MaterializeRequest>(b"[null, null]").is_err());
        assert!(parse_body::<MaterializeRequest>(b" {\"feature_views\": null}").is_ok());
        assert!(parse_body::<MaterializeRequest>(b"").is_err());
    }
}
