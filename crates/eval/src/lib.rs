//! How GeAR-rs measures retrieval: one evaluation protocol for every method and both scenarios
//! ([`evaluate`], method §5 — SQuAD's human questions and RIR triples alike), BEIR's measures
//! ([`eval_beir`]), the baselines beside GeAR on the same queries and sentences (the plain
//! bi-encoder, BM25 and the BM25 + dense hybrid, the untrained cross-encoder-style pair scorer,
//! a trained reranker: [`eval_reranker`]), and BEIR judgements mined into training triples with
//! hard negatives ([`beir_triples`]).
//!
//! The trainer's dev evaluation, `gear eval triples|squad|beir` and the `cargo xtask` tables all
//! run these functions, so every figure the project reports comes from one path. The crate needs
//! the model (`gear-model`) but not the index (`gear-infer`): an evaluation ranks its own set's
//! documents.
//!
//! ```no_run
//! use gear_eval::{evaluate, EvalOptions, EvalSet};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = gear_model::GearModel::load("out/train-rir/run/checkpoint/model", tch::Device::Cpu)?;
//! let data = EvalSet::from_squad(gear_data::import_squad("dev.json")?);
//! let options = EvalOptions::for_scenario(gear_data::Scenario::Qar, 100);
//! let report = evaluate(&model, &data, &options)?;
//! println!("{}", report.gear_line());
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod beir;
mod error;
mod evaluate;
mod lexical;

pub use beir::{
    beir_measures, beir_triples, eval_beir, mine_negatives, BeirReport, MinedTriples, Miner, Run,
    DEPTH, MEASURES,
};
pub use error::{Error, Result};
pub use evaluate::{
    eval_reranker, evaluate, local_targets, EvalOptions, EvalReport, EvalSet, LocalTarget,
    Prediction, GLOBAL_K, LOCAL_KS,
};
pub use lexical::{reciprocal_rank_fusion, Bm25, RRF_K};

/// The README's examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
