//! Errors of the offline engine. Each variant names the source or view it concerns so
//! the facade can point at the right line of the definitions.

use quiver_core::ErrorKind;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A source's files could not be listed or their schema inferred.
    #[error("source `{source_name}`: cannot read `{path}`: {message}")]
    UnreadableSource {
        source_name: String,
        path: String,
        message: String,
    },

    /// A source whose files hold no columns at all.
    #[error(
        "source `{source_name}`: `{path}` holds no columns (an empty or truncated file?); point FROM at data files"
    )]
    EmptySource { source_name: String, path: String },

    /// A column named by a source's TIMESTAMP or CREATED clause is not in its data.
    #[error("source `{source_name}` has no column `{column}` (named by its {clause} clause){}", quiver_core::diagnostic::did_you_mean(.suggestion))]
    MissingSourceColumn {
        source_name: String,
        column: String,
        clause: &'static str,
        suggestion: Option<String>,
    },

    /// A TIMESTAMP or CREATED column has a type that cannot hold a point in time.
    #[error(
        "source `{source_name}`: column `{column}` has type {data_type}, which cannot be a {clause} column; use a timestamp, a date, or ISO-8601 strings"
    )]
    BadTimestampType {
        source_name: String,
        column: String,
        clause: &'static str,
        data_type: String,
    },

    /// DataFusion could not plan a view's query.
    #[error("feature view `{view}`: the query cannot be planned: {message}")]
    UnplannableView { view: String, message: String },

    /// An on-demand view's expressions failed on the values of a request or spine.
    #[error("on-demand feature view `{view}` cannot be computed for these values: {message}{hint}")]
    OnDemandEvaluation {
        view: String,
        message: String,
        hint: &'static str,
    },

    /// An aggregation or on-demand view's query is not one Quiver can compute.
    #[error("feature view `{view}`: {message}")]
    InvalidViewQuery {
        view: String,
        message: String,
        /// Where in the query text (1-based), when known.
        line: Option<u64>,
        column: Option<u64>,
        /// What is allowed.
        help: String,
    },

    /// A view's query does not output one of its entities' key columns.
    #[error(
        "feature view `{view}`: the query does not output key column `{key}` of entity `{entity}`"
    )]
    MissingKeyColumn {
        view: String,
        entity: String,
        key: String,
    },

    /// A view's key column has a type that does not match the entity's key type.
    #[error(
        "feature view `{view}`: key column `{key}` is {found}, but entity `{entity}` declares it {expected}"
    )]
    KeyTypeMismatch {
        view: String,
        entity: String,
        key: String,
        expected: &'static str,
        found: String,
    },

    /// A view's query does not output the event timestamp (or created) column.
    #[error(
        "feature view `{view}`: the query does not output `{column}`, the {clause} column of source `{source_name}`"
    )]
    MissingTimeColumn {
        view: String,
        column: String,
        clause: &'static str,
        source_name: String,
    },

    /// A view's query outputs the same column name twice.
    #[error(
        "feature view `{view}`: the query outputs column `{column}` more than once; give one an alias"
    )]
    DuplicateColumn { view: String, column: String },

    /// A view's query outputs only keys and timestamps.
    #[error(
        "feature view `{view}`: the query outputs no feature column besides keys and timestamps"
    )]
    NoFeatures { view: String },

    /// Computing a view's rows failed (e.g. a timestamp string that is not a time).
    #[error("feature view `{view}`: materialization failed: {message}")]
    MaterializeFailed { view: String, message: String },

    /// An offline table file or folder could not be read or written.
    #[error("offline table {path}: {message}")]
    TableIo { path: String, message: String },

    /// Object storage could not be configured or reached.
    #[error("object storage {location}: {message}")]
    Storage { location: String, message: String },

    /// Another writer committed to an offline table on object storage after this writer
    /// read its manifest: this writer's commit was refused and nothing changed.
    #[error(
        "offline table {table}: another writer committed to it while this one ran, so this commit was refused and the table is unchanged; run the command again"
    )]
    CommitConflict { table: String },

    /// A manifest that cannot be parsed.
    #[error("offline table manifest {path} is corrupt: {message}")]
    CorruptManifest { path: String, message: String },

    /// Writing Parquet failed.
    #[error("writing {path}: {message}")]
    WriteParquet { path: String, message: String },

    /// An export output whose extension names no format Quiver writes.
    #[error("cannot write {path}: name the output .parquet or .csv")]
    UnsupportedOutput { path: String },

    /// A column of the spine is missing or has the wrong type.
    #[error("spine: {message}")]
    InvalidSpine { message: String },

    /// Any other DataFusion failure.
    #[error("offline engine: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnreadableSource { .. }
            | Error::TableIo { .. }
            | Error::WriteParquet { .. }
            | Error::Storage { .. } => ErrorKind::Unavailable,
            Error::CorruptManifest { .. } => ErrorKind::Internal,
            Error::CommitConflict { .. } => ErrorKind::Conflict,
            Error::DataFusion(_) => ErrorKind::Internal,
            _ => ErrorKind::InvalidArgument,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
