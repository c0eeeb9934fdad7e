//! `TrainConfig`: a training run as typed TOML (`configs/*.toml`), parsed then validated.

use std::path::{Path, PathBuf};

use gear_data::{BatchingConfig, Scenario};
use gear_model::{CopyMode, CrossAttentionInit, DecoderInit, DecoderMemory, Decoding, ReaderInput};
use serde::{Deserialize, Serialize};

use crate::optim::AdamWConfig;
use crate::{Error, Result};

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `rir` (target = the unit sentence) or `qar` (target = the answer).
    pub scenario: Scenario,
    /// The network.
    pub model: ModelSection,
    /// Batching.
    pub data: DataSection,
    /// Optimiser and schedule.
    pub optim: OptimSection,
    /// Loss terms.
    pub loss: LossSection,
    /// Length, evaluation and checkpoint cadence.
    pub run: RunSection,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `"minilm"` (the pretrained package from `cargo xtask setup`) or a BERT checkpoint folder.
    pub init: String,
    /// Query token limit.
    pub max_query_len: usize,
    /// Document token limit.
    pub max_document_len: usize,
    /// Target token limit.
    pub max_target_len: usize,
    /// One encoder for queries and documents (the paper: `false`).
    #[serde(default)]
    pub share_encoders: bool,
    /// Decoder depth; default: the encoder's.
    #[serde(default)]
    pub decoder_layers: Option<i64>,
    /// Decoder initialisation (the paper: `random`).
    #[serde(default)]
    pub decoder_init: DecoderInit,
    /// What the decoder's cross-attention reads (the paper: `fusion`).
    #[serde(default)]
    pub decoder_memory: DecoderMemory,
    /// Copying from the document (the paper: `none`).
    #[serde(default)]
    pub decoder_copy: CopyMode,
    /// The saved model's default decoding (`free` or `span`).
    #[serde(default)]
    pub decoding: Decoding,
    /// Layers that read the passage with the question before the decoder and the copy head
    /// use it (beyond the paper; 0: none). They start as the document encoder's last layers.
    #[serde(default)]
    pub reader_layers: i64,
    /// Where the reader layers start: `top` (the encoders' outputs) or `below` (their states
    /// after layer `L − reader_layers`, so the reader layers continue the encoder jointly over
    /// question and passage, DeFormer-style).
    #[serde(default)]
    pub reader_input: ReaderInput,
    /// Span decoding passes over spans made only of the question's tokens (needs span decoding).
    #[serde(default)]
    pub skip_question_echoes: bool,
    /// Cross-attention initialisation (BLIP and the paper: `random`).
    #[serde(default)]
    pub cross_attention_init: CrossAttentionInit,
    /// Local-retrieval layer, 1-based; default: 10/12 of the depth.
    #[serde(default)]
    pub local_layer: Option<usize>,
    /// Heads of the fusion cross-attention blocks; default: the encoder's.
    #[serde(default)]
    pub cross_attention_heads: Option<i64>,
    /// RMS-normalise query and document states before the fusion cross-attention's projections
    /// (beyond BLIP; with `cross_attention_init = "similarity"` the logits start as scaled
    /// cosine similarities).
    #[serde(default)]
    pub cross_attention_normalize: bool,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Length-bucketing window in batches (1: none).
    #[serde(default = "default_bucket")]
    pub bucket_batches: usize,
}

fn default_bucket() -> usize {
    16
}

/// `[optim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    /// Peak learning rate (paper 1e-5).
    pub lr: f64,
    /// Learning rate at step 0 (paper 1e-6).
    pub start_lr: f64,
    /// Floor of the cosine decay (paper 1e-6).
    pub min_lr: f64,
    /// Warm-up steps (paper 1,000).
    pub warmup_steps: u64,
    /// AdamW settings.
    #[serde(flatten)]
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm to this (0: off).
    #[serde(default)]
    pub clip_norm: f64,
    /// Micro-batches per optimiser step.
    #[serde(default = "one")]
    pub accumulation: usize,
    /// Learning-rate multiplier for what GeAR adds to the encoder (cross-attention, decoder;
    /// [`gear_model::is_new_parameter`]); 1 (the paper): all at `lr`. Short runs need more: on
    /// the demo 20× ends 105 steps at LM loss 1.1 instead of 6.0 (docs/training.md).
    #[serde(default = "unit_scale")]
    pub new_lr_scale: f64,
    /// Learning-rate multiplier for the fusion cross-attention blocks alone; default:
    /// `new_lr_scale`. Blocks that start as similarity attention need no boost: at 20× their
    /// localisation degrades within a few hundred steps (docs/training.md).
    #[serde(default)]
    pub cross_attention_lr_scale: Option<f64>,
    /// Learning-rate multiplier for the reader layers (`model.reader_layers`, which start as
    /// the document encoder's pretrained top layers); default: `new_lr_scale`.
    #[serde(default)]
    pub reader_lr_scale: Option<f64>,
    /// Keep the document encoder `E_d` at its initial weights (beyond the paper): its token
    /// states are computed once per distinct document, in evaluation mode, and reused every
    /// epoch, so a step costs only the query side (query encoder, fusion encoder, decoder). The
    /// contrastive loss then trains `E_q` against fixed document embeddings — an index built
    /// with the initial encoder stays valid. Requires `model.share_encoders = false`.
    #[serde(default)]
    pub freeze_document_encoder: bool,
}

