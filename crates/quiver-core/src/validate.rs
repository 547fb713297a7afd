//! Checks on parsed definitions that need no query planner: unique names, references
//! between objects, and that source files exist. Each problem becomes a [`Diagnostic`]
//! that points at the offending text and, for an unknown name, suggests the closest one.
//!
//! Checks that need view schemas (does `view.feature` exist?) are in [`check_services`],
//! which the facade calls once DataFusion has typed the views.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::diagnostic::{Diagnostics, Loc, closest, suggestion_suffix};
use crate::model::{ObjectKind, ViewSchema};
use crate::parser::Definitions;

/// Runs every check that needs no query planner.
pub fn check_definitions(defs: &Definitions, repo_root: &Path) -> Diagnostics {
    let mut diagnostics = Diagnostics::default();
    check_unique_names(defs, &mut diagnostics);
    check_sources(defs, repo_root, &mut diagnostics);
    check_views(defs, &mut diagnostics);
    diagnostics
}

fn check_unique_names(defs: &Definitions, diagnostics: &mut Diagnostics) {
    let mut seen: HashMap<&str, (ObjectKind, Loc)> = HashMap::new();
    let all = defs
        .entities
        .iter()
        .map(|e| (e.def.name.as_str(), ObjectKind::Entity, e.at))
        .chain(
            defs.sources
                .iter()
                .map(|s| (s.def.name.as_str(), ObjectKind::Source, s.at)),
        )
        .chain(
            defs.request_sources
                .iter()
                .map(|s| (s.def.name.as_str(), ObjectKind::RequestSource, s.at)),
        )
        .chain(
            defs.views
                .iter()
                .map(|v| (v.def.name.as_str(), ObjectKind::FeatureView, v.at)),
        )
        .chain(
            defs.services
                .iter()
                .map(|s| (s.def.name.as_str(), ObjectKind::FeatureService, s.at)),
        );
    for (name, kind, at) in all {
        if let Some((first_kind, first_at)) = seen.get(name) {
            let first = defs.files.pointer(*first_at);
            diagnostics.push(
                defs.error_at(at, format!("duplicate name `{name}`: {kind} `{name}` is already declared as {} {first_kind}", article(*first_kind)))
                    .with_help(format!("first declared at {}:{}:{}; names are unique across entities, sources, request sources, views and services", first.path, first.line, first.column)),
            );
        } else {
            seen.insert(name, (kind, at));
        }
    }
}

fn check_sources(defs: &Definitions, repo_root: &Path, diagnostics: &mut Diagnostics) {
    for source in &defs.sources {
        let path = &source.def.path;
        if let Some((scheme, _)) = path.split_once("://") {
            // Object storage is checked when the source is read (its listing needs
            // credentials); only the scheme is checked here.
            if !matches!(scheme, "s3" | "s3a") {
                diagnostics.push(
                    defs.error_at(
                        source.path_at,
                        format!(
                            "source `{}`: `{scheme}://` locations are not supported",
                            source.def.name
                        ),
                    )
                    .with_help("use a local file, folder or glob relative to quiver.toml, or s3://bucket/prefix"),
                );
            }
            continue;
        }
        if !source_path_exists(repo_root, path) {
            let what = if is_glob(path) {
                "no file matches"
            } else {
                "no such file or folder:"
            };
            diagnostics.push(
                defs.error_at(
                    source.path_at,
                    format!("source `{}`: {what} `{path}`", source.def.name),
                )
                .with_help(format!(
                    "paths are relative to the repository root ({})",
                    repo_root.display()
                )),
            );
        }
        if source.def.created.as_deref() == Some(source.def.timestamp.as_str()) {
            let at = source.created_at.unwrap_or(source.at);
            diagnostics.push(defs.error_at(
                at,
                format!(
                    "source `{}`: CREATED names the same column as TIMESTAMP (`{}`)",
                    source.def.name, source.def.timestamp
                ),
            ));
        }
    }
}

