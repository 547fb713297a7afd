//! Quiver's batch engine, built on DataFusion: it reads sources, plans feature view
//! queries and (in later steps) writes offline tables and joins them point-in-time
//! correctly onto a spine.
//!
//! This crate is the only one that depends on DataFusion. It exchanges plain Arrow
//! data and `quiver-core` model types with the rest of Quiver.

mod cores;
pub mod engine;
pub mod error;
pub mod export;
pub mod latest;
mod materialize;
pub mod normalize;
pub mod on_demand;
pub mod pit;
mod source;
mod source_order;
pub mod storage;
pub mod table;
pub mod window;

#[cfg(test)]
#[path = "../../../tests/support/s3_server.rs"]
mod s3_server;

pub use engine::{OfflineEngine, ViewTable};
pub use error::{Error, Result};
pub use materialize::{
    MaterializeStats, Materialized, PUSH_LOG_MAX_FILES, PushLog, PushStats, WriteOptions,
};
pub use storage::{Location, StorageOptions};
