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
//! **Commits.** On a local folder a writer holds the table's file lock, writes its new
//! files as `*.tmp`, syncs them, renames them to their final names and then atomically
//! replaces the manifest (write, sync, rename). On object storage (`s3://…`, see
//! [`crate::storage`]) there are no locks and no renames: a writer stages its files
//! locally, uploads them under names no other writer uses (a random tag after the
//! commit number), then replaces the manifest with a conditional put — create-if-absent
//! for the first commit, `If-Match` the manifest's ETag it started from afterwards — so
//! of two writers only one wins; the other gets [`Error::CommitConflict`] and deletes
//! its uploads. (Writers in one process take turns.) Either way files no manifest names
//! are ignored by readers and removed by a later writer, so a crash never leaves a half
//! table.
//!
//! **Snapshots.** A reader reads the manifest once ([`OfflineTable::snapshot`]) and
//! reads exactly the files it names, however many commits happen meanwhile: a commit
//! does not delete the files it replaces but moves them to `_superseded/` (readers look
//! there when a file is gone from its place, [`DataFile::open`]) and records when; they
//! are deleted only once they have been superseded longer than the retention period
//! (`offline.retention`, one hour by default) or by an explicit vacuum. (On object
//! storage, where a move is a copy, superseded files stay in place until then, and files
//! no manifest names are removed only once they are older than the retention period,
//! since they may be another writer's uploads in flight.) Locally, a glob such as
//! `date=*/*.parquet` (or `**/*.parquet`) over a table sees the committed files and
//! nothing else — the push log and superseded files have other extensions — except for
//! the moment between a writer's renames and its manifest commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::storage::{Location, ObjectFile, ObjectLocation, TableFile};
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
    dir: Location,
    view: String,
    version: u32,
    /// Put after the commit number in the names of new files: empty on a local folder
    /// (the lock makes names unique), random on object storage, where writers of other
    /// processes may race for the same commit number.
    tag: String,
}

/// The table's exclusive lock, held by one writer at a time, and the manifest it found
/// committed; released on drop. On object storage it excludes writers of this process
/// only; writers of other processes are caught at commit ([`Error::CommitConflict`]).
#[derive(Debug)]
pub struct TableLock {
    _guard: LockGuard,
    base: Option<Manifest>,
    /// The committed manifest's version on object storage, for the conditional put.
    base_version: Option<UpdateVersion>,
}

#[derive(Debug)]
enum LockGuard {
    File(#[allow(dead_code, reason = "held for its lock")] File),
    Process(#[allow(dead_code, reason = "held for its lock")] tokio::sync::OwnedMutexGuard<()>),
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
    pub fn new(offline_root: &Location, view: &str, version: u32) -> Self {
        Self::at(
            offline_root.join(&format!("{view}/v{version}")),
            view,
            version,
        )
    }

    /// The push log of a source: rows pushed into the source, which every view reading
    /// it merges when it is materialized. It lives under `<offline>/.sources/<source>/`
    /// (a folder name no view can have) and is committed like a table.
    pub fn for_source(offline_root: &Location, source: &str) -> Self {
        Self::at(offline_root.join(&format!(".sources/{source}")), source, 0)
    }

    fn at(dir: Location, view: &str, version: u32) -> Self {
        let tag = match dir {
            Location::Local(_) => String::new(),
            Location::Object(_) => format!("-{}", random_tag()),
        };
        OfflineTable {
            dir,
            view: view.to_string(),
            version,
            tag,
        }
    }

    /// The table's folder or prefix.
    pub fn location(&self) -> &Location {
        &self.dir
    }

    /// The table's folder when it is local.
    pub fn local_path(&self) -> Option<&Path> {
        match &self.dir {
            Location::Local(dir) => Some(dir),
            Location::Object(_) => None,
        }
    }

    pub fn view(&self) -> &str {
        &self.view
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// What new files of commit `sequence` are named after: `<sequence>` zero-padded,
    /// then this writer's tag.
    pub(crate) fn commit_name(&self, sequence: u64) -> String {
        format!("{sequence:012}{}", self.tag)
    }

    /// The path or URL of a file of the table, for DataFusion to read.
    pub(crate) fn file_url(&self, relative: &str) -> String {
        self.dir.join(relative).display()
    }

    fn io(&self, path: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
        Error::TableIo {
            path: path.to_string(),
            message: e.to_string(),
        }
    }

    /// The committed state now: what a reader works from until it is done.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            table: self.clone(),
            manifest: self.read_manifest().await?,
        })
    }

