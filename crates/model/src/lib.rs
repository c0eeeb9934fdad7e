//! GeAR-rs networks over libtorch ([`tch`]).
//!
//! Today: a BERT encoder whose VarStore paths are exactly a Hugging Face `BertModel`
//! checkpoint's keys (`embeddings.word_embeddings.weight`, `encoder.layer.3.attention.self.query.weight`,
//! …) and which also runs MPNet checkpoints ([`ModelType::Mpnet`]: relative-position bias,
//! offset positions, names mapped by [`mpnet_checkpoint_key`]), strict safetensors loading, and [`SentenceEncoder`], which reads a sentence-transformers
//! folder's pipeline ([`SentenceLayout`]: `modules.json`, the pooling mode, `Normalize`,
//! `sentence_bert_config.json`) and reproduces sentence-transformers' embeddings to within 1e-4.
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

mod attention;
mod checkpoint;
mod config;
mod cross_encoder;
mod decoder;
mod device;
mod embeddings;
mod encoder;
mod error;
mod export;
mod gear;
mod gear_config;
mod generate;
mod layer;
mod layers;
mod local;
mod pooling;
pub mod pretrained;
mod sentence;
mod st_folder;

pub use attention::{
    additive_mask, causal_mask, Attention, AttentionOutput, CrossAttentionShape, KvCache,
};
pub use checkpoint::{
    check_finite, load_safetensors, load_safetensors_mapped, read_tensors, save_safetensors,
    save_tensors, write_folder_atomically, LoadMode, LoadReport,
};
pub use config::{Activation, BertConfig, ModelType};
pub use cross_encoder::{CrossEncoder, EncodedPairs};
pub use decoder::{Decoder, DecoderCache};
pub use device::parse_device;
pub use embeddings::Embeddings;
pub use encoder::{mpnet_checkpoint_key, Bert, Context, CrossProbs, EncoderOutput, FusionOptions};
pub use error::{Error, Result};
pub use export::EncoderSide;
pub use gear::{
    is_new_parameter, Encoded, GearModel, InitReport, LocateInput, LocateOptions, DECODE_TOKEN,
};
pub use gear_config::{
    default_local_layer, CrossAttentionInit, DecoderConfig, DecoderInit, GearConfig,
};
pub use generate::{generate, GenerationOptions, GenerationTokens, Search};
pub use layer::{BertLayer, CrossInput, LayerOutput};
pub use local::{
    rank_units, token_weights, top_tokens, AttendedToken, LocalRanking, RankedUnit, UnitAggregation,
};
pub use pooling::{l2_normalize, mean_pool, pool};
pub use sentence::{embed_length_sorted, EncoderOptions, SentenceEncoder};
pub use st_folder::{Pooling, SentenceLayout};

/// The README's examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
