//! From definition files to registry objects: parse, check references, let DataFusion
//! type every view, check services against those types. All problems found on the way
//! are reported together, each pointing at its file, line and column.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use quiver_core::diagnostic::Diagnostic;
use quiver_core::model::{Object, OnDemandInputKind, ResolvedView, ViewSchema};
use quiver_core::parser::{Definitions, SourceDecl, ViewDecl, parse_repository};
use quiver_core::validate::{check_definitions, check_services, source_path_exists};
use quiver_offline::OfflineEngine;

use crate::Result;

/// Parses and validates a repository's definitions into the objects `apply` records.
/// `engine` registers the sources (it knows how to reach object storage).
pub(crate) async fn load(
    repo_root: &Path,
    entries: &[String],
    engine: OfflineEngine,
) -> Result<Vec<Object>> {
    let (defs, mut diagnostics) = parse_repository(repo_root, entries);
    for d in check_definitions(&defs, repo_root).0 {
        diagnostics.push(d);
    }

    let mut registered = HashSet::new();
    for source in &defs.sources {
        let remote = quiver_offline::storage::is_object_url(&source.def.path);
        if !remote && !source_path_exists(repo_root, &source.def.path) {
            continue; // already reported as a missing file
        }
        match engine.register_source(&source.def).await {
            Ok(()) => {
                registered.insert(source.def.name.clone());
            }
            Err(e) => diagnostics.push(source_diagnostic(&defs, source, e)),
        }
    }

    let mut schemas: HashMap<String, ViewSchema> = HashMap::new();
    for view in defs.views.iter().filter(|v| !v.def.on_demand) {
        let entities: Option<Vec<_>> = view
            .def
            .entities
            .iter()
            .map(|e| defs.entity(e).map(|d| &d.def))
            .collect();
        let sources_ok = view.def.sources.iter().all(|s| registered.contains(s));
        let (Some(entities), true, Some(primary)) = (
            entities,
            sources_ok,
            view.def.sources.first().and_then(|s| defs.source(s)),
        ) else {
            continue; // the unknown entity or source is already reported
        };
        match engine.view_schema(&view.def, &entities, &primary.def).await {
            Ok(schema) => {
                schemas.insert(view.def.name.clone(), schema);
            }
            Err(e) => diagnostics.push(view_diagnostic(&defs, view, e)),
        }
    }
    // On-demand views last: they are typed over the other views' schemas.
    for view in defs.views.iter().filter(|v| v.def.on_demand) {
        match on_demand_schema(&defs, view, &schemas).await {
            Ok(Some(schema)) => {
                schemas.insert(view.def.name.clone(), schema);
            }
            Ok(None) => {} // an input failed: already reported
            Err(e) => diagnostics.push(view_diagnostic(&defs, view, e)),
        }
    }
    for d in check_services(&defs, &schemas).0 {
        diagnostics.push(d);
    }
    if !diagnostics.is_empty() {
        return Err(quiver_core::Error::InvalidDefinitions(diagnostics).into());
    }
    Ok(objects(defs, schemas))
}

/// The schema of an on-demand view over its inputs' (`None` when an input has none:
/// its error is reported already). Its keys are those of its input views, in order.
async fn on_demand_schema(
    defs: &Definitions,
    view: &ViewDecl,
    schemas: &HashMap<String, ViewSchema>,
) -> std::result::Result<Option<ViewSchema>, quiver_offline::Error> {
    use quiver_offline::on_demand::{AvailableInput, analyze};
    let typed = |c: &quiver_core::model::Column| {
        (
            c.name.clone(),
            c.data_type
                .parse::<arrow::datatypes::DataType>()
                .unwrap_or(arrow::datatypes::DataType::Null),
        )
    };
    if view.def.sources.is_empty() {
        return Ok(None); // reported: it reads no input
    }
    let mut inputs = Vec::new();
    let mut keys: Vec<quiver_core::model::Column> = Vec::new();
    for name in &view.def.sources {
        if let Some(request) = defs.request_source(name) {
            inputs.push(AvailableInput {
                name: name.clone(),
                kind: OnDemandInputKind::Request,
                columns: request.def.fields.iter().map(typed).collect(),
            });
        } else if let Some(schema) = schemas.get(name) {
            for key in &schema.keys {
                if !keys.iter().any(|k| k.name == key.name) {
                    keys.push(key.clone());
                }
            }
            inputs.push(AvailableInput {
                name: name.clone(),
                kind: OnDemandInputKind::View,
                columns: schema.features.iter().map(typed).collect(),
            });
        } else {
            return Ok(None);
        }
    }
    let (features, on_demand) = analyze(&view.def.name, &view.def.query, &inputs).await?;
    Ok(Some(ViewSchema {
        keys,
        timestamp: None,
        created: None,
        features,
        window: None,
        on_demand: Some(on_demand),
    }))
}

