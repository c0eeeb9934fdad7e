//! The training loop of [`Trainer::train`]: the run's plan (`prepare`), one micro-batch's
//! forward and backward, the optimiser step at each accumulation boundary, and what follows a
//! step (dev evaluation, periodic checkpoints).

use std::time::Instant;

use gear_data::{BatchingConfig, Span, Triple, TripleTokenizer};
use gear_eval::{evaluate, EvalOptions, EvalReport, EvalSet};

use super::log::{write_log, Accumulated};
use super::{data_fingerprint, doc_hash, global_plan, shard, Event, StepLog, Trainer};
use crate::config::CopyFrom;
use crate::schedule::LrSchedule;
use crate::{Error, Result};

impl Trainer {
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
        self.check_data(train)?;
        self.check_answers(train)?;
        let mut run = self.prepare(train, dev)?;
        let mut last_eval = None;
        let mut step = StepProgress::default();
        while self.state.epoch < self.config.run.epochs {
            let epoch = self.state.epoch;
            let plan = global_plan(&run.lengths, &run.batching, epoch, run.world);
            self.check_position(epoch, plan.len())?;
            while self.state.epoch == epoch && self.state.next_batch < plan.len() {
                if self
                    .config
                    .run
                    .max_steps
                    .is_some_and(|m| self.state.step >= m)
                {
                    self.final_checkpoint(&run, events)?;
                    return Ok(last_eval);
                }
                self.micro_batch(&run, &plan[self.state.next_batch], plan.len(), &mut step)?;
                let boundary = self
                    .state
                    .micro_step
                    .is_multiple_of(self.config.optim.accumulation as u64)
                    || self.state.next_batch == plan.len();
                if !boundary {
                    continue;
                }
                let entry = self.optimizer_step(&mut run, plan.len(), &mut step)?;
                events(Event::Step(&entry));
                if let Some(report) = self.after_step(&mut run, events)? {
                    last_eval = Some(report);
                }
                step.started = Instant::now();
            }
        }
        self.final_checkpoint(&run, events)?;
        Ok(last_eval)
    }

    /// With `loss.copy_from = "answer_span"`, refuses data where no answer can be placed in its
    /// document (RIR triples, or answers the documents do not contain) and says how many
    /// triples copy from anywhere instead.
    fn check_answers(&self, train: &[Triple]) -> Result<()> {
        if self.config.loss.copy_from != CopyFrom::AnswerSpan {
            return Ok(());
        }
        let placed = train.iter().filter(|t| t.answer_span().is_some()).count();
        if placed == 0 {
            return Err(Error::Train(format!(
                "`loss.copy_from = \"answer_span\"` needs QAR triples whose answer occurs in their document: none of the {} training triples has one",
                train.len()
            )));
        }
        if placed < train.len() {
            tracing::warn!(
                without = train.len() - placed,
                of = train.len(),
                "training triples whose answer does not occur verbatim in the document copy it from anywhere"
            );
        }
        Ok(())
    }

    /// Refuses training data other than the checkpoint's (by fingerprint), and records it.
    fn check_data(&mut self, train: &[Triple]) -> Result<()> {
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
        Ok(())
    }

    /// What the run works with: tokenizer, lengths, batching across ranks, the schedule over
    /// the run's steps, dev evaluation, the metrics log and the output lock (rank 0).
    fn prepare<'a>(&self, train: &'a [Triple], dev: Option<&[Triple]>) -> Result<Run<'a>> {
        let c = &self.config;
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
        let lock = if main {
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
        // Dev evaluation: GeAR alone (no baselines), the one protocol of `gear_eval::evaluate`.
        let eval_options = EvalOptions {
            baselines: false,
            ..EvalOptions::for_scenario(c.scenario, c.run.eval_generation_examples)
        };
        Ok(Run {
            train,
            tok,
            lengths,
            batching,
            rank,
            world,
            total_steps,
            schedule,
            eval_options,
            dev: dev.map(|d| EvalSet::from_triples(d.to_vec())),
            log: if main { Some(self.open_log()?) } else { None },
            _lock: lock,
        })
    }

    /// Only a checkpoint made on other data can point past this epoch's plan (and looping on
    /// it would never end).
    fn check_position(&self, epoch: u64, batches: usize) -> Result<()> {
        if self.state.next_batch < batches {
            return Ok(());
        }
        Err(Error::Resume {
            path: self.out.join("checkpoint"),
            message: format!(
                "the checkpoint is at batch {} of epoch {epoch}, which has {batches} batches \
                 with this data: resume with the training file it was made on",
                self.state.next_batch,
            ),
        })
    }

    /// Forward and backward of this rank's share of one global batch (`indices`), gradients
    /// accumulated until the step's boundary.
    fn micro_batch(
        &mut self,
        run: &Run<'_>,
        indices: &[usize],
        batches: usize,
        step: &mut StepProgress,
    ) -> Result<()> {
        let (train, c) = (run.train, &self.config);
        let local = shard(indices, run.rank, run.world);
        let batch = run.tok.batch(train, local, c.loss.hard_negatives)?;
        let doc_ids: Vec<i64> = local
            .iter()
            .map(|&i| doc_hash(&train[i].document.id))
            .collect();
        let doc_keys: Vec<u64> = local
            .iter()
            .map(|&i| gear_data::stable_hash(&train[i].document.text))
            .collect();
        let units: Vec<Vec<Span>> =
            if c.loss.local_weight > 0.0 || c.loss.copy_from == CopyFrom::AnswerSentence {
                local.iter().map(|&i| train[i].unit_spans()).collect()
            } else {
                Vec::new()
            };
        let answers: Vec<Option<Span>> = if c.loss.copy_from == CopyFrom::AnswerSpan {
            local.iter().map(|&i| train[i].answer_span()).collect()
        } else {
            Vec::new()
        };
        let progress = self.state.epoch as f64 + self.state.next_batch as f64 / batches as f64;
        let w = if c.loss.distill_ramp_epochs > 0.0 {
            c.loss.distill_weight * (progress / c.loss.distill_ramp_epochs).min(1.0)
        } else {
            c.loss.distill_weight
        };
        let accumulation = c.optim.accumulation as f64;
        tch::manual_seed((c.run.seed + self.state.micro_step) as i64);
        let terms = self.forward(&batch, &doc_ids, &doc_keys, (&units, &answers), w)?;
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
        (terms.loss / accumulation).backward();
        step.acc.add(value, terms.cl, terms.lm, terms.local);
        step.examples += indices.len();
        step.distill = w;
        self.state.micro_step += 1;
        self.state.next_batch += 1;
        self.state.examples += indices.len() as u64;
        Ok(())
    }

    /// The optimiser step at a boundary (gradients averaged over ranks first), its log entry
    /// written; the step's sums start again.
    fn optimizer_step(
        &mut self,
        run: &mut Run<'_>,
        batches: usize,
        step: &mut StepProgress,
    ) -> Result<StepLog> {
        if let Some(d) = &self.dist {
            d.buckets.all_reduce_mean(&d.group, &self.params)?;
        }
        let grad_norm = self.optimizer.clip_grad_norm(self.config.optim.clip_norm);
        let lr = run.schedule.lr(self.state.step);
        self.optimizer.step(lr);
        self.optimizer.zero_grad();
        tch::no_grad(|| {
            let _ = self.temp.clamp_(0.001, 0.5);
        });
        self.state.step += 1;
        if self.state.next_batch == batches {
            self.state.epoch += 1;
            self.state.next_batch = 0;
        }
        let elapsed = step.started.elapsed().as_secs_f64().max(1e-9);
        let acc = &step.acc;
        let entry = StepLog {
            step: self.state.step,
            total_steps: run.total_steps,
            epoch: self.state.epoch.min(self.config.run.epochs - 1),
            lr,
            loss: acc.loss / acc.n as f64,
            loss_cl: acc.cl / acc.n as f64,
            loss_lm: acc.lm / acc.n as f64,
            loss_local: acc.local / acc.n as f64,
            temperature: self.temperature(),
            distill_weight: step.distill,
            grad_norm,
            examples_per_second: step.examples as f64 / elapsed,
        };
        if let Some(log) = run.log.as_mut() {
            write_log(log, &self.out, &serde_json::json!({ "train": entry }))?;
        }
        step.acc = Accumulated::default();
        step.examples = 0;
        Ok(entry)
    }

    /// After a step: the dev evaluation when it is due (rank 0), and the periodic checkpoint.
    fn after_step(
        &mut self,
        run: &mut Run<'_>,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<Option<EvalReport>> {
        let c = &self.config;
        let epoch_done = self.state.next_batch == 0;
        let eval_now = (c.run.eval_every > 0 && self.state.step.is_multiple_of(c.run.eval_every))
            || (c.run.eval_every == 0 && epoch_done);
        let checkpoint_now =
            c.run.checkpoint_every > 0 && self.state.step.is_multiple_of(c.run.checkpoint_every);
        let mut report = None;
        if let (true, Some(dev), Some(log)) = (eval_now, run.dev.as_ref(), run.log.as_mut()) {
            let r = evaluate(&self.model, dev, &run.eval_options)?;
            write_log(
                log,
                &self.out,
                &serde_json::json!({ "step": self.state.step, "eval": r }),
            )?;
            events(Event::Eval {
                step: self.state.step,
                report: &r,
            });
            report = Some(r);
        }
        if run.rank == 0 && checkpoint_now {
            let p = self.save_checkpoint()?;
            events(Event::Checkpoint {
                step: self.state.step,
                path: &p,
            });
        }
        Ok(report)
    }

    /// The checkpoint at the end of a call (rank 0).
    fn final_checkpoint(&mut self, run: &Run<'_>, events: &mut dyn FnMut(Event<'_>)) -> Result<()> {
        if run.rank == 0 {
            let p = self.save_checkpoint()?;
            events(Event::Checkpoint {
                step: self.state.step,
                path: &p,
            });
        }
        Ok(())
    }
}

/// What one call to [`Trainer::train`] works with.
struct Run<'a> {
    train: &'a [Triple],
    tok: TripleTokenizer,
    lengths: Vec<usize>,
    /// Batching of the global batch (per-rank size × world).
    batching: BatchingConfig,
    rank: usize,
    world: usize,
    total_steps: u64,
    schedule: LrSchedule,
    eval_options: EvalOptions,
    dev: Option<EvalSet>,
    /// `metrics.jsonl` (rank 0).
    log: Option<std::fs::File>,
    /// One run at a time writes `out` (rank 0 holds it for all ranks).
    _lock: Option<gear_data::OutputLock>,
}

/// What accumulates over the micro-batches of one optimiser step.
struct StepProgress {
    acc: Accumulated,
    started: Instant,
    examples: usize,
    /// The soft-label weight of the last micro-batch.
    distill: f64,
}

impl Default for StepProgress {
    fn default() -> Self {
        Self {
            acc: Accumulated::default(),
            started: Instant::now(),
            examples: 0,
            distill: 0.0,
        }
    }
}
