//! [`OfflineEngine`]: one DataFusion session per feature repository, with every source
//! registered as a table, so view queries plan exactly as they will run.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{
    CsvReadOptions, DataFrame, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext,
};
use quiver_core::model::{Column, Entity, FeatureView, KeyType, Source, ViewSchema};

use crate::materialize::{self, Materialized, PushLog, PushStats, WriteOptions};
use crate::normalize::{ViewColumns, normalize};
use crate::source_order::{ViewRows, scan_session};
use crate::storage::{Location, StorageOptions};
use crate::table::{Interval, OfflineTable};
use crate::window::WindowProgram;
use crate::{Error, Result, source};

/// Memory the materialization sort may use before it spills to disk.
const SORT_MEMORY_BYTES: usize = 1 << 30;

/// One view version's offline table, as the engine writes it: the view, the query whose
/// rows the table holds (the view's query, or an aggregation view's event query), the
/// table's columns and, for an aggregation view, its compiled program (for tiles).
#[derive(Debug, Clone, Copy)]
pub struct ViewTable<'a> {
    pub view: &'a FeatureView,
    pub version: u32,
    pub query: &'a str,
    pub columns: &'a ViewColumns,
    pub window: Option<&'a Arc<WindowProgram>>,
}

/// The batch engine of one feature repository.
pub struct OfflineEngine {
    ctx: SessionContext,
    /// One partition, so scans keep source order (ties are broken by it) and a memory
    /// limit, so sorts spill instead of growing without bound.
    ordered: SessionContext,
    repo_root: PathBuf,
    /// How sources and tables on object storage are reached.
    storage: StorageOptions,
}

impl std::fmt::Debug for OfflineEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineEngine")
            .field("repo_root", &self.repo_root)
            .finish()
    }
}

/// The one-partition session, with `sort_memory` bytes for its sorts. A sort reserves
/// memory for merging what it spills: DataFusion's 10 MiB, less when that would be more
/// than an eighth of the whole (a materialization's sorts share it).
fn ordered_session(sort_memory: usize) -> SessionContext {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(sort_memory, 1.0)
        .build_arc()
        .expect("a runtime with a memory limit and the default disk manager always builds");
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_sort_spill_reservation_bytes((sort_memory / 8).min(10 << 20));
    SessionContext::new_with_config_rt(config, runtime)
}

impl OfflineEngine {
    /// An engine whose relative source paths resolve against `repo_root`.
    pub fn new(repo_root: impl Into<PathBuf>) -> Self {
        OfflineEngine {
            ctx: SessionContext::new(),
            ordered: ordered_session(SORT_MEMORY_BYTES),
            repo_root: repo_root.into(),
            storage: StorageOptions::default(),
        }
    }

    /// This engine with `bytes` of memory for sorting instead of 1 GiB (beyond it, sorts
    /// spill to disk); call it before registering sources.
    pub fn with_sort_memory(mut self, bytes: usize) -> Self {
        self.ordered = ordered_session(bytes);
        self
    }

    /// This engine with the `[storage]` settings for `s3://` sources.
    pub fn with_storage(mut self, storage: StorageOptions) -> Self {
        self.storage = storage;
        self
    }

    /// Makes a location on object storage (an offline root, a source) readable by this
    /// engine's sessions.
    fn reach(&self, location: &Location) -> Result<()> {
        location.register(&self.ctx)?;
        location.register(&self.ordered)
    }