fn unit_scale() -> f64 {
    1.0
}

fn one() -> usize {
    1
}

/// `[loss]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    /// Weight of the LM loss: `L = L_CL + α·L_LM` (paper 0.25).
    pub alpha: f64,
    /// Initial contrastive temperature (learnable, clamped to [0.001, 0.5]).
    pub temperature: f64,
    /// Momentum of the EMA encoders (paper 0.995).
    pub momentum: f64,
    /// Queue length (paper 57,600; 0: in-batch negatives only).
    pub queue_size: i64,
    /// Final weight of the momentum soft labels (paper 0.4).
    pub distill_weight: f64,
    /// Epochs over which that weight ramps up linearly from 0 (paper 2).
    pub distill_ramp_epochs: f64,
    /// Weight β of a local-retrieval loss beyond the paper: `L += β·L_LOC`, with `L_LOC` the
    /// mean of `−log(cross-attention mass on the unit's tokens)` at the local layer, the very
    /// weights local retrieval ranks sentences by. 0 (the paper) leaves localisation to the LM
    /// loss alone.
    #[serde(default)]
    pub local_weight: f64,
    /// Hard negatives per example, taken (first ones first) from the triples' `negatives`
    /// field, e.g. as `gear data beir` mines them: the momentum document encoder embeds them
    /// and they join the candidates every query is contrasted with, as the queue's entries
    /// do. 0 ignores the field; triples without negatives are unaffected.
    #[serde(default = "one")]
    pub hard_negatives: usize,
    /// Where `L_LM` lets a target token be copied from (models with a copy head; beyond the
    /// paper).
    #[serde(default)]
    pub copy_from: CopyFrom,
}

/// Where the LM loss lets a copy head copy a target token from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyFrom {
    /// Any position holding the token.
    #[default]
    Anywhere,
    /// Positions inside the triple's unit sentence(s) — where the answer is — when they hold
    /// the token (anywhere otherwise): the pointer is taught the answer's place, not only its
    /// words.
    AnswerSentence,
    /// QAR: the answer's own tokens in the document ([`gear_data::Triple::answer_span`]): the
    /// `k`-th target token is copied from the `k`-th token of the answer's occurrence when that
    /// token is the same (anywhere otherwise) — the pointer is taught exactly where the answer
    /// starts and how it continues, as span decoding reads it.
    AnswerSpan,
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Epochs (paper 10).
    pub epochs: u64,
    /// Seed of data order, dropout and initialisation.
    pub seed: u64,
    /// Evaluate on the dev file every this many steps (0: at the end of each epoch only).
    #[serde(default)]
    pub eval_every: u64,
    /// Write a checkpoint every this many steps (0: at the end only).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Dev examples used for generation metrics (generation is the slow part).
    #[serde(default = "default_eval_generation")]
    pub eval_generation_examples: usize,
    /// Stop after this many optimiser steps (the schedule still spans all epochs).
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Arithmetic of the forward pass: `fp32`, or `bf16` mixed precision (libtorch autocast:
    /// matrix products in bfloat16, weights, optimiser and losses in float32): on a GPU, or a CPU
    /// with AVX-512 BF16 or AMX-BF16 ([`Trainer::new`](crate::Trainer::new) refuses it on other
    /// CPUs). May change when resuming.
    #[serde(default)]
    pub precision: Precision,
}

/// `[run] precision`: gear-model's [`Precision`].
pub use gear_model::Precision;

fn default_eval_generation() -> usize {
    64
}

