//! [`OfflineEngine`]: one DataFusion session per feature repository, with every source
//! registered as a table, so view queries plan exactly as they will run.

use std::collections::HashSet;
use std::path::PathBuf;

use arrow::datatypes::{DataType, Field};
use datafusion::prelude::SessionContext;
use quiver_core::model::{Column, Entity, FeatureView, KeyType, Source, ViewSchema};

use crate::{Error, Result, source};

/// The batch engine of one feature repository.
pub struct OfflineEngine {
    ctx: SessionContext,
    repo_root: PathBuf,
}

impl std::fmt::Debug for OfflineEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineEngine")
            .field("repo_root", &self.repo_root)
            .finish()
    }
}

impl OfflineEngine {
    /// An engine whose relative source paths resolve against `repo_root`.
    pub fn new(repo_root: impl Into<PathBuf>) -> Self {
        OfflineEngine {
            ctx: SessionContext::new(),
            repo_root: repo_root.into(),
        }
    }

    /// The DataFusion session (sources are registered in it under their names).
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// Registers a source as a table named after it and checks its time columns.
    pub async fn register_source(&self, source: &Source) -> Result<()> {
        source::register(&self.ctx, &self.repo_root, source).await?;
        let provider = self.ctx.table_provider(source.name.as_str()).await?;
        let schema = provider.schema();
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
            timestamp,
            created,
            features,
        })
    }
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