    /// The committed manifest, or `None` when nothing was ever committed.
    pub(crate) async fn read_manifest(&self) -> Result<Option<Manifest>> {
        Ok(self.read_versioned().await?.map(|(manifest, _)| manifest))
    }

    /// The committed manifest and, on object storage, its version.
    async fn read_versioned(&self) -> Result<Option<(Manifest, Option<UpdateVersion>)>> {
        let place = self.dir.join(MANIFEST).display();
        let (bytes, version) = match &self.dir {
            Location::Local(dir) => match std::fs::read(dir.join(MANIFEST)) {
                Ok(bytes) => (bytes::Bytes::from(bytes), None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.io(&place, e)),
            },
            Location::Object(object) => {
                let key = object.key(MANIFEST);
                match object.store().get(&key).await {
                    Ok(got) => {
                        let version = UpdateVersion {
                            e_tag: got.meta.e_tag.clone(),
                            version: got.meta.version.clone(),
                        };
                        let bytes = got.bytes().await.map_err(|e| self.io(&place, e))?;
                        (bytes, Some(version))
                    }
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(self.io(&place, e)),
                }
            }
        };
        let manifest = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptManifest {
            path: place,
            message: e.to_string(),
        })?;
        Ok(Some((manifest, version)))
    }

    /// The manifest a writer holding `lock` starts from: the committed one, or an empty one.
    pub(crate) fn manifest_or_empty(&self, lock: &TableLock) -> Manifest {
        lock.base
            .clone()
            .unwrap_or_else(|| Manifest::empty(&self.view, self.version))
    }

    /// Takes the table's exclusive lock (waiting off the async runtime while another
    /// writer holds it, so a server keeps answering lookups meanwhile) and reads the
    /// committed manifest.
    pub(crate) async fn lock(&self) -> Result<TableLock> {
        let guard = match &self.dir {
            Location::Local(_) => {
                let table = self.clone();
                let file = tokio::task::spawn_blocking(move || table.lock_blocking())
                    .await
                    .map_err(|e| {
                        self.io(
                            self.dir.display(),
                            format!("waiting for the table lock failed: {e}"),
                        )
                    })??;
                LockGuard::File(file)
            }
            Location::Object(_) => {
                let guard = process_lock(&self.dir.display()).lock_owned().await;
                // Files a failed writer of this process staged and never uploaded.
                let _ = std::fs::remove_dir_all(self.staging_dir());
                LockGuard::Process(guard)
            }
        };
        let (base, base_version) = match self.read_versioned().await? {
            Some((manifest, version)) => (Some(manifest), version),
            None => (None, None),
        };
        Ok(TableLock {
            _guard: guard,
            base,
            base_version,
        })
    }

    fn lock_blocking(&self) -> Result<File> {
        let Location::Local(dir) = &self.dir else {
            unreachable!("only local tables take a file lock")
        };
        std::fs::create_dir_all(dir).map_err(|e| self.io(dir.display(), e))?;
        let path = dir.join(LOCK);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io(path.display(), e))?;
        file.lock().map_err(|e| self.io(path.display(), e))?;
        Ok(file)
    }

    /// Where a writer of an object-storage table stages its files before uploading them.
    fn staging_dir(&self) -> PathBuf {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.dir.display().hash(&mut hasher);
        std::env::temp_dir().join("quiver-staging").join(format!(
            "{}-{:016x}",
            std::process::id(),
            hasher.finish()
        ))
    }

    /// Where a writer creates a new file (`relative` is its final name): a `.tmp` file
    /// that [`commit`](Self::commit) renames into place, or on object storage a local
    /// file it uploads.
    pub(crate) fn staging_path(&self, relative: &str) -> Result<PathBuf> {
        let path = match &self.dir {
            Location::Local(dir) => dir.join(format!("{relative}{TMP_SUFFIX}")),
            Location::Object(_) => self.staging_dir().join(relative),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.io(parent.display(), e))?;
        }
        Ok(path)
    }

    /// Commits `manifest` (its `sequence` already advanced by the writer): puts the
    /// `added` files in place (renamed from their staging names, or uploaded), replaces
    /// the manifest atomically, then supersedes the `replaced` data files (recorded in the
    /// manifest at `now`, µs) and deletes the `dropped` ones (push log files, which only
    /// writers read). Call once per lock.
    pub(crate) async fn commit(
        &self,
        lock: &TableLock,
        mut manifest: Manifest,
        added: &[&FileEntry],
        replaced: Vec<FileEntry>,
        dropped: Vec<FileEntry>,
        now: i64,
    ) -> Result<Manifest> {
        manifest
            .superseded
            .extend(replaced.iter().map(|f| SupersededFile {
                path: f.path.clone(),
                at: now,
            }));
        match &self.dir {
            Location::Local(dir) => {
                let mut folders = HashSet::new();
                for entry in added {
                    let staged = dir.join(format!("{}{TMP_SUFFIX}", entry.path));
                    let path = dir.join(&entry.path);
                    File::open(&staged)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| self.io(staged.display(), e))?;
                    std::fs::rename(&staged, &path).map_err(|e| self.io(path.display(), e))?;
                    if let Some(parent) = path.parent() {
                        folders.insert(parent.to_path_buf());
                    }
                }
                for folder in &folders {
                    sync_dir(folder).map_err(|e| self.io(folder.display(), e))?;
                }
                self.put_manifest(lock, &manifest).await?;
                for entry in &replaced {
                    self.move_to_superseded(&entry.path)?;
                }
                for entry in &dropped {
                    remove_if_exists(&dir.join(&entry.path))
                        .map_err(|e| self.io(dir.display(), e))?;
                }
            }
            Location::Object(object) => {
                let uploaded = self.upload(object, added).await;
                let committed = match uploaded {
                    Ok(()) => self.put_manifest(lock, &manifest).await,
                    Err(e) => Err(e),
                };
                let _ = std::fs::remove_dir_all(self.staging_dir());
                if let Err(e) = committed {
                    let keys = added.iter().map(|f| object.key(&f.path)).collect();
                    delete_objects(object.store(), keys).await;
                    return Err(e);
                }
                // Replaced files stay in place until their retention passes.
                let keys = dropped.iter().map(|f| object.key(&f.path)).collect();
                delete_objects(object.store(), keys).await;
            }
        }
        Ok(manifest)
    }

    /// Uploads staged files, a few at a time, each in parts when large.
    async fn upload(&self, object: &ObjectLocation, added: &[&FileEntry]) -> Result<()> {
        let uploads: Vec<_> = added
            .iter()
            .map(|entry| {
                upload_file(
                    Arc::clone(object.store()),
                    self.staging_dir().join(&entry.path),
                    object.key(&entry.path),
                    self.file_url(&entry.path),
                )
            })
            .collect();
        futures::stream::iter(uploads)
            .buffer_unordered(4)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Replaces the manifest: write, sync, rename locally; on object storage a put that
    /// succeeds only if the manifest is still the one `lock` found.
    async fn put_manifest(&self, lock: &TableLock, manifest: &Manifest) -> Result<()> {
        let text = serde_json::to_vec_pretty(manifest).expect("manifests serialize to JSON");
        match &self.dir {
            Location::Local(dir) => {
                let path = dir.join(MANIFEST);
                let tmp = dir.join(format!("{MANIFEST}.tmp-{}", std::process::id()));
                let write = || -> std::io::Result<()> {
                    let mut file = File::create(&tmp)?;
                    file.write_all(&text)?;
                    file.sync_all()?;
                    std::fs::rename(&tmp, &path)?;
                    sync_dir(dir)
                };
                write().map_err(|e| self.io(path.display(), e))
            }
            Location::Object(object) => {
                let mode = match (&lock.base, &lock.base_version) {
                    (None, _) => PutMode::Create,
                    (Some(_), Some(version)) => PutMode::Update(version.clone()),
                    (Some(_), None) => PutMode::Overwrite,
                };
                let options = PutOptions {
                    mode,
                    ..PutOptions::default()
                };
                let key = object.key(MANIFEST);
                match object.store().put_opts(&key, text.into(), options).await {
                    Ok(_) => Ok(()),
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. },
                    ) => Err(Error::CommitConflict {
                        table: self.dir.display(),
                    }),
                    Err(e) => Err(self.io(self.file_url(MANIFEST), e)),
                }
            }
        }
    }

    fn superseded_path(dir: &Path, relative: &str) -> PathBuf {
        dir.join(SUPERSEDED_DIR)
            .join(format!("{relative}{SUPERSEDED_SUFFIX}"))
    }

    /// Moves a replaced local file out of the globbed layout (a no-op when already moved,
    /// and on object storage).
    fn move_to_superseded(&self, relative: &str) -> Result<()> {
        let Location::Local(dir) = &self.dir else {
            return Ok(());
        };
        let from = dir.join(relative);
        if !from.exists() {
            return Ok(());
        }
        let to = Self::superseded_path(dir, relative);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.io(parent.display(), e))?;
        }
        std::fs::rename(&from, &to).map_err(|e| self.io(from.display(), e))
    }

    /// Takes the lock and vacuums: deletes superseded files older than `retention`
    /// (µs; `0` deletes them all) at `now` and files no manifest names.
    pub async fn vacuum(&self, retention: i64, now: i64) -> Result<VacuumStats> {
        let lock = self.lock().await?;
        let Some(mut manifest) = lock.base.clone() else {
            return Ok(VacuumStats::default());
        };
        let before = manifest.superseded.len();
        let stats = self
            .vacuum_locked(&lock, &mut manifest, retention, now)
            .await?;
        if manifest.superseded.len() != before {
            self.put_manifest(&lock, &manifest).await?;
        }
        Ok(stats)
    }

    /// The vacuum every writer runs first (with the lock held): finishes moves a crash
    /// interrupted, deletes superseded files past `retention` (dropping them from
    /// `manifest`, which the writer's commit then records) and deletes orphans.
    pub(crate) async fn vacuum_locked(
        &self,
        _lock: &TableLock,
        manifest: &mut Manifest,
        retention: i64,
        now: i64,
    ) -> Result<VacuumStats> {
        let mut stats = VacuumStats::default();
        let cutoff = now.saturating_sub(retention);
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut manifest.superseded)
            .into_iter()
            .partition(|file| file.at <= cutoff);
        for file in &kept {
            self.move_to_superseded(&file.path)?;
        }
        stats.superseded_removed = expired.len();
        stats.superseded_kept = kept.len();
        manifest.superseded = kept;
        match &self.dir {
            Location::Local(dir) => {
                for file in &expired {
                    remove_if_exists(&dir.join(&file.path))
                        .and_then(|()| remove_if_exists(&Self::superseded_path(dir, &file.path)))
                        .map_err(|e| self.io(dir.display(), e))?;
                }
                stats.orphans_removed = self.remove_local_orphans(dir, manifest);
            }
            Location::Object(object) => {
                let keys = expired.iter().map(|f| object.key(&f.path)).collect();
                delete_objects(object.store(), keys).await;
                stats.orphans_removed = self
                    .remove_object_orphans(object, manifest, retention)
                    .await?;
            }
        }
        Ok(stats)
    }

    /// Deletes every file under a local table that the manifest does not name.
    fn remove_local_orphans(&self, dir: &Path, manifest: &Manifest) -> usize {
        let named: HashSet<PathBuf> = manifest
            .files()
            .chain(&manifest.pushed)
            .map(|f| dir.join(&f.path))
            .chain(
                manifest
                    .superseded
                    .iter()
                    .map(|f| Self::superseded_path(dir, &f.path)),
            )
            .collect();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir()
                && (name.starts_with("date=") || name == PUSH_DIR || name == SUPERSEDED_DIR)
            {
                removed += remove_orphans(&path, &named);
            } else if name.starts_with(&format!("{MANIFEST}.tmp")) {
                let _ = std::fs::remove_file(&path);
            }
        }
        removed
    }

    /// Deletes the objects under a table that the manifest does not name and that are
    /// older than `retention` (younger ones may be another writer's uploads in flight).
    async fn remove_object_orphans(
        &self,
        object: &ObjectLocation,
        manifest: &Manifest,
        retention: i64,
    ) -> Result<usize> {
        let named: HashSet<ObjectPath> = manifest
            .files()
            .chain(&manifest.pushed)
            .map(|f| object.key(&f.path))
            .chain(manifest.superseded.iter().map(|f| object.key(&f.path)))
            .chain([object.key(MANIFEST)])
            .collect();
        let cutoff = chrono::Utc::now() - chrono::Duration::microseconds(retention);
        let listed: Vec<_> = object
            .store()
            .list(Some(&object.prefix()))
            .try_collect()
            .await
            .map_err(|e| self.io(self.dir.display(), e))?;
        let orphans: Vec<ObjectPath> = listed
            .into_iter()
            .filter(|meta| !named.contains(&meta.location) && meta.last_modified <= cutoff)
            .map(|meta| meta.location)
            .collect();
        let count = orphans.len();
        delete_objects(object.store(), orphans).await;
        Ok(count)
    }
}

