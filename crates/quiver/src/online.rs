//! The online side of the facade: opening the configured online store, writing the
//! latest values of each view into it, and lookups. It speaks Arrow: Feast's JSON lives
//! in `quiver-server`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use quiver_core::config::{OnlineStoreType, STATE_DIR};
use quiver_offline::latest::latest_rows;
use quiver_offline::normalize::key_data_type;
use quiver_offline::table::{Interval, OfflineTable};
use quiver_online::codec::encode_entity_keys;
use quiver_online::{
    EmbeddedStore, FeatureStatus, OnlineRows, OnlineStore, RedisOptions, RedisStore, ViewRead,
    ViewRef, statuses,
};
use serde::Serialize;

use crate::catalog::{CatalogView, Purpose};
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
                        &format!("{STATE_DIR}/{EMBEDDED_FILE}"),
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

    /// Removes every online key of one view version and forgets its watermark (so the
    /// next incremental materialization refills it). Refuses a version that does not
    /// exist, and the version lookups read unless `force`.
    pub async fn drop_online_version(&self, view: &str, version: u32, force: bool) -> Result<u64> {
        let catalog = self.catalog().await?;
        let current = catalog.view(view)?;
        let registry = self.registry().clone();
        let name = view.to_string();
        let versions = tokio::task::spawn_blocking(move || {
            registry.versions(quiver_core::model::ObjectKind::FeatureView, &name)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        if !versions.contains(&version) {
            return Err(Error::UnknownViewVersion {
                view: view.to_string(),
                version,
                latest: current.version,
            });
        }
        let serving = catalog.serving_version(view)?;
        if version == serving && !force {
            return Err(Error::DropServingVersion {
                view: view.to_string(),
                version,
            });
        }
        let mut view_ref = current.online_ref()?.clone();
        view_ref.version = version;
        let removed = self.online_store().await?.drop_view(&view_ref).await?;
        let registry = self.registry().clone();
        let name = view.to_string();
        tokio::task::spawn_blocking(move || registry.reset_watermark(&name, version))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        self.forget_catalog();
        Ok(removed)
    }

    /// Plans a lookup: which view versions and features it reads, and which input
    /// columns (entity keys, with their types) the entity rows must hold. A plan is cheap
    /// and meant for one request.
    pub async fn lookup_plan(
        &self,
        features: &[String],
        service: Option<&str>,
        full_feature_names: bool,
    ) -> Result<LookupPlan> {
        let catalog = self.catalog().await?;
        let selected = catalog.resolve_features(service, features, Purpose::Online)?;
        let mut inputs: Vec<(String, DataType)> = Vec::new();
        let mut names: HashMap<String, String> = HashMap::new();
        let mut views = Vec::new();
        let mut outputs = Vec::new();
        for (view, features) in &selected {
            let view_ref = view.online_ref()?.clone();
            let mut keys = Vec::new();
            for (column, key_type) in view.view.schema.keys.iter().zip(&view.key_types) {
                let data_type = key_data_type(*key_type);
                if !inputs.iter().any(|(name, _)| *name == column.name) {
                    inputs.push((column.name.clone(), data_type.clone()));
                }
                keys.push((column.name.clone(), data_type));
            }
            let mut columns = Vec::new();
            for feature in features {
                let name = if full_feature_names {
                    format!("{}__{feature}", view.name())
                } else {
                    feature.clone()
                };
                let reference = format!("{}:{feature}", view.name());
                if let Some(first) = names.insert(name.clone(), reference.clone()) {
                    return Err(Error::DuplicateFeatureName {
                        name,
                        first,
                        second: reference,
                        full_names: full_feature_names,
                    });
                }
                let index = view_ref.features.iter().position(|(f, _)| f == feature);
                columns.push((name.clone(), index));
                outputs.push(name);
            }
            views.push(PlannedView {
                view: view_ref,
                keys,
                columns,
                window: view.window()?.cloned(),
            });
        }
        Ok(LookupPlan {
            views,
            inputs,
            feature_names: outputs,
        })
    }

    /// Looks up the latest values of the planned features for each row of `entities`
    /// (a batch holding the plan's input columns; other types are cast, a value that does
    /// not fit is an error naming its column and row). One round trip to the store.
    pub async fn get_online_features(
        &self,
        plan: &LookupPlan,
        entities: &RecordBatch,
    ) -> Result<OnlineFeatures> {
        let rows = entities.num_rows();
        if rows == 0 {
            return Err(Error::NoEntities);
        }
        let mut view_keys = Vec::with_capacity(plan.views.len());
        for planned in &plan.views {
            let mut key_arrays = Vec::with_capacity(planned.keys.len());
            for (key, data_type) in &planned.keys {
                let column =
                    entities
                        .column_by_name(key)
                        .ok_or_else(|| Error::MissingEntityColumn {
                            column: key.clone(),
                            view: planned.view.view.clone(),
                        })?;
                key_arrays.push(cast_input(key, column, data_type)?);
            }
            view_keys.push(encode_entity_keys(&key_arrays)?);
        }
        let reads: Vec<ViewRead<'_>> = plan
            .views
            .iter()
            .zip(&view_keys)
            .map(|(planned, keys)| ViewRead {
                view: &planned.view,
                keys,
                raw: planned.window.is_some(),
            })
            .collect();
        let now = self.clock().now().timestamp_micros();
        let found = self.online_store().await?.read(&reads, now).await?;

        let mut columns = Vec::with_capacity(plan.feature_names.len());
        for (planned, values) in plan.views.iter().zip(&found) {
            if let Some(program) = &planned.window {
                let (arrays, latest) = crate::windows::lookup_features(program, &values.raw, now)?;
                for (name, index) in &planned.columns {
                    let array = index.and_then(|i| arrays.get(i));
                    columns.push(match array {
                        Some(array) => FeatureColumn {
                            name: name.clone(),
                            values: Arc::clone(array),
                            // What export gives is what is served: COUNT 0 is a value.
                            statuses: (0..rows)
                                .map(|r| {
                                    if array.is_null(r) {
                                        FeatureStatus::NullValue
                                    } else {
                                        FeatureStatus::Present
                                    }
                                })
                                .collect(),
                            event_timestamps: latest.clone(),
                        },
                        None => FeatureColumn {
                            name: name.clone(),
                            values: arrow::array::new_null_array(&DataType::Null, rows),
                            statuses: vec![FeatureStatus::NotFound; rows],
                            event_timestamps: vec![None; rows],
                        },
                    });
                }
                continue;
            }
            for (name, index) in &planned.columns {
                let column = match index {
                    Some(index) => {
                        let array = &values.features[*index];
                        let statuses = statuses(values, array, planned.view.ttl_micros, now);
                        FeatureColumn {
                            name: name.clone(),
                            values: only_present(array, &statuses)?,
                            statuses,
                            event_timestamps: values.event_ts.clone(),
                        }
                    }
                    // A feature the serving version does not have yet.
                    None => FeatureColumn {
                        name: name.clone(),
                        values: arrow::array::new_null_array(&DataType::Null, rows),
                        statuses: vec![FeatureStatus::NotFound; rows],
                        event_timestamps: vec![None; rows],
                    },
                };
                columns.push(column);
            }
        }
        Ok(OnlineFeatures {
            columns,
            views: plan
                .views
                .iter()
                .map(|v| (v.view.view.clone(), v.view.version))
                .collect(),
        })
    }
}

/// What a lookup reads, planned once per request by [`FeatureStore::lookup_plan`].
#[derive(Debug, Clone)]
pub struct LookupPlan {
    views: Vec<PlannedView>,
    inputs: Vec<(String, DataType)>,
    feature_names: Vec<String>,
}

#[derive(Debug, Clone)]
struct PlannedView {
    view: ViewRef,
    /// The view's key columns and their types.
    keys: Vec<(String, DataType)>,
    /// Output name, and the feature's position in the view version (`None`: the version
    /// lookups read does not have it).
    columns: Vec<(String, Option<usize>)>,
    /// An aggregation view's program: its entities' states are merged at lookup time.
    window: Option<Arc<quiver_offline::window::WindowProgram>>,
}

impl LookupPlan {
    /// The columns the entity rows must hold (entity keys), with the types they are read
    /// as, in the order the request's views name them.
    pub fn inputs(&self) -> &[(String, DataType)] {
        &self.inputs
    }

    /// The output names of the features, in request order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// The (view, version) pairs the lookup reads.
    pub fn views(&self) -> impl Iterator<Item = (&str, u32)> {
        self.views
            .iter()
            .map(|v| (v.view.view.as_str(), v.view.version))
    }
}

/// The answer of a lookup: one column per requested feature, one entry per entity row.
#[derive(Debug, Clone)]
pub struct OnlineFeatures {
    pub columns: Vec<FeatureColumn>,
    /// The (view, version) pairs read, in request order.
    pub views: Vec<(String, u32)>,
}

/// One feature's values for every entity row.
#[derive(Debug, Clone)]
pub struct FeatureColumn {
    /// The output name (`feature` or `view__feature`).
    pub name: String,
    /// The values; NULL wherever the status is not `PRESENT`.
    pub values: ArrayRef,
    pub statuses: Vec<FeatureStatus>,
    /// The event time of the stored row (µs), `None` when nothing was found.
    pub event_timestamps: Vec<Option<i64>>,
}

/// `array` with every value whose status is not `PRESENT` set to NULL.
fn only_present(array: &ArrayRef, statuses: &[FeatureStatus]) -> Result<ArrayRef> {
    if statuses
        .iter()
        .all(|s| matches!(s, FeatureStatus::Present | FeatureStatus::NullValue))
    {
        return Ok(Arc::clone(array));
    }
    let absent: arrow::array::BooleanArray = statuses
        .iter()
        .map(|s| {
            Some(!matches!(
                s,
                FeatureStatus::Present | FeatureStatus::NullValue
            ))
        })
        .collect();
    arrow::compute::nullif(array.as_ref(), &absent).map_err(|e| Error::Task(format!("lookup: {e}")))
}

/// An input column cast to the type the lookup reads it as; a value that does not fit
/// is an error naming the column and row.
fn cast_input(name: &str, column: &ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    if column.data_type() == data_type {
        return Ok(Arc::clone(column));
    }
    let bad_row =
        |cast: &ArrayRef| (0..column.len()).find(|&i| column.is_valid(i) && cast.is_null(i));
    let integral = |i: usize| -> bool {
        match column.data_type() {
            DataType::Float32 | DataType::Float64 => {
                let f = arrow::compute::cast(column, &DataType::Float64)
                    .ok()
                    .map(|a| a.as_primitive::<arrow::datatypes::Float64Type>().value(i));
                f.is_some_and(|f| f.fract() == 0.0)
            }
            _ => true,
        }
    };
    let fail = |row: usize| {
        let value = arrow::util::display::array_value_to_string(column, row).unwrap_or_default();
        Error::BadEntityValue {
            column: name.to_string(),
            row,
            value,
            expected: describe_type(data_type).to_string(),
        }
    };
    let cast = arrow::compute::cast(column, data_type).map_err(|_| fail(0))?;
    if let Some(row) = bad_row(&cast) {
        return Err(fail(row));
    }
    if data_type.is_integer()
        && let Some(row) = (0..column.len()).find(|&i| column.is_valid(i) && !integral(i))
    {
        return Err(fail(row));
    }
    Ok(cast)
}

fn describe_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int64 => "an integer",
        DataType::Int32 => "a 32-bit integer",
        DataType::Utf8 => "a string",
        DataType::Binary => "base64 bytes",
        _ => "of the key's type",
    }
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
