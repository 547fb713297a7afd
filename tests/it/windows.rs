//! Runs every windowed-aggregation case in `tests/windows/*.case` through the whole
//! pipeline: definitions → apply → materialize → export, and (for cases with
//! `-- online AT`) the online lookup at that time.
//!
//! ```text
//! # what the case checks
//! -- events                                   <- the source rows, as CSV (user_id key)
//! user_id,event_timestamp,amount
//! 1,2026-01-01T00:00:00Z,10
//! -- view                                     <- the view's clauses after ENTITY user
//! WINDOWS ('1 hour') AS SELECT user_id, COUNT(*) AS n FROM events GROUP BY user_id
//! -- spine                                    <- the spine, as CSV
//! user_id,event_timestamp
//! 1,2026-01-01T01:00:00Z
//! -- expected                                 <- the training set, or the definition error
//! user_id,event_timestamp,n_1h
//! 1,2026-01-01T01:00:00Z,1
//! ```
//!
//! The entity is `user (user_id BIGINT)`, the source `events` (CSV, `CREATED created`
//! when the rows have a `created` column); the export asks for every feature of the
//! view. `QUIVER_BLESS=1` rewrites the expected sections.

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use quiver::clock::FixedClock;

#[derive(Default)]
struct Case {
    events: String,
    view: String,
    spine: String,
    /// Optional: a time at which the online lookup of every spine key must equal the
    /// export at that time.
    online_at: Option<String>,
    expected: String,
}

fn parse(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let mut case = Case::default();
    let mut section = "";
    for line in text.lines() {
        match line {
            "-- events" | "-- view" | "-- spine" | "-- expected" => {
                section = &line[3..];
                continue;
            }
            _ => {}
        }
        if let Some(at) = line.strip_prefix("-- online ") {
            case.online_at = Some(at.trim().to_string());
            continue;
        }
        let target = match section {
            "events" => &mut case.events,
            "view" => &mut case.view,
            "spine" => &mut case.spine,
            "expected" => &mut case.expected,
            _ => continue,
        };
        target.push_str(line);
        target.push('\n');
    }
    case
}

fn render(batch: &RecordBatch) -> String {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = String::new();
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    out.push_str(&names.join(","));
    out.push('\n');
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
        .collect();
    for row in 0..batch.num_rows() {
        let cells: Vec<String> = formatters
            .iter()
            .map(|f| f.value(row).to_string())
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn run(case: &Case) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("quiver.toml"), "project = \"windows\"\n").unwrap();
    std::fs::create_dir_all(root.join("features")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let created = case
        .events
        .lines()
        .next()
        .unwrap_or("")
        .split(',')
        .any(|c| c == "created");
    std::fs::write(
        root.join("features/defs.sql"),
        format!(
            "CREATE ENTITY user (user_id BIGINT);\n\
             CREATE SOURCE events FROM 'data/events.csv' TIMESTAMP event_timestamp{};\n\
             CREATE FEATURE VIEW v ENTITY user {};\n",
            if created { " CREATED created" } else { "" },
            case.view.trim().trim_end_matches(';')
        ),
    )
    .unwrap();
    std::fs::write(root.join("data/events.csv"), &case.events).unwrap();
    std::fs::write(root.join("spine.csv"), &case.spine).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(async {
            let mut store = quiver::FeatureStore::open(root)?;
            let online_at = case.online_at.as_ref().map(|at| {
                chrono::DateTime::parse_from_rfc3339(at)
                    .unwrap()
                    .with_timezone(&chrono::Utc)
            });
            if let Some(at) = online_at {
                store = store.with_clock(Arc::new(FixedClock(at)));
            }
            store.apply().await?;
            let export = store
                .export()
                .with_spine_file("spine.csv")
                .with_features(["v:*"])
                .with_materialize(true)
                .execute()
                .await?;
            let mut out = render(&export.batch);
            if let Some(at) = online_at {
                out.push_str(&online_equals_export(&store, &export.batch, at).await?);
            }
            Ok::<_, quiver::Error>(out)
        })
        .unwrap_or_else(|e| format!("error: {e}\n"))
}

/// Materializes up to the store's clock `at` and looks every spine key up: the values
/// must be the export's for the spine rows at that time. Returns a line saying so.
async fn online_equals_export(
    store: &quiver::FeatureStore,
    exported: &RecordBatch,
    at: chrono::DateTime<chrono::Utc>,
) -> quiver::Result<String> {
    use arrow::array::{Array, AsArray};
    let times = exported
        .column(1)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let rows: Vec<usize> = (0..exported.num_rows())
        .filter(|row| times.is_valid(*row) && times.value(*row) == at.timestamp_micros())
        .collect();
    assert!(!rows.is_empty(), "no spine row is at the online time {at}");
    store
        .materialize(quiver::MaterializeOptions {
            views: vec!["v".into()],
            ..Default::default()
        })
        .await?;
    let plan = store.lookup_plan(&["v:*".to_string()], None, false).await?;
    let keys = exported.project(&[0]).unwrap();
    let found = store.get_online_features(&plan, &keys).await?;
    let options = FormatOptions::default().with_null("NULL");
    let mut mismatches = Vec::new();
    for column in &found.columns {
        let offline = exported.column_by_name(&column.name).unwrap();
        let a = ArrayFormatter::try_new(column.values.as_ref(), &options).unwrap();
        let b = ArrayFormatter::try_new(offline.as_ref(), &options).unwrap();
        for &row in &rows {
            let (online, offline) = (a.value(row).to_string(), b.value(row).to_string());
            if online != offline {
                mismatches.push(format!(
                    "{} row {row}: online {online}, export {offline}",
                    column.name
                ));
            }
        }
    }
    Ok(if mismatches.is_empty() {
        format!(
            "online == export at that time (spine rows compared: {})\n",
            rows.len()
        )
    } else {
        format!("online != export: {}\n", mismatches.join("; "))
    })
}

#[test]
fn windowed_aggregation_cases() {
    let paths = crate::support::case_files("windows");
    assert!(
        paths.len() >= 12,
        "expected the windowed cases, found {}",
        paths.len()
    );
    let bless = std::env::var_os("QUIVER_BLESS").is_some();
    let mut failures = Vec::new();
    for path in &paths {
        let case = parse(path);
        let actual = run(&case);
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
        "{} windowed cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
