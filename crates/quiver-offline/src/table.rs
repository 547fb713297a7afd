//! [`OfflineTable`]: the one owner of an offline table's layout, its manifest, the
//! snapshots readers work from and the commits writers make (delta-rs's snapshot and
//! commit split). No other module lists table files or reads manifests.
//!
//! ```text
//! <offline>/<view>/v<version>/date=<YYYY-MM-DD>/part-<seq>-<n>.parquet   sorted by (keys, event_ts, created)
//! <offline>/<view>/v<version>/_manifest.json                             files, rows, coverage, watermark
//! <offline>/<view>/v<version>/_pushed/push-<seq>.pushlog                 rows pushed with `to: offline` (Parquet)
//! <offline>/<view>/v<version>/_superseded/date=…/part-….parquet.superseded   files of older manifests
//! ```
//!
//! **Commits.** A writer holds the table's file lock, writes its new files as `*.tmp`,
//! syncs them, renames them to their final names and then atomically replaces the
//! manifest (write, sync, rename). Files no manifest names are ignored by readers and
//! removed by the next writer, so a crash never leaves a half table.
//!
//! **Snapshots.** A reader reads the manifest once ([`OfflineTable::snapshot`]) and
//! reads exactly the files it names, however many commits happen meanwhile: a commit
//! does not delete the files it replaces but moves them to `_superseded/` (readers look
//! there when a file is gone from its place, [`DataFile::open`]) and records when; they
//! are deleted only once they have been superseded longer than the retention period
//! (`offline.retention`, one hour by default) or by an explicit vacuum. So a glob such as
//! `date=*/*.parquet` (or `**/*.parquet`) over a table sees the committed files and
//! nothing else — the push log and superseded files have other extensions — except for
//! the moment between a writer's renames and its manifest commit.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The manifest file of a table.
pub const MANIFEST: &str = "_manifest.json";
const LOCK: &str = "_lock";
/// Where superseded files wait for the end of the retention period.
const SUPERSEDED_DIR: &str = "_superseded";
const SUPERSEDED_SUFFIX: &str = ".superseded";
/// The push log's folder inside a table.
pub(crate) const PUSH_DIR: &str = "_pushed";
/// The extension of push log files (Parquet, named so `*.parquet` globs skip them).
pub(crate) const PUSH_LOG_EXTENSION: &str = "pushlog";
const TMP_SUFFIX: &str = ".tmp";

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

/// A file a commit replaced, and when (µs since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupersededFile {
    pub path: String,
    pub at: i64,
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

    /// Whether the time `t` lies inside this interval.
    pub fn contains(&self, t: i64) -> bool {
        self.start.is_none_or(|s| t >= s) && t <= self.end
    }
}

/// The committed state of an offline table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub view: String,
    pub version: u32,
    /// Commits so far; new files are named after the commit that adds them.
    #[serde(default)]
    pub sequence: u64,
    /// Files per event date (`YYYY-MM-DD`).
    pub partitions: BTreeMap<String, Vec<FileEntry>>,
    /// The event-time intervals materialized so far, merged and sorted.
    pub coverage: Vec<Interval>,
    /// The end of the latest materialized interval.
    pub watermark: Option<i64>,
    /// The push log: files of rows pushed to the offline store, oldest first.
    #[serde(default)]
    pub pushed: Vec<FileEntry>,
    /// Files replaced by earlier commits, kept for readers of older snapshots until the
    /// retention period has passed.
    #[serde(default)]
    pub superseded: Vec<SupersededFile>,
}

impl Manifest {
    pub fn empty(view: &str, version: u32) -> Self {
        Manifest {
            format_version: 1,
            view: view.to_string(),
            version,
            sequence: 0,
            partitions: BTreeMap::new(),
            coverage: Vec::new(),
            watermark: None,
            pushed: Vec::new(),
            superseded: Vec::new(),
        }
    }

    /// Rows of the table (events of an aggregation view; its tiles not counted).
    pub fn rows(&self) -> u64 {
        self.files()
            .filter(|f| !crate::materialize::is_tile_file(&f.path))
            .map(|f| f.rows)
            .sum()
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

/// The offline table of one view version.
#[derive(Debug, Clone)]
pub struct OfflineTable {
    dir: PathBuf,
    view: String,
    version: u32,
}

/// The table's exclusive lock, held by one writer at a time; released on drop.
#[derive(Debug)]
pub struct TableLock {
    _file: File,
}

/// What a vacuum removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VacuumStats {
    /// Superseded files deleted (their retention had passed).
    pub superseded_removed: usize,
    /// Files no manifest names (left by crashed runs) deleted.
    pub orphans_removed: usize,
    /// Superseded files still kept for readers.
    pub superseded_kept: usize,
}

impl OfflineTable {
    pub fn new(offline_root: &Path, view: &str, version: u32) -> Self {
        OfflineTable {
            dir: offline_root.join(view).join(format!("v{version}")),
            view: view.to_string(),
            version,
        }
    }

