//! The online side of the facade: opening the configured online store, writing the
//! latest values of each view into it, and lookups. It speaks Arrow: Feast's JSON lives
//! in `quiver-server`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use quiver_core::config::{OnlineStoreType, STATE_DIR};
use quiver_offline::latest::LatestRows;
use quiver_offline::normalize::key_data_type;
use quiver_online::codec::encode_entity_keys;
use quiver_online::{
    EmbeddedStore, FeatureStatus, OnlineRows, OnlineStore, RedisOptions, RedisStore, ViewRead,
    ViewRef, statuses,
};
use serde::Serialize;

use crate::catalog::{Catalog, CatalogView, Purpose};
use crate::{Error, FeatureStore, Result};
use quiver_core::model::OnDemandInputKind;
use quiver_offline::on_demand::OnDemandProgram;

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
                    OnlineStoreType::Redis | OnlineStoreType::RedisCluster => {
                        let mut options = if config.store_type == OnlineStoreType::RedisCluster {
                            RedisOptions::cluster(config.urls.iter().cloned())
                        } else {
                            RedisOptions::new(config.url.clone().unwrap_or_default())
                        };
                        options.connect_timeout = Duration::from_millis(config.connect_timeout_ms);
                        options.command_timeout = Duration::from_millis(config.command_timeout_ms);
                        // TLS files are relative to quiver.toml.
                        options.tls_ca = config.tls_ca.as_ref().map(|p| self.root().join(p));
                        options.tls_client = config
                            .tls_cert
                            .as_ref()
                            .zip(config.tls_key.as_ref())
                            .map(|(cert, key)| (self.root().join(cert), self.root().join(key)));
                        Arc::new(RedisStore::connect(&options).await?)
                    }
                };
                Ok::<_, Error>(store)
            })
            .await?;
        Ok(Arc::clone(store))
    }

    /// Writes the latest row of each entity in a materialized interval (`latest`, kept
    /// as the view's offline table was written; `None` when the run kept none) to the
    /// online store.
    pub(crate) async fn materialize_online(
        &self,
        view: &CatalogView,
        latest: Option<LatestRows>,
    ) -> Result<OnlineWrite> {
        let started = Instant::now();
        let store = self.online_store().await?;
        let view_ref = view.online_ref()?;
        let latest = match latest {
            Some(latest) => tokio::task::spawn_blocking(move || latest.merge())
                .await
                .map_err(|e| Error::Task(e.to_string()))??,
            None => None,
        };
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
        // On-demand views have no rows, so no freshness of their own.
        for view in catalog.views.values().filter(|v| !v.is_on_demand()) {
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
        if current.is_on_demand() {
            return Err(current.no_rows("drop from the online store"));
        }
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
        let mut view_ref = ViewRef::clone(current.online_ref()?);
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
    /// columns (entity keys, with their types, and the request fields of on-demand views)
    /// the entity rows must hold. Plans are kept per catalog: the same request planned
    /// again (a server answers the same few over and over) gets the same plan, until the
    /// definitions change.
    pub async fn lookup_plan(
        &self,
        features: &[String],
        service: Option<&str>,
        full_feature_names: bool,
    ) -> Result<Arc<LookupPlan>> {
        let catalog = self.catalog().await?;
        let request = PlanRequest {
            features,
            service,
            full_feature_names,
        };
        let hash = request.hash();
        if let Some(plan) = catalog.lookup_plans().get(hash, &request) {
            return Ok(plan);
        }
        let plan = Arc::new(self.plan_lookup(&catalog, &request).await?);
        catalog
            .lookup_plans()
            .insert(hash, &request, Arc::clone(&plan));
        Ok(plan)
    }

    async fn plan_lookup(
        &self,
        catalog: &Catalog,
        &PlanRequest {
            features,
            service,
            full_feature_names,
        }: &PlanRequest<'_>,
    ) -> Result<LookupPlan> {
        let selected = catalog.resolve_features(service, features, Purpose::Online)?;
        let mut plan = LookupPlan::default();
        let mut names: HashMap<String, String> = HashMap::new();
        for (view, features) in &selected {
            plan.requested.push((view.name().to_string(), view.version));
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
                plan.feature_names.push(name.clone());
                columns.push((name, feature.clone()));
            }
            match view.on_demand_program().await? {
                Some(program) => {
                    let planned = plan.plan_on_demand(catalog, view, program, columns)?;
                    plan.outputs.push(PlannedOutput::OnDemand(planned));
                }
                None => {
                    let index = plan.plan_view(view)?;
                    let view_ref = &plan.views[index].view;
                    let columns = columns
                        .into_iter()
                        .map(|(name, feature)| {
                            let position =
                                view_ref.features.iter().position(|(f, _)| *f == feature);
                            (name, position)
                        })
                        .collect();
                    plan.outputs.push(PlannedOutput::View { index, columns });
                }
            }
        }
        Ok(plan)
    }

    /// Looks up the latest values of the planned features for each row of `entities`
    /// (a batch holding the plan's input columns; other types are cast, a value that does
    /// not fit is an error naming its column and row). One round trip to the store; the
    /// on-demand views are then evaluated over the request fields and what was read.
    pub async fn get_online_features(
        &self,
        plan: &LookupPlan,
        entities: &RecordBatch,
    ) -> Result<OnlineFeatures> {
        let rows = entities.num_rows();
        if rows == 0 {
            return Err(Error::NoEntities);
        }
        for planned in &plan.on_demand {
            let missing: Vec<String> = planned
                .request_fields
                .iter()
                .filter(|(name, _)| entities.column_by_name(name).is_none())
                .map(|(name, _)| name.clone())
                .collect();
            if !missing.is_empty() {
                return Err(Error::MissingRequestData {
                    fields: missing,
                    view: planned.view.clone(),
                });
            }
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

        // Every feature of every view read, as served (NULL unless PRESENT).
        let mut read: Vec<Vec<FeatureColumn>> = Vec::with_capacity(plan.views.len());
        for (planned, values) in plan.views.iter().zip(&found) {
            let mut columns = Vec::with_capacity(planned.view.features.len());
            if let Some(program) = &planned.window {
                let (arrays, latest) = crate::windows::lookup_features(program, &values.raw, now)?;
                for ((name, _), array) in planned.view.features.iter().zip(arrays) {
                    columns.push(FeatureColumn {
                        name: name.clone(),
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
                        values: array,
                        event_timestamps: latest.clone(),
                    });
                }
            } else {
                for ((name, _), array) in planned.view.features.iter().zip(&values.features) {
                    let statuses = statuses(values, array, planned.view.ttl_micros, now);
                    columns.push(FeatureColumn {
                        name: name.clone(),
                        values: only_present(array, &statuses)?,
                        statuses,
                        event_timestamps: values.event_ts.clone(),
                    });
                }
            }
            read.push(columns);
        }

        let mut columns = Vec::with_capacity(plan.feature_names.len());
        for output in &plan.outputs {
            match output {
                PlannedOutput::View {
                    index,
                    columns: wanted,
                } => {
                    for (name, position) in wanted {
                        columns.push(match position {
                            Some(position) => FeatureColumn {
                                name: name.clone(),
                                ..read[*index][*position].clone()
                            },
                            // A feature the serving version does not have yet.
                            None => not_found(name, rows),
                        });
                    }
                }
                PlannedOutput::OnDemand(index) => {
                    columns.extend(evaluate_on_demand(
                        &plan.on_demand[*index],
                        entities,
                        &read,
                        rows,
                    )?);
                }
            }
        }
        Ok(OnlineFeatures {
            columns,
            views: plan.requested.clone(),
        })
    }
}

fn not_found(name: &str, rows: usize) -> FeatureColumn {
    FeatureColumn {
        name: name.to_string(),
        values: arrow::array::new_null_array(&DataType::Null, rows),
        statuses: vec![FeatureStatus::NotFound; rows],
        event_timestamps: vec![None; rows],
    }
}

/// The outputs of one on-demand view: its program over the request fields and the
/// features read. A value is PRESENT unless NULL; its event time is the newest of its
/// input views' rows.
fn evaluate_on_demand(
    planned: &PlannedOnDemand,
    entities: &RecordBatch,
    read: &[Vec<FeatureColumn>],
    rows: usize,
) -> Result<Vec<FeatureColumn>> {
    let arrays = planned.program.evaluate(rows, |input, column| {
        Ok(match &planned.sources[input][column] {
            InputColumn::Request(name) => entities
                .column_by_name(name)
                .cloned()
                .unwrap_or_else(|| arrow::array::new_null_array(&DataType::Null, rows)),
            InputColumn::View {
                index,
                position: Some(position),
            } => Arc::clone(&read[*index][*position].values),
            InputColumn::View { position: None, .. } => {
                arrow::array::new_null_array(&DataType::Null, rows)
            }
        })
    })?;
    let mut times: Vec<Option<i64>> = vec![None; rows];
    for index in &planned.views {
        if let Some(first) = read[*index].first() {
            for (time, t) in times.iter_mut().zip(&first.event_timestamps) {
                *time = (*time).max(*t);
            }
        }
    }
    Ok(planned
        .outputs
        .iter()
        .map(|(name, output)| {
            let values = Arc::clone(&arrays[*output]);
            FeatureColumn {
                name: name.clone(),
                statuses: (0..rows)
                    .map(|r| {
                        if values.is_null(r) {
                            FeatureStatus::NullValue
                        } else {
                            FeatureStatus::Present
                        }
                    })
                    .collect(),
                values,
                event_timestamps: times.clone(),
            }
        })
        .collect())
}

/// The arguments a lookup plan is made from.
struct PlanRequest<'a> {
    features: &'a [String],
    service: Option<&'a str>,
    full_feature_names: bool,
}