    /// The DataFusion session (sources are registered in it under their names).
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// Registers a source as a table named after it and checks its time columns.
    pub async fn register_source(&self, source: &Source) -> Result<()> {
        if crate::storage::is_object_url(&source.path) {
            self.reach(&Location::open(
                &source.path,
                &self.repo_root,
                &self.storage,
            )?)?;
        }
        source::register(&self.ctx, &self.repo_root, source).await?;
        let provider = self.ctx.table_provider(source.name.as_str()).await?;
        self.ordered
            .register_table(source.name.as_str(), Arc::clone(&provider))?;
        let schema = provider.schema();
        if schema.fields().is_empty() {
            return Err(Error::EmptySource {
                source_name: source.name.clone(),
                path: source.path.clone(),
            });
        }
        let clauses = [
            ("TIMESTAMP", Some(&source.timestamp)),
            ("CREATED", source.created.as_ref()),
        ];
        for (clause, column) in clauses {
            let Some(column) = column else { continue };
            let field = schema
                .field_with_name(column)
                .map_err(|_| Error::MissingSourceColumn {
                    source_name: source.name.clone(),
                    column: column.clone(),
                    clause,
                    suggestion: closest(column, schema.fields().iter().map(|f| f.name().as_str())),
                })?;
            if !is_time_type(field.data_type()) {
                return Err(Error::BadTimestampType {
                    source_name: source.name.clone(),
                    column: column.clone(),
                    clause,
                    data_type: field.data_type().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Plans a view's query and splits its output into keys, timestamps and features.
    ///
    /// `entities` are the view's entities in declaration order; `primary` is the first
    /// source its query reads, whose TIMESTAMP (and CREATED) columns the view must output.
    pub async fn view_schema(
        &self,
        view: &FeatureView,
        entities: &[&Entity],
        primary: &Source,
    ) -> Result<ViewSchema> {
        if view.is_windowed() {
            return crate::window::spec::analyze(&self.ctx, view, entities, primary).await;
        }
        let plan = self
            .ctx
            .state()
            .create_logical_plan(&view.query)
            .await
            .map_err(|e| Error::UnplannableView {
                view: view.name.clone(),
                message: e.strip_backtrace().to_string(),
            })?;
        let fields: Vec<&Field> = plan.schema().fields().iter().map(|f| f.as_ref()).collect();
        let mut seen = HashSet::new();
        for field in &fields {
            if !seen.insert(field.name()) {
                return Err(Error::DuplicateColumn {
                    view: view.name.clone(),
                    column: field.name().clone(),
                });
            }
        }
        let find = |name: &str| fields.iter().find(|f| f.name() == name).copied();
        let mut used = HashSet::new();

        let mut keys = Vec::new();
        for entity in entities {
            for key in &entity.keys {
                let field = find(&key.name).ok_or_else(|| Error::MissingKeyColumn {
                    view: view.name.clone(),
                    entity: entity.name.clone(),
                    key: key.name.clone(),
                })?;
                if !key_type_accepts(key.key_type, field.data_type()) {
                    return Err(Error::KeyTypeMismatch {
                        view: view.name.clone(),
                        entity: entity.name.clone(),
                        key: key.name.clone(),
                        expected: key.key_type.sql_name(),
                        found: field.data_type().to_string(),
                    });
                }
                used.insert(key.name.as_str());
                keys.push(column(field));
            }
        }

        let time_column = |name: &str, clause: &'static str| -> Result<Column> {
            find(name)
                .map(column)
                .ok_or_else(|| Error::MissingTimeColumn {
                    view: view.name.clone(),
                    column: name.to_string(),
                    clause,
                    source_name: primary.name.clone(),
                })
        };
        let timestamp = time_column(&primary.timestamp, "TIMESTAMP")?;
        used.insert(primary.timestamp.as_str());
        let created = match &primary.created {
            Some(name) => {
                used.insert(name.as_str());
                Some(time_column(name, "CREATED")?)
            }
            None => None,
        };

        let features: Vec<Column> = fields
            .iter()
            .filter(|f| !used.contains(f.name().as_str()))
            .map(|f| column(f))
            .collect();
        if features.is_empty() {
            return Err(Error::NoFeatures {
                view: view.name.clone(),
            });
        }
        Ok(ViewSchema {
            keys,
            timestamp: Some(timestamp),
            created,
            features,
            window: None,
            on_demand: None,
        })
    }
}

impl OfflineEngine {
    /// Materializes `[interval.start, interval.end]` (inclusive) of one view version into
    /// its offline table under `offline_root`, with the rows pushed into its sources and
    /// into the view merged in. The view's sources must be registered. With
    /// `keep_latest` (an online write follows), a row view's latest row per key in the
    /// interval is kept on the way ([`Materialized::latest`]).
    pub async fn materialize(
        &self,
        offline_root: &Location,
        table: &ViewTable<'_>,
        interval: Interval,
        options: WriteOptions,
        keep_latest: bool,
    ) -> Result<Materialized> {
        self.reach(offline_root)?;
        let view = table.view;
        let plan = |ctx: SessionContext| async move {
            let df = ctx
                .sql(table.query)
                .await
                .map_err(|e| plan_error(&view.name, e))?;
            normalize(df, table.columns)
        };
        let fresh = ViewRows {
            one_partition: plan(self.ordered.clone()).await?,
            per_core: plan(scan_session(&self.ordered, materialize::writer_count())).await?,
        };
        let mut source_pushes = Vec::new();
        for source in &view.sources {
            let log = OfflineTable::for_source(offline_root, source);
            if let Some(rows) = read_source_log(&self.ordered, &log).await? {
                source_pushes.push(self.query_with(table, source, rows).await?);
            }
        }
        materialize::materialize(
            &self.ordered,
            &OfflineTable::new(offline_root, &view.name, table.version),
            &view.name,
            fresh,
            source_pushes,
            table.columns,
            table.window,
            interval,
            options,
            // Aggregation views keep entity states online, written from their tiles.
            keep_latest && table.window.is_none(),
        )
        .await
    }

    /// Merges pushed rows (in the view's canonical shape, see [`Self::view_rows`]) into a
    /// view version's offline table and keeps them in the push log `log` names; see
    /// [`crate::materialize`] for how they are kept.
    #[allow(clippy::too_many_arguments)]
    pub async fn push(
        &self,
        offline_root: &Location,
        table: &ViewTable<'_>,
        rows: RecordBatch,
        log: PushLog,
        options: WriteOptions,
    ) -> Result<PushStats> {
        self.reach(offline_root)?;
        let offline = OfflineTable::new(offline_root, &table.view.name, table.version);
        materialize::push(
            &self.ordered,
            &offline,
            table.columns,
            table.window,
            rows,
            log,
            options,
        )
        .await
    }

    /// Appends rows pushed into a source (in the source's schema) to its push log, which
    /// every later materialization of a view reading the source merges.
    pub async fn push_source(
        &self,
        offline_root: &Location,
        source: &str,
        rows: &RecordBatch,
        options: WriteOptions,
    ) -> Result<()> {
        self.reach(offline_root)?;
        let log = OfflineTable::for_source(offline_root, source);
        materialize::push_source_log(&self.ordered, &log, rows, options).await
    }

    /// The Arrow schema of a registered source.
    pub async fn source_schema(&self, source: &str) -> Result<SchemaRef> {
        Ok(self.ctx.table_provider(source).await?.schema())
    }

    /// Whether a view's query aggregates (`GROUP BY`, aggregate or window functions): its
    /// rows depend on many source rows, so rows pushed into a source cannot be run
    /// through it alone.
    pub async fn view_aggregates(&self, view: &FeatureView) -> Result<bool> {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        use datafusion::logical_expr::LogicalPlan;
        let plan = self
            .ctx
            .state()
            .create_logical_plan(&view.query)
            .await
            .map_err(|e| plan_error(&view.name, e))?;
        let mut aggregates = false;
        plan.apply(|node| {
            if matches!(node, LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)) {
                aggregates = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(aggregates)
    }

    /// Runs a view's query with `rows` standing in for the source `source` (its other
    /// sources read as registered) and returns the result in the view's canonical shape,
    /// without rows whose keys or event time are null: what a materialization of those
    /// rows would store.
    pub async fn view_rows(
        &self,
        table: &ViewTable<'_>,
        source: &str,
        rows: RecordBatch,
    ) -> Result<RecordBatch> {
        let view = table.view;
        let df = self.query_with(table, source, vec![rows]).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let failed = |message: String| Error::MaterializeFailed {
            view: view.name.clone(),
            message,
        };
        let batches = df
            .collect()
            .await
            .map_err(|e| failed(e.strip_backtrace().to_string()))?;
        arrow::compute::concat_batches(&schema, &batches).map_err(|e| failed(e.to_string()))
    }

    /// The table's query, normalized, with `rows` standing in for `source`.
    async fn query_with(
        &self,
        table: &ViewTable<'_>,
        source: &str,
        rows: Vec<RecordBatch>,
    ) -> Result<DataFrame> {
        let (view, columns) = (table.view, table.columns);
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        for name in &view.sources {
            if name == source {
                let schema = match rows.first() {
                    Some(batch) => batch.schema(),
                    None => self.source_schema(source).await?,
                };
                let table = datafusion::datasource::MemTable::try_new(schema, vec![rows.clone()])?;
                ctx.register_table(name.as_str(), Arc::new(table))?;
            } else {
                ctx.register_table(name.as_str(), self.ctx.table_provider(name.as_str()).await?)?;
            }
        }
        let df = ctx
            .sql(table.query)
            .await
            .map_err(|e| plan_error(&view.name, e))?;
        Ok(normalize(df, columns)?.filter(materialize::not_null_identity(columns))?)
    }
}

/// Every row of a source's push log (read under its lock, so a compaction cannot remove
/// a file midway), or `None` when nothing was pushed into the source.
async fn read_source_log(
    ordered: &SessionContext,
    log: &OfflineTable,
) -> Result<Option<Vec<RecordBatch>>> {
    if log.local_path().is_some_and(|dir| !dir.exists()) {
        return Ok(None);
    }
    let lock = log.lock().await?;
    let manifest = log.manifest_or_empty(&lock);
    if manifest.pushed.is_empty() {
        return Ok(None);
    }
    let df = materialize::read_push_log(ordered, log, &manifest.pushed).await?;
    Ok(Some(df.collect().await?))
}

fn plan_error(view: &str, e: datafusion::error::DataFusionError) -> Error {
    Error::UnplannableView {
        view: view.to_string(),
        message: e.strip_backtrace().to_string(),
    }
}

impl OfflineEngine {
    /// Reads a spine file (Parquet, CSV with a header, or newline-delimited JSON)
    /// keeping its row order. Text formats carry no types, so the spine's timestamp
    /// column (`timestamp_column`, when present) comes back as `Timestamp(µs, UTC)`, the
    /// type a Parquet spine usually has; other columns keep what was inferred.
    pub async fn read_spine_file(
        &self,
        path: &Path,
        timestamp_column: &str,
    ) -> Result<RecordBatch> {
        let location = path.display().to_string();
        let unreadable = |e: datafusion::error::DataFusionError| Error::InvalidSpine {
            message: format!("cannot read {location}: {}", e.strip_backtrace()),
        };
        if !path.is_file() {
            return Err(Error::InvalidSpine {
                message: format!("{location} does not exist or is not a file"),
            });
        }
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let (df, text) = match extension.as_str() {
            "csv" => (
                self.ordered
                    .read_csv(
                        location.as_str(),
                        CsvReadOptions::new().file_extension(".csv"),
                    )
                    .await
                    .map_err(unreadable)?,
                true,
            ),
            "json" | "jsonl" | "ndjson" => (
                self.ordered
                    .read_json(
                        location.as_str(),
                        JsonReadOptions::default().file_extension(&format!(".{extension}")),
                    )
                    .await
                    .map_err(unreadable)?,
                true,
            ),
            "parquet" | "pq" => (
                self.ordered
                    .read_parquet(
                        location.as_str(),
                        ParquetReadOptions::default().file_extension(""),
                    )
                    .await
                    .map_err(unreadable)?,
                false,
            ),
            _ => {
                return Err(Error::InvalidSpine {
                    message: format!(
                        "{location}: a spine is a .parquet, .csv or .json (newline-delimited) file"
                    ),
                });
            }
        };
        let batch = collect_one(df).await.map_err(unreadable)?;
        if !text {
            return Ok(batch);
        }
        let Ok(index) = batch.schema().index_of(timestamp_column) else {
            return Ok(batch);
        };
        let times = crate::export::spine_times(&batch, timestamp_column)?;
        let array = arrow::array::TimestampMicrosecondArray::from(times).with_timezone("UTC");
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[index] = Field::new(timestamp_column, crate::normalize::timestamp_type(), true);
        let mut columns = batch.columns().to_vec();
        columns[index] = Arc::new(array);
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
            .map_err(|e| Error::DataFusion(e.into()))
    }

    /// Runs a query over the registered sources and returns its rows as a spine. Only a
    /// query is allowed: no DDL, DML or statements (`COPY … TO`, `CREATE …`, `SET …`).
    pub async fn read_spine_sql(&self, sql: &str) -> Result<RecordBatch> {
        let failed = |e: datafusion::error::DataFusionError| Error::InvalidSpine {
            message: format!("the spine query: {}", e.strip_backtrace()),
        };
        let options = datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .ordered
            .sql_with_options(sql, options)
            .await
            .map_err(failed)?;
        collect_one(df).await.map_err(failed)
    }
}

async fn collect_one(df: datafusion::prelude::DataFrame) -> datafusion::error::Result<RecordBatch> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

fn column(field: &Field) -> Column {
    Column {
        name: field.name().clone(),
        data_type: field.data_type().to_string(),
        nullable: field.is_nullable(),
    }
}

fn is_time_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
    )
}

fn key_type_accepts(key_type: KeyType, data_type: &DataType) -> bool {
    match key_type {
        KeyType::Int64 | KeyType::Int32 => data_type.is_integer(),
        KeyType::String => matches!(
            data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        KeyType::Bytes => matches!(
            data_type,
            DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        ),
    }
}

fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    quiver_core::diagnostic::closest(name, candidates)
}
