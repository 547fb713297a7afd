//! The facade's error: whatever failed below, with one [`ErrorKind`] for the CLI's exit
//! code and the server's HTTP status.

use std::path::PathBuf;

use quiver_core::ErrorKind;
use quiver_core::diagnostic::did_you_mean;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Core(#[from] quiver_core::Error),

    #[error(transparent)]
    Offline(#[from] quiver_offline::Error),

    /// `quiver init` into a folder that already holds a repository.
    #[error(
        "{path} already holds a feature repository (quiver.toml); choose an empty or new folder"
    )]
    RepositoryExists { path: PathBuf },

    /// A file of the example repository could not be written.
    #[error("cannot write {path}: {message}")]
    WriteFailed { path: PathBuf, message: String },

    /// No feature view of that name is applied.
    #[error("unknown feature view `{name}`{}", did_you_mean(.suggestion))]
    UnknownFeatureView {
        name: String,
        suggestion: Option<String>,
    },

    /// No feature service of that name is applied.
    #[error("unknown feature service `{name}`{}", did_you_mean(.suggestion))]
    UnknownFeatureService {
        name: String,
        suggestion: Option<String>,
    },

    /// The view has no such feature.
    #[error("feature view `{view}` has no feature `{feature}`{}", did_you_mean(.suggestion))]
    UnknownFeature {
        view: String,
        feature: String,
        suggestion: Option<String>,
    },

    /// A version of a view that does not exist (or the catalog does not keep).
    #[error("feature view `{view}` has no version {version} in reach (its latest is v{latest})")]
    UnknownViewVersion {
        view: String,
        version: u32,
        latest: u32,
    },

    /// A request naming features and a feature service at once.
    #[error("give either `features` or `feature_service`, not both")]
    FeaturesAndService,

    /// A feature reference that is not `view:feature`.
    #[error("bad feature reference `{text}`: write view:feature (or view:* for all of a view)")]
    BadFeatureReference { text: String },

    /// An export without features.
    #[error("no features requested: name `features` (view:feature, …) or a `feature_service`")]
    NoFeaturesRequested,

    /// An export without a spine.
    #[error("no spine: give a spine file, a spine query or a spine batch")]
    NoSpine,

    /// Two requested features would get the same output column name.
    #[error("two features would both be named `{name}` ({first} and {second}){}", if *.full_names { "" } else { "; ask for full feature names (view__feature)" })]
    DuplicateFeatureName {
        name: String,
        first: String,
        second: String,
        full_names: bool,
    },

    /// A feature's output name is already a spine column.
    #[error(
        "feature `{name}` has the name of a spine column; ask for full feature names (view__feature) or rename the spine column"
    )]
    FeatureNameClashesWithSpine { name: String },

    /// An export whose output is its own spine.
    #[error("the output {path} is the spine itself; writing it would destroy the spine")]
    OutputIsSpine { path: String },

    /// The offline table does not cover the spine's time range.
    #[error(
        "the offline table of feature view `{view}` (v{version}) does not cover the spine's time range; run `{command}` first, or let the export materialize what is missing"
    )]
    OfflineTableIncomplete {
        view: String,
        version: u32,
        command: String,
    },

    /// Nothing applied to materialize.
    #[error("no feature views are applied: run `quiver apply` first")]
    NothingToMaterialize,

    /// A materialization interval whose start is after its end.
    #[error("the interval is empty: its start {start} is after its end {end}")]
    EmptyInterval { start: String, end: String },

    #[error(transparent)]
    Online(#[from] quiver_online::Error),

    /// A lookup without entity rows.
    #[error("no entities: give at least one entity row, e.g. {{\"driver_id\": [1001]}}")]
    NoEntities,

    /// Entity columns of different lengths.
    #[error(
        "entity columns differ in length: `{first}` has {first_len} values, `{column}` has {len}"
    )]
    RaggedEntities {
        first: String,
        first_len: usize,
        column: String,
        len: usize,
    },

    /// A view's key column is not among the entities of a lookup.
    #[error("missing entity column `{column}`, a key of feature view `{view}`")]
    MissingEntityColumn { column: String, view: String },

    /// An entity value of the wrong type.
    #[error("entity column `{column}` row {row}: {value} is not {expected}")]
    BadEntityValue {
        column: String,
        row: usize,
        value: String,
        expected: String,
    },

    /// `drop` of the version lookups read.
    #[error(
        "feature view `{view}` v{version} is the version lookups read; dropping it empties serving (force it to drop anyway)"
    )]
    DropServingVersion { view: String, version: u32 },

    /// A push to a name that is neither a feature view nor a source.
    #[error("unknown push target `{name}`: name a feature view or a source{}", did_you_mean(.suggestion))]
    UnknownPushTarget {
        name: String,
        suggestion: Option<String>,
    },

    /// A push into a source that an aggregating view reads.
    #[error(
        "push into source `{source_name}`: feature view `{view}` aggregates (GROUP BY, aggregate or window functions), so its values cannot be computed from the pushed rows alone; push into a view, or re-materialize after adding the rows to the source's files"
    )]
    PushIntoAggregatingView { source_name: String, view: String },

    /// A push request that does not fit the view.
    #[error("push: {message}")]
    BadPush { message: String },

    /// Materializing, pushing into or writing an on-demand view: it has no rows.
    #[error(
        "on-demand feature view `{view}` has no rows to {action}: it is computed at request time from its inputs ({inputs}); {hint}"
    )]
    OnDemandHasNoRows {
        view: String,
        action: &'static str,
        inputs: String,
        hint: &'static str,
    },

    /// A lookup of an on-demand view without the request fields it reads. The message
    /// has the shape of Feast's `RequestDataNotFoundInEntityRowsException`.
    #[error(
        "required request data {fields:?} not found in the entity rows, but required by on-demand feature view `{view}`; send them beside the entity keys"
    )]
    MissingRequestData { fields: Vec<String>, view: String },

    /// An export of an on-demand view whose spine lacks a request field.
    #[error(
        "the spine has no column `{field}`, a field of request source `{source_name}` that on-demand feature view `{view}` reads; add it to the spine"
    )]
    SpineLacksRequestField {
        field: String,
        source_name: String,
        view: String,
    },

    /// A background task panicked or was cancelled.
    #[error("internal error: {0}")]
    Task(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Core(e) => e.kind(),
            Error::Offline(e) => e.kind(),
            Error::Online(e) => e.kind(),
            Error::NoEntities
            | Error::RaggedEntities { .. }
            | Error::MissingEntityColumn { .. }
            | Error::BadEntityValue { .. }
            | Error::BadPush { .. }
            | Error::PushIntoAggregatingView { .. }
            | Error::OnDemandHasNoRows { .. }
            | Error::MissingRequestData { .. }
            | Error::SpineLacksRequestField { .. } => ErrorKind::InvalidArgument,
            Error::RepositoryExists { .. } => ErrorKind::AlreadyExists,
            Error::DropServingVersion { .. } => ErrorKind::InvalidArgument,
            Error::UnknownFeatureView { .. }
            | Error::UnknownFeatureService { .. }
            | Error::UnknownFeature { .. }
            | Error::UnknownPushTarget { .. }
            | Error::UnknownViewVersion { .. } => ErrorKind::NotFound,
            Error::BadFeatureReference { .. }
            | Error::FeaturesAndService
            | Error::NoFeaturesRequested
            | Error::NoSpine
            | Error::DuplicateFeatureName { .. }
            | Error::FeatureNameClashesWithSpine { .. }
            | Error::OfflineTableIncomplete { .. }
            | Error::OutputIsSpine { .. }
            | Error::NothingToMaterialize
            | Error::EmptyInterval { .. } => ErrorKind::InvalidArgument,
            Error::WriteFailed { .. } => ErrorKind::Unavailable,
            Error::Task(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
