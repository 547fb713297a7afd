//! The offline side of the facade: materializing views into offline tables and
//! exporting point-in-time-correct training sets from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema};
use chrono::{DateTime, SecondsFormat, Utc};
use quiver_offline::WriteOptions;
use quiver_offline::export::{OutputFormat, ViewRequest, join_view, spine_times, write_output};
use quiver_offline::table::{Interval, OfflineTable};
use quiver_offline::window::export::{WindowRequest, join_windows};
use quiver_offline::{Location, StorageOptions};
use quiver_offline::{MaterializeStats, Materialized};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, CatalogView, Purpose};
use crate::{Error, FeatureStore, Result};
use quiver_core::model::OnDemandInputKind;
use quiver_offline::on_demand::OnDemandProgram;
use std::collections::HashMap;

/// What to materialize: `[start, end]` of event time (both inclusive, as in Feast) (default: all history up to now)
/// for the named views (default: all).
#[derive(Debug, Clone, Default)]
pub struct MaterializeOptions {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub views: Vec<String>,
}

impl FeatureStore {
    /// Materializes views into their offline tables and, for views with `ONLINE true`,
    /// writes the latest row of each entity to the online store; records each run and
    /// moves each view's watermark to the interval's end.
    pub async fn materialize(&self, options: MaterializeOptions) -> Result<Vec<MaterializeReport>> {
        let catalog = self.catalog().await?;
        let views = select_views(&catalog, &options.views)?;
        let end = options.end.unwrap_or_else(|| self.clock().now());
        check_interval(options.start, end)?;
        let interval = Interval {
            start: options.start.map(|s| s.timestamp_micros()),
            end: end.timestamp_micros(),
        };
        let engine = catalog.engine(self, &views).await?;
        let runs: Vec<(&CatalogView, Interval)> =
            views.into_iter().map(|v| (v, interval)).collect();
        self.materialize_runs(&engine, runs).await
    }

    /// What [`materialize`](Self::materialize) would run, checked without running it: the
    /// names of the selected views (every view when `options.views` is empty, each named
    /// view once), or the error the run would fail with first — an unknown view, nothing
    /// to materialize, an empty interval. A server answers with it before accepting a run
    /// in the background.
    pub async fn check_materialize(&self, options: &MaterializeOptions) -> Result<Vec<String>> {
        let catalog = self.catalog().await?;
        let views = select_views(&catalog, &options.views)?;
        check_interval(
            options.start,
            options.end.unwrap_or_else(|| self.clock().now()),
        )?;
        Ok(views.iter().map(|v| v.name().to_string()).collect())
    }

    /// Materializes each view from its watermark (the end of its last successful run;
    /// all history for a view never materialized) up to `end` (default: now).
    pub async fn materialize_incremental(
        &self,
        end: Option<DateTime<Utc>>,
        views: &[String],
    ) -> Result<Vec<MaterializeReport>> {
        let catalog = self.catalog().await?;
        let views = select_views(&catalog, views)?;
        let end = end.unwrap_or_else(|| self.clock().now()).timestamp_micros();
        let engine = catalog.engine(self, &views).await?;
        let mut runs = Vec::new();
        for view in views {
            let registry = self.registry().clone();
            let (name, version) = (view.name().to_string(), view.version);
            let watermark = tokio::task::spawn_blocking(move || registry.watermark(&name, version))
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
            if watermark.is_some_and(|w| w >= end) {
                continue; // already up to date
            }
            runs.push((
                view,
                Interval {
                    start: watermark,
                    end,
                },
            ));
        }
        self.materialize_runs(&engine, runs).await
    }

