//! The training loop: `L = L_CL + α·L_LM (+ β·L_LOC)` over length-bucketed batches, AdamW with
//! warm-up and cosine decay, momentum encoders and queues, periodic evaluation, a JSON-lines
//! metrics log, atomic checkpoints and exact resume.
//!
//! Reproducibility: the data order of epoch `e` depends only on `(seed, e)`, and libtorch's
//! generator is re-seeded with `seed + micro-step` before every forward, so dropout masks depend
//! only on the step. A checkpoint stores the model, momentum encoders, queues, temperature,
//! optimiser moments and the position in the data; resuming from it continues the identical run.
//!
//! The parts: `step.rs` (the loop), `plan.rs` (the epoch's batches across ranks), `objective.rs`
//! (one micro-batch's forward and loss), `checkpoint.rs` (save, find, resume), `log.rs` (what a
//! run reports).

use std::path::PathBuf;

use gear_data::Triple;
use gear_model::{BertConfig, GearConfig, GearModel, InitReport};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Tensor};

use crate::document_cache::DocumentCache;
use crate::momentum::Momentum;
use crate::optim::AdamW;
use crate::{Error, Result, TrainConfig};
use gear_c10d::{broadcast_tensors, GradientBuckets, ProcessGroup};

mod checkpoint;
mod log;
mod objective;
mod plan;
mod step;

pub use checkpoint::find_checkpoint;
pub use log::{Event, StepLog};
pub use plan::{global_plan, shard};

/// Where a run is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps taken.
    pub step: u64,
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Next batch of the current epoch's plan.
    pub next_batch: usize,
    /// Micro-batches processed (seeds dropout).
    pub micro_step: u64,
    /// Training examples processed.
    pub examples: u64,
    /// Fingerprint of the training triples (see [`data_fingerprint`]): a resume must train on
    /// the same data. Absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// A SHA-256 over the training triples, in order: what a resumed run must see again.
pub fn data_fingerprint(train: &[Triple]) -> String {
    train
        .iter()
        .fold(gear_data::Fingerprint::new(), |f, t| f.json("triple", t))
        .value("count", train.len())
        .finish()
}

/// The trainer.
pub struct Trainer {
    model: GearModel,
    momentum: Momentum,
    _temp_vs: VarStore,
    temp: Tensor,
    optimizer: AdamW,
    config: TrainConfig,
    state: TrainState,
    out: PathBuf,
    last_checkpoint: Option<PathBuf>,
    /// Trainable parameters in optimiser order (gradient buckets follow it).
    params: Vec<Tensor>,
    dist: Option<Distributed>,
    /// With `optim.freeze_document_encoder`: each distinct document's `E_d` token states.
    documents: DocumentCache,
}

/// Data-parallel state: the process group and the gradient buckets over [`Trainer::params`].
struct Distributed {
    group: ProcessGroup,
    buckets: GradientBuckets,
}

/// The GeAR config a training config asks for, around a checkpoint's encoder shape.
pub fn gear_config(config: &TrainConfig, encoder: BertConfig) -> GearConfig {
    let mut g = GearConfig::for_encoder(encoder);
    let m = &config.model;
    g.max_query_len = m.max_query_len;
    g.max_document_len = m.max_document_len;
    g.max_target_len = m.max_target_len;
    g.share_encoders = m.share_encoders;
    g.local_layer = m.local_layer;
    if let Some(layers) = m.decoder_layers {
        g.decoder.num_hidden_layers = layers;
    }
    g.decoder.init = m.decoder_init;
    g.decoder.memory = m.decoder_memory;
    g.decoder.copy = m.decoder_copy;
    g.decoder.decoding = m.decoding;
    g.decoder.reader_layers = m.reader_layers;
    g.decoder.reader_input = m.reader_input;
    g.decoder.skip_question_echoes = m.skip_question_echoes;
    g.cross_attention_init = m.cross_attention_init;
    g.cross_attention_heads = m.cross_attention_heads;
    g.cross_attention_normalize = m.cross_attention_normalize;
    g
}

/// The model a training run starts from: GeAR initialised from the config's BERT checkpoint
/// (`model.init`) — pretrained encoders, new cross-attention and decoder initialised as the
/// config says and seeded with `run.seed` — with what was loaded and what was created. What
/// [`Trainer::new`] trains, and what `gear eval --untrained` measures.
pub fn initial_model(config: &TrainConfig, device: Device) -> Result<(GearModel, InitReport)> {
    let dir = config.init_dir()?;
    let encoder = BertConfig::from_json_file(dir.join("config.json"))?;
    tch::manual_seed(config.run.seed as i64);
    let (model, report) =
        GearModel::from_bert_checkpoint(&dir, Some(gear_config(config, encoder)), device)?;
    tracing::info!(
        created = report.created.len(),
        loaded = report.loaded.len(),
        "initialised GeAR from {}",
        dir.display()
    );
    Ok((model, report))
}

/// A non-negative id for the queue (−1 marks empty slots).
fn doc_hash(id: &str) -> i64 {
    (gear_data::stable_hash(id) & (i64::MAX as u64)) as i64
}

