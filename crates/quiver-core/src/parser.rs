//! The definition language: `CREATE ENTITY`, `CREATE SOURCE`, `CREATE REQUEST SOURCE`,
//! `CREATE FEATURE VIEW` and `CREATE FEATURE SERVICE` statements in `*.sql` files.
//!
//! Statement headers are Quiver's own grammar, read token by token from `sqlparser`'s
//! tokenizer; a view body (`AS SELECT …`) is handed to `sqlparser`'s own query parser, the
//! same version DataFusion uses, so whatever parses here DataFusion can plan. Clauses of
//! a header may come in any order, which keeps the grammar open for the clauses later
//! versions add (window aggregations, request-time transforms, `CHECK`).
//!
//! Parsing never stops at the first error: a bad statement is reported and skipped up
//! to the next `;`, so one run shows every problem.

mod statement;

use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Diagnostics, FileId, Loc, SourceFile, SourceFiles};
use crate::model::{Entity, FeatureService, FeatureView, RequestSource, Source};

/// An entity with the places its parts were declared.
#[derive(Debug, Clone)]
pub struct EntityDecl {
    pub def: Entity,
    pub at: Loc,
    pub key_locs: Vec<Loc>,
}

/// A source with the places its parts were declared.
#[derive(Debug, Clone)]
pub struct SourceDecl {
    pub def: Source,
    pub at: Loc,
    pub path_at: Loc,
    pub timestamp_at: Loc,
    pub created_at: Option<Loc>,
}

/// A request source with the places its parts were declared.
#[derive(Debug, Clone)]
pub struct RequestSourceDecl {
    pub def: RequestSource,
    pub at: Loc,
    pub field_locs: Vec<Loc>,
}

/// A feature view with the places its parts were declared.
#[derive(Debug, Clone)]
pub struct ViewDecl {
    pub def: FeatureView,
    pub at: Loc,
    pub entity_locs: Vec<Loc>,
    /// Where each of `def.sources` is first named in the query.
    pub source_locs: Vec<Loc>,
    /// The first token of the query body.
    pub query_at: Loc,
}

/// A feature service with the places its parts were declared.
#[derive(Debug, Clone)]
pub struct ServiceDecl {
    pub def: FeatureService,
    pub at: Loc,
    pub feature_locs: Vec<Loc>,
}

/// Everything declared in a repository's definition files, with locations.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    pub files: SourceFiles,
    pub entities: Vec<EntityDecl>,
    pub sources: Vec<SourceDecl>,
    pub request_sources: Vec<RequestSourceDecl>,
    pub views: Vec<ViewDecl>,
    pub services: Vec<ServiceDecl>,
}

impl Definitions {
    pub fn entity(&self, name: &str) -> Option<&EntityDecl> {
        self.entities.iter().find(|e| e.def.name == name)
    }

    pub fn source(&self, name: &str) -> Option<&SourceDecl> {
        self.sources.iter().find(|s| s.def.name == name)
    }

    pub fn request_source(&self, name: &str) -> Option<&RequestSourceDecl> {
        self.request_sources.iter().find(|s| s.def.name == name)
    }

    pub fn view(&self, name: &str) -> Option<&ViewDecl> {
        self.views.iter().find(|v| v.def.name == name)
    }

    /// A diagnostic pointing at `loc`.
    pub fn error_at(&self, loc: Loc, message: impl Into<String>) -> Diagnostic {
        self.files.error_at(loc, message)
    }
}

/// Parses one file's text into `defs`, adding every syntax error to `diagnostics`.
///
/// `repo_root` resolves relative source paths when a source's format has to be inferred
/// from a folder's contents.
pub fn parse_file(
    defs: &mut Definitions,
    file: SourceFile,
    repo_root: &Path,
    diagnostics: &mut Diagnostics,
) {
    let text = file.text.clone();
    let id = defs.files.add(file);
    statement::parse_statements(defs, id, &text, repo_root, diagnostics);
}

/// Parses a single text as if it were the file `name` (tests and tools).
pub fn parse_str(name: &str, text: &str, repo_root: &Path) -> (Definitions, Diagnostics) {
    let mut defs = Definitions::default();
    let mut diagnostics = Diagnostics::default();
    parse_file(
        &mut defs,
        SourceFile {
            display_path: name.to_string(),
            path: PathBuf::from(name),
            text: text.to_string(),
        },
        repo_root,
        &mut diagnostics,
    );
    (defs, diagnostics)
}

/// Finds the `*.sql` files named by the config's `definitions` entries (files or
/// folders, searched recursively), sorted so parsing order is stable.
pub fn find_definition_files(
    repo_root: &Path,
    entries: &[String],
) -> Result<Vec<PathBuf>, Diagnostics> {
    let mut files = Vec::new();
    let mut diagnostics = Diagnostics::default();
    for entry in entries {
        let path = repo_root.join(entry);
        if path.is_file() {
            files.push(path);
        } else if path.is_dir() {
            if let Err(e) = collect_sql_files(&path, &mut files) {
                diagnostics.push(Diagnostic::unreadable(&path, &e));
            }
        } else {
            diagnostics.push(
                Diagnostic::global(format!(
                    "definitions entry `{entry}` does not exist ({})",
                    path.display()
                ))
                .with_help("fix `definitions` in quiver.toml: files or folders of *.sql, relative to quiver.toml"),
            );
        }
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn collect_sql_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_sql_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("sql"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads and parses every definition file of a repository.
pub fn parse_repository(repo_root: &Path, entries: &[String]) -> (Definitions, Diagnostics) {
    let mut defs = Definitions::default();
    let mut diagnostics = Diagnostics::default();
    let paths = match find_definition_files(repo_root, entries) {
        Ok(paths) => paths,
        Err(d) => return (defs, d),
    };
    if paths.is_empty() {
        diagnostics.push(
            Diagnostic::global(format!(
                "no *.sql definition files found in {}",
                entries.join(", ")
            ))
            .with_help("add CREATE ENTITY / SOURCE / FEATURE VIEW statements to a .sql file there"),
        );
    }
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let display_path = path
                    .strip_prefix(repo_root)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                parse_file(
                    &mut defs,
                    SourceFile {
                        display_path,
                        path,
                        text,
                    },
                    repo_root,
                    &mut diagnostics,
                );
            }
            Err(e) => diagnostics.push(Diagnostic::unreadable(&path, &e)),
        }
    }
    (defs, diagnostics)
}

pub(crate) fn loc(file: FileId, span: sqlparser::tokenizer::Span) -> Loc {
    let width = if span.end.line == span.start.line && span.end.column > span.start.column {
        span.end.column - span.start.column
    } else {
        1
    };
    Loc {
        file,
        line: span.start.line,
        column: span.start.column,
        width,
    }
}
