//! The training objectives as small pure functions (method §2): the symmetric contrastive loss
//! with momentum-distilled soft targets, the decoder's language-modelling loss, and — beyond the
//! paper, off unless `loss.local_weight > 0` — a local-retrieval loss on the cross-attention,
//! with the token masks it is computed over ([`query_keep`], [`unit_token_mask`]).

use gear_data::Span;
use tch::{Device, Kind, Tensor};

/// Targets for one direction of the contrastive loss: `(1 − w)·onehot + w·softmax(sim_m)`.
///
/// `positives [B, N]` marks the columns that are the row's positives (1.0; several when the same
/// document appears twice); the one-hot part spreads 1 evenly over them. `momentum_logits
/// [B, N]` are the momentum encoders' similarities divided by the temperature.
pub fn soft_targets(positives: &Tensor, momentum_logits: &Tensor, weight: f64) -> Tensor {
    let onehot = positives
        / positives
            .sum_dim_intlist(1, true, Kind::Float)
            .clamp_min(1.0);
    if weight == 0.0 {
        return onehot;
    }
    onehot * (1.0 - weight) + momentum_logits.softmax(1, Kind::Float) * weight
}

/// Cross-entropy of `logits [B, N]` against a target distribution `targets [B, N]`, averaged over
/// rows: `−mean_b Σ_n targets·log_softmax(logits)`.
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    -(logits.log_softmax(1, Kind::Float) * targets)
        .sum_dim_intlist(1, false, Kind::Float)
        .mean(Kind::Float)
}

/// The symmetric contrastive loss: `(CE(q→d) + CE(d→q)) / 2`.
pub fn contrastive_loss(
    q2d_logits: &Tensor,
    q2d_targets: &Tensor,
    d2q_logits: &Tensor,
    d2q_targets: &Tensor,
) -> Tensor {
    (soft_cross_entropy(q2d_logits, q2d_targets) + soft_cross_entropy(d2q_logits, d2q_targets))
        / 2.0
}

/// Teacher-forced token cross-entropy from the decoder's `log_probs [B, T − 1]` of the targets
/// `ids[:, 1:]` (the LM head's, or its mixture with the copy head); padding (`mask [B, T]` 0
/// past position 0) is ignored. Returns the mean over real target tokens.
pub fn lm_loss(log_probs: &Tensor, mask: &Tensor) -> Tensor {
    let t = mask.size()[1];
    let keep = mask.narrow(1, 1, t - 1).to_kind(Kind::Float);
    -(log_probs.to_kind(Kind::Float) * &keep).sum(Kind::Float)
        / keep.sum(Kind::Float).clamp_min(1.0)
}

/// Per-example attention mass on the unit: `Σ_j unit[b, j] · w[b, j]`, where `w[b, j]` is the
/// cross-attention weight of document token `j` averaged over heads and over the query tokens
/// with `query_keep[b, i] = 1` — exactly the token weights local retrieval ranks sentences by
/// (`gear_model::local`). `probs [B, H, Q, D]`, `query_keep [B, Q]`, `unit [B, D]` (0/1).
pub fn unit_attention_mass(probs: &Tensor, query_keep: &Tensor, unit: &Tensor) -> Tensor {
    let weights = gear_model::attention_mass(probs, query_keep); // [B, D]
    (weights * unit.to_kind(Kind::Float)).sum_dim_intlist(1, false, Kind::Float)
}

/// The local-retrieval loss `−log(mass)` summed over the examples whose unit has at least one
/// document token (a unit truncated away carries no signal), with that example count:
/// `(Σ_b −log max(mass_b, 1e-6), n)`. Divide by `n` for the mean. Raising the unit's attention
/// mass is raising its score under [`gear_model::UnitAggregation::Sum`].
pub fn local_loss_sum(probs: &Tensor, query_keep: &Tensor, unit: &Tensor) -> (Tensor, i64) {
    let mass = unit_attention_mass(probs, query_keep, unit);
    let has_unit = unit
        .to_kind(Kind::Float)
        .sum_dim_intlist(1, false, Kind::Float)
        .gt(0.0)
        .to_kind(Kind::Float);
    let n = has_unit.sum(Kind::Float).double_value(&[]) as i64;
    let loss = (-mass.clamp_min(1e-6).log() * has_unit).sum(Kind::Float);
    (loss, n)
}

