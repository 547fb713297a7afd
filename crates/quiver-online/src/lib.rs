//! Quiver's online stores: where the latest feature value of every entity waits for a
//! model to ask for it.
//!
//! [`OnlineStore`] is a small object-safe trait with two implementations:
//! [`EmbeddedStore`] (SQLite in the repository's `.quiver/`, the default, no server) and
//! [`RedisStore`]. Both follow the same rules, checked by one conformance suite:
//! newer-wins writes (an older event time never overwrites a newer one; equal event
//! times go to the greater `created`), TTL-aware reads (`OUTSIDE_MAX_AGE`), one round trip
//! per lookup whatever the number of entities and views, keys namespaced by project, view
//! and view version, and compact binary values ([`codec`]) that carry their event time.

pub mod codec;
mod embedded;
pub mod error;
mod redis_store;
mod store;

pub use embedded::EmbeddedStore;
pub use error::{Error, Result};
pub use redis_store::{RedisOptions, RedisStore};
pub use store::{
    BLOB_VERSION_BYTES, BlobWrite, Expect, FeatureStatus, OnlineRows, OnlineStore, ViewRead,
    ViewRef, ViewValues, WriteStats, statuses,
};
