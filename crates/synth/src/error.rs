//! The error type of `gear-synth`: a data file's error (`gear-data`'s, naming the file, line and
//! field), or the failure of a step that only synthesis has — the query rewriter, the relevance
//! filter's embedder.

/// Errors raised while synthesising triples.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a data file, tokenising, or a setting out of range.
    #[error(transparent)]
    Data(#[from] gear_data::Error),
    /// The query rewriter failed.
    #[error("rewriter `{rewriter}`: {message}")]
    Rewrite {
        /// The rewriter's name.
        rewriter: String,
        /// What went wrong.
        message: String,
    },
    /// The relevance filter's embedder failed.
    #[error("embedding for the relevance filter failed: {0}")]
    Embed(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
