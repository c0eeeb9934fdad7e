//! GeAR inference (method §3), as a library the `gear` CLI and `gear serve` are built on: a
//! document index with exact or HNSW search (global retrieval, bi-encoder cost), sentence
//! location from the fusion encoder's cross-attention (local retrieval) over documents of any
//! length, generation, and explanations rendered for a terminal or as HTML. The query path is
//! one object, [`Retriever`], whose answers are plain serde data with character offsets.
//! Evaluation and the BM25 baselines are `gear-eval`.
//!
//! ```no_run
//! use gear_infer::{render_terminal, Retriever, RetrieverOptions};
//! use gear_model::GenerationOptions;
//!
//! # fn main() -> gear_infer::Result<()> {
//! let retriever = Retriever::open("my-index", &RetrieverOptions::default())?;
//! // Top 5 documents, each with its 2 best sentences (character offsets).
//! let answers = retriever.search(&["river, bridge, engineer"], 5, 2, None)?;
//! let best = retriever.document(&answers[0].results[0].id)?;
//! let e = retriever.explain("river, bridge, engineer", &best, 10, Some(&GenerationOptions::default()), None)?;
//! println!("{}", render_terminal(&e, true, 5));
//! # Ok(()) }
//! ```

mod ann;
mod ann_build;
mod build;
mod corpus;
mod error;
mod explain;
mod located;
mod mapped;
mod opening;
mod pairs;
mod render;
mod retriever;
mod search;
mod store;

use std::path::PathBuf;

pub use ann::{GraphVectors, HnswConfig, HnswIndex, HnswParams};
pub use ann_build::{build_ann, AnnMeta};
pub use build::{
    add_to_index, build_index, check_corpus, corpus_fingerprint, embed_for_index, index_vectors,
    model_fingerprint, BuildOptions, BuildOutcome, EmbeddedRows, FileStamp, VectorPrecision,
};
pub use corpus::Corpus;
pub use error::{Error, Result};
pub use explain::{
    explain, explain_within, sentence_windows, AttendedSpan, Explanation, RankedSentence,
    Truncation,
};
pub use located::{CharSpan, LocatedSentence, LocatedToken};
pub use pairs::locate_pairs;
pub use render::{escape_html, render_html, render_terminal};
pub use retriever::{
    ExplainedAnswer, GeneratedAnswer, Located, Retriever, RetrieverOptions, SearchAnswer, SearchHit,
};
pub use search::{recall_against_exact, ExactIndex, Hit, VectorIndex};
pub use store::{AddedPart, Backend, DocumentIndex, IndexMeta, INDEX_FORMAT};

use gear_model::GearModel;

/// Which model to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GeAR checkpoint folder (`gear.toml`, `model.safetensors`, `tokenizer.json`).
    Checkpoint(PathBuf),
    /// The pretrained all-MiniLM-L6-v2 as both encoders, with new (seeded, untrained)
    /// cross-attention and decoder: a plain bi-encoder for search.
    Pretrained,
}

impl ModelSource {
    /// The source for the model folder an index records: the pretrained MiniLM for a
    /// sentence-transformers folder (`config.json` without `gear.toml`), a checkpoint otherwise.
    pub fn for_dir(dir: &std::path::Path) -> Self {
        if dir.join("config.json").is_file() && !dir.join("gear.toml").is_file() {
            Self::Pretrained
        } else {
            Self::Checkpoint(dir.to_owned())
        }
    }
}

/// Loads the model and returns it with the folder its files came from (for index fingerprints).
pub fn load_model(source: &ModelSource, device: tch::Device) -> Result<(GearModel, PathBuf)> {
    match source {
        ModelSource::Checkpoint(dir) => Ok((GearModel::load(dir, device)?, dir.clone())),
        ModelSource::Pretrained => {
            let dir = gear_model::pretrained::minilm_dir()?;
            tch::manual_seed(0);
            let (model, _) = GearModel::from_bert_checkpoint(&dir, None, device)?;
            Ok((model, dir))
        }
    }
}

/// The README's examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Refuses a text `model` would read nothing of: `what` (\"the query\", \"query 3\", \"document
/// `d1`\") is empty, or holds only white space, control or zero-width characters, or tokenises
/// to no token at all. Blank means \"no token the model reads\", not \"no visible byte\": such a
/// query used to embed as `[CLS] [SEP]` and return arbitrary documents.
pub fn check_readable(model: &GearModel, what: &str, text: &str) -> Result<()> {
    if let Some(why) = gear_data::blank_reason(text) {
        return Err(Error::Input(format!("{what} {why}")));
    }
    // A letter or digit always becomes a token (`[UNK]` at worst): tokenise only texts without
    // one, so a long document is not tokenised once more just to be checked.
    if !text.chars().any(char::is_alphanumeric) && model.tokenizer().content_tokens(text)? == 0 {
        return Err(Error::Input(format!(
            "{what} holds no token the model reads (only characters its tokenizer drops)"
        )));
    }
    Ok(())
}