    /// Materializes each (view, interval) in order: a view's offline table, then its
    /// online write and watermark, which run while the next view's offline table is
    /// written (the online write mostly waits on the store; the offline run has cores to
    /// spare while it scans). Stops at the first error, after the step in flight beside
    /// it finished.
    async fn materialize_runs(
        &self,
        engine: &quiver_offline::OfflineEngine,
        runs: Vec<(&CatalogView, Interval)>,
    ) -> Result<Vec<MaterializeReport>> {
        type Finishing<'f> = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<MaterializeReport>> + Send + 'f>,
        >;
        let mut out = Vec::with_capacity(runs.len());
        let mut finishing: Option<Finishing<'_>> = None;
        for (view, interval) in runs {
            let offline = match finishing.take() {
                None => {
                    self.materialize_view(engine, view, interval, view.view.view.online)
                        .await?
                }
                Some(previous) => {
                    let (offline, previous) = tokio::join!(
                        self.materialize_view(engine, view, interval, view.view.view.online),
                        previous
                    );
                    out.push(previous?);
                    offline?
                }
            };
            finishing = Some(Box::pin(
                self.finish_materialization(view, offline, interval),
            ));
        }
        if let Some(last) = finishing {
            out.push(last.await?);
        }
        Ok(out)
    }

    /// The second half of a view's materialization: its online write (for views with
    /// `ONLINE true`), then its watermark.
    async fn finish_materialization(
        &self,
        view: &CatalogView,
        offline: Materialized,
        interval: Interval,
    ) -> Result<MaterializeReport> {
        let online = match (view.view.view.online, view.window()?) {
            (false, _) => None,
            (true, Some(program)) => Some(
                self.materialize_window_online(view, program, interval)
                    .await?,
            ),
            (true, None) => Some(self.materialize_online(view, offline.latest).await?),
        };
        // The watermark moves only after both halves succeeded, and never past now.
        let registry = self.registry().clone();
        let (name, version) = (view.name().to_string(), view.version);
        let watermark = interval.end.min(self.clock().now().timestamp_micros());
        tokio::task::spawn_blocking(move || registry.advance_watermark(&name, version, watermark))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        // A first run of a new version makes it the serving one: this process's lookups
        // read it from the next request on, not after the catalog's recheck interval.
        self.forget_catalog();
        Ok(MaterializeReport {
            offline: offline.stats,
            online,
        })
    }

    /// Materializes a view's offline table; with `keep_latest` (an online write follows)
    /// the result keeps the latest row per key on the way.
    async fn materialize_view(
        &self,
        engine: &quiver_offline::OfflineEngine,
        view: &CatalogView,
        interval: Interval,
        keep_latest: bool,
    ) -> Result<Materialized> {
        let started = self.clock().now();
        let materialized = engine
            .materialize(
                &self.offline_root()?,
                &view.table()?,
                interval,
                self.write_options(),
                keep_latest,
            )
            .await?;
        let stats = &materialized.stats;
        tracing::info!(view = %stats.view, version = stats.version, rows = stats.rows_in_interval, "materialized");
        let details = serde_json::to_value(stats).expect("stats serialize to JSON");
        self.record_run("materialize", started, details).await?;
        Ok(materialized)
    }