/// Uploads one staged file to `key` (`url` names it in messages).
async fn upload_file(
    store: Arc<dyn ObjectStore>,
    staged: PathBuf,
    key: ObjectPath,
    url: String,
) -> Result<()> {
    let failed = |e: std::io::Error| Error::TableIo {
        path: url.clone(),
        message: e.to_string(),
    };
    let mut file = tokio::fs::File::open(&staged).await.map_err(failed)?;
    let mut writer = object_store::buffered::BufWriter::new(store, key);
    match tokio::io::copy(&mut file, &mut writer).await {
        Ok(_) => tokio::io::AsyncWriteExt::shutdown(&mut writer)
            .await
            .map_err(failed),
        Err(e) => {
            let _ = writer.abort().await;
            Err(failed(e))
        }
    }
}

/// Deletes objects, best effort (a later vacuum retries what is left).
async fn delete_objects(store: &Arc<dyn ObjectStore>, keys: Vec<ObjectPath>) {
    let deletes: Vec<_> = keys
        .into_iter()
        .map(|key| delete_object(Arc::clone(store), key))
        .collect();
    futures::stream::iter(deletes)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

async fn delete_object(store: Arc<dyn ObjectStore>, key: ObjectPath) {
    match store.delete(&key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(object = %key, error = %e, "could not delete an object"),
    }
}

/// The lock writers of this process take on an object-storage table.
fn process_lock(table: &str) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Arc::clone(locks.entry(table.to_string()).or_default())
}

