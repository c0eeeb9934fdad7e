//! One micro-batch's forward: the embeddings (`embed`), the global batch under a process group
//! (`global_batch`), the contrastive term over batch + queue + hard negatives (`contrastive`),
//! the fusion encoder's generation and local terms (`fusion_terms`), and the loss each rank
//! back-propagates (`combine`).

use gear_c10d::{all_gather_counted, row_counts};
use gear_data::{Span, TripleBatch};
use gear_model::{batch_tensors, keep_mask, l2_normalize, mean_pool, Context, ReaderInputs};
use tch::{Device, Kind, Tensor};

use super::{doc_hash, Trainer};
use crate::config::CopyFrom;
use crate::losses::{
    answer_token_steps, contrastive_loss, lm_loss, local_loss_sum, query_keep, soft_targets,
    unit_token_mask,
};
use crate::{Error, Result};

/// Added to similarity logits of empty queue slots: far below any real logit, yet finite so that
/// `0 · log_softmax` stays 0.
const MASKED_LOGIT: f64 = -1e4;

/// What one micro-batch's forward returns.
pub(super) struct Terms {
    /// The loss to back-propagate.
    pub loss: Tensor,
    /// Its reported value, `L_CL + α·L_LM + β·L_LOC` (over the global batch).
    pub value: f64,
    /// `L_CL`.
    pub cl: f64,
    /// `L_LM`.
    pub lm: f64,
    /// `L_LOC` (0 when β is 0).
    pub local: f64,
}

/// A micro-batch's id tensors on the device (the target ids start with the decoder's start
/// token).
struct Inputs {
    q_ids: Tensor,
    q_mask: Tensor,
    d_ids: Tensor,
    d_mask: Tensor,
    t_ids: Tensor,
    t_mask: Tensor,
}

/// The embeddings of a batch: live (with gradients) and momentum, plus the document token
/// states the fusion encoder reads.
struct Embedded {
    q: Tensor,
    d: Tensor,
    q_m: Tensor,
    d_m: Tensor,
    d_states: Tensor,
    /// The document's states after layer `L − N`, when the reader layers start there.
    d_below: Option<Tensor>,
}

/// The contrastive batch: every rank's rows (this rank's live ones in place), their ids, and
/// the temperature this rank differentiates.
struct Global {
    q: Tensor,
    d: Tensor,
    q_m: Tensor,
    d_m: Tensor,
    ids: Tensor,
    temp: Tensor,
}

impl Trainer {
    /// One micro-batch: returns the loss to back-propagate, its reported value
    /// (`L_CL + α·L_LM + β·L_LOC`), and the terms. Also moves the momentum encoders and the
    /// queue. `places` holds each example's unit spans when β > 0 or the LM loss copies from the
    /// answer's sentence, and its answer span when it copies from the answer's own tokens (else
    /// they may be empty);
    /// `doc_keys` are hashes of the documents' texts (the frozen document encoder's cache keys).
    ///
    /// With a process group, the embeddings of every rank are gathered so that the contrastive
    /// loss runs over the global batch; only this rank's slice carries a gradient. Each rank
    /// back-propagates `W·L_CL(global) + α·W·Σ_local token losses / global tokens
    /// + β·W·Σ_local example losses / global examples` and the gradients are averaged over the
    /// `W` ranks, which gives exactly the gradient of one process training on the global batch.
    /// The temperature appears in every rank's `L_CL`, so only rank 0 lets it carry a gradient.
    pub(super) fn forward(
        &mut self,
        batch: &TripleBatch,
        doc_ids: &[i64],
        doc_keys: &[u64],
        places: (&[Vec<Span>], &[Option<Span>]),
        distill: f64,
    ) -> Result<Terms> {
        let device = self.model.device();
        let _precision = self.config.run.precision.enter(device);
        let inputs = self.inputs(batch, device);
        let ids = Tensor::from_slice(doc_ids).to_device(device);
        let embedded = self.embed(&inputs, doc_keys)?;
        let l_cl = self.contrastive(batch, &embedded, &ids, distill)?;
        let (l_lm, loc_sum, loc_rows) = self.fusion_terms(batch, &inputs, &embedded, places)?;
        self.combine(l_cl, l_lm, loc_sum, loc_rows, &inputs.t_mask)
    }