fn objects(defs: Definitions, mut schemas: HashMap<String, ViewSchema>) -> Vec<Object> {
    let mut out = Vec::new();
    out.extend(defs.entities.into_iter().map(|e| Object::Entity(e.def)));
    out.extend(defs.sources.into_iter().map(|s| Object::Source(s.def)));
    out.extend(
        defs.request_sources
            .into_iter()
            .map(|s| Object::RequestSource(s.def)),
    );
    let mut views: Vec<ResolvedView> = defs
        .views
        .into_iter()
        .map(|view| {
            let schema = schemas
                .remove(&view.def.name)
                .expect("every view has a schema once validation passed");
            ResolvedView {
                view: view.def,
                schema,
            }
        })
        .collect();
    // An on-demand view's entities are its input views'; its identity includes theirs,
    // so a new version of an input makes a new version of the on-demand view.
    let mut inputs: HashMap<String, (Vec<String>, String)> = HashMap::new();
    for view in views.iter().filter(|v| !v.view.on_demand) {
        let hash = quiver_core::registry::content_hash(&Object::FeatureView(view.clone()));
        inputs.insert(view.view.name.clone(), (view.view.entities.clone(), hash));
    }
    for view in views.iter_mut().filter(|v| v.view.on_demand) {
        let Some(schema) = view.schema.on_demand.as_mut() else {
            continue;
        };
        for input in &mut schema.inputs {
            if let Some((entities, hash)) = inputs.get(&input.name) {
                input.identity = Some(hash.clone());
                for entity in entities {
                    if !view.view.entities.contains(entity) {
                        view.view.entities.push(entity.clone());
                    }
                }
            }
        }
    }
    out.extend(views.into_iter().map(Object::FeatureView));
    out.extend(
        defs.services
            .into_iter()
            .map(|s| Object::FeatureService(s.def)),
    );
    out
}

fn source_diagnostic(
    defs: &Definitions,
    source: &SourceDecl,
    error: quiver_offline::Error,
) -> Diagnostic {
    use quiver_offline::Error as E;
    let at = match &error {
        E::MissingSourceColumn {
            clause: "CREATED", ..
        }
        | E::BadTimestampType {
            clause: "CREATED", ..
        } => source.created_at.unwrap_or(source.timestamp_at),
        E::MissingSourceColumn { .. } | E::BadTimestampType { .. } => source.timestamp_at,
        _ => source.path_at,
    };
    defs.error_at(at, error.to_string())
}

fn view_diagnostic(
    defs: &Definitions,
    view: &ViewDecl,
    error: quiver_offline::Error,
) -> Diagnostic {
    use quiver_offline::Error as E;
    let help = match &error {
        E::MissingKeyColumn { key, .. } => Some(format!("select `{key}` in the query")),
        E::MissingTimeColumn { column, .. } => Some(format!(
            "select `{column}` in the query: the first source a view reads gives its event time"
        )),
        E::KeyTypeMismatch { key, expected, .. } => {
            Some(format!("cast it: CAST({key} AS {expected}) AS {key}"))
        }
        E::NoFeatures { .. } => {
            Some("select at least one column besides keys and timestamps".to_string())
        }
        _ => None,
    };
    if let E::InvalidViewQuery {
        message,
        line,
        column,
        help,
        ..
    } = &error
    {
        // Positions are within the query text, which starts at `query_at`.
        let at = match (line, column) {
            (Some(1), Some(column)) => quiver_core::diagnostic::Loc {
                column: view.query_at.column + column - 1,
                width: 1,
                ..view.query_at
            },
            (Some(line), Some(column)) => quiver_core::diagnostic::Loc {
                line: view.query_at.line + line - 1,
                column: *column,
                width: 1,
                ..view.query_at
            },
            _ => view.query_at,
        };
        return defs
            .error_at(at, format!("feature view `{}`: {message}", view.def.name))
            .with_help(help.clone());
    }
    let d = defs.error_at(view.query_at, error.to_string());
    match help {
        Some(help) => d.with_help(help),
        None => d,
    }
}