/// Eight hex digits no other writer is likely to pick: the process, the time and a
/// counter, mixed.
fn random_tag() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:08x}", hasher.finish() as u32)
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
        let place = match &self.table.dir {
            Location::Local(dir) => FilePlace::Local {
                path: dir.join(&entry.path),
                superseded: OfflineTable::superseded_path(dir, &entry.path),
            },
            Location::Object(object) => FilePlace::Object {
                store: Arc::clone(object.store()),
                key: object.key(&entry.path),
                size: Arc::default(),
            },
        };
        DataFile {
            name: entry.path.clone(),
            url: self.table.file_url(&entry.path),
            place,
            rows: entry.rows,
            min_ts: entry.min_ts,
            max_ts: entry.max_ts,
        }
    }
}

/// A committed data file of a snapshot.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Relative to the table.
    name: String,
    url: String,
    place: FilePlace,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

#[derive(Clone)]
enum FilePlace {
    Local {
        path: PathBuf,
        /// Where the file is once a later commit superseded it.
        superseded: PathBuf,
    },
    Object {
        store: Arc<dyn ObjectStore>,
        key: ObjectPath,
        /// Learnt on the first open (objects of a snapshot never change).
        size: Arc<OnceLock<u64>>,
    },
}

impl std::fmt::Debug for FilePlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilePlace::Local { path, .. } => write!(f, "{}", path.display()),
            FilePlace::Object { key, .. } => write!(f, "{key}"),
        }
    }
}

