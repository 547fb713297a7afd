//! Runs every parser/validation case in `tests/definitions/*.case`.
//!
//! A case file holds one or more definition files and the expected outcome:
//!
//! ```text
//! # what the case checks
//! -- file: features/a.sql
//! CREATE ENTITY driver (driver_id BIGINT);
//! -- expect
//! {"kind":"entity","name":"driver",…}        <- one JSON object per definition, or
//! error: …                                   <- the diagnostics exactly as printed
//! ```
//!
//! Each case runs in a fresh repository with the fixture data under `data/`. Set
//! `QUIVER_BLESS=1` to rewrite the `-- expect` sections from the actual output.

use std::path::{Path, PathBuf};

use crate::support;

struct Case {
    path: PathBuf,
    header: String,
    files: Vec<(String, String)>,
    expected: String,
}

fn parse_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let (body, expected) = text
        .split_once("\n-- expect\n")
        .unwrap_or_else(|| panic!("{}: no `-- expect` line", path.display()));
    let mut header = String::new();
    let mut files: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        if let Some(name) = line.strip_prefix("-- file: ") {
            files.push((name.trim().to_string(), String::new()));
        } else if let Some((_, text)) = files.last_mut() {
            text.push_str(line);
            text.push('\n');
        } else {
            header.push_str(line);
            header.push('\n');
        }
    }
    assert!(
        !files.is_empty(),
        "{}: no `-- file:` section",
        path.display()
    );
    Case {
        path: path.to_path_buf(),
        header,
        files,
        expected: expected.trim_end().to_string(),
    }
}

fn actual_output(case: &Case) -> String {
    let files: Vec<(&str, &str)> = case
        .files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let repo = support::repo(&files);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        let store = quiver::FeatureStore::open(repo.path())?;
        store.definitions().await
    });
    let text = match result {
        Ok(objects) => objects
            .iter()
            .map(|o| serde_json::to_string(o).unwrap())
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => e.to_string(),
    };
    let root = std::path::absolute(repo.path()).unwrap();
    text.replace(&root.display().to_string(), "$REPO")
        .trim_end()
        .to_string()
}

#[test]
fn definition_cases() {
    let paths = support::case_files("definitions");
    assert!(
        paths.len() >= 30,
        "expected at least 30 definition cases, found {}",
        paths.len()
    );
    let bless = std::env::var_os("QUIVER_BLESS").is_some();
    let mut failures = Vec::new();
    for path in &paths {
        let case = parse_case(path);
        let actual = actual_output(&case);
        if actual == case.expected {
            continue;
        }
        if bless {
            let mut text = case.header.clone();
            for (name, body) in &case.files {
                text.push_str(&format!("-- file: {name}\n{body}"));
            }
            text.push_str(&format!("-- expect\n{actual}\n"));
            std::fs::write(&case.path, text).unwrap();
        } else {
            failures.push(format!(
                "--- {}\nexpected:\n{}\nactual:\n{}\n",
                path.file_name().unwrap().to_string_lossy(),
                case.expected,
                actual
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} definition cases failed (QUIVER_BLESS=1 rewrites them):\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
}