    /// The push log of a source: rows pushed into the source, which every view reading
    /// it merges when it is materialized. It lives under `<offline>/.sources/<source>/`
    /// (a folder name no view can have) and is committed like a table.
    pub fn for_source(offline_root: &Path, source: &str) -> Self {
        OfflineTable {
            dir: offline_root.join(".sources").join(source),
            view: source.to_string(),
            version: 0,
        }
    }

    /// The table's folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn view(&self) -> &str {
        &self.view
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    fn io(&self, path: &Path, e: std::io::Error) -> Error {
        Error::TableIo {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// The committed state now: what a reader works from until it is done.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            table: self.clone(),
            manifest: self.read_manifest()?,
        })
    }

    /// The committed manifest, or `None` when nothing was ever committed.
    pub(crate) fn read_manifest(&self) -> Result<Option<Manifest>> {
        let path = self.dir.join(MANIFEST);
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

    /// The committed manifest, or an empty one.
    pub(crate) fn manifest_or_empty(&self) -> Result<Manifest> {
        Ok(self
            .read_manifest()?
            .unwrap_or_else(|| Manifest::empty(&self.view, self.version)))
    }

    /// Takes the table's exclusive lock, waiting off the async runtime while another
    /// writer holds it (a server keeps answering lookups meanwhile).
    pub(crate) async fn lock(&self) -> Result<TableLock> {
        let table = self.clone();
        tokio::task::spawn_blocking(move || table.lock_blocking())
            .await
            .map_err(|e| Error::TableIo {
                path: self.dir.display().to_string(),
                message: format!("waiting for the table lock failed: {e}"),
            })?
    }

    fn lock_blocking(&self) -> Result<TableLock> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        let path = self.dir.join(LOCK);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io(&path, e))?;
        file.lock().map_err(|e| self.io(&path, e))?;
        Ok(TableLock { _file: file })
    }

    /// Where a writer creates a new file (`relative` is its final name): a `.tmp` file
    /// that [`commit`](Self::commit) renames into place.
    pub(crate) fn staging_path(&self, relative: &str) -> Result<PathBuf> {
        let path = self.dir.join(format!("{relative}{TMP_SUFFIX}"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.io(parent, e))?;
        }
        Ok(path)
    }

    /// Commits `manifest` (its `sequence` already advanced by the writer): syncs and
    /// renames the `added` files from their staging names into place, atomically
    /// replaces the manifest, then moves the `replaced` data files to `_superseded/`
    /// (recorded in the manifest at `now`, µs) and deletes the `dropped` ones (push log
    /// files, which only writers read). Call with the lock held.
    pub(crate) fn commit(
        &self,
        _lock: &TableLock,
        mut manifest: Manifest,
        added: &[&FileEntry],
        replaced: Vec<FileEntry>,
        dropped: Vec<FileEntry>,
        now: i64,
    ) -> Result<Manifest> {
        let mut folders = HashSet::new();
        for entry in added {
            let staged = self.dir.join(format!("{}{TMP_SUFFIX}", entry.path));
            let path = self.dir.join(&entry.path);
            File::open(&staged)
                .and_then(|f| f.sync_all())
                .map_err(|e| self.io(&staged, e))?;
            std::fs::rename(&staged, &path).map_err(|e| self.io(&path, e))?;
            if let Some(parent) = path.parent() {
                folders.insert(parent.to_path_buf());
            }
        }
        for folder in &folders {
            sync_dir(folder).map_err(|e| self.io(folder, e))?;
        }
        manifest
            .superseded
            .extend(replaced.iter().map(|f| SupersededFile {
                path: f.path.clone(),
                at: now,
            }));
        self.write_manifest(&manifest)?;
        for entry in &replaced {
            self.move_to_superseded(&entry.path)?;
        }
        for entry in &dropped {
            remove_if_exists(&self.dir.join(&entry.path)).map_err(|e| self.io(&self.dir, e))?;
        }
        Ok(manifest)
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let path = self.dir.join(MANIFEST);
        let tmp = self
            .dir
            .join(format!("{MANIFEST}.tmp-{}", std::process::id()));
        let text = serde_json::to_vec_pretty(manifest).expect("manifests serialize to JSON");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        };
        write().map_err(|e| self.io(&path, e))
    }

    fn superseded_path(&self, relative: &str) -> PathBuf {
        self.dir
            .join(SUPERSEDED_DIR)
            .join(format!("{relative}{SUPERSEDED_SUFFIX}"))
    }

    /// Moves a replaced file out of the globbed layout (a no-op when already moved).
    fn move_to_superseded(&self, relative: &str) -> Result<()> {
        let from = self.dir.join(relative);
        if !from.exists() {
            return Ok(());
        }
        let to = self.superseded_path(relative);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.io(parent, e))?;
        }
        std::fs::rename(&from, &to).map_err(|e| self.io(&from, e))
    }

    /// Takes the lock and vacuums: deletes superseded files older than `retention`
    /// (µs; `0` deletes them all) at `now` and files no manifest names.
    pub async fn vacuum(&self, retention: i64, now: i64) -> Result<VacuumStats> {
        let lock = self.lock().await?;
        let Some(mut manifest) = self.read_manifest()? else {
            return Ok(VacuumStats::default());
        };
        let before = manifest.superseded.len();
        let stats = self.vacuum_locked(&lock, &mut manifest, retention, now)?;
        if manifest.superseded.len() != before {
            self.write_manifest(&manifest)?;
        }
        Ok(stats)
    }

    /// The vacuum every writer runs first (with the lock held): finishes moves a crash
    /// interrupted, deletes superseded files past `retention` (dropping them from
    /// `manifest`, which the writer's commit then records) and deletes orphans.
    pub(crate) fn vacuum_locked(
        &self,
        _lock: &TableLock,
        manifest: &mut Manifest,
        retention: i64,
        now: i64,
    ) -> Result<VacuumStats> {
        let mut stats = VacuumStats::default();
        let cutoff = now.saturating_sub(retention);
        let mut kept = Vec::new();
        for file in std::mem::take(&mut manifest.superseded) {
            if file.at <= cutoff {
                remove_if_exists(&self.dir.join(&file.path))
                    .and_then(|()| remove_if_exists(&self.superseded_path(&file.path)))
                    .map_err(|e| self.io(&self.dir, e))?;
                stats.superseded_removed += 1;
            } else {
                self.move_to_superseded(&file.path)?;
                kept.push(file);
            }
        }
        manifest.superseded = kept;
        stats.superseded_kept = manifest.superseded.len();

        // Everything else under the table that the manifest does not name is an orphan.
        let named: HashSet<PathBuf> = manifest
            .files()
            .chain(&manifest.pushed)
            .map(|f| self.dir.join(&f.path))
            .chain(
                manifest
                    .superseded
                    .iter()
                    .map(|f| self.superseded_path(&f.path)),
            )
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(stats);
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir()
                && (name.starts_with("date=") || name == PUSH_DIR || name == SUPERSEDED_DIR)
            {
                stats.orphans_removed += remove_orphans(&path, &named);
            } else if name.starts_with(&format!("{MANIFEST}.tmp")) {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(stats)
    }
}

