//! Quiver, the feature store: the facade that wires the registry (`quiver-core`) and the
//! batch engine (`quiver-offline`). It is the only crate that knows both sides; the CLI
//! and the HTTP server call it and nothing below it.
//!
//! ```no_run
//! # async fn demo() -> quiver::Result<()> {
//! let store = quiver::FeatureStore::open("path/to/repo")?;
//! let plan = store.plan().await?;      // what `apply` would change
//! if !plan.is_empty() {
//!     store.apply().await?;            // record it in the registry
//! }
//! # Ok(())
//! # }
//! ```

mod catalog;
mod definitions;
pub mod error;
pub mod example;
mod offline;
mod online;
mod push;
mod store;
mod windows;

/// The Arrow crate the facade speaks (record batches, arrays, data types).
pub use arrow;
pub use error::{Error, Result};
pub use offline::{
    Export, ExportBuilder, ExportSummary, MaterializeOptions, MaterializeReport, Spine,
    VacuumReport,
};
pub use online::{FeatureColumn, LookupPlan, OnlineFeatures, OnlineWrite};
pub use push::{PushColumn, PushSchema, PushTargetKind, PushTo, ViewPush};
pub use quiver_core::config::Config;
pub use quiver_core::model;
pub use quiver_core::registry::{
    Action, Change, HistoryEntry, ObjectRecord, Plan, RunClaim, RunRecord,
};
pub use quiver_core::{ErrorKind, clock, window};
pub use quiver_offline::{MaterializeStats, PushStats};
pub use quiver_online::{FeatureStatus, WriteStats};
pub use store::{FeatureStore, ViewStatus};

/// The first `rows` rows of a batch as an aligned text table.
pub fn pretty(batch: &arrow::array::RecordBatch, rows: usize) -> Result<String> {
    let head = batch.slice(0, rows.min(batch.num_rows()));
    arrow::util::pretty::pretty_format_batches(&[head])
        .map(|t| t.to_string())
        .map_err(|e| Error::Offline(quiver_offline::Error::DataFusion(e.into())))
}