    /// Starts a training-set export.
    pub fn export(&self) -> ExportBuilder<'_> {
        ExportBuilder {
            store: self,
            spine: None,
            features: Vec::new(),
            service: None,
            full_names: false,
            timestamp_column: "event_timestamp".to_string(),
            materialize_missing: false,
            memory_budget: 1 << 30,
        }
    }

    /// Where the offline tables live (`offline.path`: a folder, or `s3://bucket/prefix`).
    pub(crate) fn offline_root(&self) -> Result<Location> {
        Ok(Location::open(
            &self.config().offline.path,
            self.root(),
            &self.storage_options(),
        )?)
    }

    /// The `[storage]` settings, for engines and offline roots.
    pub(crate) fn storage_options(&self) -> StorageOptions {
        StorageOptions::new(
            self.config()
                .storage
                .settings()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        )
    }

    /// A batch engine for this repository.
    pub(crate) fn new_engine(&self) -> quiver_offline::OfflineEngine {
        quiver_offline::OfflineEngine::new(self.root()).with_storage(self.storage_options())
    }

    /// The clock and limits of an offline write, from the config.
    pub(crate) fn write_options(&self) -> WriteOptions {
        let now = self.clock().now().timestamp_micros();
        WriteOptions {
            now,
            retention: self.config().retention_micros(),
            max_event_time: now.saturating_add(self.config().max_future_skew_micros()),
        }
    }

    /// Deletes files of superseded snapshots older than `retention` (µs; default
    /// `offline.retention`, `Some(0)` for all of them) and files left by crashed runs,
    /// from the tables of the named views (default: all) at their current versions.
    pub async fn vacuum(
        &self,
        views: &[String],
        retention: Option<i64>,
    ) -> Result<Vec<VacuumReport>> {
        let catalog = self.catalog().await?;
        let views = select_views(&catalog, views)?;
        let retention = retention.unwrap_or_else(|| self.config().retention_micros());
        let now = self.clock().now().timestamp_micros();
        let mut out = Vec::new();
        for view in views {
            let table = OfflineTable::new(&self.offline_root()?, view.name(), view.version);
            let stats = table.vacuum(retention, now).await?;
            out.push(VacuumReport {
                view: view.name().to_string(),
                version: view.version,
                stats,
            });
        }
        Ok(out)
    }
}

/// What a vacuum did to one view version's table.
#[derive(Debug, Clone, Serialize)]
pub struct VacuumReport {
    pub view: String,
    pub version: u32,
    #[serde(flatten)]
    pub stats: quiver_offline::table::VacuumStats,
}

/// What one view's materialization did.
#[derive(Debug, Clone, Serialize)]
pub struct MaterializeReport {
    pub offline: MaterializeStats,
    /// `None` for views with `ONLINE false`.
    pub online: Option<crate::online::OnlineWrite>,
}

fn check_interval(start: Option<DateTime<Utc>>, end: DateTime<Utc>) -> Result<()> {
    match start {
        Some(start) if start > end => Err(Error::EmptyInterval {
            start: rfc3339(start),
            end: rfc3339(end),
        }),
        _ => Ok(()),
    }
}

fn select_views<'c>(catalog: &'c Catalog, names: &[String]) -> Result<Vec<&'c CatalogView>> {
    let views: Vec<&CatalogView> = if names.is_empty() {
        // On-demand views have nothing to materialize.
        catalog
            .views
            .values()
            .filter(|v| !v.is_on_demand())
            .collect()
    } else {
        let mut views: Vec<&CatalogView> = Vec::new();
        for name in names {
            let view = catalog.view(name)?;
            if view.is_on_demand() {
                return Err(view.no_rows("materialize"));
            }
            if !views.iter().any(|v| v.name() == view.name()) {
                views.push(view); // a view named twice runs once
            }
        }
        views
    };
    if views.is_empty() {
        return Err(Error::NothingToMaterialize);
    }
    Ok(views)
}

/// Where the spine comes from.
#[derive(Debug, Clone)]
pub enum Spine {
    File(PathBuf),
    Sql(String),
    Batch(RecordBatch),
}

/// Builds and runs a training-set export.
///
/// ```no_run
/// # async fn demo(store: quiver::FeatureStore) -> quiver::Result<()> {
/// let training = store
///     .export()
///     .with_spine_file("spine.parquet")
///     .with_features(["driver_hourly_stats:conv_rate", "driver_hourly_stats:quality"])
///     .with_full_feature_names(true)
///     .execute()
///     .await?;
/// println!("{} rows", training.batch.num_rows());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ExportBuilder<'a> {
    store: &'a FeatureStore,
    spine: Option<Spine>,
    features: Vec<String>,
    service: Option<String>,
    full_names: bool,
    timestamp_column: String,
    materialize_missing: bool,
    memory_budget: usize,
}

/// The result of an export.
#[derive(Debug, Clone)]
pub struct Export {
    pub batch: RecordBatch,
    pub summary: ExportSummary,
}

