//! Shared fixtures: temporary repositories with generated data files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{TimeZone, Utc};

/// The fixed end of every generated dataset, so outputs are reproducible.
pub fn data_end() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap()
}

/// A folder of data files every test repository gets a copy of, as `data/`.
fn fixture_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("quiver-fixtures-{}", std::process::id()));
        let data = dir.join("data");
        std::fs::create_dir_all(data.join("parts")).unwrap();
        quiver::example::ExampleData::small(data_end())
            .write(&data)
            .unwrap();
        std::fs::copy(
            data.join("driver_stats.parquet"),
            data.join("parts/part-0.parquet"),
        )
        .unwrap();
        std::fs::copy(
            data.join("driver_stats.parquet"),
            data.join("parts/part-1.parquet"),
        )
        .unwrap();
        std::fs::write(
            data.join("events.csv"),
            "user_id,ts,amount,label\n1,2026-01-01T00:00:00Z,1.5,a\n2,2026-01-01T01:00:00Z,2.5,b\n",
        )
        .unwrap();
        std::fs::write(
            data.join("events.tsv"),
            "user_id\tts\tamount\n1\t2026-01-01T00:00:00Z\t1.5\n",
        )
        .unwrap();
        std::fs::write(
            data.join("events.jsonl"),
            "{\"user_id\": \"u1\", \"ts\": \"2026-01-01T00:00:00Z\", \"amount\": 1.5}\n",
        )
        .unwrap();
        std::fs::write(data.join("float_ts.csv"), "user_id,ts,amount\n1,1.5,2.0\n").unwrap();
        std::fs::write(data.join("empty.parquet"), b"").unwrap();
        data
    })
}

/// The `*.case` files of a folder under `tests/`, sorted.
pub fn case_files(folder: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests")
        .join(folder);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    paths.sort();
    paths
}

/// A temporary repository: `quiver.toml`, the given files, and a copy of the fixture data.
pub fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("quiver.toml"), "project = \"test\"\n").unwrap();
    copy_dir(fixture_data(), &dir.path().join("data"));
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The sections of a data-file case: `-- name` starts a section (its lines follow),
/// `-- name value` is a one-line section; lines before the first section (comments) are
/// dropped.
pub fn sections(path: &Path) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = std::collections::BTreeMap::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("-- ") {
            match header.split_once(' ') {
                Some((name, value)) => {
                    out.insert(name.to_string(), value.trim().to_string());
                    section = None;
                }
                None => {
                    out.insert(header.to_string(), String::new());
                    section = Some(header.to_string());
                }
            }
            continue;
        }
        if let Some(name) = &section {
            let body = out.get_mut(name).unwrap();
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// A batch as CSV-like text: a header line, then one line per row, NULL for nulls.
pub fn render(batch: &arrow::array::RecordBatch) -> String {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let mut out = names.join(",");
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

/// Runs every case of `tests/<folder>` (at least `at_least` of them) through `run` and
/// compares its output with the case's `-- expected` section; `QUIVER_BLESS=1` rewrites
/// the expected sections instead.
pub fn check_cases(folder: &str, at_least: usize, run: impl Fn(&Path) -> String) {
    let paths = case_files(folder);
    assert!(
        paths.len() >= at_least,
        "expected at least {at_least} cases in tests/{folder}, found {}",
        paths.len()
    );
    let bless = std::env::var_os("QUIVER_BLESS").is_some();
    let mut failures = Vec::new();
    for path in &paths {
        let expected = sections(path).remove("expected").unwrap_or_default();
        let actual = run(path);
        if actual.trim_end() == expected.trim_end() {
            continue;
        }
        if bless {
            let text = std::fs::read_to_string(path).unwrap();
            let head = &text[..text.find("-- expected\n").unwrap() + "-- expected\n".len()];
            std::fs::write(path, format!("{head}{actual}")).unwrap();
        } else {
            failures.push(format!(
                "--- {}\nexpected:\n{expected}actual:\n{actual}",
                path.file_name().unwrap().to_string_lossy(),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases in tests/{folder} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Looks up `features` for `entities` (one row per row of `exported`) at the store's
/// clock `at`: every value must be the export's for the spine rows at that time (column
/// 1 of `exported` is the spine's time). Returns a line saying so or listing what differs.
pub async fn online_equals_export(
    store: &quiver::FeatureStore,
    exported: &arrow::array::RecordBatch,
    at: chrono::DateTime<Utc>,
    entities: &arrow::array::RecordBatch,
    features: &[String],
) -> quiver::Result<String> {
    use arrow::array::{Array, AsArray};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let times = exported
        .column(1)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let rows: Vec<usize> = (0..exported.num_rows())
        .filter(|row| times.is_valid(*row) && times.value(*row) == at.timestamp_micros())
        .collect();
    assert!(!rows.is_empty(), "no spine row is at the online time {at}");
    let plan = store.lookup_plan(features, None, false).await?;
    let found = store.get_online_features(&plan, entities).await?;
    let options = FormatOptions::default().with_null("NULL");
    let mut mismatches = Vec::new();
    let mut compare = |found: &quiver::OnlineFeatures, row: usize, at: usize, how: &str| {
        for column in &found.columns {
            let offline = exported.column_by_name(&column.name).unwrap();
            let a = ArrayFormatter::try_new(column.values.as_ref(), &options).unwrap();
            let b = ArrayFormatter::try_new(offline.as_ref(), &options).unwrap();
            let (online, offline) = (a.value(at).to_string(), b.value(row).to_string());
            if online != offline {
                mismatches.push(format!(
                    "{} row {row}{how}: online {online}, export {offline}",
                    column.name
                ));
            }
        }
    };
    for &row in &rows {
        compare(&found, row, row, "");
    }
    // One entity per lookup too, as a server mostly answers (and a one-row evaluation).
    for &row in &rows {
        let alone = store
            .get_online_features(&plan, &entities.slice(row, 1))
            .await?;
        compare(&alone, row, 0, " (looked up alone)");
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

/// The repository in `dir` opened with its clock fixed at `at` (µs), applied and
/// materialized.
pub async fn materialized_at(dir: &Path, at: i64) -> quiver::FeatureStore {
    let clock = chrono::DateTime::<Utc>::from_timestamp_micros(at).unwrap();
    let store = quiver::FeatureStore::open(dir)
        .unwrap()
        .with_clock(std::sync::Arc::new(quiver::clock::FixedClock(clock)));
    store.apply().await.unwrap();
    store
        .materialize(quiver::MaterializeOptions::default())
        .await
        .unwrap();
    store
}
