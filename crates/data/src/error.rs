//! The error type of `gear-data`.

use std::path::PathBuf;

/// Errors raised while reading or tokenising data.
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
    /// A `tokenizer.json` could not be loaded or lacks something GeAR needs.
    #[error("{path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A line of a data file is malformed.
    #[error("{}", bad_line(path, *line, field, message))]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending field (`units[0].start`), or `(line)` for the line as a whole.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An output exists already or a resume file does not fit this run.
    #[error("{path}: {message}")]
    Output {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Tokenising a text failed.
    #[error("tokenisation failed: {0}")]
    Encode(String),
    /// A setting is out of its valid range.
    #[error("invalid setting `{field}`: {message}")]
    InvalidSetting {
        /// The setting's name.
        field: &'static str,
        /// Why it is invalid.
        message: String,
    },
}

/// `file:line: field `f`: message`, without the line where there is none (line 0: a whole-file
/// JSON document whose field path says where).
fn bad_line(path: &std::path::Path, line: usize, field: &str, message: &str) -> String {
    if line == 0 {
        format!("{}: field `{field}`: {message}", path.display())
    } else {
        format!("{}:{line}: field `{field}`: {message}", path.display())
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
