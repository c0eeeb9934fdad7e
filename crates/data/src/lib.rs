//! Data layer of GeAR-rs: everything between raw text and id tensors, with no libtorch dependency.
//!
//! - tokenisation ([`Tokenizer`]): a checked wrapper over the Hugging Face `tokenizers` crate that
//!   loads a model's `tokenizer.json`, truncates the way sentence-transformers does, pads a batch
//!   to its longest member, and keeps each token's byte offsets into the source text so later
//!   stages can map sentences (units) to token spans;
//! - the (q, d, u) triple and corpus formats ([`Triple`], [`Document`]) with validating readers
//!   that name file, line and field, and an atomic writer ([`JsonlWriter`]);
//! - sentence splitting, SQuAD and BEIR import and length-bucketed batching;
//! - what keeps resumable jobs honest: input [`Fingerprint`]s and [`OutputLock`]s; the checked
//!   TOML config reader ([`parse_config`]) and the stable hash behind ids and splits.
//!
//! Synthetic data (the RIR pipeline, its rewriters, the embedded corpus) is the `gear-synth`
//! crate, which carries the HTTP client this crate does without.
//!
//! ```no_run
//! use gear_data::Tokenizer;
//!
//! # fn main() -> Result<(), gear_data::Error> {
//! let tok = Tokenizer::from_file("tokenizer.json", 256)?;
//! let batch = tok.encode_batch(&["a short text", "a slightly longer text to pad against"])?;
//! assert_eq!(batch.len(), 2);
//! // Token 1 of text 0 covers `text[start..end]` in the original string.
//! let (start, end) = batch.offsets(0)[1];
//! # let _ = (start, end);
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod batching;
mod beir;
mod error;
mod guard;
mod sentences;
mod span;
mod squad;
mod text;
mod tokenize;
mod triples;

pub use batching::{
    padding_waste, plan_epoch, split_of, BatchingConfig, Split, TripleBatch, TripleTokenizer,
};
pub use beir::{read_beir, BeirData};
pub use error::{Error, Result};
pub use guard::{parse_config, read_text, stable_hash, Fingerprint, OutputLock, TomlConfig};
pub use sentences::{relevant_sentences, split_sentences};
pub use span::Span;
pub use squad::{import_squad, squad_gold_answers, SquadImport, SquadStats};
pub use text::{blank_reason, is_blank, strip_bom, BOM};
pub use tokenize::{Batch, Tokenizer};
pub use triples::{
    Document, DocumentReader, JsonlReader, JsonlWriter, Record, Scenario, Triple, TripleReader,
    Unit,
};

/// The README's examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
