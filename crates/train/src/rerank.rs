//! Training the cross-encoder baseline (the paper's reranker role) on the same triples GeAR
//! trains on: for each question, its gold document's sentences (the splitter every local method
//! uses) are scored jointly with the question, and a listwise softmax cross-entropy over them
//! puts the mass on the sentences holding the unit (the others are the negatives).

use std::time::Instant;

use gear_data::{plan_epoch, BatchingConfig, Span, Triple};
use gear_model::{CrossEncoder, Precision};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::optim::{AdamW, AdamWConfig};
use crate::schedule::LrSchedule;
use crate::{Error, Result};

/// Pairs per forward pass within a step (length-sorted, so little padding).
const PAIRS_PER_FORWARD: usize = 32;

/// Settings of [`train_cross_encoder`].
#[derive(Debug, Clone, PartialEq)]
pub struct RerankConfig {
    /// Passes over the triples.
    pub epochs: u64,
    /// Questions per optimiser step (each brings all its document's sentences).
    pub batch_questions: usize,
    /// Peak learning rate (linear warm-up from 1% of it, cosine to 1% of it).
    pub lr: f64,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip (0: off).
    pub clip_norm: f64,
    /// Seed of the data order.
    pub seed: u64,
    /// Arithmetic of the forward pass (bfloat16 autocast is refused on a CPU without bfloat16
    /// instructions).
    pub precision: Precision,
}

impl Default for RerankConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_questions: 16,
            lr: 5e-5,
            warmup_steps: 30,
            adamw: AdamWConfig {
                weight_decay: 0.01,
                ..AdamWConfig::default()
            },
            clip_norm: 1.0,
            seed: 42,
            precision: Precision::Fp32,
        }
    }
}

/// One optimiser step, as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RerankStep {
    /// Step (1-based).
    pub step: u64,
    /// Steps of the run.
    pub total_steps: u64,
    /// Mean listwise loss of the step's questions.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Questions per second over this step.
    pub questions_per_second: f64,
}

/// Each triple that teaches something (its document has several sentences, one of them
/// gold): its index, its sentences and the gold ones.
fn teaching_examples(train: &[Triple]) -> Vec<(usize, Vec<Span>, Vec<usize>)> {
    train
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let sentences = gear_data::split_sentences(&t.document.text);
            let relevant = gear_data::relevant_sentences(&sentences, &t.unit_spans());
            (i, sentences, relevant)
        })
        .filter(|(_, s, r)| s.len() > 1 && !r.is_empty())
        .collect()
}

/// Trains `model` in place on `train` (questions whose unit falls in no sentence, or whose
/// document has a single sentence, teach nothing and are left out — their number is returned).
pub fn train_cross_encoder(
    model: &CrossEncoder,
    train: &[Triple],
    config: &RerankConfig,
    events: &mut dyn FnMut(&RerankStep),
) -> Result<usize> {
    config.precision.check(model.device())?;
    let examples = teaching_examples(train);
    let skipped = train.len() - examples.len();
    if examples.is_empty() {
        return Err(Error::Train(
            "no training question has a gold sentence among several".into(),
        ));
    }
    let params: Vec<(String, Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    let mut optimizer = AdamW::new(params, config.adamw);
    let lengths: Vec<usize> = examples.iter().map(|e| e.1.len()).collect();
    let batching = BatchingConfig {
        batch_size: config.batch_questions.max(1),
        bucket_batches: 1,
        seed: config.seed,
    };
    let per_epoch = plan_epoch(&lengths, &batching, 0).len() as u64;
    let schedule = LrSchedule {
        start_lr: config.lr * 0.01,
        peak_lr: config.lr,
        min_lr: config.lr * 0.01,
        warmup_steps: config.warmup_steps,
        total_steps: per_epoch * config.epochs,
    };
    let mut step = 0u64;
    for epoch in 0..config.epochs {
        for batch in plan_epoch(&lengths, &batching, epoch) {
            let started = Instant::now();
            let mut pairs: Vec<String> = Vec::new();
            let mut groups: Vec<(i64, i64, &[usize])> = Vec::new();
            for &e in &batch {
                let (i, sentences, relevant) = &examples[e];
                let t = &train[*i];
                groups.push((pairs.len() as i64, sentences.len() as i64, relevant));
                for s in sentences {
                    pairs.push(CrossEncoder::pair_text(
                        &t.query,
                        &t.document.text[s.start..s.end],
                    ));
                }
            }
            let texts: Vec<&str> = pairs.iter().map(String::as_str).collect();
            let logits = {
                let _precision = config.precision.enter(model.device());
                model.logits_t(&texts, PAIRS_PER_FORWARD, true)?
            };
            let mut losses = Vec::with_capacity(groups.len());
            for (start, len, relevant) in groups {
                let log_p = logits.narrow(0, start, len).log_softmax(0, Kind::Float);
                let idx: Vec<i64> = relevant.iter().map(|&r| r as i64).collect();
                let idx = Tensor::from_slice(&idx).to_device(log_p.device());
                losses.push(-log_p.index_select(0, &idx).mean(Kind::Float));
            }
            let loss = Tensor::stack(&losses, 0).mean(Kind::Float);
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    step,
                    value,
                    checkpoint: "none (the reranker is saved only at the end)".into(),
                });
            }
            loss.backward();
            if config.clip_norm > 0.0 {
                optimizer.clip_grad_norm(config.clip_norm);
            }
            let lr = schedule.lr(step);
            optimizer.step(lr);
            optimizer.zero_grad();
            step += 1;
            events(&RerankStep {
                step,
                total_steps: schedule.total_steps,
                loss: value,
                lr,
                questions_per_second: batch.len() as f64
                    / started.elapsed().as_secs_f64().max(1e-9),
            });
        }
    }
    Ok(skipped)
}
