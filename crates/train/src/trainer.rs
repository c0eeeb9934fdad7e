//! The training loop: `L = L_CL + α·L_LM (+ β·L_LOC)` over length-bucketed batches, AdamW with
//! warm-up and cosine decay, momentum encoders and queues, periodic evaluation, a JSON-lines
//! metrics log, atomic checkpoints and exact resume.
//!
//! Reproducibility: the data order of epoch `e` depends only on `(seed, e)`, and libtorch's
//! generator is re-seeded with `seed + micro-step` before every forward, so dropout masks depend
//! only on the step. A checkpoint stores the model, momentum encoders, queues, temperature,
//! optimiser moments and the position in the data; resuming from it continues the identical run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use gear_data::{plan_epoch, Span, Triple, TripleBatch, TripleTokenizer};
use gear_model::{
    l2_normalize, load_safetensors_mapped, mean_pool, read_tensors, save_tensors, BertConfig,
    Context, CrossProbs, FusionOptions, GearConfig, GearModel, LoadMode,
};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::document_cache::DocumentCache;
use crate::losses::{contrastive_loss, lm_loss, local_loss_sum, soft_targets};
use crate::momentum::Momentum;
use crate::optim::AdamW;
use crate::schedule::LrSchedule;
use crate::{Error, Precision, Result, TrainConfig};
use gear_dist::{
    all_gather_counted, broadcast_tensors, row_counts, Bf16Autocast, GradientBuckets, ProcessGroup,
};
use gear_infer::{evaluate, EvalOptions, EvalReport, EvalSet};

/// Added to similarity logits of empty queue slots: far below any real logit, yet finite so that
/// `0 · log_softmax` stays 0.
const MASKED_LOGIT: f64 = -1e4;

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

/// One optimiser step, as logged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepLog {
    /// Optimiser step (1-based after the update).
    pub step: u64,
    /// Total optimiser steps of the run.
    pub total_steps: u64,
    /// Epoch.
    pub epoch: u64,
    /// Learning rate used.
    pub lr: f64,
    /// `L_CL + α·L_LM + β·L_LOC`.
    pub loss: f64,
    /// Contrastive term.
    pub loss_cl: f64,
    /// Language-modelling term.
    pub loss_lm: f64,
    /// Local-retrieval term (0 when `loss.local_weight` is 0).
    pub loss_local: f64,
    /// Temperature after the step.
    pub temperature: f64,
    /// Soft-label weight used.
    pub distill_weight: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Training examples per second over this step.
    pub examples_per_second: f64,
}

