//! The facade's error: whatever failed below, with one [`ErrorKind`] for the CLI's exit
//! code and the server's HTTP status.

use std::path::PathBuf;

use quiver_core::ErrorKind;

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

    /// A background task panicked or was cancelled.
    #[error("internal error: {0}")]
    Task(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Core(e) => e.kind(),
            Error::Offline(e) => e.kind(),
            Error::RepositoryExists { .. } => ErrorKind::AlreadyExists,
            Error::WriteFailed { .. } => ErrorKind::Unavailable,
            Error::Task(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
