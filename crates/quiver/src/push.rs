//! Pushing rows (`POST /push`, Feast's push API): into a feature view (the rows are
//! already in the view's shape) or into a source (every view that reads the source gets
//! what its query makes of the rows), then to the online store (newer-wins), the offline
//! table (visible to later exports, kept by later materializations), or both. Every
//! value is checked first: one invalid row rejects the whole request and nothing is
//! written.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::DateTime;
use quiver_core::diagnostic::closest;
use quiver_offline::normalize::timestamp_type;
use quiver_offline::{PushLog, PushStats};
use quiver_online::WriteStats;
use serde::Serialize;

use crate::catalog::CatalogView;
use crate::{Error, FeatureStore, Result};

/// Where pushed rows go: Feast's `"to"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushTo {
    #[default]
    Online,
    Offline,
    OnlineAndOffline,
}

impl PushTo {
    pub fn online(self) -> bool {
        matches!(self, PushTo::Online | PushTo::OnlineAndOffline)
    }

    pub fn offline(self) -> bool {
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

/// What a push target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushTargetKind {
    FeatureView,
    Source,
}

/// The columns a push into a target takes.
#[derive(Debug, Clone)]
pub struct PushSchema {
    pub target: String,
    pub kind: PushTargetKind,
    pub columns: Vec<PushColumn>,
}

/// One column of a [`PushSchema`].
#[derive(Debug, Clone)]
pub struct PushColumn {
    pub name: String,
    pub data_type: DataType,
    /// Whether a push must give the column (a view's `created` column may be left out).
    pub required: bool,
}

impl PushSchema {
    pub fn column(&self, name: &str) -> Option<&PushColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The error for a column the target does not have.
    pub fn unknown_column(&self, name: &str) -> Error {
        let kind = match self.kind {
            PushTargetKind::FeatureView => "feature view",
            PushTargetKind::Source => "source",
        };
        Error::BadPush {
            message: format!(
                "{kind} `{}` has no column `{name}`{}",
                self.target,
                quiver_core::diagnostic::did_you_mean(&closest(
                    name,
                    self.columns.iter().map(|c| c.name.as_str())
                ))
            ),
        }
    }
}

impl FeatureStore {
    /// The columns a push into the feature view or source called `target` takes: into a
    /// view, its key columns, its event-time column, optionally its created column, and
    /// every feature; into a source, every column of the source.
    pub async fn push_schema(&self, target: &str) -> Result<PushSchema> {
        let catalog = self.catalog().await?;
        if let Some(view) = catalog.views.get(target)
            && view.is_on_demand()
        {
            return Err(view.no_rows("push"));
        }
        if let Some(view) = catalog.views.get(target)
            && view.view.view.is_windowed()
        {
            return Err(Error::BadPush {
                message: format!(
                    "feature view `{target}` aggregates events over windows: push the events into its source `{}` (push_source_name)",
                    view.view.view.sources.first().map_or("", String::as_str)
                ),
            });
        }
        if let Some(view) = catalog.views.get(target) {
            let names = view.columns();
            let mut columns: Vec<PushColumn> = names
                .keys
                .iter()
                .map(|(name, data_type)| PushColumn {
                    name: name.clone(),
                    data_type: data_type.clone(),
                    required: true,
                })
                .collect();
            columns.push(PushColumn {
                name: names.timestamp.clone(),
                data_type: timestamp_type(),
                required: true,
            });
            if let Some(created) = &names.created {
                columns.push(PushColumn {
                    name: created.clone(),
                    data_type: timestamp_type(),
                    required: false,
                });
            }
            for (name, data_type) in &view.online_ref()?.features {
                columns.push(PushColumn {
                    name: name.clone(),
                    data_type: data_type.clone(),
                    required: true,
                });
            }
            return Ok(PushSchema {
                target: target.to_string(),
                kind: PushTargetKind::FeatureView,
                columns,
            });
        }
        if let Some(source) = catalog.sources.get(target) {
            let schema = catalog.source_schema(self, source).await?;
            return Ok(PushSchema {
                target: target.to_string(),
                kind: PushTargetKind::Source,
                columns: schema
                    .fields()
                    .iter()
                    .map(|f| PushColumn {
                        name: f.name().clone(),
                        data_type: f.data_type().clone(),
                        required: true,
                    })
                    .collect(),
            });
        }
        let names = catalog.views.keys().chain(catalog.sources.keys());
        Err(Error::UnknownPushTarget {
            name: target.to_string(),
            suggestion: closest(target, names.map(String::as_str)),
        })
    }