impl DataFile {
    /// The file's path or URL (for messages).
    pub fn display(&self) -> &str {
        &self.url
    }

    /// The file's name relative to its table (`date=…/part-….parquet`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens the file wherever it is now: in place, or moved to `_superseded/` by a
    /// later commit. Fails only when the retention period has passed.
    pub fn open(&self) -> Result<TableFile> {
        let gone = || {
            Error::TableIo {
            path: self.url.clone(),
            message: "the file is gone: a later commit superseded it and the retention period (offline.retention) has passed; run the read again".to_string(),
        }
        };
        match &self.place {
            FilePlace::Local { path, superseded } => match File::open(path) {
                Ok(file) => Ok(TableFile::Local(file)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::open(superseded)
                    .map(TableFile::Local)
                    .map_err(|_| gone()),
                Err(e) => Err(Error::TableIo {
                    path: self.url.clone(),
                    message: e.to_string(),
                }),
            },
            FilePlace::Object { store, key, size } => ObjectFile::open(store, key.clone(), size)?
                .map(TableFile::Object)
                .ok_or_else(gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3_server;
    use crate::storage::StorageOptions;

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

    /// A table in a new bucket of the suite's `moto_server`.
    fn s3_table() -> (&'static s3_server::S3Server, String, OfflineTable) {
        let s3 = s3_server::shared();
        let bucket = s3.bucket("table");
        let options = StorageOptions::new(
            [
                ("aws_endpoint_url", s3.endpoint()),
                ("aws_allow_http", "true".to_string()),
                ("aws_region", "us-east-1".to_string()),
                ("aws_access_key_id", "quiver-test".to_string()),
                ("aws_secret_access_key", "quiver-test".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        let root = Location::open(&format!("s3://{bucket}/root"), Path::new("."), &options)
            .expect("an s3:// root opens");
        (s3, bucket, OfflineTable::new(&root, "v", 1))
    }

    /// Stages a file for `table` and returns its entry.
    fn staged(table: &OfflineTable, name: &str) -> FileEntry {
        let path = format!("date=2026-01-01/{name}");
        std::fs::write(table.staging_path(&path).unwrap(), name).unwrap();
        FileEntry {
            path,
            rows: 1,
            min_ts: 0,
            max_ts: 0,
        }
    }

    fn with_file(mut manifest: Manifest, sequence: u64, entry: &FileEntry) -> Manifest {
        manifest.sequence = sequence;
        manifest
            .partitions
            .insert("2026-01-01".into(), vec![entry.clone()]);
        manifest
    }

    #[tokio::test]
    async fn on_object_storage_a_writer_that_lost_the_race_changes_nothing() {
        let (s3, bucket, table) = s3_table();
        // Writer A finds nothing committed; another process commits first.
        let a = table.lock().await.unwrap();
        let other = Manifest {
            sequence: 1,
            ..Manifest::empty("v", 1)
        };
        s3.put(
            &bucket,
            "root/v/v1/_manifest.json",
            &serde_json::to_vec(&other).unwrap(),
        );
        let entry = staged(&table, "part-a.parquet");
        let mine = with_file(table.manifest_or_empty(&a), 1, &entry);
        let err = table
            .commit(&a, mine, &[&entry], Vec::new(), Vec::new(), 0)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CommitConflict { .. }), "{err}");
        assert!(err.to_string().contains("run the command again"), "{err}");
        assert_eq!(
            s3.keys(&bucket, "root/"),
            vec!["root/v/v1/_manifest.json"],
            "the loser's upload is deleted"
        );
        assert_eq!(table.read_manifest().await.unwrap(), Some(other));
        drop(a);

        // B starts from that commit and wins; its lock is then stale, so a second
        // commit from the same starting point (If-Match an old ETag) is refused.
        let b = table.lock().await.unwrap();
        let entry = staged(&table, "part-b.parquet");
        let next = with_file(table.manifest_or_empty(&b), 2, &entry);
        table
            .commit(&b, next.clone(), &[&entry], Vec::new(), Vec::new(), 0)
            .await
            .unwrap();
        assert_eq!(table.read_manifest().await.unwrap(), Some(next.clone()));
        let entry = staged(&table, "part-c.parquet");
        let stale = with_file(table.manifest_or_empty(&b), 2, &entry);
        let err = table
            .commit(&b, stale, &[&entry], Vec::new(), Vec::new(), 0)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CommitConflict { .. }), "{err}");
        assert_eq!(table.read_manifest().await.unwrap(), Some(next));
        assert_eq!(
            s3.keys(&bucket, "root/"),
            vec![
                "root/v/v1/_manifest.json",
                "root/v/v1/date=2026-01-01/part-b.parquet"
            ]
        );
        // A snapshot reads its file by range.
        let snapshot = table.snapshot().await.unwrap();
        let file = snapshot.files()[0].open().unwrap();
        assert_eq!(
            parquet::file::reader::ChunkReader::get_bytes(&file, 5, 1).unwrap(),
            "b".as_bytes()
        );
    }

    #[tokio::test]
    async fn on_object_storage_orphans_are_removed_once_older_than_the_retention() {
        let (s3, bucket, table) = s3_table();
        let lock = table.lock().await.unwrap();
        let entry = staged(&table, "part-1.parquet");
        let committed = with_file(table.manifest_or_empty(&lock), 1, &entry);
        table
            .commit(&lock, committed, &[&entry], Vec::new(), Vec::new(), 0)
            .await
            .unwrap();
        drop(lock);
        // What a writer killed after its upload leaves behind.
        s3.put(
            &bucket,
            "root/v/v1/date=2026-01-01/part-2-dead.parquet",
            b"x",
        );

        let hour = 3_600_000_000;
        let lock = table.lock().await.unwrap();
        let mut manifest = table.manifest_or_empty(&lock);
        let young = table
            .vacuum_locked(&lock, &mut manifest, hour, 0)
            .await
            .unwrap();
        assert_eq!(
            young.orphans_removed, 0,
            "it may be a writer's upload in flight"
        );
        let old = table
            .vacuum_locked(&lock, &mut manifest, 0, 0)
            .await
            .unwrap();
        assert_eq!(old.orphans_removed, 1);
        assert_eq!(
            s3.keys(&bucket, "root/"),
            vec![
                "root/v/v1/_manifest.json",
                "root/v/v1/date=2026-01-01/part-1.parquet"
            ]
        );
    }
}
