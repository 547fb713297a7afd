//! Runs every point-in-time case in `tests/pit/*.case` through the whole pipeline:
//! definitions → apply → materialize → export.
//!
//! ```text
//! # what the case checks
//! -- view driver_stats (driver_id BIGINT) TTL '1 day'      <- entity keys, optional TTL
//! driver_id,event_timestamp,created,conv_rate             <- the source rows, as CSV
//! 1,2026-01-01T00:00:00Z,2026-01-01T00:00:00Z,0.5
//! -- spine                                                <- the spine, as CSV
//! driver_id,event_timestamp
//! 1,2026-01-01T00:00:00Z
//! -- options full_feature_names                           <- optional
//! -- expected                                             <- the training set
//! driver_id,event_timestamp,conv_rate
//! 1,2026-01-01T00:00:00Z,0.5
//! ```
//!
//! Each view becomes an entity, a CSV source (`CREATED created` when the rows have a
//! `created` column) and `CREATE FEATURE VIEW … AS SELECT * FROM source`; the export asks
//! for every feature of every view. `QUIVER_BLESS=1` rewrites the expected sections.

use std::path::Path;

struct View {
    name: String,
    header: String,
    rows: String,
}

struct Case {
    head: String,
    views: Vec<View>,
    spine: String,
    options: String,
    expected: String,
}

fn parse(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let mut case = Case {
        head: String::new(),
        views: Vec::new(),
        spine: String::new(),
        options: String::new(),
        expected: String::new(),
    };
    #[derive(PartialEq)]
    enum Section {
        Head,
        View,
        Spine,
        Expected,
    }
    let mut section = Section::Head;
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("-- view ") {
            let name = header.split_whitespace().next().unwrap().to_string();
            case.views.push(View {
                name,
                header: header.to_string(),
                rows: String::new(),
            });
            section = Section::View;
        } else if line == "-- spine" {
            section = Section::Spine;
        } else if let Some(options) = line.strip_prefix("-- options ") {
            case.options = options.to_string();
        } else if line == "-- expected" {
            section = Section::Expected;
        } else {
            let target = match section {
                Section::Head => &mut case.head,
                Section::View => &mut case.views.last_mut().unwrap().rows,
                Section::Spine => &mut case.spine,
                Section::Expected => &mut case.expected,
            };
            target.push_str(line);
            target.push('\n');
        }
    }
    case
}

fn definitions(case: &Case) -> String {
    let mut sql = String::new();
    for view in &case.views {
        // "<name> (<keys>) [TTL '…']"
        let rest = view.header[view.name.len()..].trim();
        let close = rest.find(')').unwrap();
        let keys = &rest[..=close];
        let ttl = rest[close + 1..].trim();
        let created = if view
            .rows
            .lines()
            .next()
            .unwrap()
            .split(',')
            .any(|c| c == "created")
        {
            " CREATED created"
        } else {
            ""
        };
        let name = &view.name;
        sql.push_str(&format!(
            "CREATE ENTITY {name}_entity {keys};\n\
             CREATE SOURCE {name}_source FROM 'data/{name}.csv' TIMESTAMP event_timestamp{created};\n\
             CREATE FEATURE VIEW {name} ENTITY {name}_entity {ttl} AS SELECT * FROM {name}_source;\n"
        ));
    }
    sql
}

/// Runs a case in a fresh repository whose `quiver.toml` is `project = "pit"` plus
/// `config` (e.g. an offline root on object storage).
fn run(case: &Case, config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("quiver.toml"),
        format!("project = \"pit\"\n{config}"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("features")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("features/defs.sql"), definitions(case)).unwrap();
    for view in &case.views {
        std::fs::write(root.join(format!("data/{}.csv", view.name)), &view.rows).unwrap();
    }
    std::fs::write(root.join("spine.csv"), &case.spine).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(async {
            let store = quiver::FeatureStore::open(root)?;
            store.apply().await?;
            let mut export = store
                .export()
                .with_spine_file("spine.csv")
                .with_features(case.views.iter().map(|v| format!("{}:*", v.name)))
                .with_materialize(true)
                .with_full_feature_names(case.options.contains("full_feature_names"));
            if case.options.contains("tiny_memory") {
                export = export.with_memory_budget(1);
            }
            let result = export.execute().await?;
            Ok::<_, quiver::Error>(crate::support::render(&result.batch))
        })
        .unwrap_or_else(|e| format!("error: {e}\n"))
}

#[test]
fn point_in_time_cases() {
    check_cases(|_| String::new());
}

/// The same cases with the offline tables in an S3 bucket (a private `moto_server`).
#[test]
fn point_in_time_cases_on_object_storage() {
    let s3 = crate::s3_server::shared();
    let bucket = s3.bucket("pit");
    check_cases(|case| {
        format!(
            "[offline]\npath = \"s3://{bucket}/{}\"\n{}",
            case.file_stem().unwrap().to_string_lossy(),
            s3.storage_toml()
        )
    });
}

/// Runs every case with the config `config` gives for its file; blesses or compares.
fn check_cases(config: impl Fn(&Path) -> String) {
    let paths = crate::support::case_files("pit");
    assert!(
        paths.len() >= 14,
        "expected the point-in-time cases, found {}",
        paths.len()
    );
    let bless = std::env::var_os("QUIVER_BLESS").is_some();
    let mut failures = Vec::new();
    for path in &paths {
        let case = parse(path);
        let actual = run(&case, &config(path));
        if actual.trim_end() == case.expected.trim_end() {
            continue;
        }
        if bless {
            let text = std::fs::read_to_string(path).unwrap();
            let head = &text[..text.find("-- expected\n").unwrap() + "-- expected\n".len()];
            std::fs::write(path, format!("{head}{actual}")).unwrap();
        } else {
            failures.push(format!(
                "--- {}\nexpected:\n{}actual:\n{}",
                path.file_name().unwrap().to_string_lossy(),
                case.expected,
                actual
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} point-in-time cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
