//! Where offline tables and sources live: a local folder, or a prefix of an
//! S3-compatible bucket (`s3://bucket/prefix`) reached through the `object_store` crate
//! that DataFusion reads with.
//!
//! This module knows URLs, credentials and clients; [`crate::table`] decides what to
//! read and write. Credentials come from the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), overridden by the keys of `quiver.toml`'s
//! `[storage]` table ([`StorageOptions`]). One client per bucket and settings is kept for
//! the life of the process, so its connections are reused.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::file::reader::{ChunkReader, Length};

use crate::{Error, Result};

/// The schemes an object-store location may have.
const SCHEMES: &[&str] = &["s3", "s3a"];

/// Settings for object storage, by their `object_store` names (`aws_endpoint_url`,
/// `aws_region`, …): applied over the AWS environment variables. Values are secrets
/// and never printed.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StorageOptions {
    settings: BTreeMap<String, String>,
}

impl fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.settings.keys()).finish()
    }
}

impl StorageOptions {
    pub fn new(settings: impl IntoIterator<Item = (String, String)>) -> Self {
        StorageOptions {
            settings: settings.into_iter().collect(),
        }
    }
}

/// Whether `location` names object storage (a URL) rather than a local path.
pub fn is_object_url(location: &str) -> bool {
    location.contains("://")
}

/// A parsed `s3://bucket/key` location.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObjectUrl {
    bucket: String,
    /// Without leading or trailing `/`; may be empty (the bucket's root).
    key: String,
}

impl ObjectUrl {
    fn parse(location: &str) -> std::result::Result<Self, String> {
        let (scheme, rest) = location
            .split_once("://")
            .ok_or_else(|| format!("`{location}` is not a URL"))?;
        if !SCHEMES.contains(&scheme) {
            return Err(format!(
                "`{location}`: the `{scheme}://` scheme is not supported; use a local path or `s3://bucket/prefix` (S3 or an S3-compatible store such as MinIO, R2 or Ceph)"
            ));
        }
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "`{location}` names no bucket: write `s3://bucket/prefix`"
            ));
        }
        Ok(ObjectUrl {
            bucket: bucket.to_string(),
            key: key.trim_matches('/').to_string(),
        })
    }

    /// `s3://bucket`, the URL DataFusion finds the bucket's client under.
    fn bucket_url(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}

/// The client of a bucket with the given settings, made once per process.
fn client(bucket: &str, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>> {
    type Clients = Mutex<HashMap<(String, StorageOptions), Arc<dyn ObjectStore>>>;
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    let key = (bucket.to_string(), options.clone());
    let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(client) = clients.get(&key) {
        return Ok(Arc::clone(client));
    }
    // A few quick retries: a store that is down is reported within seconds instead of
    // after object_store's default three minutes.
    let retry = object_store::RetryConfig {
        max_retries: 4,
        retry_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    };
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry);
    for (name, value) in &options.settings {
        let key = name.parse().map_err(|_| Error::Storage {
            location: format!("s3://{bucket}"),
            message: format!("`storage.{name}` is not an S3 setting"),
        })?;
        builder = builder.with_config(key, value);
    }
    let client: Arc<dyn ObjectStore> = Arc::new(builder.build().map_err(|e| Error::Storage {
        location: format!("s3://{bucket}"),
        message: format!(
            "cannot configure the S3 client: {e} (set AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and, for a store other than AWS, AWS_ENDPOINT_URL, or the [storage] keys of quiver.toml)"
        ),
    })?);
    clients.insert(key, Arc::clone(&client));
    Ok(client)
}

/// A folder: local, or a prefix in a bucket.
#[derive(Clone)]
pub enum Location {
    Local(PathBuf),
    Object(ObjectLocation),
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// A prefix in a bucket, with the bucket's client.
#[derive(Clone)]
pub struct ObjectLocation {
    store: Arc<dyn ObjectStore>,
    url: ObjectUrl,
}

impl Location {
    /// `location` as written in the config: an `s3://` URL, or a path relative to
    /// `repo_root` (or absolute).
    pub fn open(location: &str, repo_root: &Path, options: &StorageOptions) -> Result<Self> {
        if !is_object_url(location) {
            return Ok(Location::Local(repo_root.join(location)));
        }
        let url = ObjectUrl::parse(location).map_err(|message| Error::Storage {
            location: location.to_string(),
            message,
        })?;
        Ok(Location::Object(ObjectLocation {
            store: client(&url.bucket, options)?,
            url,
        }))
    }