    fn inputs(&self, batch: &TripleBatch, device: Device) -> Inputs {
        let (q_ids, q_mask) = batch_tensors(&batch.queries, device);
        let (d_ids, d_mask) = batch_tensors(&batch.documents, device);
        let (t_ids, t_mask) = batch_tensors(&batch.targets, device);
        let t_ids = t_ids.copy();
        let _ = t_ids
            .select(1, 0)
            .fill_(self.model.generation_tokens().start);
        Inputs {
            q_ids,
            q_mask,
            d_ids,
            d_mask,
            t_ids,
            t_mask,
        }
    }

    /// Query and document embeddings from the encoders and from their momentum copies (moved
    /// towards the encoders first).
    fn embed(&mut self, x: &Inputs, doc_keys: &[u64]) -> Result<Embedded> {
        let frozen = self.config.optim.freeze_document_encoder;
        let q = self.model.encode_queries_t(&x.q_ids, &x.q_mask, true)?;
        let (d_states, d_below) = if frozen {
            self.documents
                .batch_states(&self.model, &x.d_ids, &x.d_mask, doc_keys)?
        } else {
            self.model
                .document_reading_states_t(&x.d_ids, &x.d_mask, true)?
        };
        let d = l2_normalize(&mean_pool(&d_states, &x.d_mask));

        self.momentum
            .copy_from(&self.model, self.config.loss.momentum)?;
        let (q_m, d_m) = if frozen {
            // The momentum copy of a frozen encoder is that encoder: its embeddings are `d`.
            (
                self.momentum.embed_queries(&x.q_ids, &x.q_mask)?,
                d.detach(),
            )
        } else {
            self.momentum
                .embed(&x.q_ids, &x.q_mask, &x.d_ids, &x.d_mask)?
        };
        Ok(Embedded {
            q,
            d,
            q_m,
            d_m,
            d_states,
            d_below,
        })
    }

    /// The global batch: gathered rows, this rank's live (differentiable) rows in place.
    fn global_batch(&self, e: &Embedded, ids: &Tensor) -> Result<Global> {
        let Some(dist) = &self.dist else {
            return Ok(Global {
                q: e.q.shallow_clone(),
                d: e.d.shallow_clone(),
                q_m: e.q_m.shallow_clone(),
                d_m: e.d_m.shallow_clone(),
                ids: ids.shallow_clone(),
                temp: self.temp.shallow_clone(),
            });
        };
        let g = &dist.group;
        let device = self.model.device();
        let dim = e.q.size()[1];
        let packed = Tensor::cat(&[&e.q, &e.d, &e.q_m, &e.d_m], 1).detach();
        let counts = row_counts(g, packed.size()[0], device)?;
        let all = all_gather_counted(g, &packed, &counts)?;
        let all_ids = all_gather_counted(g, ids, &counts)?;
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
        Ok(Global {
            q: splice(0, &e.q),
            d: splice(1, &e.d),
            q_m: all.narrow(1, 2 * dim, dim),
            d_m: all.narrow(1, 3 * dim, dim),
            ids: all_ids,
            temp,
        })
    }

    /// `L_CL` over the global batch, the queue and the hard negatives, with momentum-distilled
    /// soft targets; then the batch's momentum embeddings join the queue.
    fn contrastive(
        &mut self,
        batch: &TripleBatch,
        e: &Embedded,
        ids: &Tensor,
        distill: f64,
    ) -> Result<Tensor> {
        let Global {
            q,
            d,
            q_m,
            d_m,
            ids,
            temp,
        } = self.global_batch(e, ids)?;
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
        Ok(l_cl)
    }

