//! What a run reports: one [`StepLog`] per optimiser step (also a JSON line of
//! `metrics.jsonl`), the [`Event`]s a caller sees, and the loss terms summed over a step's
//! micro-batches.

use std::io::Write;
use std::path::Path;

use gear_eval::EvalReport;
use serde::Serialize;

use super::Trainer;
use crate::{Error, Result};

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

impl Trainer {
    pub(super) fn open_log(&self) -> Result<std::fs::File> {
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

pub(super) fn write_log(
    log: &mut std::fs::File,
    out: &Path,
    value: &serde_json::Value,
) -> Result<()> {
    writeln!(log, "{value}").map_err(|source| Error::Io {
        path: out.join("metrics.jsonl"),
        source,
    })
}

/// The loss terms of a step's micro-batches, summed.
#[derive(Default)]
pub(super) struct Accumulated {
    pub loss: f64,
    pub cl: f64,
    pub lm: f64,
    pub local: f64,
    pub n: usize,
}

impl Accumulated {
    pub fn add(&mut self, loss: f64, cl: f64, lm: f64, local: f64) {
        self.loss += loss;
        self.cl += cl;
        self.lm += lm;
        self.local += local;
        self.n += 1;
    }
}