/// What an export did, as recorded in the registry.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub rows: usize,
    /// `view:version` of every view joined.
    pub views: Vec<String>,
    pub features: Vec<String>,
    pub spine: String,
    /// SHA-256 of the spine file, when the spine is a file.
    pub spine_sha256: Option<String>,
    pub output: Option<PathBuf>,
    pub materialized: Vec<MaterializeStats>,
    pub seconds: f64,
}

impl<'a> ExportBuilder<'a> {
    pub fn with_spine_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.spine = Some(Spine::File(path.into()));
        self
    }

    pub fn with_spine_sql(mut self, sql: impl Into<String>) -> Self {
        self.spine = Some(Spine::Sql(sql.into()));
        self
    }

    pub fn with_spine(mut self, batch: RecordBatch) -> Self {
        self.spine = Some(Spine::Batch(batch));
        self
    }

    /// Features as `view:feature` (or `view:*`).
    pub fn with_features<I, S>(mut self, features: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.features.extend(features.into_iter().map(Into::into));
        self
    }

    pub fn with_service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// Name output columns `view__feature` instead of `feature`.
    pub fn with_full_feature_names(mut self, full: bool) -> Self {
        self.full_names = full;
        self
    }

    /// The spine's timestamp column (default `event_timestamp`).
    pub fn with_timestamp_column(mut self, name: impl Into<String>) -> Self {
        self.timestamp_column = name.into();
        self
    }

    /// Materialize what the offline tables lack instead of failing.
    pub fn with_materialize(mut self, materialize: bool) -> Self {
        self.materialize_missing = materialize;
        self
    }

    /// Bytes of feature history held at once (default 1 GiB); more history is joined in
    /// several passes.
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Runs the export and returns the training set.
    pub async fn execute(self) -> Result<Export> {
        self.run(None).await
    }

    /// Runs the export and writes it as Parquet to `out`.
    pub async fn write(self, out: impl AsRef<Path>) -> Result<Export> {
        let out = out.as_ref().to_path_buf();
        self.run(Some(out)).await
    }

    async fn run(self, out: Option<PathBuf>) -> Result<Export> {
        if let Some(out) = &out {
            let out = self.store.root().join(out);
            OutputFormat::of(&out)?;
            if let Some(Spine::File(spine)) = &self.spine
                && same_file(&out, &self.store.root().join(spine))
            {
                return Err(Error::OutputIsSpine {
                    path: out.display().to_string(),
                });
            }
        }
        let started_clock = Instant::now();
        let started = self.store.clock().now();
        let catalog = self.store.catalog().await?;
        let selected =
            catalog.resolve_features(self.service.as_deref(), &self.features, Purpose::Offline)?;
        // The views whose tables are read: those selected and on-demand views' inputs.
        let mut views: Vec<&CatalogView> = Vec::new();
        for (view, _) in &selected {
            views.push(view);
            for input in view.view.schema.on_demand.iter().flat_map(|s| &s.inputs) {
                if input.kind == OnDemandInputKind::View {
                    views.push(catalog.view(&input.name)?);
                }
            }
        }
        let engine = match &self.spine {
            Some(Spine::Sql(_)) => catalog.engine_with_all_sources(self.store).await?,
            _ => catalog.engine(self.store, &views).await?,
        };
        let (spine, spine_label, spine_sha256) = match &self.spine {
            None => return Err(Error::NoSpine),
            Some(Spine::File(path)) => {
                let path = self.store.root().join(path);
                let batch = engine
                    .read_spine_file(&path, &self.timestamp_column)
                    .await?;
                (batch, path.display().to_string(), file_sha256(&path))
            }
            Some(Spine::Sql(sql)) => (
                engine.read_spine_sql(sql).await?,
                format!("sql: {sql}"),
                None,
            ),
            Some(Spine::Batch(batch)) => (batch.clone(), "in-memory batch".to_string(), None),
        };
        let times = spine_times(&spine, &self.timestamp_column)?;
        let min_t = times.iter().flatten().min().copied();
        let max_t = times.iter().flatten().max().copied();

        let mut steps = Vec::new();
        let mut materialized = Vec::new();
        let mut output_names: Vec<(String, String)> = Vec::new();
        let mut read_views: Vec<String> = Vec::new();
        let mut read = |view: &CatalogView| {
            let label = format!("{}:{}", view.name(), view.version);
            if !read_views.contains(&label) {
                read_views.push(label);
            }
        };
        let span = min_t.zip(max_t);
        for (view, features) in &selected {
            read(view);
            let features: Vec<(String, String)> = features
                .iter()
                .map(|f| {
                    let output = if self.full_names {
                        format!("{}__{f}", view.name())
                    } else {
                        f.clone()
                    };
                    output_names.push((output.clone(), format!("{}:{f}", view.name())));
                    (f.clone(), output)
                })
                .collect();
            let Some(program) = view.on_demand_program().await? else {
                let join = self
                    .join_of(&engine, view, features, span, &mut materialized)
                    .await?;
                steps.push(Step::Join {
                    join,
                    internal: false,
                });
                continue;
            };
            // An on-demand view: its input views joined under internal names, then its
            // program over those and the spine's request columns.
            let schema =
                view.view.schema.on_demand.as_ref().ok_or_else(|| {
                    Error::Task(format!("`{}` has no on-demand schema", view.name()))
                })?;
            let mut sources = Vec::with_capacity(schema.inputs.len());
            for input in &schema.inputs {
                let mut columns = Vec::with_capacity(input.columns.len());
                match input.kind {
                    OnDemandInputKind::Request => {
                        for column in &input.columns {
                            if spine.column_by_name(&column.name).is_none() {
                                return Err(Error::SpineLacksRequestField {
                                    field: column.name.clone(),
                                    source_name: input.name.clone(),
                                    view: view.name().to_string(),
                                });
                            }
                            columns.push(column.name.clone());
                        }
                    }
                    OnDemandInputKind::View => {
                        let input_view = catalog.view(&input.name)?;
                        read(input_view);
                        let internal: Vec<(String, String)> = input
                            .columns
                            .iter()
                            .map(|c| {
                                let name = format!(
                                    "__on_demand__{}__{}__{}",
                                    view.name(),
                                    input.name,
                                    c.name
                                );
                                (c.name.clone(), name)
                            })
                            .collect();
                        columns.extend(internal.iter().map(|(_, name)| name.clone()));
                        let join = self
                            .join_of(&engine, input_view, internal, span, &mut materialized)
                            .await?;
                        steps.push(Step::Join {
                            join,
                            internal: true,
                        });
                    }
                }
                sources.push(columns);
            }
            steps.push(Step::OnDemand {
                program,
                sources,
                features,
            });
        }
        check_output_names(&spine, &output_names, self.full_names)?;
        let times = Arc::new(spine_times(&spine, &self.timestamp_column)?);
        let mut fields: Vec<Arc<Field>> = spine.schema().fields().iter().cloned().collect();
        let mut columns: Vec<ArrayRef> = spine.columns().to_vec();
        let mut internal_columns: HashMap<String, ArrayRef> = HashMap::new();
        let mut joined = join_all(&spine, &times, &steps, self.memory_budget)
            .await?
            .into_iter();
        for step in &steps {
            let outputs: Vec<(String, ArrayRef)> = match step {
                Step::Join { join, internal } => {
                    let names = match join {
                        Join::Rows(r) => &r.features,
                        Join::Window(r) => &r.features,
                    };
                    let arrays = joined
                        .next()
                        .ok_or_else(|| Error::Task("a join's result is missing".to_string()))?;
                    let named = names.iter().map(|(_, output)| output.clone()).zip(arrays);
                    if *internal {
                        internal_columns.extend(named);
                        continue;
                    }
                    named.collect()
                }
                Step::OnDemand {
                    program,
                    sources,
                    features,
                } => {
                    let arrays = program.evaluate(spine.num_rows(), |input, column| {
                        let name = &sources[input][column];
                        internal_columns
                            .get(name)
                            .or_else(|| spine.column_by_name(name))
                            .cloned()
                            .ok_or_else(|| quiver_offline::Error::TableIo {
                                path: name.clone(),
                                message: "an on-demand input column is missing".to_string(),
                            })
                    })?;
                    features
                        .iter()
                        .map(|(feature, output)| {
                            let index = program
                                .outputs
                                .iter()
                                .position(|(name, _)| name == feature)
                                .ok_or_else(|| Error::Task(format!("no output `{feature}`")))?;
                            Ok((output.clone(), Arc::clone(&arrays[index])))
                        })
                        .collect::<Result<_>>()?
                }
            };
            for (output, array) in outputs {
                fields.push(Arc::new(Field::new(
                    output,
                    array.data_type().clone(),
                    true,
                )));
                columns.push(array);
            }
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::Offline(quiver_offline::Error::DataFusion(e.into())))?;
        if let Some(out) = &out {
            let path = self.store.root().join(out);
            write_output(&path, &batch)?;
        }
        let summary = ExportSummary {
            rows: batch.num_rows(),
            views: read_views,
            features: output_names.iter().map(|(_, r)| r.clone()).collect(),
            spine: spine_label,
            spine_sha256,
            output: out,
            materialized,
            seconds: started_clock.elapsed().as_secs_f64(),
        };
        let details = serde_json::to_value(&summary).expect("summaries serialize to JSON");
        self.store.record_run("export", started, details).await?;
        Ok(Export { batch, summary })
    }
}

