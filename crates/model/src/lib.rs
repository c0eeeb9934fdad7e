//! GeAR-rs networks over libtorch ([`tch`]).
//!
//! - `bert/` — the encoder stack, keyed exactly as a Hugging Face checkpoint
//!   (`embeddings.word_embeddings.weight`, `encoder.layer.3.attention.self.query.weight`, …) so
//!   weights load strictly by name: [`Bert`] runs BERT and MPNet checkpoints
//!   ([`ModelType::Mpnet`]: relative-position bias, offset positions, names mapped by
//!   [`mpnet_checkpoint_key`]) and, built with cross-attention blocks, GeAR's fusion encoder.
//! - `gear/` — [`GearModel`]: query encoder (also the fusion encoder), document encoder and
//!   [`Decoder`], with [`GearConfig`], initialisation from a BERT checkpoint
//!   ([`GearModel::from_bert_checkpoint`]), checkpoint folders ([`GearModel::load`],
//!   [`GearModel::save`]) and the pipelines: local retrieval ([`GearModel::locate`] and its batched
//!   forms, ranking sentences by cross-attention through [`rank_units`]) and generation
//!   ([`generate`]: greedy or beam search, with a KV cache).
//! - [`SentenceEncoder`] — a sentence-transformers folder's pipeline ([`SentenceLayout`]:
//!   `modules.json`, the pooling mode, `Normalize`, `sentence_bert_config.json`), reproducing
//!   sentence-transformers' embeddings to within 1e-4; export of a GeAR encoder back to such a
//!   folder ([`EncoderSide`]); the [`CrossEncoder`] reranker.
//! - Checkpoint I/O (strict safetensors loading, [`write_folder_atomically`]), devices
//!   ([`parse_device`]) and the pretrained models `cargo xtask setup` installs ([`pretrained`]).
//!
//! Each module names the reference code it mirrors (the table is in `bert/mod.rs`) and runs its
//! forward inside a `tracing` span.
//!
//! ```no_run
//! use gear_model::{pretrained, EncoderOptions, SentenceEncoder};
//!
//! # fn main() -> gear_model::Result<()> {
//! let encoder = SentenceEncoder::load(pretrained::minilm_dir()?, &EncoderOptions::default())?;
//! let e = encoder.embed(&["Where is the Eiffel tower?", "The Eiffel tower is in Paris."])?;
//! let cosine = e.get(0).dot(&e.get(1)).double_value(&[]);
//! assert!(cosine > 0.5);
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod batch;
mod bert;
mod checkpoint;
mod cross_encoder;
mod decoder;
mod device;
mod error;
mod export;
mod gear;
mod generate;
mod local;
mod pointer;
mod pooling;
mod precision;
pub mod pretrained;
mod sentence;
mod span;
mod st_folder;

pub use batch::batch_tensors;
pub use bert::attention::{
    additive_mask, causal_mask, Attention, AttentionOutput, CrossAttentionShape, KvCache,
};
pub use bert::config::{Activation, BertConfig, ModelType};
pub use bert::embeddings::Embeddings;
pub use bert::encoder::{
    mpnet_checkpoint_key, Bert, Context, CrossProbs, EncoderOutput, FusionOptions,
};
pub use bert::layer::{BertLayer, CrossInput, LayerOutput};
pub use checkpoint::{
    check_finite, load_safetensors, load_safetensors_mapped, read_tensors, save_safetensors,
    save_tensors, write_folder_atomically, LoadMode, LoadReport,
};
pub use cross_encoder::{CrossEncoder, EncodedPairs};
pub use decoder::{Decoder, DecoderCache};
pub use device::parse_device;
pub use error::{Error, Result};
pub use export::EncoderSide;
pub use gear::{
    default_local_layer, is_new_parameter, keep_mask, CopyMode, CrossAttentionInit, DecoderConfig,
    DecoderInit, DecoderMemory, Decoding, Encoded, GearConfig, GearModel, Generated, InitReport,
    LocateDocument, LocateOptions, LocateQueries, ReaderInput, ReaderInputs, DECODE_TOKEN,
};
pub use generate::{generate, GenerationOptions, GenerationTokens, Search};
pub use local::{
    rank_units, token_weights, top_tokens, AttendedToken, LocalRanking, RankedUnit, UnitAggregation,
};
pub use pointer::{
    attention_mass, local_prior, mixture_log_probs, position_log_probs, CopyDistribution, Passage,
    Pointer, PRIOR_RADIUS,
};
pub use pooling::{l2_normalize, mean_pool, pool};
pub use precision::{Bf16Autocast, Bf16Support, Precision, PrecisionGuard};
pub use sentence::{embed_length_sorted, EncoderOptions, SentenceEncoder};
pub use span::{decode_spans, SpanReader};
pub use st_folder::{Pooling, SentenceLayout};

/// The README's examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