/// `[batch, len]` 0/1 mask of the real, non-special query tokens (those local retrieval
/// averages over).
pub fn query_keep(queries: &gear_data::Batch, device: Device) -> Tensor {
    gear_model::keep_mask(queries, device).to_kind(Kind::Float)
}

/// `[batch, len]` 0/1 mask of the document tokens inside a unit: a token belongs to a unit when
/// its first byte lies in one of the unit's byte spans (the rule local retrieval scores by);
/// special and padding tokens never do.
pub fn unit_token_mask(
    documents: &gear_data::Batch,
    units: &[Vec<Span>],
    device: Device,
) -> Tensor {
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

/// Per decoder step, the document position its target token is copied from, `[batch, steps,
/// d_len]` 0/1: step `k` (writing the answer's `k`-th token) marks the `k`-th non-special
/// document token that starts inside the row's answer span; steps past the answer's tokens, and
/// rows without a span, mark nothing (they copy from anywhere). The region of
/// [`gear_model::mixture_log_probs`] for `loss.copy_from = "answer_span"`.
pub fn answer_token_steps(
    documents: &gear_data::Batch,
    answers: &[Option<Span>],
    steps: i64,
    device: Device,
) -> Tensor {
    let len = documents.seq_len();
    let steps = steps.max(0) as usize;
    let special = documents.special_tokens_mask();
    let mut mask = vec![0f32; documents.len() * steps * len];
    for (b, answer) in answers.iter().enumerate().take(documents.len()) {
        let Some(answer) = answer else { continue };
        let positions = documents
            .offsets(b)
            .iter()
            .enumerate()
            .take(len)
            .filter(|&(j, &(start, _))| !special[b * len + j] && answer.contains(start))
            .map(|(j, _)| j);
        for (k, j) in positions.take(steps).enumerate() {
            mask[(b * steps + k) * len + j] = 1.0;
        }
    }
    Tensor::from_slice(&mask)
        .view([documents.len() as i64, steps as i64, len as i64])
        .to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_steps_mark_the_answers_tokens_in_order() {
        let docs = ["Aa bb. Cc dd.", "Ee ff gg."];
        let tok = gear_data::Tokenizer::word_level(&docs, 16).unwrap();
        let batch = tok.encode_batch(&docs).unwrap();
        // [CLS] aa bb . cc dd . [SEP] | [CLS] ee ff gg . [SEP] [PAD] [PAD]
        // Row 0's answer "Cc dd" (bytes 7..12), row 1's "ff gg." cut to the 2 steps asked.
        let answers = [Some(Span::new(7, 12)), Some(Span::new(3, 9))];
        let mask = answer_token_steps(&batch, &answers, 2, Device::Cpu);
        assert_eq!(mask.size(), [2, 2, 8]);
        let got = Vec::<f32>::try_from(mask.flatten(0, -1)).unwrap();
        #[rustfmt::skip]
        let want = [
            0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0,
            0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(got, want);
        // A row without an answer marks nothing.
        let none = answer_token_steps(&batch, &[None, None], 3, Device::Cpu);
        assert_eq!(none.sum(tch::Kind::Float).double_value(&[]), 0.0);
    }

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

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    fn close(a: &Tensor, b: f64) {
        let a = a.double_value(&[]);
        assert!((a - b).abs() < 1e-5, "{a} != {b}");
    }

    #[test]
    fn soft_targets_mix_onehot_and_momentum() {
        let pos = t(&[1.0, 0.0, 0.0, 1.0, 0.0, 1.0], &[2, 3]);
        let logits = t(&[0.0, 0.0, 0.0, 0.0, (2f32).ln(), 0.0], &[2, 3]);
        let got = soft_targets(&pos, &logits, 0.4);
        // Row 0: 0.6·[1,0,0] + 0.4·[1/3,1/3,1/3]; row 1: 0.6·[.5,0,.5] + 0.4·[.25,.5,.25].
        let want = [
            0.6 + 0.4 / 3.0,
            0.4 / 3.0,
            0.4 / 3.0,
            0.3 + 0.1,
            0.2,
            0.3 + 0.1,
        ];
        let got = Vec::<f32>::try_from(got.flatten(0, -1)).unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?}");
        }
        let hard = soft_targets(&pos, &logits, 0.0);
        assert!(hard.equal(&t(&[1.0, 0.0, 0.0, 0.5, 0.0, 0.5], &[2, 3])));
    }

    #[test]
    fn contrastive_loss_by_hand() {
        // Two queries, two documents, logits [[2, 0], [0, 2]] both ways, one-hot targets:
        // CE = −log(e² / (e² + 1)) = log(1 + e^−2).
        let logits = t(&[2.0, 0.0, 0.0, 2.0], &[2, 2]);
        let eye = t(&[1.0, 0.0, 0.0, 1.0], &[2, 2]);
        close(
            &contrastive_loss(&logits, &eye, &logits, &eye),
            (1.0 + (-2f64).exp()).ln(),
        );
        // Uniform targets over two columns: CE = mean of −½(log p0 + log p1).
        let half = t(&[0.5, 0.5, 0.5, 0.5], &[2, 2]);
        let p = 1.0 / (1.0 + (-2f64).exp());
        close(
            &soft_cross_entropy(&logits, &half),
            -0.5 * (p.ln() + (1.0 - p).ln()),
        );
    }

    #[test]
    fn local_loss_is_minus_log_the_attention_mass_on_the_unit() {
        // 1 example, 2 heads, 3 query tokens ([CLS], word, [SEP]), 4 document tokens; the unit
        // holds tokens 1 and 2. Only query token 1 counts: w = mean over heads of its rows.
        #[rustfmt::skip]
        let probs = t(&[
            // head 0: rows for query tokens 0, 1, 2
            0.7, 0.1, 0.1, 0.1,   0.1, 0.5, 0.2, 0.2,   0.7, 0.1, 0.1, 0.1,
            // head 1
            0.7, 0.1, 0.1, 0.1,   0.1, 0.1, 0.4, 0.4,   0.7, 0.1, 0.1, 0.1,
        ], &[1, 2, 3, 4]);
        let keep = t(&[0.0, 1.0, 0.0], &[1, 3]);
        let unit = t(&[0.0, 1.0, 1.0, 0.0], &[1, 4]);
        // w = [0.1, 0.3, 0.3, 0.3] → mass on tokens 1, 2 = 0.6.
        close(
            &unit_attention_mass(&probs, &keep, &unit).sum(Kind::Float),
            0.6,
        );
        let (loss, n) = local_loss_sum(&probs, &keep, &unit);
        assert_eq!(n, 1);
        close(&loss, -(0.6f64).ln());

        // A second example whose unit was truncated away adds nothing and is not counted.
        let probs2 = Tensor::cat(&[&probs, &probs], 0);
        let keep2 = Tensor::cat(&[&keep, &keep], 0);
        let unit2 = Tensor::cat(&[&unit, &unit.zeros_like()], 0);
        let (loss, n) = local_loss_sum(&probs2, &keep2, &unit2);
        assert_eq!(n, 1);
        close(&loss, -(0.6f64).ln());

        // Averaging over two kept query tokens: token 0's rows give w0 = [0.7, 0.1, 0.1, 0.1].
        let keep_both = t(&[1.0, 1.0, 0.0], &[1, 3]);
        close(
            &unit_attention_mass(&probs, &keep_both, &unit).sum(Kind::Float),
            (0.2 + 0.6) / 2.0,
        );
    }

    #[test]
    fn lm_loss_ignores_padding_and_the_first_position() {
        // Vocab 3, one sequence [s, 1, 2, pad]: predictions at positions 0 and 1 count.
        let ids = Tensor::from_slice(&[0i64, 1, 2, 0]).view([1, 4]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 0]).view([1, 4]);
        let logits = t(
            &[
                0.0, 1.0, 0.0, /**/ 0.0, 0.0, 3.0, /**/ 9.0, 9.0, 9.0, /**/ 5.0,
                0.0, 0.0,
            ],
            &[1, 4, 3],
        );
        let l1 = -(1f64.exp() / (2.0 + 1f64.exp())).ln();
        let l2 = -(3f64.exp() / (2.0 + 3f64.exp())).ln();
        let labels = ids.narrow(1, 1, 3);
        let log_probs = logits
            .narrow(1, 0, 3)
            .log_softmax(-1, Kind::Float)
            .gather(2, &labels.unsqueeze(2), false)
            .squeeze_dim(2);
        close(&lm_loss(&log_probs, &mask), (l1 + l2) / 2.0);
    }
}