fn check_views(defs: &Definitions, diagnostics: &mut Diagnostics) {
    let entity_names: Vec<&str> = defs.entities.iter().map(|e| e.def.name.as_str()).collect();
    let source_names: Vec<&str> = defs.sources.iter().map(|s| s.def.name.as_str()).collect();
    for view in &defs.views {
        if view.def.on_demand {
            check_on_demand_inputs(defs, view, diagnostics);
            continue;
        }
        let mut key_columns: HashMap<&str, &str> = HashMap::new();
        let mut listed = HashSet::new();
        for (entity, at) in view.def.entities.iter().zip(&view.entity_locs) {
            if !listed.insert(entity) {
                diagnostics.push(defs.error_at(
                    *at,
                    format!(
                        "entity `{entity}` is listed twice in feature view `{}`",
                        view.def.name
                    ),
                ));
                continue;
            }
            match defs.entity(entity) {
                None => diagnostics.push(defs.error_at(
                    *at,
                    format!(
                        "unknown entity `{entity}`{}",
                        suggestion_suffix(closest(entity, entity_names.iter().copied()))
                    ),
                )),
                Some(decl) => {
                    for key in &decl.def.keys {
                        if let Some(other) = key_columns.insert(&key.name, &decl.def.name) {
                            diagnostics.push(defs.error_at(*at, format!(
                                "entities `{other}` and `{entity}` both have a key column `{}`; a view's entities need distinct key columns",
                                key.name
                            )));
                        }
                    }
                }
            }
        }
        if view.def.sources.is_empty() {
            diagnostics.push(
                defs.error_at(
                    view.query_at,
                    format!(
                        "the query of feature view `{}` reads no source",
                        view.def.name
                    ),
                )
                .with_help("select FROM a source declared with CREATE SOURCE"),
            );
        }
        for (source, at) in view.def.sources.iter().zip(&view.source_locs) {
            if defs.source(source).is_none() {
                let message = if defs.request_source(source).is_some() {
                    format!(
                        "feature view `{}` reads request source `{source}`; request fields feed on-demand views only",
                        view.def.name
                    )
                } else if defs.view(source).is_some() {
                    format!(
                        "feature view `{}` reads feature view `{source}`; a view's query reads sources only",
                        view.def.name
                    )
                } else {
                    format!(
                        "unknown source `{source}`{}",
                        suggestion_suffix(closest(source, source_names.iter().copied()))
                    )
                };
                diagnostics.push(defs.error_at(*at, message));
            }
        }
    }
}

/// The inputs of an on-demand view: request sources and views that are not on-demand.
fn check_on_demand_inputs(
    defs: &Definitions,
    view: &crate::parser::ViewDecl,
    diagnostics: &mut Diagnostics,
) {
    let name = &view.def.name;
    if view.def.sources.is_empty() {
        diagnostics.push(
            defs.error_at(view.query_at, format!("on-demand feature view `{name}` reads no input"))
                .with_help("list its inputs after FROM: request sources and feature views, e.g. FROM txn, user_profile"),
        );
    }
    let candidates: Vec<&str> = defs
        .request_sources
        .iter()
        .map(|s| s.def.name.as_str())
        .chain(
            defs.views
                .iter()
                .filter(|v| !v.def.on_demand)
                .map(|v| v.def.name.as_str()),
        )
        .collect();
    for (input, at) in view.def.sources.iter().zip(&view.source_locs) {
        if defs.request_source(input).is_some() {
            continue;
        }
        let message = match defs.view(input) {
            Some(other) if other.def.on_demand => format!(
                "on-demand feature view `{name}` reads on-demand feature view `{input}`; its inputs are request sources and row or aggregation views"
            ),
            Some(_) => continue,
            None if defs.source(input).is_some() => format!(
                "on-demand feature view `{name}` reads source `{input}`; its inputs are request sources and feature views (a source's rows need a view first)"
            ),
            None => format!(
                "unknown input `{input}`{}",
                suggestion_suffix(closest(input, candidates.iter().copied()))
            ),
        };
        diagnostics.push(defs.error_at(*at, message));
    }
}