/// One view to join onto the spine.
#[derive(Clone)]
enum Join {
    Rows(ViewRequest),
    Window(WindowRequest),
}

impl Join {
    /// Memory a one-pass join of this view takes, roughly.
    fn estimated_bytes(&self) -> u64 {
        match self {
            Join::Rows(r) => r.estimated_bytes(),
            Join::Window(r) => r.estimated_bytes(),
        }
    }

    /// The view's features for every spine row, in spine order.
    async fn run(
        &self,
        spine: &RecordBatch,
        times: &Arc<Vec<Option<i64>>>,
        memory_budget: usize,
    ) -> quiver_offline::Result<Vec<ArrayRef>> {
        match self {
            Join::Rows(r) => join_view(spine, times, r, memory_budget).await,
            Join::Window(r) => join_windows(spine, times, r, memory_budget).await,
        }
    }
}

/// The joins of `steps`, in order. When their histories fit `memory_budget` together,
/// each runs on a task of its own, so that their sequential parts (grouping the spine's
/// keys, the per-row searches) use different cores while the others read; otherwise one
/// after the other, each with the whole budget (fewer passes over its files).
async fn join_all(
    spine: &RecordBatch,
    times: &Arc<Vec<Option<i64>>>,
    steps: &[Step],
    memory_budget: usize,
) -> Result<Vec<Vec<ArrayRef>>> {
    let joins: Vec<Join> = steps
        .iter()
        .filter_map(|step| match step {
            Step::Join { join, .. } => Some(join.clone()),
            Step::OnDemand { .. } => None,
        })
        .collect();
    let together: u64 = joins.iter().map(Join::estimated_bytes).sum();
    if together > memory_budget as u64 {
        let mut joined = Vec::with_capacity(joins.len());
        for join in &joins {
            joined.push(join.run(spine, times, memory_budget).await?);
        }
        return Ok(joined);
    }
    // Dropping the set (when a task panicked) aborts the joins still running.
    let mut tasks = tokio::task::JoinSet::new();
    for (index, join) in joins.into_iter().enumerate() {
        let spine = spine.clone();
        let times = Arc::clone(times);
        tasks.spawn(async move { (index, join.run(&spine, &times, memory_budget).await) });
    }
    let mut results: Vec<Option<quiver_offline::Result<Vec<ArrayRef>>>> =
        (0..tasks.len()).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (index, arrays) = done.map_err(|e| Error::Task(format!("a join failed: {e}")))?;
        results[index] = Some(arrays);
    }
    // The first failing view in the request's order is the error reported, whichever
    // finished first: the same request always gets the same message.
    let mut joined = Vec::with_capacity(results.len());
    for result in results.into_iter().flatten() {
        joined.push(result?);
    }
    Ok(joined)
}

