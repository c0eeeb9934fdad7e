//! The error type of `gear-model`.

use std::path::PathBuf;

/// Errors raised while building, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A configuration file is malformed or has an invalid value.
    #[error("{path}: invalid configuration: {message}")]
    Config {
        /// The configuration file (or `<memory>` for configs built in code).
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A model folder lacks a file it needs.
    #[error("{dir}: no `{file}` in the model folder")]
    MissingFile {
        /// The model folder.
        dir: PathBuf,
        /// The missing file's name.
        file: &'static str,
    },
    /// A checkpoint lacks a tensor the model needs.
    #[error("{path}: missing tensor `{name}` (the model expects shape {expected:?})")]
    MissingTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name (its VarStore path).
        name: String,
        /// The shape the model expects.
        expected: Vec<i64>,
    },
    /// A checkpoint tensor has another shape than the model's variable.
    #[error("{path}: tensor `{name}` has shape {found:?} in the checkpoint but the model expects {expected:?}")]
    ShapeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// Shape in the checkpoint.
        found: Vec<i64>,
        /// Shape in the model.
        expected: Vec<i64>,
    },
    /// A checkpoint tensor has a dtype we cannot load.
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// A floating-point tensor holds NaN or infinite values.
    #[error("{path}: tensor `{name}` holds {count} non-finite value(s) (NaN or infinity), the first at {first:?}: the file is damaged or the run that wrote it diverged")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// How many values are not finite.
        count: i64,
        /// Index of the first, one entry per dimension (`[row, column]` for a matrix).
        first: Vec<i64>,
    },
    /// A safetensors file could not be parsed.
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The pretrained model package is not installed where we look for it.
    #[error("pretrained model not found: {0}")]
    PretrainedNotFound(String),
    /// A device string could not be parsed or the device is unavailable.
    #[error("device `{device}`: {message}")]
    Device {
        /// The device as the user wrote it.
        device: String,
        /// What is wrong.
        message: String,
    },
    /// bfloat16 was asked for where the processor has no bfloat16 instructions.
    #[error("--precision bf16: {0}")]
    Precision(String),
    /// An input violates a model invariant (shapes, lengths).
    #[error("invalid input: {0}")]
    Input(String),
    /// Tokenisation failed.
    #[error(transparent)]
    Data(#[from] gear_data::Error),
    /// libtorch raised an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