impl Trainer {
    /// A new run: GeAR initialised from the config's BERT checkpoint (`model.init`).
    /// `run.precision = "bf16"` is refused on a CPU without bfloat16 instructions
    /// ([`gear_model::Precision::check`]).
    pub fn new(config: TrainConfig, out: impl Into<PathBuf>, device: Device) -> Result<Self> {
        config.run.precision.check(device)?;
        let (model, _) = initial_model(&config, device)?;
        Self::with_model(model, config, out)
    }

    /// A new run on an already built model (tests, custom initialisation).
    pub fn with_model(
        model: GearModel,
        config: TrainConfig,
        out: impl Into<PathBuf>,
    ) -> Result<Self> {
        config.validate().map_err(|message| Error::Config {
            path: PathBuf::from("<config>"),
            message,
        })?;
        let momentum = Momentum::new(&model, config.loss.queue_size)?;
        let temp_vs = VarStore::new(model.device());
        let temp = temp_vs
            .root()
            .var_copy("temp", &Tensor::from(config.loss.temperature as f32));
        let frozen = config.optim.freeze_document_encoder;
        let mut params: Vec<(String, Tensor)> = Vec::new();
        for (name, mut t) in model.var_store().variables() {
            if frozen && name.starts_with("document_encoder.") {
                let _ = t.requires_grad_(false);
            } else if t.requires_grad() {
                params.push((name, t));
            }
        }
        tracing::info!(
            "precision: {}",
            config.run.precision.describe(model.device())
        );
        if frozen {
            tracing::info!(
                "the document encoder is frozen; its states are computed once per document"
            );
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        params.push(("temp".into(), temp.shallow_clone()));
        let tensors = params.iter().map(|(_, t)| t.shallow_clone()).collect();
        let mut optimizer = AdamW::new(params, config.optim.adamw);
        let new_scale = config.optim.new_lr_scale;
        let fusion_scale = config.optim.cross_attention_lr_scale.unwrap_or(new_scale);
        let reader_scale = config.optim.reader_lr_scale.unwrap_or(new_scale);
        let scaled = optimizer.set_lr_scales(|name| {
            if name.starts_with("query_encoder.") && name.contains(".crossattention.") {
                fusion_scale
            } else if name.starts_with("decoder.reader.") {
                reader_scale
            } else if gear_model::is_new_parameter(name) {
                new_scale
            } else {
                1.0
            }
        });
        if scaled > 0 {
            tracing::info!(
                parameters = scaled,
                decoder = new_scale,
                fusion_cross_attention = fusion_scale,
                reader = reader_scale,
                "new blocks train at a scaled learning rate"
            );
        }
        Ok(Self {
            model,
            momentum,
            _temp_vs: temp_vs,
            temp,
            optimizer,
            config,
            state: TrainState::default(),
            out: out.into(),
            last_checkpoint: None,
            params: tensors,
            dist: None,
            documents: DocumentCache::default(),
        })
    }

    /// Makes this trainer one rank of a data-parallel run: every rank must call it, in the same
    /// state (new, or resumed from the same checkpoint). Parameters, momentum encoders, queues
    /// and temperature are broadcast from rank 0; from then on each rank trains on its slice of
    /// every global batch (`data.batch_size` examples per rank), the contrastive loss sees the
    /// gathered global batch, gradients are averaged over ranks in buckets, and only rank 0
    /// writes checkpoints, the metrics log and evaluations.
    pub fn distribute(mut self, group: ProcessGroup) -> Result<Self> {
        let mut state: Vec<(String, Tensor)> =
            self.model.var_store().variables().into_iter().collect();
        state.extend(
            self.momentum
                .var_store()
                .variables()
                .into_iter()
                .map(|(k, t)| (format!("momentum.{k}"), t)),
        );
        state.sort_by(|a, b| a.0.cmp(&b.0));
        state.push(("temp".into(), self.temp.shallow_clone()));
        let tensors: Vec<Tensor> = state.into_iter().map(|(_, t)| t).collect();
        let calls = broadcast_tensors(&group, &tensors, 0, GradientBuckets::DEFAULT_BUCKET_BYTES)?;
        let buckets = GradientBuckets::new(&self.params, GradientBuckets::DEFAULT_BUCKET_BYTES);
        tracing::info!(
            rank = group.rank(),
            world = group.world_size(),
            broadcasts = calls,
            buckets = buckets.len(),
            "data-parallel training over {}",
            group.backend().name()
        );
        self.dist = Some(Distributed { group, buckets });
        Ok(self)
    }

    /// `(rank, world size)`: `(0, 1)` without a process group.
    pub fn rank(&self) -> (usize, usize) {
        self.dist
            .as_ref()
            .map_or((0, 1), |d| (d.group.rank(), d.group.world_size()))
    }

    /// The model being trained.
    pub fn model(&self) -> &GearModel {
        &self.model
    }

    /// Where the run is.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The contrastive temperature.
    pub fn temperature(&self) -> f64 {
        self.temp.double_value(&[])
    }
}