impl PlanRequest<'_> {
    fn hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        (self.features, self.service, self.full_feature_names).hash(&mut hasher);
        hasher.finish()
    }
}

/// The lookup plans of one catalog, by request. At most [`LookupPlans::MAX`]: past it the
/// cache starts over, so requests naming ever new feature lists cannot grow it.
#[derive(Debug, Default)]
pub(crate) struct LookupPlans {
    by_hash: HashMap<u64, Vec<CachedPlan>>,
    count: usize,
}

#[derive(Debug)]
struct CachedPlan {
    features: Vec<String>,
    service: Option<String>,
    full_feature_names: bool,
    plan: Arc<LookupPlan>,
}

impl LookupPlans {
    const MAX: usize = 1024;

    fn get(&self, hash: u64, request: &PlanRequest<'_>) -> Option<Arc<LookupPlan>> {
        self.by_hash
            .get(&hash)?
            .iter()
            .find(|cached| {
                cached.features == request.features
                    && cached.service.as_deref() == request.service
                    && cached.full_feature_names == request.full_feature_names
            })
            .map(|cached| Arc::clone(&cached.plan))
    }

    fn insert(&mut self, hash: u64, request: &PlanRequest<'_>, plan: Arc<LookupPlan>) {
        if self.get(hash, request).is_some() {
            return;
        }
        if self.count >= Self::MAX {
            self.by_hash.clear();
            self.count = 0;
        }
        self.by_hash.entry(hash).or_default().push(CachedPlan {
            features: request.features.to_vec(),
            service: request.service.map(str::to_string),
            full_feature_names: request.full_feature_names,
            plan,
        });
        self.count += 1;
    }
}

