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

fn copy_dir(from: &Path, to: &Path) {
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