/// What an export computes, in output order.
enum Step {
    /// A view joined onto the spine; `internal`: an on-demand view's input, not output.
    Join { join: Join, internal: bool },
    /// An on-demand view: its program, where each of its input columns is (an internal
    /// join's output or a spine column), and its (feature, output name) pairs.
    OnDemand {
        program: Arc<OnDemandProgram>,
        sources: Vec<Vec<String>>,
        features: Vec<(String, String)>,
    },
}

impl ExportBuilder<'_> {
    /// The join of `view`'s `(feature, output name)` pairs onto a spine spanning `span`
    /// (min and max time), after materializing what its table lacks if asked to.
    async fn join_of(
        &self,
        engine: &quiver_offline::OfflineEngine,
        view: &CatalogView,
        features: Vec<(String, String)>,
        span: Option<(i64, i64)>,
        materialized: &mut Vec<MaterializeStats>,
    ) -> Result<Join> {
        let ttl = view.view.view.ttl.map(|t| t.micros());
        // How far back a spine row looks: its TTL, or an aggregation view's longest
        // window plus its hop (the window's start is hop-aligned).
        let lookback = match view.window()? {
            Some(program) => program
                .windows
                .iter()
                .map(|w| w.length.saturating_add(w.hop))
                .max(),
            None => ttl,
        };
        let table = OfflineTable::new(&self.store.offline_root()?, view.name(), view.version);
        if let Some((min_t, max_t)) = span {
            let needed = Interval {
                start: lookback.map(|l| min_t.saturating_sub(l)),
                end: max_t,
            };
            if !table.snapshot().await?.covers(needed.start, needed.end) {
                if !self.materialize_missing {
                    return Err(Error::OfflineTableIncomplete {
                        view: view.name().to_string(),
                        version: view.version,
                        command: materialize_command(view.name(), needed),
                    });
                }
                materialized.push(
                    self.store
                        .materialize_view(engine, view, needed, false)
                        .await?
                        .stats,
                );
            }
        }
        // The files of one snapshot: commits made while the export reads do not
        // disturb it.
        let files = table.snapshot().await?.files();
        let columns = view.columns();
        Ok(match view.window()? {
            Some(program) => Join::Window(WindowRequest {
                view: view.name().to_string(),
                program: Arc::clone(program),
                columns: columns.clone(),
                files,
                features,
            }),
            None => Join::Rows(ViewRequest {
                view: view.name().to_string(),
                files,
                keys: columns.keys.clone(),
                timestamp: columns.timestamp.clone(),
                features,
                ttl_micros: ttl,
            }),
        })
    }
}

fn check_output_names(
    spine: &RecordBatch,
    names: &[(String, String)],
    full_names: bool,
) -> Result<()> {
    for (i, (name, reference)) in names.iter().enumerate() {
        if let Some((_, other)) = names[..i].iter().find(|(n, _)| n == name) {
            return Err(Error::DuplicateFeatureName {
                name: name.clone(),
                first: other.clone(),
                second: reference.clone(),
                full_names,
            });
        }
        if spine.schema().column_with_name(name).is_some() {
            return Err(Error::FeatureNameClashesWithSpine { name: name.clone() });
        }
    }
    Ok(())
}

fn materialize_command(view: &str, needed: Interval) -> String {
    let ts = |micros: i64| {
        DateTime::from_timestamp_micros(micros)
            .map(rfc3339)
            .unwrap_or_default()
    };
    match needed.start {
        Some(start) => format!(
            "quiver materialize --start {} --end {} {view}",
            ts(start),
            ts(needed.end)
        ),
        None => format!("quiver materialize --end {} {view}", ts(needed.end)),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Whether two paths name the same file (either may not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => std::path::absolute(a).ok() == std::path::absolute(b).ok(),
    }
}

fn file_sha256(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}
