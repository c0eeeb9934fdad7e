//! The error type of `gear-train`.

use std::path::PathBuf;

/// Errors raised while configuring, running or checkpointing training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file is malformed or has an invalid value.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The loss stopped being finite.
    #[error("the loss became {value} at step {step}; training stopped (last good checkpoint: {checkpoint})")]
    NonFinite {
        /// Optimiser step.
        step: u64,
        /// The value (NaN or ±inf).
        value: f64,
        /// Where the last good checkpoint is, or `none`.
        checkpoint: String,
    },
    /// Resuming found a checkpoint that does not fit.
    #[error("cannot resume from {path}: {message}")]
    Resume {
        /// The checkpoint folder.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Anything else about the run.
    #[error("{0}")]
    Train(String),
    /// The model layer failed.
    #[error(transparent)]
    Model(#[from] gear_model::Error),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] gear_data::Error),
    /// The evaluation failed.
    #[error(transparent)]
    Eval(#[from] gear_eval::Error),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A collective of a data-parallel run failed (a peer died, stalled or never joined).
    #[error(transparent)]
    Distributed(#[from] gear_c10d::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
