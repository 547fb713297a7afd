//! The error type of `quiver-core` and the [`ErrorKind`] every Quiver error reports, so
//! the HTTP server and the CLI map errors to status codes in exactly one place.

use std::path::PathBuf;

use crate::diagnostic::Diagnostics;

/// What kind of failure an error is, independent of where it happened. Every class the
/// edges (HTTP statuses, exit codes) distinguish is here, so they map it with one
/// exhaustive `match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The caller's input is wrong: fix the input.
    InvalidArgument,
    /// A named object does not exist.
    NotFound,
    /// An object with that name already exists.
    AlreadyExists,
    /// Another operation on the same object is in progress: try again later.
    Conflict,
    /// The caller did not say who it is (a missing API key).
    Unauthenticated,
    /// The caller may not do this (a wrong API key).
    PermissionDenied,
    /// The request is larger than a configured limit allows.
    ResourceExhausted,
    /// The work did not finish within its time limit.
    DeadlineExceeded,
    /// Quiver does not do this.
    Unimplemented,
    /// A dependency (file system, database, network service) is not available right now.
    Unavailable,
    /// A bug or a broken invariant inside Quiver.
    Internal,
}

/// Errors of the definition model, the config and the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// One or more definition files are invalid; each diagnostic names file, line and column.
    #[error("{0}")]
    InvalidDefinitions(Diagnostics),

    /// `quiver.toml` is missing, unreadable or invalid.
    #[error("invalid config {path}: {message}")]
    InvalidConfig { path: PathBuf, message: String },

    /// A file or folder could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The registry database failed (`location`: its file, or its URL without password).
    #[error("registry {location}: {source}")]
    Registry {
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The registry holds data this version of Quiver cannot read.
    #[error("registry {location} is corrupt or from a newer Quiver: {message}")]
    CorruptRegistry { location: String, message: String },

    /// A shared registry database already holds another project's registry.
    #[error(
        "registry {location} holds the registry of project `{owner}`, not of `{project}`: give each project its own database (`registry.url`)"
    )]
    ForeignRegistry {
        location: String,
        owner: String,
        project: String,
    },

    /// No object of that name is (or was ever) in the registry.
    #[error("no object named `{name}` in the registry{}", crate::diagnostic::did_you_mean(.suggestion))]
    UnknownObject {
        name: String,
        suggestion: Option<String>,
    },
}

impl Error {
    /// The kind of failure, for mapping to exit codes and HTTP statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidDefinitions(_)
            | Error::InvalidConfig { .. }
            | Error::ForeignRegistry { .. } => ErrorKind::InvalidArgument,
            Error::UnknownObject { .. } => ErrorKind::NotFound,
            Error::Io { .. } | Error::Registry { .. } => ErrorKind::Unavailable,
            Error::CorruptRegistry { .. } => ErrorKind::Internal,
        }
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
