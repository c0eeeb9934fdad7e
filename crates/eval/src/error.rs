//! The error type of `gear-eval`.

/// Errors raised by an evaluation or by mining triples.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input: no queries, a query's document missing from the corpus, …
    #[error("{0}")]
    Input(String),
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
