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

mod definitions;
pub mod error;
pub mod example;
mod store;

pub use error::{Error, Result};
pub use quiver_core::config::Config;
pub use quiver_core::model;
pub use quiver_core::registry::{Action, Change, HistoryEntry, ObjectRecord, Plan};
pub use quiver_core::{ErrorKind, clock};
pub use store::FeatureStore;
