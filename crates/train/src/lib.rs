//! GeAR training (method §2): `L = L_CL + α·L_LM` — a symmetric contrastive loss between query
//! and document embeddings with momentum-distilled soft labels and a queue of momentum
//! embeddings, plus the decoder's language-modelling loss on the target (the answer for QAR, the
//! relevant sentence for RIR) — optimised with AdamW under a warm-up + cosine schedule.
//! Dev evaluation runs the one protocol of [`gear_eval::evaluate`] (GeAR alone).
//!
//! ```no_run
//! use gear_train::{TrainConfig, Trainer};
//! use gear_data::TripleReader;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = TrainConfig::from_toml_file("configs/rir-demo.toml")?;
//! let train: Vec<_> = TripleReader::open("train.jsonl")?.collect::<Result<_, _>>()?;
//! let mut trainer = Trainer::new(config, "out/run", tch::Device::Cpu)?;
//! let report = trainer.train(&train, None, &mut |_event| {})?;
//! # let _ = report; Ok(()) }
//! ```
//!
//! Data-parallel: build the same trainer on every rank, then
//! `trainer.distribute(gear_c10d::ProcessGroup::new(&env, backend, timeout)?)?` — see
//! [`Trainer::distribute`] and docs/distributed.md.

mod config;
mod document_cache;
mod error;
mod losses;
mod momentum;
mod optim;
mod rerank;
mod schedule;
mod trainer;

pub use config::{
    CopyFrom, DataSection, LossSection, ModelSection, OptimSection, Precision, RunSection,
    TrainConfig,
};
pub use error::{Error, Result};
pub use losses::{
    contrastive_loss, lm_loss, local_loss_sum, soft_cross_entropy, soft_targets,
    unit_attention_mass,
};
pub use momentum::{sorted_variables, Momentum, Queue};
pub use optim::{no_decay, AdamW, AdamWConfig};
pub use rerank::{train_cross_encoder, RerankConfig, RerankStep};
pub use schedule::LrSchedule;
pub use trainer::{
    data_fingerprint, find_checkpoint, gear_config, global_plan, initial_model, shard, Event,
    StepLog, TrainState, Trainer,
};

/// The README's examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