    /// Pushes `rows` into the feature view or the source called `target` (columns as
    /// [`push_schema`](Self::push_schema) says; other types are cast, a value that does not
    /// fit rejects the whole push).
    ///
    /// Into a source, each view reading the source receives the rows its query makes of
    /// them (with the view's other sources read as usual). Offline rows are written before
    /// online ones; a pushed row replaces an offline row equal on (keys, event time,
    /// created), and online the newer row wins. Pushing the same rows twice changes
    /// nothing the second time, so a client may retry a push that timed out.
    pub async fn push(&self, target: &str, rows: RecordBatch, to: PushTo) -> Result<Vec<ViewPush>> {
        let schema = self.push_schema(target).await?;
        let rows = conform(&schema, &rows)?;
        let catalog = self.catalog().await?;
        let mut targets: Vec<(&CatalogView, RecordBatch)> = Vec::new();
        let mut source_rows = None;
        match schema.kind {
            PushTargetKind::FeatureView => {
                let view = catalog.view(target)?;
                targets.push((view, view_batch(view, &rows)?));
            }
            PushTargetKind::Source => {
                let readers: Vec<&CatalogView> = catalog
                    .views
                    .values()
                    .filter(|v| v.view.view.sources.iter().any(|s| s == target))
                    .collect();
                if readers.is_empty() {
                    return Err(Error::BadPush {
                        message: format!(
                            "no feature view reads source `{target}`, so its rows would go nowhere"
                        ),
                    });
                }
                let plan = catalog.push_plan(self, target, &readers).await?;
                if let Some(view) = plan.aggregating.first() {
                    return Err(Error::PushIntoAggregatingView {
                        source_name: target.to_string(),
                        view: view.clone(),
                    });
                }
                for view in readers {
                    let batch = plan
                        .engine
                        .view_rows(&view.table()?, target, rows.clone())
                        .await?;
                    targets.push((view, batch));
                }
                source_rows = Some(plan);
            }
        }

        let options = self.write_options();
        for (view, batch) in &targets {
            check_event_times(view, batch, options.max_event_time)?;
        }

        let mut out = Vec::new();
        // One engine for every view's offline write (it needs no sources).
        let offline = to.offline().then(|| self.new_engine());
        // Rows pushed into a source are kept in the source's log, so every view version
        // materialized later (not only the current ones) gets them.
        let log = match (&offline, source_rows) {
            (Some(_), Some(plan)) => {
                plan.engine
                    .push_source(&self.offline_root()?, target, &rows, options)
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
                        &self.offline_root()?,
                        &view.table()?,
                        batch.clone(),
                        log,
                        options,
                    )
                    .await?;
                report.offline = Some(stats);
            }
            if to.online() && batch.num_rows() > 0 && view.view.view.online {
                let stats = match view.window()? {
                    Some(program) => self.push_window_online(view, program, &batch).await?,
                    None => {
                        let rows = crate::online::online_rows(&batch, view)?;
                        let now = self.clock().now().timestamp_micros();
                        self.online_store()
                            .await?
                            .write(view.online_ref()?, &rows, now)
                            .await?
                    }
                };
                report.online = Some(stats);
            }
            out.push(report);
        }
        Ok(out)
    }
}

/// `rows` with the push schema's column types, by name: unknown columns, missing
/// required ones and values that do not fit are errors.
fn conform(schema: &PushSchema, rows: &RecordBatch) -> Result<RecordBatch> {
    if rows.num_rows() == 0 {
        return Err(Error::BadPush {
            message: "the push holds no rows".into(),
        });
    }
    let given = rows.schema();
    for field in given.fields() {
        if schema.column(field.name()).is_none() {
            return Err(schema.unknown_column(field.name()));
        }
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for column in &schema.columns {
        let Some(array) = rows.column_by_name(&column.name) else {
            if column.required {
                let kind = match schema.kind {
                    PushTargetKind::FeatureView => "feature view",
                    PushTargetKind::Source => "source",
                };
                return Err(Error::BadPush {
                    message: format!(
                        "missing column `{}` of {kind} `{}`",
                        column.name, schema.target
                    ),
                });
            }
            continue;
        };
        let cast = arrow::compute::cast(array, &column.data_type).map_err(|e| Error::BadPush {
            message: format!(
                "column `{}` is {}, which cannot be read as {}: {e}",
                column.name,
                array.data_type(),
                column.data_type
            ),
        })?;
        if let Some(row) = (0..array.len()).find(|&i| array.is_valid(i) && cast.is_null(i)) {
            return Err(Error::BadPush {
                message: format!(
                    "row {row}, column `{}`: {} is not {}",
                    column.name,
                    arrow::util::display::array_value_to_string(array, row).unwrap_or_default(),
                    column.data_type
                ),
            });
        }
        fields.push(Field::new(&column.name, column.data_type.clone(), true));
        columns.push(cast);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::BadPush {
        message: e.to_string(),
    })
}

/// Conformed rows pushed into a view as the view's canonical batch (keys, event time,
/// created, features), refusing null keys and event times.
fn view_batch(view: &CatalogView, rows: &RecordBatch) -> Result<RecordBatch> {
    let names = view.columns();
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    let column = |name: &str| -> Result<ArrayRef> {
        rows.column_by_name(name)
            .cloned()
            .ok_or_else(|| Error::BadPush {
                message: format!("missing column `{name}` of feature view `{}`", view.name()),
            })
    };
    for (key, data_type) in &names.keys {
        let array = column(key)?;
        if let Some(row) = (0..array.len()).find(|&i| array.is_null(i)) {
            return Err(Error::BadPush {
                message: format!("row {row}, column `{key}`: a key is null"),
            });
        }
        fields.push(Field::new(key, data_type.clone(), true));
        arrays.push(array);
    }
    let ts = column(&names.timestamp)?;
    if let Some(row) = (0..ts.len()).find(|&i| ts.is_null(i)) {
        return Err(Error::BadPush {
            message: format!(
                "row {row}, column `{}`: the event time is null",
                names.timestamp
            ),
        });
    }
    fields.push(Field::new(&names.timestamp, timestamp_type(), true));
    arrays.push(ts);
    if let Some(created) = &names.created {
        fields.push(Field::new(created, timestamp_type(), true));
        arrays.push(match rows.column_by_name(created) {
            Some(array) => Arc::clone(array),
            None => arrow::array::new_null_array(&timestamp_type(), rows.num_rows()),
        });
    }
    for (name, data_type) in &view.online_ref()?.features {
        fields.push(Field::new(name, data_type.clone(), true));
        arrays.push(column(name)?);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| Error::BadPush {
        message: e.to_string(),
    })
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
