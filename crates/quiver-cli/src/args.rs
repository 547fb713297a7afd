//! Command-line arguments: one clap struct for global options, one variant per verb.
//! Every option can also be set from the environment (`QUIVER_REPO`, …).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Quiver: a feature store in one binary.
#[derive(Debug, Parser)]
#[command(name = "quiver", version, about)]
pub struct Cli {
    /// The feature repository (the folder holding quiver.toml).
    #[arg(long, global = true, env = "QUIVER_REPO", default_value = ".")]
    pub repo: PathBuf,

    /// Print JSON for scripts instead of text (env QUIVER_JSON: 1/true/yes or 0/false/no).
    #[arg(long, global = true, env = "QUIVER_JSON", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, default_missing_value = "true", num_args = 0..=1, require_equals = true)]
    pub json: bool,

    /// Log format on stderr (the level comes from RUST_LOG, default `warn`).
    #[arg(long, global = true, env = "QUIVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The kinds of recorded runs.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RunKind {
    Materialize,
    Export,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Materialize => "materialize",
            RunKind::Export => "export",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a working example repository (definitions, quiver.toml, a small dataset).
    #[command(after_help = "Example:\n  quiver init demo")]
    Init {
        /// Folder to create the repository in.
        dir: PathBuf,
    },
    /// Show what `apply` would change in the registry.
    #[command(after_help = "Example:\n  quiver plan")]
    Plan,
    /// Validate the definitions and record them in the registry.
    #[command(after_help = "Example:\n  quiver apply")]
    Apply,
    /// List the objects in the registry.
    #[command(after_help = "Example:\n  quiver ls --json")]
    Ls,
    /// Show one object: definition, schema, version.
    #[command(after_help = "Example:\n  quiver describe driver_hourly_stats")]
    Describe {
        /// Name of an entity, source, feature view or feature service.
        name: String,
    },
    /// Show every version and change of one object.
    #[command(after_help = "Example:\n  quiver history driver_hourly_stats")]
    History {
        /// Name of an entity, source, feature view or feature service.
        name: String,
    },
    /// Compute feature views into offline tables (Parquet, partitioned by event date).
    #[command(
        after_help = "Example:\n  quiver materialize --start 2026-01-01 --end 2026-01-15T12:00:00Z driver_hourly_stats"
    )]
    Materialize {
        /// Start of the event-time interval (inclusive): RFC 3339 or YYYY-MM-DD, UTC when
        /// no zone is given. Default: all history.
        #[arg(long, value_parser = parse_time)]
        start: Option<chrono::DateTime<chrono::Utc>>,
        /// End of the interval (inclusive). Default: now.
        #[arg(long, value_parser = parse_time)]
        end: Option<chrono::DateTime<chrono::Utc>>,
        /// Views to materialize (default: all).
        views: Vec<String>,
    },
    /// Materialize each view from its watermark (the end of its last run) up to --end.
    #[command(after_help = "Example:\n  quiver materialize-incremental")]
    MaterializeIncremental {
        /// End of the interval (inclusive). Default: now.
        #[arg(long, value_parser = parse_time)]
        end: Option<chrono::DateTime<chrono::Utc>>,
        /// Views to materialize (default: all).
        views: Vec<String>,
    },
    /// Look up the latest feature values of entities in the online store.
    #[command(
        after_help = "Example:\n  quiver get --service driver_ranking --entity driver_id=1001,customer_id=10001"
    )]
    Get {
        /// Features as view:feature (or view:*), comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "service")]
        features: Vec<String>,
        /// A feature service instead of --features.
        #[arg(long, conflicts_with = "features")]
        service: Option<String>,
        /// One entity row: key=value, or key=value,key2=value2 for composite keys. Repeat
        /// for more rows.
        #[arg(long = "entity", required = true)]
        entities: Vec<String>,
        /// Name features view__feature.
        #[arg(long)]
        full_feature_names: bool,
    },
    /// Remove one version of a feature view from the online store.
    #[command(after_help = "Example:\n  quiver drop driver_hourly_stats --version 1")]
    Drop {
        /// The feature view.
        view: String,
        /// The version to remove.
        #[arg(long)]
        version: u32,
        /// Drop it even when it is the version lookups read (serving empties).
        #[arg(long)]
        force: bool,
    },
    /// Delete offline files that replaced snapshots no longer need.
    #[command(after_help = "Example:\n  quiver vacuum --retention 0s")]
    Vacuum {
        /// Keep files superseded less than this long ago (default: offline.retention);
        /// `0s` deletes every superseded file now.
        #[arg(long, value_parser = parse_duration)]
        retention: Option<std::time::Duration>,
        /// Views to vacuum (default: all).
        views: Vec<String>,
    },
    /// Serve the HTTP feature server (Feast-compatible) until ctrl-c or SIGTERM.
    #[command(after_help = "Example:\n  quiver serve --bind 127.0.0.1:6566")]
    Serve {
        /// Address to listen on (default: server.bind of quiver.toml).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
    },
    /// Export a point-in-time-correct training set for a spine of (entity, timestamp) rows.
    #[command(
        after_help = "Example:\n  quiver export --spine data/spine.parquet --service driver_ranking --out train.parquet"
    )]
    Export {
        /// Spine file: Parquet or CSV with a header.
        #[arg(
            long,
            conflicts_with = "spine_sql",
            required_unless_present = "spine_sql"
        )]
        spine: Option<PathBuf>,
        /// Spine query over the sources, e.g. 'SELECT driver_id, event_timestamp FROM driver_stats'.
        #[arg(long)]
        spine_sql: Option<String>,
        /// Features as view:feature (or view:*), comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "service")]
        features: Vec<String>,
        /// A feature service instead of --features.
        #[arg(long, conflicts_with = "features")]
        service: Option<String>,
        /// Output Parquet file.
        #[arg(long)]
        out: PathBuf,
        /// Name feature columns view__feature.
        #[arg(long)]
        full_feature_names: bool,
        /// The spine's timestamp column.
        #[arg(long, default_value = "event_timestamp")]
        timestamp_column: String,
        /// Materialize whatever the offline tables lack instead of failing.
        #[arg(long)]
        materialize: bool,
        /// Print this many rows of the result.
        #[arg(long, default_value_t = 0)]
        show: usize,
    },
    /// List recorded materializations and exports, newest first.
    #[command(after_help = "Example:\n  quiver runs --kind export --limit 5")]
    Runs {
        /// Only runs of this kind.
        #[arg(long, value_enum)]
        kind: Option<RunKind>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Example:\n  quiver completions bash > /etc/bash_completion.d/quiver")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Run the whole pipeline on a fresh example repository.
    #[command(after_help = "Example:\n  quiver quickstart")]
    Quickstart {
        /// Folder for the example repository (default: a `quiver-quickstart` folder in
        /// the system's temp folder, replaced on every run).
        dir: Option<PathBuf>,
    },
}

/// A duration such as `1 hour`, `90s` or `0s`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    quiver::model::parse_duration(text).map(std::time::Duration::from_secs)
}

/// RFC 3339 (`2026-01-15T12:00:00Z`, any offset), `YYYY-MM-DDTHH:MM:SS` (UTC) or `YYYY-MM-DD`.
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    quiver_server::wire::parse_time(text).ok_or_else(|| {
        format!(
            "`{text}` is not a time: use RFC 3339 (2026-01-15T12:00:00Z) or a date (2026-01-15)"
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn times_parse_in_every_documented_form() {
        assert_eq!(
            parse_time("2026-01-15").unwrap().to_rfc3339(),
            "2026-01-15T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-01-15T12:00:00").unwrap().to_rfc3339(),
            "2026-01-15T12:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-01-15T12:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-01-15T11:00:00+00:00"
        );
        assert!(parse_time("tomorrow").is_err());
    }
}
