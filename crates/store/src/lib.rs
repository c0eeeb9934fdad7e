//! A GeAR index in PostgreSQL with pgvector: [`push`] copies a local index (documents, vectors,
//! the model's fingerprint) into one schema and builds an HNSW index over the vectors; [`build`]
//! embeds a corpus straight into it, whole or one shard at a time (shards may run on many
//! machines at once, e.g. over Ray), and [`finish`] checks it whole and builds the HNSW index;
//! [`PgStore`] opens it again — refusing a store built with another model or of another width —
//! and searches it exactly (every vector scanned, the same ids and scores as the local index) or
//! through the HNSW index (`ef_search`). It is a [`gear_infer::Corpus`], so a
//! [`gear_infer::Retriever`] serves it as it serves an index folder: located sentences are
//! computed on the serving node from the stored text.
//!
//! The schema (`gear` unless chosen):
//!
//! | table | columns |
//! |---|---|
//! | `meta` | `key text primary key`, `value jsonb` — one row, `index`: [`StoreMeta`] |
//! | `documents` | `row bigint primary key`, `id text unique`, `title text`, `text text` |
//! | `vectors` | `document bigint → documents.row`, `part integer` (a long document's window), `embedding vector(d)`; primary key `(document, part)` |
//!
//! A document's row is its position in the corpus, so every writer — a push, a shard, a retried
//! shard — writes the same rows, and `ON CONFLICT DO NOTHING` keeps one copy of each.
//!
//! Vectors are stored as pgvector's `vector` (float32): the `halfvec` type (float16) arrived in
//! pgvector 0.7, after the 0.6 this was built and tested against.

use serde::{Deserialize, Serialize};

mod address;
mod build;
mod pg;
mod push;
mod tables;

pub use address::StoreAddress;
pub use build::{build, finish, BuildReport, Shard, StoreBuildOptions};
pub use pg::{find_document, open_retriever, PgStore};
pub use push::push;

/// What can go wrong with a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL at {target}: {message}")]
    Connect {
        /// Host and port (never the password).
        target: String,
        /// Why.
        message: String,
    },
    /// A statement failed.
    #[error("PostgreSQL ({target}): {message}")]
    Query {
        /// Host and port.
        target: String,
        /// What failed.
        message: String,
    },
    /// The store does not fit: another model, another width, an unfinished push, a bad name.
    #[error("store {target}: {message}")]
    Store {
        /// Host, port and schema.
        target: String,
        /// What is wrong.
        message: String,
    },
    /// The local side failed (the index read, the model).
    #[error(transparent)]
    Infer(#[from] gear_infer::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The store's record (`meta` row `index`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMeta {
    /// Layout version of the schema.
    pub format: u32,
    /// The model folder the vectors were embedded with (on the machine that pushed them).
    pub model: String,
    /// Fingerprint of that model's files ([`gear_infer::model_fingerprint`]).
    pub fingerprint: String,
    /// Embedding width.
    pub dim: usize,
    /// Documents.
    pub documents: usize,
    /// Vectors (more than documents when long documents were embedded in windows).
    pub rows: usize,
    /// The most vectors one document has.
    pub max_rows_per_document: usize,
    /// Whether every row is in and the HNSW index built ([`finish`]): a store is opened only
    /// then.
    pub complete: bool,
    /// The HNSW index's settings.
    pub hnsw: HnswSettings,
    /// SHA-256 of the corpus (every document's id, title and text, in order): a shard or a
    /// resume of another corpus is refused, a corpus that begins with this one grows the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<String>,
}

/// pgvector's HNSW build settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswSettings {
    /// Links per node.
    pub m: u32,
    /// Candidate list while building.
    pub ef_construction: u32,
}

impl Default for HnswSettings {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 64,
        }
    }
}

/// The store's layout version (2: vectors keyed by document and part, the corpus recorded).
pub const STORE_FORMAT: u32 = 2;

/// How a store is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreSearch {
    /// Every vector scanned: the local index's exact answer.
    Exact,
    /// pgvector's HNSW index, with this candidate list (`hnsw.ef_search`).
    Hnsw {
        /// Candidates kept while searching the graph (pgvector: 1 to 1000).
        ef_search: u32,
    },
}

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