    /// The fusion encoder over (query, document states), the decoder's `L_LM` on the target,
    /// and `L_LOC` as a sum over this rank's examples with their count (so ranks can add up;
    /// zero when β is 0).
    fn fusion_terms(
        &self,
        batch: &TripleBatch,
        x: &Inputs,
        e: &Embedded,
        (units, answers): (&[Vec<Span>], &[Option<Span>]),
    ) -> Result<(Tensor, Tensor, i64)> {
        let device = self.model.device();
        let beta = self.config.loss.local_weight;
        let local_layer = self.model.config().local_layer();
        let fused = self.model.fuse_t(
            &x.q_ids,
            &x.q_mask,
            Context {
                states: &e.d_states,
                mask: &x.d_mask,
            },
            self.model.fusion_options_for_reading(beta > 0.0),
            true,
        )?;
        let query_keep = query_keep(&batch.queries, device);
        let copyable = keep_mask(&batch.documents, device);
        let region = match self.config.loss.copy_from {
            CopyFrom::Anywhere => None,
            CopyFrom::AnswerSentence => Some(unit_token_mask(&batch.documents, units, device)),
            CopyFrom::AnswerSpan => Some(answer_token_steps(
                &batch.documents,
                answers,
                x.t_ids.size()[1] - 1,
                device,
            )),
        };
        let reader = ReaderInputs {
            fused: &fused,
            query_mask: &x.q_mask,
            query_keep: &query_keep,
            document_ids: &x.d_ids,
            document_mask: &x.d_mask,
            document_copyable: &copyable,
            document_states: &e.d_states,
            document_below: e.d_below.as_ref(),
            copy_region: region.as_ref(),
        };
        let log_probs = self
            .model
            .target_log_probs_t(&x.t_ids, &x.t_mask, &reader, true)?;
        let l_lm = lm_loss(&log_probs, &x.t_mask);
        let (loc_sum, loc_rows) = if beta > 0.0 {
            let probs = fused.cross_attention(local_layer).ok_or_else(|| {
                Error::Train(format!(
                    "layer {local_layer}'s cross-attention was not kept"
                ))
            })?;
            local_loss_sum(
                probs,
                &query_keep,
                &unit_token_mask(&batch.documents, units, device),
            )
        } else {
            (Tensor::zeros([], (Kind::Float, device)), 0)
        };
        Ok((l_lm, loc_sum, loc_rows))
    }

    /// The loss this rank back-propagates and the reported terms: alone, `L_CL + α·L_LM +
    /// β·L_LOC`; under a process group, each term scaled so that the average of the ranks'
    /// gradients is the gradient of one process on the global batch.
    fn combine(
        &self,
        l_cl: Tensor,
        l_lm: Tensor,
        loc_sum: Tensor,
        loc_rows: i64,
        t_mask: &Tensor,
    ) -> Result<Terms> {
        let (alpha, beta) = (self.config.loss.alpha, self.config.loss.local_weight);
        let cl = l_cl.double_value(&[]);
        let Some(dist) = &self.dist else {
            let lm = l_lm.double_value(&[]);
            let rows = loc_rows.max(1) as f64;
            let local = loc_sum.double_value(&[]) / rows;
            return Ok(Terms {
                loss: l_cl + l_lm * alpha + loc_sum * (beta / rows),
                value: cl + alpha * lm + beta * local,
                cl,
                lm,
                local,
            });
        };
        let device = self.model.device();
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

    /// The batch's hard negatives as momentum document embeddings and queue ids, gathered
    /// from every rank under a process group (every rank takes part, with or without any).
    fn hard_negatives(&self, batch: &TripleBatch) -> Result<Option<(Tensor, Tensor)>> {
        let device = self.model.device();
        let local = match &batch.negatives {
            Some((tokens, ids)) => {
                let (n_ids, n_mask) = batch_tensors(tokens, device);
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
}
