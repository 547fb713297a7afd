//! Offline tables on disk: one folder per view version, Parquet files partitioned by
//! event date, and a manifest that names the committed files.
//!
//! ```text
//! <offline>/<view>/v<version>/date=<YYYY-MM-DD>/part-<run>-<n>.parquet  sorted by (keys, event_ts, created)
//! <offline>/<view>/v<version>/_pushed/push-<run>.parquet                rows pushed with `to: offline`, in push order
//! <offline>/<view>/v<version>/_manifest.json                            files, rows, coverage, watermark
//! ```
//!
//! Pushed rows are merged into the date partitions when they are pushed (so exports see
//! them) and also kept in the push log, which materialization merges back into every
//! interval it rewrites: re-materializing from the sources never loses a pushed row.
//!
//! A run writes its files first and commits by atomically renaming a new manifest over
//! the old one; files no manifest names are ignored (and removed by the next run), so a
//! crash never leaves a half table. Timestamps in offline tables are `Timestamp(µs, UTC)`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The manifest file of a table.
pub const MANIFEST: &str = "_manifest.json";
const LOCK: &str = "_lock";

/// One committed Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the table folder.
    pub path: String,
    pub rows: u64,
    /// Smallest and greatest event time in the file (µs since the epoch, UTC).
    pub min_ts: i64,
    pub max_ts: i64,
}

/// An interval of event time `[start, end]` in µs, both ends inclusive (as Feast's
/// materialization); `start: None` is "all history".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub start: Option<i64>,
    pub end: i64,
}

impl Interval {
    fn starts_before_or_at(&self, other: Option<i64>) -> bool {
        match (self.start, other) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a <= b,
        }
    }

    /// Whether `[start, end]` lies inside this interval.
    pub fn covers(&self, start: Option<i64>, end: i64) -> bool {
        self.starts_before_or_at(start) && end <= self.end
    }
}

/// The committed state of an offline table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub view: String,
    pub version: u32,
    /// Files per event date (`YYYY-MM-DD`).
    pub partitions: BTreeMap<String, Vec<FileEntry>>,
    /// The event-time intervals materialized so far, merged and sorted.
    pub coverage: Vec<Interval>,
    /// The end of the latest materialized interval.
    pub watermark: Option<i64>,
    /// The push log: files of rows pushed to the offline store, oldest first.
    #[serde(default)]
    pub pushed: Vec<FileEntry>,
}

impl Manifest {
    pub fn empty(view: &str, version: u32) -> Self {
        Manifest {
            format_version: 1,
            view: view.to_string(),
            version,
            partitions: BTreeMap::new(),
            coverage: Vec::new(),
            watermark: None,
            pushed: Vec::new(),
        }
    }

    pub fn rows(&self) -> u64 {
        self.files().map(|f| f.rows).sum()
    }

    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.partitions.values().flatten()
    }

    /// Whether `[start, end]` has been materialized.
    pub fn covers(&self, start: Option<i64>, end: i64) -> bool {
        self.coverage.iter().any(|i| i.covers(start, end))
    }

    /// Adds an interval to the coverage, merging overlapping and adjacent ones.
    pub fn add_coverage(&mut self, interval: Interval) {
        let mut all = std::mem::take(&mut self.coverage);
        all.push(interval);
        all.sort_by_key(|i| (i.start.is_some(), i.start.unwrap_or(i64::MIN)));
        let mut merged: Vec<Interval> = Vec::new();
        for i in all {
            match merged.last_mut() {
                Some(last) if i.start.is_none_or(|s| s <= last.end) => {
                    last.end = last.end.max(i.end)
                }
                _ => merged.push(i),
            }
        }
        self.coverage = merged;
        self.watermark = Some(self.watermark.map_or(interval.end, |w| w.max(interval.end)));
    }
}

/// The folder of one view version's offline table.
#[derive(Debug, Clone)]
pub struct TableDir {
    pub path: PathBuf,
}

