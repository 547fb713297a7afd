//! Errors of the online stores.

use quiver_core::ErrorKind;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis server could not be reached or failed a command.
    #[error("redis at {url}: {message}")]
    Redis { url: String, message: String },

    /// The embedded store's database failed.
    #[error("embedded online store {path}: {message}")]
    Embedded { path: String, message: String },

    /// A key column type that cannot be encoded (only BIGINT, INT, VARCHAR, BYTES).
    #[error("entity key type {data_type} cannot be stored online")]
    UnsupportedKeyType { data_type: String },

    /// A feature type the online codec cannot store.
    #[error(
        "feature type {data_type} cannot be stored online (supported: integers, floats, booleans, strings, binaries, dates, timestamps)"
    )]
    UnsupportedFeatureType { data_type: String },

    /// Rows given to `write` do not have the view's layout.
    #[error("rows for {view} do not match the view: {message}")]
    BadRows { view: String, message: String },

    /// A stored value that cannot be decoded.
    #[error("corrupt online value: {message}")]
    CorruptValue { message: String },

    /// A blocking task failed.
    #[error("internal error: {0}")]
    Task(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Redis { .. } | Error::Embedded { .. } => ErrorKind::Unavailable,
            Error::UnsupportedKeyType { .. }
            | Error::UnsupportedFeatureType { .. }
            | Error::BadRows { .. } => ErrorKind::InvalidArgument,
            Error::CorruptValue { .. } | Error::Task(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