/// Checks every feature service against the views' inferred schemas. Views missing from
/// `schemas` (because they failed to plan) are skipped: their error is already reported.
pub fn check_services(defs: &Definitions, schemas: &HashMap<String, ViewSchema>) -> Diagnostics {
    let mut diagnostics = Diagnostics::default();
    let view_names: Vec<&str> = defs.views.iter().map(|v| v.def.name.as_str()).collect();
    for service in &defs.services {
        let mut seen = HashSet::new();
        for (selection, at) in service.def.features.iter().zip(&service.feature_locs) {
            if !seen.insert(selection.to_string()) {
                diagnostics.push(defs.error_at(
                    *at,
                    format!(
                        "`{selection}` is listed twice in feature service `{}`",
                        service.def.name
                    ),
                ));
                continue;
            }
            if defs.view(&selection.view).is_none() {
                diagnostics.push(defs.error_at(
                    *at,
                    format!(
                        "unknown feature view `{}`{}",
                        selection.view,
                        suggestion_suffix(closest(&selection.view, view_names.iter().copied()))
                    ),
                ));
                continue;
            }
            let (Some(schema), Some(feature)) = (schemas.get(&selection.view), &selection.feature)
            else {
                continue;
            };
            if schema.feature(feature).is_none() {
                let names = schema.features.iter().map(|c| c.name.as_str());
                let mut d = defs.error_at(
                    *at,
                    format!(
                        "feature view `{}` has no feature `{feature}`{}",
                        selection.view,
                        suggestion_suffix(closest(feature, names))
                    ),
                );
                if schema.keys.iter().any(|k| &k.name == feature)
                    || schema
                        .timestamp
                        .as_ref()
                        .is_some_and(|t| t.name == *feature)
                {
                    d = d.with_help(format!(
                        "`{feature}` is a key or timestamp column, not a feature"
                    ));
                } else {
                    let all: Vec<_> = schema.features.iter().map(|c| c.name.as_str()).collect();
                    d = d.with_help(format!("its features are: {}", all.join(", ")));
                }
                diagnostics.push(d);
            }
        }
    }
    diagnostics
}

fn article(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Entity => "an",
        _ => "a",
    }
}

/// Whether a local source path names an existing file or folder, or a glob matches a file.
pub fn source_path_exists(repo_root: &Path, path: &str) -> bool {
    let full = repo_root.join(path);
    if is_glob(path) {
        glob_has_match(&full)
    } else {
        full.exists()
    }
}

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Whether any file matches a glob of `*`, `?` and `**` segments.
fn glob_has_match(pattern: &Path) -> bool {
    let mut base = std::path::PathBuf::new();
    let mut rest = Vec::new();
    for part in pattern.components() {
        let text = part.as_os_str().to_string_lossy().to_string();
        if rest.is_empty() && !is_glob(&text) {
            base.push(part);
        } else {
            rest.push(text);
        }
    }
    matches_below(&base, &rest)
}

fn matches_below(dir: &Path, segments: &[String]) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return dir.is_file();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if first == "**" {
            if matches_below(dir, rest) || (path.is_dir() && matches_below(&path, segments)) {
                return true;
            }
        } else if wildcard_match(first.as_bytes(), name.as_bytes()) && matches_below(&path, rest) {
            return true;
        }
    }
    false
}

fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard_match(&pattern[1..], name)
                || (!name.is_empty() && wildcard_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => wildcard_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.parquet", b"a.parquet"));
        assert!(wildcard_match(b"part-?.csv", b"part-1.csv"));
        assert!(!wildcard_match(b"*.parquet", b"a.csv"));
    }

    #[test]
    fn globs_find_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/x.parquet"), b"").unwrap();
        assert!(glob_has_match(&dir.path().join("a/**/*.parquet")));
        assert!(glob_has_match(&dir.path().join("a/*/x.parquet")));
        assert!(!glob_has_match(&dir.path().join("a/*.csv")));
    }
}
