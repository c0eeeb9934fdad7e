//! Synthetic training data for GeAR-rs, over the formats of `gear-data` and with no libtorch:
//!
//! - [the RIR pipeline](synthesize_rir) (method §4): documents in, (keyword query, document,
//!   relevant sentence) triples out — pre-processing, candidate units, picking, rewriting,
//!   post-processing and the relevance filter, every step counted, resumable after a crash;
//! - its query rewriters: [`KeywordRewriter`] (offline, RAKE-style) and [`OpenAiRewriter`] (any
//!   OpenAI-compatible chat endpoint, as the paper rewrites with an LLM) — this crate carries the
//!   HTTP client, so a user of the triple format alone does not;
//! - [`generate_corpus`]: the embedded, seeded corpus of invented Wikipedia-like articles that
//!   `cargo xtask train-rir` trains on without a download.
//!
//! Errors are this crate's [`Error`]: a data file's error is `gear-data`'s, carried as is; a
//! rewriter's or embedder's failure has its own variant.
//!
//! ```
//! use gear_synth::{extract_keywords, generate_corpus, KeywordOptions};
//!
//! let docs = generate_corpus(3, 7);
//! assert_eq!(docs.len(), 3);
//! let first = gear_data::split_sentences(&docs[0].text)[0];
//! let query = extract_keywords(&docs[0].text[first.start..first.end], &KeywordOptions::default());
//! assert!(!query.is_empty());
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod corpus;
mod error;
mod rewriters;
mod rir;

pub use corpus::generate_corpus;
pub use error::{Error, Result};
pub use rewriters::{
    extract_keywords, KeywordOptions, KeywordRewriter, OpenAiConfig, OpenAiRewriter,
    REWRITE_INSTRUCTION,
};
pub use rir::{
    candidates, document_rng, partial_path, postprocess_query, preprocess, pronoun_led,
    synthesize_rir, Embedder, Preprocessed, Rewriter, RirConfig, RirStats,
};

/// The README's examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
