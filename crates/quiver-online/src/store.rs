//! The [`OnlineStore`] trait and the types it speaks.

use std::fmt;

use arrow::array::{Array as _, ArrayRef};
use arrow::datatypes::DataType;
use async_trait::async_trait;

use crate::Result;

/// One version of one feature view, as the online store sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewRef {
    pub project: String,
    pub view: String,
    pub version: u32,
    /// Values older than this (µs) at lookup time are `OUTSIDE_MAX_AGE`.
    pub ttl_micros: Option<i64>,
    /// Every feature of the view version, in order, with its type: the layout of values.
    pub features: Vec<(String, DataType)>,
}

impl ViewRef {
    /// The namespace of this view version's keys: `q:{project}:{view}:{version}:`.
    pub fn key_prefix(&self) -> Vec<u8> {
        format!("q:{}:{}:{}:", self.project, self.view, self.version).into_bytes()
    }
}

impl fmt::Display for ViewRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} v{}", self.project, self.view, self.version)
    }
}

/// Rows to write: the latest row of each entity, columnar.
#[derive(Debug, Clone)]
pub struct OnlineRows {
    /// Encoded entity keys ([`crate::codec::encode_entity_keys`]); rows with `None` are skipped.
    pub keys: Vec<Option<Vec<u8>>>,
    /// Event time of each row (µs since the epoch, UTC).
    pub event_ts: Vec<i64>,
    /// Created time of each row (µs; 0 when the source has none).
    pub created: Vec<i64>,
    /// Every feature of the view, in the view's order.
    pub features: Vec<ArrayRef>,
}

impl OnlineRows {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The encoded value of one row ([`crate::codec::encode_row`]).
    pub fn encode_value(&self, row: usize) -> Result<Vec<u8>> {
        let mut value = Vec::with_capacity(64);
        crate::codec::encode_row(
            &mut value,
            self.event_ts[row],
            self.created[row],
            &self.features,
            row,
        )?;
        Ok(value)
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteStats {
    /// Rows offered.
    pub rows: u64,
    /// Keys whose value changed (the rest were older than what is stored).
    pub written: u64,
}

/// One view to read in a lookup.
#[derive(Debug, Clone, Copy)]
pub struct ViewRead<'a> {
    pub view: &'a ViewRef,
    /// Encoded entity keys, one per entity row of the request (`None`: a NULL key).
    pub keys: &'a [Option<Vec<u8>>],
    /// Read the stored bytes as they are ([`ViewValues::raw`]) instead of decoding rows:
    /// aggregation views keep one state blob per entity ([`OnlineStore::compare_and_set`]).
    pub raw: bool,
}

/// What a lookup found for one view: per entity row, the stored event time (or `None`)
/// and every feature of the view (NULL where nothing was found); for a raw read, the
/// stored bytes instead.
#[derive(Debug, Clone)]
pub struct ViewValues {
    pub event_ts: Vec<Option<i64>>,
    pub features: Vec<ArrayRef>,
    pub raw: Vec<Option<Vec<u8>>>,
}

/// The 8-byte version every blob starts with: a compare-and-set writes only over the
/// version it read.
pub const BLOB_VERSION_BYTES: usize = 8;

/// What a blob write expects to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is stored.
    Anything,
    /// Write only when nothing is stored.
    Absent,
    /// Write only when the stored blob starts with this version.
    Version([u8; BLOB_VERSION_BYTES]),
}

/// One compare-and-set write of an entity's blob.
#[derive(Debug, Clone)]
pub struct BlobWrite {
    /// The encoded entity key.
    pub key: Vec<u8>,
    pub expect: Expect,
    /// The new blob (starting with its version), or `None` to delete it.
    pub value: Option<Vec<u8>>,
    /// When the blob expires (µs since the epoch); `None` for never.
    pub expires_at: Option<i64>,
}

/// The status of one value in a lookup, as Feast names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FeatureStatus {
    Present,
    NullValue,
    NotFound,
    OutsideMaxAge,
}

/// The status of each value of one feature column, at lookup time `now` (µs).
pub fn statuses(
    values: &ViewValues,
    feature: &ArrayRef,
    ttl_micros: Option<i64>,
    now: i64,
) -> Vec<FeatureStatus> {
    values
        .event_ts
        .iter()
        .enumerate()
        .map(|(row, ts)| match ts {
            None => FeatureStatus::NotFound,
            Some(ts) if ttl_micros.is_some_and(|ttl| *ts < now.saturating_sub(ttl)) => {
                FeatureStatus::OutsideMaxAge
            }
            Some(_) if feature.is_null(row) => FeatureStatus::NullValue,
            Some(_) => FeatureStatus::Present,
        })
        .collect()
}

/// Where the latest feature values live. Implementations: [`crate::EmbeddedStore`],
/// [`crate::RedisStore`].
#[async_trait]
pub trait OnlineStore: Send + Sync + fmt::Debug {
    /// Writes rows, newer-wins per key: a row older (event time, then created) than the
    /// stored value is ignored. `now` (µs) is the writer's clock, for key expiry.
    async fn write(&self, view: &ViewRef, rows: &OnlineRows, now: i64) -> Result<WriteStats>;

    /// Reads the stored values of several views in one round trip; `now` (µs) is the
    /// reader's clock (values past their expiry are not returned).
    async fn read(&self, reads: &[ViewRead<'_>], now: i64) -> Result<Vec<ViewValues>>;

    /// Writes whole-entity blobs, each only when the stored blob is what `expect` says
    /// (atomic per entity); returns which writes happened. `now` (µs) is the writer's
    /// clock, for expiry.
    async fn compare_and_set(
        &self,
        view: &ViewRef,
        writes: &[BlobWrite],
        now: i64,
    ) -> Result<Vec<bool>>;

    /// Removes every key of one view version; returns how many were removed.
    async fn drop_view(&self, view: &ViewRef) -> Result<u64>;

    /// Whether the store answers.
    async fn health(&self) -> Result<()>;

    /// A short name for messages (`embedded`, `redis`).
    fn name(&self) -> &'static str;
}