/// Events the caller sees (for progress bars and logs).
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// An optimiser step finished.
    Step(&'a StepLog),
    /// An evaluation finished.
    Eval {
        /// Optimiser step.
        step: u64,
        /// The metrics.
        report: &'a EvalReport,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Optimiser step.
        step: u64,
        /// The checkpoint folder.
        path: &'a Path,
    },
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

#[derive(Serialize, Deserialize)]
struct SavedState {
    state: TrainState,
    config: TrainConfig,
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
    g.cross_attention_init = m.cross_attention_init;
    g.cross_attention_heads = m.cross_attention_heads;
    g.cross_attention_normalize = m.cross_attention_normalize;
    g
}

/// A non-negative id for the queue (−1 marks empty slots).
fn doc_hash(id: &str) -> i64 {
    (gear_data::stable_hash(id) & (i64::MAX as u64)) as i64
}

fn to_tensors(batch: &gear_data::Batch, device: Device) -> (Tensor, Tensor) {
    let shape = [batch.len() as i64, batch.seq_len() as i64];
    (
        Tensor::from_slice(batch.ids())
            .view(shape)
            .to_device(device),
        Tensor::from_slice(batch.attention_mask())
            .view(shape)
            .to_device(device),
    )
}

impl Trainer {
    /// A new run: GeAR initialised from the config's BERT checkpoint (`model.init`).
    pub fn new(config: TrainConfig, out: impl Into<PathBuf>, device: Device) -> Result<Self> {
        let dir = config.init_dir()?;
        let encoder = BertConfig::from_json_file(dir.join("config.json"))?;
        let g = gear_config(&config, encoder);
        tch::manual_seed(config.run.seed as i64);
        let (model, report) = GearModel::from_bert_checkpoint(&dir, Some(g), device)?;
        tracing::info!(
            created = report.created.len(),
            loaded = report.loaded.len(),
            "initialised GeAR from {}",
            dir.display()
        );
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
        let scaled = optimizer.set_lr_scales(|name| {
            if name.starts_with("query_encoder.") && name.contains(".crossattention.") {
                fusion_scale
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

    /// Continues the run whose checkpoint is in `out/checkpoint`. The configuration must equal
    /// the saved one except for `[run]` `max_steps`, `eval_every`, `checkpoint_every` and
    /// `precision`.
    pub fn resume(config: TrainConfig, out: impl Into<PathBuf>, device: Device) -> Result<Self> {
        let out = out.into();
        let ck = find_checkpoint(&out).ok_or_else(|| Error::Resume {
            path: out.join("checkpoint"),
            message: "no checkpoint to resume from".into(),
        })?;
        let bad = |message: String| Error::Resume {
            path: ck.clone(),
            message,
        };
        let json = ck.join("train_state.json");
        let text =
            std::fs::read_to_string(&json).map_err(|e| bad(format!("{}: {e}", json.display())))?;
        let saved: SavedState =
            serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", json.display())))?;
        let comparable = |c: &TrainConfig| {
            let mut c = c.clone();
            c.run.max_steps = None;
            c.run.eval_every = 0;
            c.run.checkpoint_every = 0;
            c.run.precision = Precision::default();
            c
        };
        if comparable(&saved.config) != comparable(&config) {
            let then = serde_json::to_value(comparable(&saved.config)).unwrap_or_default();
            let now = serde_json::to_value(comparable(&config)).unwrap_or_default();
            let what = first_difference(&then, &now, "")
                .map_or_else(String::new, |(field, a, b)| {
                    format!(": `{field}` was {a}, now {b}")
                });
            return Err(bad(format!(
                "the configuration differs from the one the checkpoint was trained with{what} \
                 (only [run] max_steps, eval_every, checkpoint_every and precision may change)"
            )));
        }
        let model = GearModel::load(ck.join("model"), device)?;
        let mut trainer = Self::with_model(model, config, out.clone())?;
        let tensors_path = ck.join("train_state.safetensors");
        load_safetensors_mapped(
            trainer.momentum.var_store_mut(),
            &tensors_path,
            LoadMode::Strict,
            |n| Some(format!("momentum.{n}")),
        )?;
        let tensors: std::collections::HashMap<String, Tensor> =
            read_tensors(&tensors_path)?.into_iter().collect();
        let temp = tensors
            .get("temp")
            .ok_or_else(|| bad("no `temp` in train_state.safetensors".into()))?;
        tch::no_grad(|| trainer.temp.copy_(temp));
        trainer
            .optimizer
            .load_state(
                |k| {
                    tensors
                        .get(&format!("optim.{k}"))
                        .map(|t| t.to_device(device))
                },
                saved.state.step,
            )
            .map_err(bad)?;
        trainer.state = saved.state;
        trainer.last_checkpoint = Some(ck);
        Ok(trainer)
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

    /// Writes `out/checkpoint/{model/, train_state.safetensors, train_state.json}` atomically
    /// (built in a temporary folder that replaces the old checkpoint only once complete). In a
    /// data-parallel run only rank 0 writes; other ranks return the path without writing.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        if self.rank().0 != 0 {
            return Ok(self.out.join("checkpoint"));
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(&self.out).map_err(io(&self.out))?;
        let ck = self.out.join("checkpoint");
        let tmp = self
            .out
            .join(format!(".checkpoint.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        self.model.save(tmp.join("model"))?;
        let mut tensors: Vec<(String, Tensor)> = self
            .momentum
            .var_store()
            .variables()
            .into_iter()
            .map(|(k, t)| (format!("momentum.{k}"), t))
            .collect();
        tensors.push(("temp".into(), self.temp.detach()));
        tensors.extend(
            self.optimizer
                .state()
                .into_iter()
                .map(|(k, t)| (format!("optim.{k}"), t)),
        );
        save_tensors(tensors, tmp.join("train_state.safetensors"))?;
        let saved = SavedState {
            state: self.state.clone(),
            config: self.config.clone(),
        };
        let json = serde_json::to_string_pretty(&saved).map_err(|e| Error::Train(e.to_string()))?;
        std::fs::write(tmp.join("train_state.json"), json).map_err(io(&tmp))?;
        if ck.exists() {
            let old = self
                .out
                .join(format!(".checkpoint.old-{}", std::process::id()));
            std::fs::rename(&ck, &old).map_err(io(&ck))?;
            std::fs::rename(&tmp, &ck).map_err(io(&ck))?;
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            std::fs::rename(&tmp, &ck).map_err(io(&ck))?;
        }
        // Leftovers of runs killed mid-save are superseded now.
        if let Ok(entries) = std::fs::read_dir(&self.out) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".checkpoint.tmp-") || name.starts_with(".checkpoint.old-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        self.last_checkpoint = Some(ck.clone());
        Ok(ck)
    }

    /// Trains on `train` (evaluating on `dev` when given) until the epochs are done or
    /// `run.max_steps` is reached; a checkpoint is written at the end. Returns the last
    /// evaluation.
    pub fn train(
        &mut self,
        train: &[Triple],
        dev: Option<&[Triple]>,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<Option<EvalReport>> {
        if train.is_empty() {
            return Err(Error::Train("the training file holds no triples".into()));
        }
        let fingerprint = data_fingerprint(train);
        match &self.state.data {
            Some(old) if *old != fingerprint => {
                return Err(Error::Resume {
                    path: self
                        .last_checkpoint
                        .clone()
                        .unwrap_or_else(|| self.out.join("checkpoint")),
                    message: format!(
                        "the checkpoint was trained on other data than these {} triples: \
                         resume with the same training file, or start a new run",
                        train.len()
                    ),
                })
            }
            Some(_) => {}
            None if self.state.step > 0 => tracing::warn!(
                "the checkpoint does not record its training data (an older version wrote it): \
                 resuming on the data given, unchecked"
            ),
            None => {}
        }
        self.state.data = Some(fingerprint);
        let c = self.config.clone();
        let tok = TripleTokenizer::new(
            self.model.tokenizer(),
            c.model.max_query_len,
            c.model.max_document_len,
            c.model.max_target_len,
        )?;
        let lengths = tok.document_lengths(train)?;
        let (rank, world) = self.rank();
        let main = rank == 0;
        // One run at a time writes `out` (rank 0 writes for all ranks).
        let _lock = if main {
            Some(gear_data::OutputLock::acquire(&self.out)?)
        } else {
            None
        };
        let mut batching = c.batching();
        batching.batch_size *= world;
        if lengths.len() < world {
            return Err(Error::Train(format!(
                "{} training triples cannot be shared by {world} processes",
                lengths.len()
            )));
        }
        let batches_per_epoch = global_plan(&lengths, &batching, 0, world).len();
        let steps_per_epoch = batches_per_epoch.div_ceil(c.optim.accumulation) as u64;
        let total_steps = steps_per_epoch * c.run.epochs;
        if main && c.optim.warmup_steps > total_steps {
            tracing::warn!(
                "`optim.warmup_steps` ({}) exceeds the run's {total_steps} steps: the learning \
                 rate never reaches `optim.lr` ({})",
                c.optim.warmup_steps,
                c.optim.lr
            );
        }
        let schedule = LrSchedule {
            start_lr: c.optim.start_lr,
            peak_lr: c.optim.lr,
            min_lr: c.optim.min_lr,
            warmup_steps: c.optim.warmup_steps,
            total_steps,
        };
        // Dev evaluation: GeAR alone (no baselines), the one protocol of `gear_infer::evaluate`.
        let eval_options = EvalOptions {
            baselines: false,
            ..EvalOptions::for_scenario(c.scenario, c.run.eval_generation_examples)
        };
        let dev = dev.map(|d| EvalSet::from_triples(d.to_vec()));
        let mut log = if main { Some(self.open_log()?) } else { None };
        let mut last_eval = None;
        let mut acc = Accumulated::default();
        let mut started = Instant::now();
        let mut examples_in_step = 0usize;

        while self.state.epoch < c.run.epochs {
            let epoch = self.state.epoch;
            let plan = global_plan(&lengths, &batching, epoch, world);
            if self.state.next_batch >= plan.len() {
                // Only a checkpoint made on other data can point past this epoch's plan (and
                // looping on it would never end).
                return Err(Error::Resume {
                    path: self.out.join("checkpoint"),
                    message: format!(
                        "the checkpoint is at batch {} of epoch {epoch}, which has {} batches \
                         with this data: resume with the training file it was made on",
                        self.state.next_batch,
                        plan.len()
                    ),
                });
            }
            while self.state.epoch == epoch && self.state.next_batch < plan.len() {
                if c.run.max_steps.is_some_and(|m| self.state.step >= m) {
                    if main {
                        let p = self.save_checkpoint()?;
                        events(Event::Checkpoint {
                            step: self.state.step,
                            path: &p,
                        });
                    }
                    return Ok(last_eval);
                }
                let indices = &plan[self.state.next_batch];
                let local = shard(indices, rank, world);
                let batch = tok.batch(train, local, c.loss.hard_negatives)?;
                let doc_ids: Vec<i64> = local
                    .iter()
                    .map(|&i| doc_hash(&train[i].document.id))
                    .collect();
                let doc_keys: Vec<u64> = local
                    .iter()
                    .map(|&i| gear_data::stable_hash(&train[i].document.text))
                    .collect();
                let units: Vec<Vec<Span>> = if c.loss.local_weight > 0.0 {
                    local.iter().map(|&i| train[i].unit_spans()).collect()
                } else {
                    Vec::new()
                };
                let progress =
                    self.state.epoch as f64 + self.state.next_batch as f64 / plan.len() as f64;
                let w = if c.loss.distill_ramp_epochs > 0.0 {
                    c.loss.distill_weight * (progress / c.loss.distill_ramp_epochs).min(1.0)
                } else {
                    c.loss.distill_weight
                };
                tch::manual_seed((c.run.seed + self.state.micro_step) as i64);
                let terms = self.forward(&batch, &doc_ids, &doc_keys, &units, w)?;
                let value = terms.value;
                if !value.is_finite() {
                    return Err(Error::NonFinite {
                        step: self.state.step,
                        value,
                        checkpoint: self
                            .last_checkpoint
                            .as_ref()
                            .map_or("none".into(), |p| p.display().to_string()),
                    });
                }
                (terms.loss / c.optim.accumulation as f64).backward();
                acc.add(value, terms.cl, terms.lm, terms.local);
                examples_in_step += indices.len();
                self.state.micro_step += 1;
                self.state.next_batch += 1;
                self.state.examples += indices.len() as u64;

                let boundary = self
                    .state
                    .micro_step
                    .is_multiple_of(c.optim.accumulation as u64)
                    || self.state.next_batch == plan.len();
                if !boundary {
                    continue;
                }
                if let Some(d) = &self.dist {
                    d.buckets.all_reduce_mean(&d.group, &self.params)?;
                }
                let grad_norm = self.optimizer.clip_grad_norm(c.optim.clip_norm);
                let lr = schedule.lr(self.state.step);
                self.optimizer.step(lr);
                self.optimizer.zero_grad();
                tch::no_grad(|| {
                    let _ = self.temp.clamp_(0.001, 0.5);
                });
                self.state.step += 1;
                if self.state.next_batch == plan.len() {
                    self.state.epoch += 1;
                    self.state.next_batch = 0;
                }
                let elapsed = started.elapsed().as_secs_f64().max(1e-9);
                let entry = StepLog {
                    step: self.state.step,
                    total_steps,
                    epoch: self.state.epoch.min(c.run.epochs - 1),
                    lr,
                    loss: acc.loss / acc.n as f64,
                    loss_cl: acc.cl / acc.n as f64,
                    loss_lm: acc.lm / acc.n as f64,
                    loss_local: acc.local / acc.n as f64,
                    temperature: self.temperature(),
                    distill_weight: w,
                    grad_norm,
                    examples_per_second: examples_in_step as f64 / elapsed,
                };
                if let Some(log) = log.as_mut() {
                    write_log(log, &self.out, &serde_json::json!({ "train": entry }))?;
                }
                events(Event::Step(&entry));
                acc = Accumulated::default();
                examples_in_step = 0;

                let epoch_done = self.state.next_batch == 0;
                let eval_now = (c.run.eval_every > 0
                    && self.state.step.is_multiple_of(c.run.eval_every))
                    || (c.run.eval_every == 0 && epoch_done);
                if let (true, Some(dev), Some(log)) = (eval_now, dev.as_ref(), log.as_mut()) {
                    let report = evaluate(&self.model, dev, &eval_options)?;
                    write_log(
                        log,
                        &self.out,
                        &serde_json::json!({ "step": self.state.step, "eval": report }),
                    )?;
                    events(Event::Eval {
                        step: self.state.step,
                        report: &report,
                    });
                    last_eval = Some(report);
                }
                if main
                    && c.run.checkpoint_every > 0
                    && self.state.step.is_multiple_of(c.run.checkpoint_every)
                {
                    let p = self.save_checkpoint()?;
                    events(Event::Checkpoint {
                        step: self.state.step,
                        path: &p,
                    });
                }
                started = Instant::now();
            }
        }
        if main {
            let p = self.save_checkpoint()?;
            events(Event::Checkpoint {
                step: self.state.step,
                path: &p,
            });
        }
        Ok(last_eval)
    }

    /// One micro-batch: returns the loss to back-propagate, its reported value
    /// (`L_CL + α·L_LM + β·L_LOC`), and the terms. Also moves the momentum encoders and the
    /// queue. `units` holds each example's unit spans when β > 0 (else it may be empty);
    /// `doc_keys` are hashes of the documents' texts (the frozen document encoder's cache keys).
    ///
    /// With a process group, the embeddings of every rank are gathered so that the contrastive
    /// loss runs over the global batch; only this rank's slice carries a gradient. Each rank
    /// back-propagates `W·L_CL(global) + α·W·Σ_local token losses / global tokens
    /// + β·W·Σ_local example losses / global examples` and the gradients are averaged over the
    /// `W` ranks, which gives exactly the gradient of one process training on the global batch.
    /// The temperature appears in every rank's `L_CL`, so only rank 0 lets it carry a gradient.
    fn forward(
        &mut self,
        batch: &TripleBatch,
        doc_ids: &[i64],
        doc_keys: &[u64],
        units: &[Vec<Span>],
        distill: f64,
    ) -> Result<Terms> {
        let device = self.model.device();
        let _autocast =
            (self.config.run.precision == Precision::Bf16).then(|| Bf16Autocast::enter(device));
        let (q_ids, q_mask) = to_tensors(&batch.queries, device);
        let (d_ids, d_mask) = to_tensors(&batch.documents, device);
        let (t_ids, t_mask) = to_tensors(&batch.targets, device);
        let t_ids = t_ids.copy();
        let _ = t_ids
            .select(1, 0)
            .fill_(self.model.generation_tokens().start);
        let ids = Tensor::from_slice(doc_ids).to_device(device);

        let frozen = self.config.optim.freeze_document_encoder;
        let q = self.model.encode_queries_t(&q_ids, &q_mask, true)?;
        let d_states = if frozen {
            self.documents
                .batch_states(&self.model, &d_ids, &d_mask, doc_keys)?
        } else {
            self.model.document_states_t(&d_ids, &d_mask, true)?
        };
        let d = l2_normalize(&mean_pool(&d_states, &d_mask));

        self.momentum
            .copy_from(&self.model, self.config.loss.momentum)?;
        let (q_m, d_m) = if frozen {
            // The momentum copy of a frozen encoder is that encoder: its embeddings are `d`.
            (self.momentum.embed_queries(&q_ids, &q_mask)?, d.detach())
        } else {
            self.momentum.embed(&q_ids, &q_mask, &d_ids, &d_mask)?
        };

        // The global batch: gathered rows, this rank's live (differentiable) rows in place.
        let (q, d, q_m, d_m, ids, temp) = match &self.dist {
            None => (q, d, q_m, d_m, ids, self.temp.shallow_clone()),
            Some(dist) => {
                let g = &dist.group;
                let dim = q.size()[1];
                let packed = Tensor::cat(&[&q, &d, &q_m, &d_m], 1).detach();
                let counts = row_counts(g, packed.size()[0], device)?;
                let all = all_gather_counted(g, &packed, &counts)?;
                let all_ids = all_gather_counted(g, &ids, &counts)?;
                let total: i64 = counts.iter().sum();
                let before: i64 = counts[..g.rank()].iter().sum();
                let mine = counts[g.rank()];
                let after = total - before - mine;
                let splice = |col: i64, live: &Tensor| {
                    let gathered = all.narrow(1, col * dim, dim);
                    Tensor::cat(
                        &[
                            &gathered.narrow(0, 0, before),
                            live,
                            &gathered.narrow(0, before + mine, after),
                        ],
                        0,
                    )
                };
                let temp = if g.rank() == 0 {
                    self.temp.shallow_clone()
                } else {
                    // Same value, zero gradient (a defined one, so buckets line up).
                    self.temp.detach() + &self.temp * 0.0
                };
                (
                    splice(0, &q),
                    splice(1, &d),
                    all.narrow(1, 2 * dim, dim),
                    all.narrow(1, 3 * dim, dim),
                    all_ids,
                    temp,
                )
            }
        };
        let (q_all, d_all, ids_all) = match self.momentum.queue() {
            Some(queue) => (
                Tensor::cat(&[&q_m, &queue.queries], 0),
                Tensor::cat(&[&d_m, &queue.documents], 0),
                Tensor::cat(&[&ids, &queue.ids], 0),
            ),
            None => (
                q_m.shallow_clone(),
                d_m.shallow_clone(),
                ids.shallow_clone(),
            ),
        };
        // Hard negatives join the documents a query is contrasted with (q→d only: no query
        // belongs to them), as momentum embeddings like the queue's.
        let (d_cand, ids_cand) = match self.hard_negatives(batch)? {
            Some((n, n_ids)) => (
                Tensor::cat(&[&d_all, &n.to_kind(d_all.kind())], 0),
                Tensor::cat(&[&ids_all, &n_ids], 0),
            ),
            None => (d_all.shallow_clone(), ids_all.shallow_clone()),
        };
        let empty_of = |ids: &Tensor| ids.eq(-1).to_kind(Kind::Float).unsqueeze(0) * MASKED_LOGIT;
        let positives_of = |all: &Tensor| {
            ids.unsqueeze(1)
                .eq_tensor(&all.unsqueeze(0))
                .to_kind(Kind::Float)
        };
        let (empty_q2d, empty_d2q) = (empty_of(&ids_cand), empty_of(&ids_all));
        let (t_q2d, t_d2q) = tch::no_grad(|| {
            let t = temp.detach();
            let sim_q2d_m = q_m.matmul(&d_cand.transpose(0, 1)) / &t + &empty_q2d;
            let sim_d2q_m = d_m.matmul(&q_all.transpose(0, 1)) / &t + &empty_d2q;
            (
                soft_targets(&positives_of(&ids_cand), &sim_q2d_m, distill),
                soft_targets(&positives_of(&ids_all), &sim_d2q_m, distill),
            )
        });
        let sim_q2d = q.matmul(&d_cand.transpose(0, 1)) / &temp + &empty_q2d;
        let sim_d2q = d.matmul(&q_all.transpose(0, 1)) / &temp + &empty_d2q;
        let l_cl = contrastive_loss(&sim_q2d, &t_q2d, &sim_d2q, &t_d2q);
        if let Some(queue) = self.momentum.queue_mut() {
            queue.enqueue(&q_m, &d_m, &ids);
        }

        let beta = self.config.loss.local_weight;
        let local_layer = self.model.config().local_layer();
        let fusion = if beta > 0.0 {
            FusionOptions {
                layers: None,
                cross_probs: CrossProbs::Layer(local_layer),
            }
        } else {
            FusionOptions::default()
        };
        let fused = self.model.fuse_t(
            &q_ids,
            &q_mask,
            Context {
                states: &d_states,
                mask: &d_mask,
            },
            fusion,
            true,
        )?;
        let logits = self.model.decoder_logits_t(
            &t_ids,
            &t_mask,
            Context {
                states: &fused.hidden,
                mask: &q_mask,
            },
            true,
        )?;
        let l_lm = lm_loss(&logits, &t_ids, &t_mask);
        // L_LOC as a sum over this rank's examples and their count, so that ranks can add up.
        let (loc_sum, loc_rows) = if beta > 0.0 {
            let probs = fused.cross_attention(local_layer).ok_or_else(|| {
                Error::Train(format!(
                    "layer {local_layer}'s cross-attention was not kept"
                ))
            })?;
            local_loss_sum(
                probs,
                &query_keep(&batch.queries, device),
                &unit_token_mask(&batch.documents, units, device),
            )
        } else {
            (Tensor::zeros([], (Kind::Float, device)), 0)
        };
        let alpha = self.config.loss.alpha;
        let cl = l_cl.double_value(&[]);
        match &self.dist {
            None => {
                let lm = l_lm.double_value(&[]);
                let rows = loc_rows.max(1) as f64;
                let local = loc_sum.double_value(&[]) / rows;
                Ok(Terms {
                    loss: l_cl + l_lm * alpha + loc_sum * (beta / rows),
                    value: cl + alpha * lm + beta * local,
                    cl,
                    lm,
                    local,
                })
            }
            Some(dist) => {
                let world = dist.group.world_size() as f64;
                let tokens = t_mask.narrow(1, 1, t_mask.size()[1] - 1).sum(Kind::Float);
                let lm_sum = &l_lm * &tokens;
                let rows = Tensor::from(loc_rows as f32).to_device(device);
                let totals = Tensor::stack(
                    &[
                        tokens.detach(),
                        lm_sum.detach(),
                        loc_sum.detach().to_kind(Kind::Float),
                        rows,
                    ],
                    0,
                )
                .to_kind(Kind::Double)
                .contiguous();
                dist.group.all_reduce_sum(&totals)?;
                let global_tokens = totals.double_value(&[0]).max(1.0);
                let lm = totals.double_value(&[1]) / global_tokens;
                let global_rows = totals.double_value(&[3]).max(1.0);
                let local = totals.double_value(&[2]) / global_rows;
                let loss = l_cl * world
                    + lm_sum * (alpha * world / global_tokens)
                    + loc_sum * (beta * world / global_rows);
                Ok(Terms {
                    loss,
                    value: cl + alpha * lm + beta * local,
                    cl,
                    lm,
                    local,
                })
            }
        }
    }

    /// The batch's hard negatives as momentum document embeddings and queue ids, gathered
    /// from every rank under a process group (every rank takes part, with or without any).
    fn hard_negatives(&self, batch: &TripleBatch) -> Result<Option<(Tensor, Tensor)>> {
        let device = self.model.device();
        let local = match &batch.negatives {
            Some((tokens, ids)) => {
                let (n_ids, n_mask) = to_tensors(tokens, device);
                let emb = self
                    .momentum
                    .embed_documents(&n_ids, &n_mask)?
                    .to_kind(Kind::Float);
                let ids: Vec<i64> = ids.iter().map(|id| doc_hash(id)).collect();
                Some((emb, Tensor::from_slice(&ids).to_device(device)))
            }
            None => None,
        };
        let Some(dist) = &self.dist else {
            return Ok(local);
        };
        let g = &dist.group;
        let dim = self.model.config().encoder.hidden_size;
        let (emb, ids) = local.unwrap_or_else(|| {
            (
                Tensor::zeros([0, dim], (Kind::Float, device)),
                Tensor::zeros([0], (Kind::Int64, device)),
            )
        });
        let counts = row_counts(g, emb.size()[0], device)?;
        if counts.iter().sum::<i64>() == 0 {
            return Ok(None);
        }
        Ok(Some((
            all_gather_counted(g, &emb, &counts)?,
            all_gather_counted(g, &ids, &counts)?,
        )))
    }

    fn open_log(&self) -> Result<std::fs::File> {
        std::fs::create_dir_all(&self.out).map_err(|source| Error::Io {
            path: self.out.clone(),
            source,
        })?;
        let path = self.out.join("metrics.jsonl");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io { path, source })
    }
}

/// The epoch's plan of global batches (`batching.batch_size` = per-rank size × world). A batch
/// too small to give every rank an example (at most one per epoch, the tail of the data) joins
/// the batch before it, so no example is dropped; with one process nothing changes.
pub fn global_plan(
    lengths: &[usize],
    batching: &gear_data::BatchingConfig,
    epoch: u64,
    world: usize,
) -> Vec<Vec<usize>> {
    let mut plan = plan_epoch(lengths, batching, epoch);
    while let Some(i) = plan.iter().position(|b| b.len() < world) {
        if plan.len() == 1 {
            break;
        }
        let small = plan.remove(i);
        let into = if i == 0 { 0 } else { i - 1 };
        plan[into].extend(small);
    }
    plan
}

/// Rank `rank`'s contiguous share of a global batch: sizes differ by at most one, earlier
/// ranks take the extra examples, and the shares concatenated in rank order are the batch.
pub fn shard(batch: &[usize], rank: usize, world: usize) -> &[usize] {
    let base = batch.len() / world;
    let extra = batch.len() % world;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    &batch[start..start + len]
}

/// The checkpoint to resume from: `out/checkpoint`, or — when a process was killed between the
/// two renames of a checkpoint swap — the complete new one (`.checkpoint.tmp-*` with its
/// `train_state.json`, written last) or else the previous one (`.checkpoint.old-*`).
pub fn find_checkpoint(out: &Path) -> Option<PathBuf> {
    let ck = out.join("checkpoint");
    if ck.join("train_state.json").is_file() {
        return Some(ck);
    }
    let mut candidates: Vec<(u8, u64, PathBuf)> = std::fs::read_dir(out)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rank = if name.starts_with(".checkpoint.tmp-") {
                0
            } else if name.starts_with(".checkpoint.old-") {
                1
            } else {
                return None;
            };
            let json = e.path().join("train_state.json");
            let saved: SavedState =
                serde_json::from_str(&std::fs::read_to_string(&json).ok()?).ok()?;
            Some((rank, u64::MAX - saved.state.step, e.path()))
        })
        .collect();
    // The most advanced complete checkpoint, preferring the new one of an interrupted swap.
    candidates.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    candidates.into_iter().next().map(|c| c.2)
}

/// The first field (dotted path) where two JSON values differ, with both values.
fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
    path: &str,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let field = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                first_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &field,
                )
            })
        }
        _ if a != b => Some((path.to_owned(), a.to_string(), b.to_string())),
        _ => None,
    }
}