impl TableDir {
    pub fn new(offline_root: &Path, view: &str, version: u32) -> Self {
        TableDir {
            path: offline_root.join(view).join(format!("v{version}")),
        }
    }

    fn io(&self, path: &Path, e: std::io::Error) -> Error {
        Error::TableIo {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// The committed manifest, or `None` when nothing was ever materialized.
    pub fn read_manifest(&self) -> Result<Option<Manifest>> {
        let path = self.path.join(MANIFEST);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::CorruptManifest {
                    path: path.display().to_string(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(&path, e)),
        }
    }

    /// Atomically replaces the manifest: write a temporary file, sync, rename.
    pub fn commit(&self, manifest: &Manifest) -> Result<()> {
        let path = self.path.join(MANIFEST);
        let tmp = self
            .path
            .join(format!("{MANIFEST}.tmp-{}", std::process::id()));
        let text = serde_json::to_vec_pretty(manifest).expect("manifests serialize to JSON");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        };
        write().map_err(|e| self.io(&path, e))
    }

    /// Takes the table's exclusive lock (blocks while another run holds it).
    pub fn lock(&self) -> Result<File> {
        std::fs::create_dir_all(&self.path).map_err(|e| self.io(&self.path, e))?;
        let path = self.path.join(LOCK);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io(&path, e))?;
        file.lock().map_err(|e| self.io(&path, e))?;
        Ok(file)
    }

    /// [`Self::lock`] off the async runtime: waiting for another run never blocks a
    /// runtime thread (the server keeps answering lookups meanwhile).
    pub async fn lock_async(&self) -> Result<File> {
        let table = self.clone();
        tokio::task::spawn_blocking(move || table.lock())
            .await
            .map_err(|e| Error::TableIo {
                path: self.path.display().to_string(),
                message: format!("waiting for the table lock failed: {e}"),
            })?
    }

    /// Removes Parquet files the manifest does not name (left by crashed or replaced runs).
    /// Call with the lock held.
    pub fn remove_unreferenced(&self, manifest: &Manifest) -> Result<usize> {
        let named: std::collections::HashSet<&str> = manifest
            .files()
            .chain(&manifest.pushed)
            .map(|f| f.path.as_str())
            .collect();
        let mut removed = 0;
        let Ok(dates) = std::fs::read_dir(&self.path) else {
            return Ok(0);
        };
        for date in dates.filter_map(|e| e.ok()) {
            let date_path = date.path();
            if !date_path.is_dir() {
                continue;
            }
            let Ok(files) = std::fs::read_dir(&date_path) else {
                continue;
            };
            for file in files.filter_map(|e| e.ok()) {
                let relative = format!(
                    "{}/{}",
                    date.file_name().to_string_lossy(),
                    file.file_name().to_string_lossy()
                );
                if !named.contains(relative.as_str()) && std::fs::remove_file(file.path()).is_ok() {
                    removed += 1;
                }
            }
            let _ = std::fs::remove_dir(&date_path); // only succeeds when empty
        }
        Ok(removed)
    }

    pub fn file_path(&self, entry: &FileEntry) -> PathBuf {
        self.path.join(&entry.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_merges_and_answers() {
        let mut m = Manifest::empty("v", 1);
        m.add_coverage(Interval {
            start: Some(10),
            end: 20,
        });
        m.add_coverage(Interval {
            start: Some(20),
            end: 30,
        });
        m.add_coverage(Interval {
            start: Some(40),
            end: 50,
        });
        assert_eq!(m.coverage.len(), 2);
        assert!(m.covers(Some(12), 30));
        assert!(!m.covers(Some(12), 41));
        assert!(!m.covers(None, 20));
        m.add_coverage(Interval {
            start: None,
            end: 45,
        });
        assert_eq!(
            m.coverage,
            vec![Interval {
                start: None,
                end: 50
            }]
        );
        assert!(m.covers(None, 50));
        assert_eq!(m.watermark, Some(50));
    }
}
