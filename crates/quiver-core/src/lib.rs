//! The core of Quiver: what a feature repository *declares* and what the registry
//! *remembers*.
//!
//! This crate knows nothing about DataFusion, Redis or tokio. It holds
//!
//! - [`model`]: entities, sources, feature views and feature services as plain data;
//! - [`parser`]: the SQL-like definition language (`CREATE ENTITY …`), parsed with the
//!   same `sqlparser` that DataFusion uses, so every view body is SQL DataFusion can plan;
//! - [`validate`]: the checks that need no data (names, references, key types, files);
//! - [`diagnostic`]: errors that point at a file, line and column with a caret;
//! - [`config`]: `quiver.toml` with environment overrides and its JSON Schema;
//! - [`registry`]: the versioned, multi-process-safe SQLite registry and the plan diff;
//! - [`window`]: the arithmetic of sliding windows (labels, default hops, alignment).
//!
//! Checks that need a query planner (view schemas) happen in the `quiver` facade, which
//! hands the inferred schemas back to [`validate::check_services`] and the registry.

pub mod clock;
pub mod config;
pub mod diagnostic;
pub mod error;
pub mod model;
pub mod parser;
pub mod registry;
pub mod validate;
pub mod window;

pub use error::{Error, ErrorKind, Result};