impl TrainConfig {
    /// Reads and validates a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = gear_data::read_text(path)?;
        Self::from_toml_str(&text, path)
    }

    /// Parses and validates TOML; `path` names it in errors.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self> {
        gear_data::parse_config(text).map_err(|message| Error::Config {
            path: path.to_owned(),
            message,
        })
    }

    /// The batching settings.
    pub fn batching(&self) -> BatchingConfig {
        BatchingConfig {
            batch_size: self.data.batch_size,
            bucket_batches: self.data.bucket_batches,
            seed: self.run.seed,
        }
    }

    /// The model folder `init` names: the pretrained package or a path.
    pub fn init_dir(&self) -> Result<PathBuf> {
        if self.model.init == "minilm" {
            return Ok(gear_model::pretrained::minilm_dir()?);
        }
        let dir = PathBuf::from(&self.model.init);
        if !dir.join("config.json").is_file() {
            return Err(Error::Config {
                path: dir,
                message: format!(
                    "`model.init` = {:?} is neither `minilm` nor a model folder (a folder with \
                     config.json, model.safetensors and tokenizer.json)",
                    self.model.init
                ),
            });
        }
        Ok(dir)
    }

    /// Checks invariants; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.check_numbers()?;
        self.check_sizes()?;
        self.check_positive()?;
        self.check_loss()
    }

    /// Finite numbers, AdamW's ranges, non-negative decay, clipping and ramp.
    fn check_numbers(&self) -> std::result::Result<(), String> {
        let o = &self.optim;
        let l = &self.loss;
        let finite = [
            ("optim.lr", o.lr),
            ("optim.start_lr", o.start_lr),
            ("optim.min_lr", o.min_lr),
            ("optim.beta1", o.adamw.beta1),
            ("optim.beta2", o.adamw.beta2),
            ("optim.eps", o.adamw.eps),
            ("optim.weight_decay", o.adamw.weight_decay),
            ("optim.clip_norm", o.clip_norm),
            ("optim.new_lr_scale", o.new_lr_scale),
            ("loss.alpha", l.alpha),
            ("loss.temperature", l.temperature),
            ("loss.momentum", l.momentum),
            ("loss.distill_weight", l.distill_weight),
            ("loss.distill_ramp_epochs", l.distill_ramp_epochs),
            ("loss.local_weight", l.local_weight),
        ];
        for (field, v) in finite {
            if !v.is_finite() {
                return Err(format!("`{field}` must be a finite number, got {v}"));
            }
        }
        for (field, v) in [
            ("optim.beta1", o.adamw.beta1),
            ("optim.beta2", o.adamw.beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("`{field}` must be in [0, 1), got {v}"));
            }
        }
        if o.adamw.eps <= 0.0 {
            return Err(format!("`optim.eps` must be positive, got {}", o.adamw.eps));
        }
        for (field, v) in [
            ("optim.weight_decay", o.adamw.weight_decay),
            ("optim.clip_norm", o.clip_norm),
            ("loss.distill_ramp_epochs", l.distill_ramp_epochs),
        ] {
            if v < 0.0 {
                return Err(format!("`{field}` must be ≥ 0, got {v}"));
            }
        }
        Ok(())
    }

    /// Bucketing, warm-up, sequence lengths and the initial model.
    fn check_sizes(&self) -> std::result::Result<(), String> {
        let o = &self.optim;
        if self.data.bucket_batches == 0 {
            return Err("`data.bucket_batches` must be at least 1 (1: no bucketing)".into());
        }
        const MAX_WARMUP: u64 = 100_000_000;
        if o.warmup_steps > MAX_WARMUP {
            return Err(format!(
                "`optim.warmup_steps` = {} is beyond any run (at most {MAX_WARMUP})",
                o.warmup_steps
            ));
        }
        for (field, v) in [
            ("model.max_query_len", self.model.max_query_len),
            ("model.max_document_len", self.model.max_document_len),
            ("model.max_target_len", self.model.max_target_len),
        ] {
            if v < 3 {
                return Err(format!(
                    "`{field}` must be at least 3 (two special tokens and one of text), got {v}"
                ));
            }
        }
        if self.model.init.trim().is_empty() {
            return Err("`model.init` is empty (use `minilm` or a model folder)".into());
        }
        Ok(())
    }

    /// What must be positive, and the frozen-encoder rule.
    fn check_positive(&self) -> std::result::Result<(), String> {
        let positive = [
            ("data.batch_size", self.data.batch_size as f64),
            ("optim.lr", self.optim.lr),
            ("optim.accumulation", self.optim.accumulation as f64),
            ("optim.new_lr_scale", self.optim.new_lr_scale),
            ("loss.temperature", self.loss.temperature),
            ("run.epochs", self.run.epochs as f64),
        ];
        if let Some(v) = self.optim.reader_lr_scale {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("`optim.reader_lr_scale` must be positive, got {v}"));
            }
        }
        let m = &self.model;
        // Fields that only mean something with another one set.
        let needs = [
            (
                self.optim.reader_lr_scale.is_some() && m.reader_layers == 0,
                "`optim.reader_lr_scale` is set but `model.reader_layers` is 0: no layer would use it",
            ),
            (
                m.skip_question_echoes && m.decoding == Decoding::Free,
                "`model.skip_question_echoes` needs `model.decoding = \"span\"` or `\"located_span\"`: free decoding has no spans to pass over",
            ),
            (
                m.reader_input == ReaderInput::Below && m.reader_layers == 0,
                "`model.reader_input = \"below\"` needs `model.reader_layers` ≥ 1: it says where the reader layers start reading",
            ),
        ];
        if let Some((_, why)) = needs.iter().find(|(broken, _)| *broken) {
            return Err((*why).into());
        }
        if let Some(v) = self.optim.cross_attention_lr_scale {
            if v.is_nan() || v <= 0.0 {
                return Err(format!(
                    "`optim.cross_attention_lr_scale` must be positive, got {v}"
                ));
            }
        }
        for (field, v) in positive {
            if v.is_nan() || v <= 0.0 {
                return Err(format!("`{field}` must be positive, got {v}"));
            }
        }
        if self.optim.freeze_document_encoder && self.model.share_encoders {
            return Err(
                "`optim.freeze_document_encoder` needs `model.share_encoders = false` (a shared \
                 encoder would freeze the query side too)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The loss section's ranges, the queue, and the learning-rate bounds.
    fn check_loss(&self) -> std::result::Result<(), String> {
        if !(0.0..1.0).contains(&self.loss.momentum) {
            return Err(format!(
                "`loss.momentum` must be in [0, 1), got {}",
                self.loss.momentum
            ));
        }
        if !(0.0..=1.0).contains(&self.loss.distill_weight) {
            return Err(format!(
                "`loss.distill_weight` must be in [0, 1], got {}",
                self.loss.distill_weight
            ));
        }
        if self.loss.alpha < 0.0 {
            return Err(format!("`loss.alpha` must be ≥ 0, got {}", self.loss.alpha));
        }
        if self.loss.copy_from != CopyFrom::Anywhere
            && self.model.decoder_copy == gear_model::CopyMode::None
        {
            return Err(format!(
                "`loss.copy_from = \"{}\"` needs a copy head (`model.decoder_copy`)",
                match self.loss.copy_from {
                    CopyFrom::AnswerSpan => "answer_span",
                    _ => "answer_sentence",
                }
            ));
        }
        if self.loss.local_weight.is_nan() || self.loss.local_weight < 0.0 {
            return Err(format!(
                "`loss.local_weight` must be ≥ 0, got {}",
                self.loss.local_weight
            ));
        }
        if self.loss.hard_negatives > 64 {
            return Err(format!(
                "`loss.hard_negatives` must be at most 64 per example, got {}",
                self.loss.hard_negatives
            ));
        }
        if self.loss.queue_size < 0
            || (self.loss.queue_size > 0 && self.loss.queue_size < self.data.batch_size as i64)
        {
            return Err(format!(
                "`loss.queue_size` ({}) must be 0 or at least `data.batch_size` ({})",
                self.loss.queue_size, self.data.batch_size
            ));
        }
        if self.optim.start_lr < 0.0 || self.optim.min_lr < 0.0 || self.optim.min_lr > self.optim.lr
        {
            return Err(
                "`optim.start_lr` and `optim.min_lr` must be ≥ 0 and `min_lr` ≤ `lr`".into(),
            );
        }
        if self.loss.temperature.is_nan()
            || self.loss.temperature <= 0.001
            || self.loss.temperature > 0.5
        {
            return Err(format!(
                "`loss.temperature` must be in (0.001, 0.5], got {}",
                self.loss.temperature
            ));
        }
        Ok(())
    }
}

impl gear_data::TomlConfig for TrainConfig {
    fn check(&self) -> std::result::Result<(), String> {
        self.validate()
    }
}
