//! The online side of the facade: opening the configured online store, writing the
//! latest values of each view into it, and Feast-compatible lookups.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use chrono::{DateTime, SecondsFormat};
use quiver_core::config::{OnlineStoreType, STATE_DIR};
use quiver_core::model::KeyType;
use quiver_offline::latest::latest_rows;
use quiver_offline::normalize::key_data_type;
use quiver_offline::table::{Interval, OfflineTable};
use quiver_online::codec::encode_entity_keys;
use quiver_online::{
    EmbeddedStore, FeatureStatus, OnlineRows, OnlineStore, RedisOptions, RedisStore, ViewRead,
    statuses,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::CatalogView;
use crate::{Error, FeatureStore, Result};

/// The embedded online store's file inside the state folder.
pub const EMBEDDED_FILE: &str = "online.db";

/// Rows per write call when materializing to the online store.
const WRITE_CHUNK: usize = 100_000;

/// What the online half of a materialization did.
#[derive(Debug, Clone, Serialize)]
pub struct OnlineWrite {
    pub store: &'static str,
    /// Entities whose latest row in the interval was offered.
    pub rows: u64,
    /// Keys whose stored value changed (the rest were older than what was stored).
    pub written: u64,
    /// The whole online half: reading the latest rows from the offline table and writing.
    pub seconds: f64,
    /// Only the store writes (encoding and sending).
    pub write_seconds: f64,
}

impl FeatureStore {
    /// The configured online store, opened on first use.
    pub async fn online_store(&self) -> Result<Arc<dyn OnlineStore>> {
        let store = self
            .online_cell()
            .get_or_try_init(|| async {
                let config = &self.config().online;
                let store: Arc<dyn OnlineStore> = match config.store_type {
                    OnlineStoreType::Embedded => Arc::new(EmbeddedStore::open(
                        &self.root().join(STATE_DIR).join(EMBEDDED_FILE),
                    )?),
                    OnlineStoreType::Redis => {
                        let url = config.url.clone().unwrap_or_default();
                        let mut options = RedisOptions::new(url);
                        options.connect_timeout = Duration::from_millis(config.connect_timeout_ms);
                        options.command_timeout = Duration::from_millis(config.command_timeout_ms);
                        Arc::new(RedisStore::connect(&options).await?)
                    }
                };
                Ok::<_, Error>(store)
            })
            .await?;
        Ok(Arc::clone(store))
    }

    /// Writes the latest row of each entity within `interval` from the view's offline
    /// table to the online store.
    pub(crate) async fn materialize_online(
        &self,
        view: &CatalogView,
        interval: Interval,
    ) -> Result<OnlineWrite> {
        let started = Instant::now();
        let store = self.online_store().await?;
        let view_ref = view.online_ref()?;
        let dates = OfflineTable::new(&self.offline_root(), view.name(), view.version)
            .snapshot()?
            .partitions();
        let columns = view.columns();
        let keys: Vec<String> = columns.keys.iter().map(|(k, _)| k.clone()).collect();
        let timestamp = columns.timestamp.clone();
        let latest =
            tokio::task::spawn_blocking(move || latest_rows(&dates, &keys, &timestamp, interval))
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
        let mut report = OnlineWrite {
            store: store.name(),
            rows: 0,
            written: 0,
            seconds: 0.0,
            write_seconds: 0.0,
        };
        if let Some(batch) = latest {
            let now = self.clock().now().timestamp_micros();
            let mut offset = 0;
            while offset < batch.num_rows() {
                let chunk = batch.slice(offset, WRITE_CHUNK.min(batch.num_rows() - offset));
                let rows = online_rows(&chunk, view)?;
                let writing = Instant::now();
                let stats = store.write(view_ref, &rows, now).await?;
                report.write_seconds += writing.elapsed().as_secs_f64();
                report.rows += stats.rows;
                report.written += stats.written;
                offset += chunk.num_rows();
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Whether the online store answers.
    pub async fn health(&self) -> Result<()> {
        Ok(self.online_store().await?.health().await?)
    }

    /// Seconds since each view's last materialized instant (its watermark), at `now`.
    pub async fn freshness(&self) -> Result<Vec<(String, Option<f64>)>> {
        let catalog = self.catalog().await?;
        let now = self.clock().now().timestamp_micros();
        let mut out = Vec::new();
        for view in catalog.views.values() {
            let registry = self.registry().clone();
            let (name, version) = (view.name().to_string(), view.version);
            let watermark = tokio::task::spawn_blocking(move || registry.watermark(&name, version))
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
            out.push((
                view.name().to_string(),
                watermark.map(|w| (now - w) as f64 / 1e6),
            ));
        }
        Ok(out)
    }

    /// Removes every online key of one view version.
    pub async fn drop_online_version(&self, view: &str, version: u32) -> Result<u64> {
        let catalog = self.catalog().await?;
        let current = catalog.view(view)?;
        let mut view_ref = current.online_ref()?.clone();
        view_ref.version = version;
        Ok(self.online_store().await?.drop_view(&view_ref).await?)
    }

    /// Looks up the latest feature values of entities, answering exactly as Feast's
    /// feature server does for `/get-online-features`.
    pub async fn get_online_features(&self, request: &OnlineRequest) -> Result<OnlineResponse> {
        let catalog = self.catalog().await?;
        let selected =
            catalog.resolve_features(request.feature_service.as_deref(), &request.features)?;
        let rows = entity_rows(&request.entities)?;

        let mut names: Vec<String> = request
            .entities
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut view_refs = Vec::new();
        let mut view_keys = Vec::new();
        for (view, features) in &selected {
            view_refs.push(view.online_ref()?);
            let mut key_arrays = Vec::new();
            for (key, key_type) in view
                .view
                .schema
                .keys
                .iter()
                .map(|c| c.name.clone())
                .zip(&view.key_types)
            {
                let values = request
                    .entities
                    .iter()
                    .find(|(name, _)| *name == key)
                    .map(|(_, v)| v)
                    .ok_or_else(|| Error::MissingEntityColumn {
                        column: key.clone(),
                        view: view.name().to_string(),
                    })?;
                key_arrays.push(key_array(&key, *key_type, values)?);
            }
            view_keys.push(encode_entity_keys(&key_arrays)?);
            for feature in features {
                let name = if request.full_feature_names {
                    format!("{}__{feature}", view.name())
                } else {
                    feature.clone()
                };
                let reference = format!("{}:{feature}", view.name());
                if let Some(first) = seen.insert(name.clone(), reference.clone()) {
                    return Err(Error::DuplicateFeatureName {
                        name,
                        first,
                        second: reference,
                        full_names: request.full_feature_names,
                    });
                }
                names.push(name);
            }
        }
        let reads: Vec<ViewRead<'_>> = view_refs
            .iter()
            .copied()
            .zip(&view_keys)
            .map(|(view, keys)| ViewRead { view, keys })
            .collect();
        let found = self.online_store().await?.read(&reads).await?;

        let now = self.clock().now().timestamp_micros();
        let mut results = Vec::new();
        for (_, values) in &request.entities {
            results.push(FeatureVector {
                values: values.clone(),
                statuses: vec![FeatureStatus::Present; rows],
                event_timestamps: vec![EPOCH.to_string(); rows],
            });
        }
        for ((_, features), (view_ref, values)) in selected.iter().zip(view_refs.iter().zip(&found))
        {
            // One time per entity row, shared by the view's features.
            let event_timestamps: Vec<String> = values
                .event_ts
                .iter()
                .map(|ts| ts.map_or_else(|| EPOCH.to_string(), rfc3339_micros))
                .collect();
            for feature in features {
                let index = view_ref
                    .features
                    .iter()
                    .position(|(name, _)| name == feature)
                    .expect("resolved features exist in the view");
                let array = &values.features[index];
                let status = statuses(values, array, view_ref.ttl_micros, now);
                let json_values = (0..rows)
                    .map(|row| {
                        if status[row] == FeatureStatus::Present {
                            json_value(array, row)
                        } else {
                            Value::Null
                        }
                    })
                    .collect();
                results.push(FeatureVector {
                    values: json_values,
                    statuses: status,
                    event_timestamps: event_timestamps.clone(),
                });
            }
        }
        Ok(OnlineResponse {
            metadata: Metadata {
                feature_names: names,
            },
            results,
        })
    }
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

fn rfc3339_micros(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| EPOCH.to_string())
}

/// The rows of a view's offline table in the online store's layout.
pub(crate) fn online_rows(
    batch: &arrow::array::RecordBatch,
    view: &CatalogView,
) -> Result<OnlineRows> {
    let columns = view.columns();
    let column = |name: &str| -> Result<ArrayRef> {
        batch.column_by_name(name).cloned().ok_or_else(|| {
            Error::Task(format!(
                "offline table of `{}` lacks column `{name}`",
                view.name()
            ))
        })
    };
    let keys: Vec<ArrayRef> = columns
        .keys
        .iter()
        .map(|(k, _)| column(k))
        .collect::<Result<_>>()?;
    let ts = column(&columns.timestamp)?;
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    let created: Vec<i64> = match &columns.created {
        Some(c) => {
            let c = column(c)?;
            let c = c.as_primitive::<TimestampMicrosecondType>();
            (0..c.len())
                .map(|i| if c.is_valid(i) { c.value(i) } else { 0 })
                .collect()
        }
        None => vec![0; batch.num_rows()],
    };
    Ok(OnlineRows {
        keys: encode_entity_keys(&keys)?,
        event_ts: ts.values().to_vec(),
        created,
        features: columns
            .features
            .iter()
            .map(|f| column(f))
            .collect::<Result<_>>()?,
    })
}

/// A lookup request, as Feast's feature server takes it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineRequest {
    /// `view:feature` references.
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<String>,
    /// Entity columns in request order: name → one value per entity row.
    #[serde(with = "ordered_columns")]
    pub entities: Vec<(String, Vec<Value>)>,
    #[serde(default)]
    pub full_feature_names: bool,
}

/// The response: one result per name (entity columns first), one entry per entity row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnlineResponse {
    pub metadata: Metadata,
    pub results: Vec<FeatureVector>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metadata {
    pub feature_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureVector {
    pub values: Vec<Value>,
    pub statuses: Vec<FeatureStatus>,
    pub event_timestamps: Vec<String>,
}

/// `{"a": [..], "b": [..]}` ⇄ `[("a", [..]), ("b", [..])]`, keeping the request's order.
mod ordered_columns {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(
        columns: &[(String, Vec<Value>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(columns.len()))?;
        for (k, v) in columns {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, Vec<Value>)>, D::Error> {
        struct Columns;
        impl<'de> Visitor<'de> for Columns {
            type Value = Vec<(String, Vec<Value>)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of entity columns, each an array of values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, Vec<Value>)> = Vec::new();
                while let Some((key, values)) = map.next_entry::<String, Vec<Value>>()? {
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!(
                            "entity column `{key}` appears twice"
                        )));
                    }
                    out.push((key, values));
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(Columns)
    }
}

/// The number of entity rows; every column must have it.
fn entity_rows(entities: &[(String, Vec<Value>)]) -> Result<usize> {
    let Some((first, values)) = entities.first() else {
        return Err(Error::NoEntities);
    };
    for (name, column) in entities {
        if column.len() != values.len() {
            return Err(Error::RaggedEntities {
                first: first.clone(),
                first_len: values.len(),
                column: name.clone(),
                len: column.len(),
            });
        }
    }
    if values.is_empty() {
        return Err(Error::NoEntities);
    }
    Ok(values.len())
}

/// Entity values (JSON) as an Arrow array of the key's type. Integers given as strings
/// (`"1001"`) and strings given as numbers are accepted; anything else is an error that
/// names the column and row.
fn key_array(column: &str, key_type: KeyType, values: &[Value]) -> Result<ArrayRef> {
    let bad = |row: usize, value: &Value, expected: &str| Error::BadEntityValue {
        column: column.to_string(),
        row,
        value: value.to_string(),
        expected: expected.to_string(),
    };
    crate::push::to_array(column, values, &key_data_type(key_type), &bad)
}

/// One Arrow value as JSON: integers and floats as numbers (NaN and infinities as
/// `null`), strings, booleans, bytes as base64, dates and timestamps as RFC 3339.
pub fn json_value(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    let float = |f: f64| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
    match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 => float(array.as_primitive::<Float32Type>().value(row).into()),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => array.as_boolean().value(row).into(),
        DataType::Utf8 => array.as_string::<i32>().value(row).into(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).into(),
        DataType::Utf8View => array.as_string_view().value(row).into(),
        DataType::Binary => base64_encode(array.as_binary::<i32>().value(row)).into(),
        DataType::LargeBinary => base64_encode(array.as_binary::<i64>().value(row)).into(),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            DateTime::from_timestamp(i64::from(days) * 86_400, 0)
                .map_or(Value::Null, |d| d.format("%Y-%m-%d").to_string().into())
        }
        DataType::Date64 => {
            let ms = array.as_primitive::<Date64Type>().value(row);
            DateTime::from_timestamp_millis(ms)
                .map_or(Value::Null, |d| d.format("%Y-%m-%d").to_string().into())
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
            rfc3339_micros(micros).into()
        }
        _ => Value::Null,
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

pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
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
        let array = key_array(
            "driver_id",
            KeyType::Int64,
            &[Value::from(1001), Value::from("1002")],
        )
        .unwrap();
        assert_eq!(
            array.as_primitive::<Int64Type>().values().to_vec(),
            vec![1001, 1002]
        );
        let err = key_array("driver_id", KeyType::Int64, &[Value::from("x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("entity column `driver_id` row 0"), "{err}");
    }
}
