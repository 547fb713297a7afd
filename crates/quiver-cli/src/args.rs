//! Command-line arguments: one clap struct for global options, one variant per verb.
//! Every option can also be set from the environment (`QUIVER_REPO`, …).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Quiver: a feature store in one binary.
#[derive(Debug, Parser)]
#[command(name = "quiver", version, about, propagate_version = true)]
pub struct Cli {
    /// The feature repository (the folder holding quiver.toml).
    #[arg(long, global = true, env = "QUIVER_REPO", default_value = ".")]
    pub repo: PathBuf,

    /// Print JSON for scripts instead of text.
    #[arg(long, global = true, env = "QUIVER_JSON")]
    pub json: bool,

    /// Log format on stderr (the level comes from RUST_LOG, default `warn`).
    #[arg(long, global = true, env = "QUIVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a working example repository (definitions, quiver.toml, a small dataset).
    Init {
        /// Folder to create the repository in.
        dir: PathBuf,
    },
    /// Show what `apply` would change in the registry.
    Plan,
    /// Validate the definitions and record them in the registry.
    Apply,
    /// List the objects in the registry.
    Ls,
    /// Show one object: definition, schema, version.
    Describe {
        /// Name of an entity, source, feature view or feature service.
        name: String,
    },
    /// Show every version and change of one object.
    History {
        /// Name of an entity, source, feature view or feature service.
        name: String,
    },
    /// Run the whole pipeline on a fresh example repository.
    Quickstart {
        /// Folder for the example repository (default: a `quiver-quickstart` folder in
        /// the system's temp folder, replaced on every run).
        dir: Option<PathBuf>,
    },
}