/// Deletes files under `dir` not in `named`, then empty folders; returns how many files.
fn remove_orphans(dir: &Path, named: &HashSet<PathBuf>) -> usize {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            removed += remove_orphans(&path, named);
        } else if !named.contains(&path) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    let _ = std::fs::remove_dir(dir); // only succeeds when empty
    removed
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename inside `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One committed state of a table, as a reader sees it for as long as it works.
#[derive(Debug, Clone)]
pub struct Snapshot {
    table: OfflineTable,
    manifest: Option<Manifest>,
}

impl Snapshot {
    /// Whether anything was ever committed.
    pub fn exists(&self) -> bool {
        self.manifest.is_some()
    }

    /// Whether `[start, end]` has been materialized.
    pub fn covers(&self, start: Option<i64>, end: i64) -> bool {
        self.manifest.as_ref().is_some_and(|m| m.covers(start, end))
    }

    /// Rows in the committed files.
    pub fn rows(&self) -> u64 {
        self.manifest.as_ref().map_or(0, Manifest::rows)
    }

    /// The end of the latest materialized interval.
    pub fn watermark(&self) -> Option<i64> {
        self.manifest.as_ref().and_then(|m| m.watermark)
    }

    /// The committed files of each event date, dates ascending, files in table order.
    pub fn partitions(&self) -> Vec<Vec<DataFile>> {
        self.manifest.as_ref().map_or_else(Vec::new, |m| {
            m.partitions
                .values()
                .map(|files| files.iter().map(|f| self.data_file(f)).collect())
                .collect()
        })
    }

    /// Every committed file in table order (dates ascending).
    pub fn files(&self) -> Vec<DataFile> {
        self.partitions().into_iter().flatten().collect()
    }

    fn data_file(&self, entry: &FileEntry) -> DataFile {
        DataFile {
            path: self.table.dir.join(&entry.path),
            superseded: self.table.superseded_path(&entry.path),
            rows: entry.rows,
            min_ts: entry.min_ts,
            max_ts: entry.max_ts,
        }
    }
}

/// A committed data file of a snapshot.
#[derive(Debug, Clone)]
pub struct DataFile {
    path: PathBuf,
    /// Where the file is once a later commit superseded it.
    superseded: PathBuf,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

impl DataFile {
    /// The file's place in the table (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file wherever it is now: in place, or moved to `_superseded/` by a
    /// later commit. Fails only when the retention period has passed.
    pub fn open(&self) -> Result<File> {
        match File::open(&self.path) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                File::open(&self.superseded).map_err(|_| Error::TableIo {
                    path: self.path.display().to_string(),
                    message: "the file is gone: a later commit superseded it and the retention period (offline.retention) has passed; run the read again".to_string(),
                })
            }
            Err(e) => Err(Error::TableIo {
                path: self.path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// The file's size in bytes (0 when it cannot be found).
    pub fn size(&self) -> u64 {
        std::fs::metadata(&self.path)
            .or_else(|_| std::fs::metadata(&self.superseded))
            .map_or(0, |m| m.len())
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