/// What a lookup reads, planned by [`FeatureStore::lookup_plan`] (once per catalog and
/// request).
#[derive(Debug, Clone, Default)]
pub struct LookupPlan {
    /// The view versions read from the store, each once (requested or read for an
    /// on-demand view).
    views: Vec<PlannedView>,
    on_demand: Vec<PlannedOnDemand>,
    /// The features answered, in request order.
    outputs: Vec<PlannedOutput>,
    inputs: Vec<(String, DataType)>,
    feature_names: Vec<String>,
    /// The (view, version) pairs requested, in request order.
    requested: Vec<(String, u32)>,
}

#[derive(Debug, Clone)]
struct PlannedView {
    view: Arc<ViewRef>,
    /// The view's key columns and their types.
    keys: Vec<(String, DataType)>,
    /// An aggregation view's program: its entities' states are merged at lookup time.
    window: Option<Arc<quiver_offline::window::WindowProgram>>,
}

#[derive(Debug, Clone)]
enum PlannedOutput {
    /// Features of `views[index]`: output name, and the feature's position in the view
    /// version read (`None`: that version does not have it).
    View {
        index: usize,
        columns: Vec<(String, Option<usize>)>,
    },
    /// `on_demand[index]`.
    OnDemand(usize),
}

#[derive(Debug, Clone)]
struct PlannedOnDemand {
    view: String,
    program: Arc<OnDemandProgram>,
    /// Per input and column of the program's schema, where its values come from.
    sources: Vec<Vec<InputColumn>>,
    /// The request fields it reads, typed.
    request_fields: Vec<(String, DataType)>,
    /// The `views` it reads (for event times).
    views: Vec<usize>,
    /// Output name and the program's output index, in request order.
    outputs: Vec<(String, usize)>,
}

#[derive(Debug, Clone)]
enum InputColumn {
    Request(String),
    View {
        index: usize,
        position: Option<usize>,
    },
}

impl LookupPlan {
    /// Adds a view version to read (once) and its keys to the inputs; its index.
    fn plan_view(&mut self, view: &CatalogView) -> Result<usize> {
        if let Some(index) = self
            .views
            .iter()
            .position(|v| v.view.view == view.name() && v.view.version == view.version)
        {
            return Ok(index);
        }
        let mut keys = Vec::new();
        for (column, key_type) in view.view.schema.keys.iter().zip(&view.key_types) {
            let data_type = key_data_type(*key_type);
            if !self.inputs.iter().any(|(name, _)| *name == column.name) {
                self.inputs.push((column.name.clone(), data_type.clone()));
            }
            keys.push((column.name.clone(), data_type));
        }
        self.views.push(PlannedView {
            view: Arc::clone(view.online_ref()?),
            keys,
            window: view.window()?.cloned(),
        });
        Ok(self.views.len() - 1)
    }