    /// The location `relative` (`/`-separated) below this one.
    pub fn join(&self, relative: &str) -> Location {
        match self {
            Location::Local(dir) => Location::Local(dir.join(relative)),
            Location::Object(object) => {
                let mut url = object.url.clone();
                url.key = join_key(&url.key, relative);
                Location::Object(ObjectLocation {
                    url,
                    ..object.clone()
                })
            }
        }
    }

    /// The path or URL, for messages and for DataFusion to read.
    pub fn display(&self) -> String {
        match self {
            Location::Local(dir) => dir.display().to_string(),
            Location::Object(object) => {
                format!("{}/{}", object.url.bucket_url(), object.url.key)
            }
        }
    }

    /// Makes this location readable by DataFusion in `ctx` (a no-op for a local
    /// folder): its bucket's client, under `s3://bucket`. Sessions built from `ctx`'s
    /// runtime share it.
    pub fn register(&self, ctx: &SessionContext) -> Result<()> {
        if let Location::Object(object) = self {
            let bucket = ObjectStoreUrl::parse(object.url.bucket_url())?;
            ctx.register_object_store(bucket.as_ref(), Arc::clone(&object.store));
        }
        Ok(())
    }
}

impl ObjectLocation {
    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object key of `relative` below this prefix.
    pub(crate) fn key(&self, relative: &str) -> ObjectPath {
        ObjectPath::from(join_key(&self.url.key, relative))
    }

    /// This prefix as an object key.
    pub(crate) fn prefix(&self) -> ObjectPath {
        ObjectPath::from(self.url.key.as_str())
    }
}

fn join_key(key: &str, relative: &str) -> String {
    let relative = relative.trim_matches('/');
    match (key.is_empty(), relative.is_empty()) {
        (true, _) => relative.to_string(),
        (false, true) => key.to_string(),
        (false, false) => format!("{key}/{relative}"),
    }
}

/// Runs object-store requests for synchronous readers (the Parquet readers of exports
/// and lookups run on blocking threads): a small runtime of its own, so a request never
/// needs the caller's runtime.
pub(crate) fn block_on<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quiver-object-io")
            .enable_all()
            .build()
            .expect("a two-thread runtime builds")
    });
    futures::executor::block_on(runtime.spawn(future)).unwrap_or_else(|e| {
        std::panic::resume_unwind(e.into_panic());
    })
}

/// A committed file opened for reading: a local file, or an object read by byte range
/// (a Parquet reader fetches the footer, then only the column chunks of the row groups
/// it reads).
pub enum TableFile {
    Local(File),
    Object(ObjectFile),
}

impl fmt::Debug for TableFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableFile::Local(file) => file.fmt(f),
            TableFile::Object(object) => write!(f, "{} ({} bytes)", object.key, object.size),
        }
    }
}

/// An object of known size, read by range.
pub struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    size: u64,
}

impl ObjectFile {
    /// The object, its size asked for once and kept in `size` for later opens (a file
    /// is opened again by each pass of an export); `Ok(None)` when there is no such
    /// object.
    pub(crate) fn open(
        store: &Arc<dyn ObjectStore>,
        key: ObjectPath,
        size: &OnceLock<u64>,
    ) -> Result<Option<Self>> {
        let size = match size.get() {
            Some(size) => *size,
            None => {
                let (client, head_key) = (Arc::clone(store), key.clone());
                match block_on(async move { client.head(&head_key).await }) {
                    Ok(meta) => *size.get_or_init(|| meta.size),
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => {
                        return Err(Error::TableIo {
                            path: key.to_string(),
                            message: e.to_string(),
                        });
                    }
                }
            }
        };
        Ok(Some(ObjectFile {
            store: Arc::clone(store),
            key,
            size,
        }))
    }

    fn range(&self, start: u64, end: u64) -> parquet::errors::Result<Bytes> {
        let (store, key) = (Arc::clone(&self.store), self.key.clone());
        block_on(async move { store.get_range(&key, start..end).await })
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

impl Length for TableFile {
    fn len(&self) -> u64 {
        match self {
            TableFile::Local(file) => file.len(),
            TableFile::Object(object) => object.size,
        }
    }
}

impl ChunkReader for TableFile {
    type T = Box<dyn Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        match self {
            TableFile::Local(file) => Ok(Box::new(file.get_read(start)?)),
            TableFile::Object(object) => Ok(Box::new(std::io::Cursor::new(
                object.range(start, object.size)?,
            ))),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            TableFile::Local(file) => file.get_bytes(start, length),
            TableFile::Object(object) => object.range(start, start + length as u64),
        }
    }
}
