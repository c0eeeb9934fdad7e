//! The error type of `gear-infer`.

use std::path::PathBuf;

/// Errors raised by indexing, search and explanation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An index folder is missing, incomplete or does not fit.
    #[error("index {path}: {message}")]
    Index {
        /// The index folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A document id is not in the index.
    #[error("no document with id `{id}` in index {path}")]
    UnknownDocument {
        /// The id asked for.
        id: String,
        /// The index folder.
        path: PathBuf,
    },
    /// Invalid input.
    #[error("{0}")]
    Input(String),
    /// Where the documents live cannot be reached now (a database restarting, a network
    /// fault): the same request may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// Work stopped at its deadline ([`crate::explain_within`]), between two forward passes.
    #[error("stopped at the time limit after {done} of {total} passes over the document")]
    Deadline {
        /// Passes (batches of windows) finished.
        done: usize,
        /// Passes the document needed.
        total: usize,
    },
    /// The model layer failed.
    #[error(transparent)]
    Model(#[from] gear_model::Error),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] gear_data::Error),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