    /// Plans an on-demand view: its input views (at their serving versions) and request
    /// fields; returns its index in `on_demand`.
    fn plan_on_demand(
        &mut self,
        catalog: &crate::catalog::Catalog,
        view: &CatalogView,
        program: Arc<OnDemandProgram>,
        columns: Vec<(String, String)>,
    ) -> Result<usize> {
        let schema = view
            .view
            .schema
            .on_demand
            .as_ref()
            .ok_or_else(|| Error::Task(format!("`{}` has no on-demand schema", view.name())))?;
        let mut sources = Vec::with_capacity(schema.inputs.len());
        let mut request_fields = Vec::new();
        let mut views = Vec::new();
        for (input, (_, typed)) in schema.inputs.iter().zip(&program.inputs) {
            let mut columns = Vec::with_capacity(input.columns.len());
            match input.kind {
                OnDemandInputKind::Request => {
                    for (name, data_type) in typed {
                        if !self.inputs.iter().any(|(input, _)| input == name) {
                            self.inputs.push((name.clone(), data_type.clone()));
                        }
                        request_fields.push((name.clone(), data_type.clone()));
                        columns.push(InputColumn::Request(name.clone()));
                    }
                }
                OnDemandInputKind::View => {
                    let read =
                        catalog.view_at(&input.name, catalog.serving_version(&input.name)?)?;
                    let index = self.plan_view(read)?;
                    views.push(index);
                    for column in &input.columns {
                        let position = self.views[index]
                            .view
                            .features
                            .iter()
                            .position(|(f, _)| *f == column.name);
                        columns.push(InputColumn::View { index, position });
                    }
                }
            }
            sources.push(columns);
        }
        let outputs = columns
            .into_iter()
            .map(|(name, feature)| {
                let output = program
                    .outputs
                    .iter()
                    .position(|(f, _)| *f == feature)
                    .ok_or_else(|| {
                        Error::Task(format!(
                            "on-demand view `{}` has no output `{feature}`",
                            view.name()
                        ))
                    })?;
                Ok((name, output))
            })
            .collect::<Result<_>>()?;
        self.on_demand.push(PlannedOnDemand {
            view: view.name().to_string(),
            program,
            sources,
            request_fields,
            views,
            outputs,
        });
        Ok(self.on_demand.len() - 1)
    }

    /// The columns the entity rows must hold (entity keys, and request fields of
    /// on-demand views), with the types they are read as, in the order the request's
    /// views name them.
    pub fn inputs(&self) -> &[(String, DataType)] {
        &self.inputs
    }

    /// The output names of the features, in request order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// The (view, version) pairs the lookup answers for, in request order.
    pub fn views(&self) -> impl Iterator<Item = (&str, u32)> {
        self.requested.iter().map(|(v, n)| (v.as_str(), *n))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_plan() -> Arc<LookupPlan> {
        Arc::new(LookupPlan::default())
    }

    fn request<'a>(
        features: &'a [String],
        service: Option<&'a str>,
        full: bool,
    ) -> PlanRequest<'a> {
        PlanRequest {
            features,
            service,
            full_feature_names: full,
        }
    }

    #[test]
    fn plans_are_kept_per_request_and_bounded() {
        let mut plans = LookupPlans::default();
        let features = vec!["v:a".to_string(), "v:b".to_string()];
        let asked = request(&features, None, false);
        let plan = empty_plan();
        plans.insert(asked.hash(), &asked, Arc::clone(&plan));
        let again = plans.get(asked.hash(), &request(&features, None, false));
        assert!(again.is_some_and(|p| Arc::ptr_eq(&p, &plan)));

        // Any argument that differs is another request, even under the same hash.
        let reordered = vec!["v:b".to_string(), "v:a".to_string()];
        for other in [
            request(&features, None, true),
            request(&features, Some("s"), false),
            request(&reordered, None, false),
            request(&features[..1], None, false),
        ] {
            assert!(plans.get(asked.hash(), &other).is_none());
            assert!(plans.get(other.hash(), &other).is_none());
        }

        // Past the bound the cache starts over.
        let many: Vec<Vec<String>> = (0..LookupPlans::MAX)
            .map(|i| vec![format!("v:f{i}")])
            .collect();
        for features in &many {
            let r = request(features, None, false);
            plans.insert(r.hash(), &r, empty_plan());
        }
        assert!(plans.count <= LookupPlans::MAX);
        assert!(plans.get(asked.hash(), &asked).is_none());
        let last = request(&many[LookupPlans::MAX - 1], None, false);
        assert!(plans.get(last.hash(), &last).is_some());
    }
}