fn write_log(log: &mut std::fs::File, out: &Path, value: &serde_json::Value) -> Result<()> {
    writeln!(log, "{value}").map_err(|source| Error::Io {
        path: out.join("metrics.jsonl"),
        source,
    })
}

#[derive(Default)]
struct Accumulated {
    loss: f64,
    cl: f64,
    lm: f64,
    local: f64,
    n: usize,
}

impl Accumulated {
    fn add(&mut self, loss: f64, cl: f64, lm: f64, local: f64) {
        self.loss += loss;
        self.cl += cl;
        self.lm += lm;
        self.local += local;
        self.n += 1;
    }
}

/// What one micro-batch's forward returns.
struct Terms {
    /// The loss to back-propagate.
    loss: Tensor,
    /// Its reported value, `L_CL + α·L_LM + β·L_LOC` (over the global batch).
    value: f64,
    /// `L_CL`.
    cl: f64,
    /// `L_LM`.
    lm: f64,
    /// `L_LOC` (0 when β is 0).
    local: f64,
}

/// `[batch, len]` 0/1 mask of the real, non-special query tokens (those local retrieval
/// averages over).
fn query_keep(queries: &gear_data::Batch, device: Device) -> Tensor {
    let keep: Vec<f32> = queries
        .attention_mask()
        .iter()
        .zip(queries.special_tokens_mask())
        .map(|(&m, &special)| if m == 1 && !special { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_slice(&keep)
        .view([queries.len() as i64, queries.seq_len() as i64])
        .to_device(device)
}

/// `[batch, len]` 0/1 mask of the document tokens inside a unit: a token belongs to a unit when
/// its first byte lies in one of the unit's byte spans (the rule local retrieval scores by);
/// special and padding tokens never do.
fn unit_token_mask(documents: &gear_data::Batch, units: &[Vec<Span>], device: Device) -> Tensor {
    let len = documents.seq_len();
    let special = documents.special_tokens_mask();
    let mut mask = vec![0f32; documents.len() * len];
    for (b, spans) in units.iter().enumerate().take(documents.len()) {
        for (j, &(start, _)) in documents.offsets(b).iter().enumerate() {
            if !special[b * len + j] && spans.iter().any(|s| s.contains(start)) {
                mask[b * len + j] = 1.0;
            }
        }
    }
    Tensor::from_slice(&mask)
        .view([documents.len() as i64, len as i64])
        .to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_tokens_and_kept_query_tokens_follow_the_local_retrieval_rules() {
        let docs = ["Aa bb. Cc dd.", "Ee ff gg."];
        let tok = gear_data::Tokenizer::word_level(&docs, 16).unwrap();
        let batch = tok.encode_batch(&docs).unwrap();
        // [CLS] aa bb . cc dd . [SEP] | [CLS] ee ff gg . [SEP] [PAD] [PAD]
        let units = vec![vec![Span::new(7, 13)], vec![Span::new(3, 5)]];
        let mask = unit_token_mask(&batch, &units, Device::Cpu);
        let got = Vec::<f32>::try_from(mask.flatten(0, -1)).unwrap();
        #[rustfmt::skip]
        let want = [
            0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0,
            0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(got, want);
        let keep = query_keep(&batch, Device::Cpu);
        let got = Vec::<f32>::try_from(keep.flatten(0, -1)).unwrap();
        #[rustfmt::skip]
        let want = [
            0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
            0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn shards_concatenate_to_the_batch_and_differ_by_at_most_one() {
        let batch: Vec<usize> = (10..17).collect();
        for world in 1..=7 {
            let shares: Vec<&[usize]> = (0..world).map(|r| shard(&batch, r, world)).collect();
            assert_eq!(shares.concat(), batch, "world {world}");
            let sizes: Vec<usize> = shares.iter().map(|s| s.len()).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "world {world}: {sizes:?}");
            assert!(
                sizes.windows(2).all(|w| w[0] >= w[1]),
                "earlier ranks take extras"
            );
        }
    }

    #[test]
    fn global_plan_merges_a_tail_too_small_to_share() {
        let lengths = vec![5usize; 17];
        let batching = gear_data::BatchingConfig {
            batch_size: 8,
            bucket_batches: 1,
            seed: 3,
        };
        let single = global_plan(&lengths, &batching, 0, 1);
        assert_eq!(
            single,
            plan_epoch(&lengths, &batching, 0),
            "one process: unchanged"
        );
        assert_eq!(single.len(), 3);
        let two = global_plan(&lengths, &batching, 0, 2);
        assert_eq!(two.len(), 2, "the one-example batch joined another");
        assert!(two.iter().all(|b| b.len() >= 2));
        let mut seen: Vec<usize> = two.concat();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..17).collect::<Vec<_>>(),
            "no example dropped or repeated"
        );
    }
}
