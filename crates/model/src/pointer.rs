//! The decoder's copy head (beyond the paper): a pointer over the document's tokens mixed with
//! the vocabulary by a learned gate, as in See et al.'s pointer-generator (2017,
//! <https://arxiv.org/abs/1704.04368>, eq. 9), optionally steered by the fusion encoder's
//! local-layer cross-attention ([`crate::CopyMode::LocalAttention`]). Keys:
//! `decoder.pointer.{query,key,gate}.{weight,bias}` and `decoder.pointer.prior_scale`.
//!
//! At decoder position `t` with state `h_t` and input token `x_t`, document token states `s_j`
//! and the question's fusion states `f_i`:
//!
//! - each document token reads the question: `c_j = Σ_i softmax_i(W_a s_j · W_b f_i / √width)
//!   f_i` (what the question says about that token, as BiDAF's context-to-query attention), and
//!   its key is `k_j = W_k s_j + W_c c_j`;
//! - `a_t = softmax_j(W_q h_t · k_j / √width + β·[d_{j−1} = x_t] + prior_j + mask)` is where it
//!   copies from: `β` (learned) favours the position after the token just written, so a copied
//!   span continues where it is;
//! - `g_t = σ(w_g·h_t + b_g)` is the vocabulary's share, and the next token's probability is
//!   `g_t·p_vocab(w) + (1 − g_t)·Σ_{j: d_j = w} a_t,j`.
//!
//! With [`crate::CopyMode::LocalAttention`], `prior_j = λ·log m̃_j + μ·log m_j`: `m_j` is the
//! fusion encoder's local-layer cross-attention mass on token `j` (averaged over heads and query
//! tokens — what local retrieval sums per sentence), `m̃_j` the same averaged over a window of
//! [`PRIOR_RADIUS`] tokens each side, so that the tokens *around* what the query matched — where
//! answers sit — share its weight; `λ` and `μ` are learned (the answer is rarely a word the
//! question already says, so `μ` may turn negative).

use tch::{nn, Kind, Tensor};

use crate::bert::init::linear;
use crate::{BertConfig, Result};

/// Tokens each side over which the local-attention prior is averaged.
pub const PRIOR_RADIUS: i64 = 8;

/// Added to logits of positions that cannot be copied (padding, special tokens), and to
/// log-probabilities of tokens absent from the document: far below any real value yet finite,
/// so that gradients through `logsumexp` stay defined.
const EXCLUDED: f64 = -1e4;

/// The copy head.
#[derive(Debug)]
pub struct Pointer {
    query: nn::Linear,
    key: nn::Linear,
    gate: nn::Linear,
    read_query: nn::Linear,
    read_key: nn::Linear,
    context: nn::Linear,
    follow: Tensor,
    /// `[λ, μ]`: the scales of the smoothed and the token-level attention prior.
    prior_scale: Option<Tensor>,
    width: i64,
}

/// The scale `β` of the "continue after the token just written" term starts here; the prior's
/// `λ` starts at 1 and `μ` at 0 (a scale learns slowly at the decoder's learning rate, and a
/// token-level log-mass at full weight would first push the copy onto the question's own words).
const FOLLOW_INIT: f64 = 2.0;

/// The document a pointer copies from, one row per decoder row.
#[derive(Debug, Clone, Copy)]
pub struct Passage<'a> {
    /// Token ids `[batch, d_len]`.
    pub ids: &'a Tensor,
    /// Token states `[batch, d_len, width]` (the document encoder's output).
    pub states: &'a Tensor,
    /// Which tokens may be copied `[batch, d_len]` (real, non-special tokens).
    pub copyable: &'a Tensor,
    /// The question's fusion states `[batch, q_len, width]` and their mask `[batch, q_len]`.
    pub question: (&'a Tensor, &'a Tensor),
    /// The attention prior over positions ([`local_prior`]: `[batch, 2, d_len]`, smoothed and
    /// token-level log-mass), when the head uses one.
    pub prior: Option<&'a Tensor>,
}

/// Where and how much a decoder copies at each position.
#[derive(Debug)]
pub struct CopyDistribution {
    /// `log a_t,j`, `[batch, t, d_len]`.
    pub log_copy: Tensor,
    /// `log g_t`, `[batch, t]`: the vocabulary's share.
    pub log_vocab_share: Tensor,
    /// `log (1 − g_t)`, `[batch, t]`: the pointer's share.
    pub log_copy_share: Tensor,
}

impl Pointer {
    /// Creates the variables under `p` (`root/decoder/pointer`); `prior` adds the learned scale
    /// `λ` (starting at 1) of the local-attention prior.
    pub fn new(p: &nn::Path<'_>, cfg: &BertConfig, prior: bool) -> Self {
        let w = cfg.hidden_size;
        Self {
            query: linear(&(p / "query"), w, w, cfg),
            key: linear(&(p / "key"), w, w, cfg),
            gate: linear(&(p / "gate"), w, 1, cfg),
            read_query: linear(&(p / "read" / "query"), w, w, cfg),
            read_key: linear(&(p / "read" / "key"), w, w, cfg),
            context: linear(&(p / "context"), w, w, cfg),
            follow: p.var("follow", &[1], nn::Init::Const(FOLLOW_INIT)),
            prior_scale: prior.then(|| {
                let scale = p.zeros("prior_scale", &[2]);
                tch::no_grad(|| {
                    let _ = scale.get(0).fill_(1.0);
                });
                scale
            }),
            width: w,
        }
    }

    /// Whether the head reads a local-attention prior.
    pub fn uses_prior(&self) -> bool {
        self.prior_scale.is_some()
    }

    /// The document tokens' keys `[batch, d_len, width]`, each after reading the question.
    pub fn keys(&self, passage: &Passage<'_>) -> Tensor {
        let (f, f_mask) = passage.question;
        let s = passage.states.to_kind(f.kind());
        let scale = (self.width as f64).sqrt();
        let reads = s
            .apply(&self.read_query)
            .matmul(&f.apply(&self.read_key).transpose(1, 2))
            .to_kind(Kind::Float)
            / scale;
        let blocked = f_mask.to_kind(Kind::Bool).logical_not().unsqueeze(1);
        let weights = reads
            .masked_fill(&blocked, EXCLUDED)
            .softmax(-1, Kind::Float)
            .to_kind(f.kind());
        s.apply(&self.key) + weights.matmul(f).apply(&self.context)
    }

    /// The copy distribution of decoder states `hidden [batch, t, width]`, whose inputs were
    /// `inputs [batch, t]`, over `passage`.
    pub fn forward(
        &self,
        hidden: &Tensor,
        inputs: &Tensor,
        passage: &Passage<'_>,
    ) -> CopyDistribution {
        self.forward_with_keys(hidden, inputs, passage, &self.keys(passage))
    }

    /// [`Pointer::forward`] with the keys computed once ([`Pointer::keys`]).
    pub fn forward_with_keys(
        &self,
        hidden: &Tensor,
        inputs: &Tensor,
        passage: &Passage<'_>,
        keys: &Tensor,
    ) -> CopyDistribution {
        let q = hidden.apply(&self.query);
        let mut logits = q
            .matmul(&keys.to_kind(q.kind()).transpose(1, 2))
            .to_kind(Kind::Float)
            / (self.width as f64).sqrt();
        // 1 where the document token before position j is the decoder's input token.
        let d = passage.ids.size()[1];
        let before = Tensor::cat(
            &[
                &passage.ids.narrow(1, 0, 1).full_like(-1),
                &passage.ids.narrow(1, 0, d - 1),
            ],
            1,
        );
        let follows = inputs
            .unsqueeze(2)
            .eq_tensor(&before.unsqueeze(1))
            .to_kind(Kind::Float);
        logits += follows * &self.follow;
        if let (Some(scale), Some(prior)) = (&self.prior_scale, passage.prior) {
            let weighted = (prior.to_kind(Kind::Float) * scale.view([1, 2, 1])).sum_dim_intlist(
                1,
                false,
                Kind::Float,
            );
            logits += weighted.unsqueeze(1);
        }
        let blocked = passage
            .copyable
            .to_kind(Kind::Bool)
            .logical_not()
            .unsqueeze(1);
        let log_copy = logits
            .masked_fill(&blocked, EXCLUDED)
            .log_softmax(-1, Kind::Float);
        let g = hidden
            .apply(&self.gate)
            .to_kind(Kind::Float)
            .squeeze_dim(-1);
        CopyDistribution {
            log_copy,
            log_vocab_share: g.log_sigmoid(),
            log_copy_share: (-g).log_sigmoid(),
        }
    }
}

/// `log p(targets)` under the mixture, `[batch, t]`: `vocab_log_probs [batch, t, vocab]` from
/// the LM head, `targets [batch, t]` the tokens to score at each position, `passage_ids
/// [batch, d_len]` the document's tokens (a target copies from every position holding it).
/// `region` (0/1), when given, narrows where a target is copied from: a target token the region
/// holds counts only its copies inside the region; one it does not hold, its copies anywhere.
/// `[batch, d_len]` is one region for every step (training: the answer's sentence), `[batch, t,
/// d_len]` one per step (training: the position of the answer's token that step writes).
pub fn mixture_log_probs(
    vocab_log_probs: &Tensor,
    copy: &CopyDistribution,
    passage_ids: &Tensor,
    targets: &Tensor,
    region: Option<&Tensor>,
) -> Tensor {
    let from_vocab = vocab_log_probs
        .gather(2, &targets.unsqueeze(2), false)
        .squeeze_dim(2);
    let mut same = targets.unsqueeze(2).eq_tensor(&passage_ids.unsqueeze(1));
    if let Some(region) = region {
        let region = region.to_kind(Kind::Bool);
        let region = if region.dim() == 2 {
            region.unsqueeze(1)
        } else {
            region
        };
        let inside = same.logical_and(&region);
        let held = inside.any_dim(2, true);
        same = inside.where_self(&held, &same);
    }
    let from_copy = copy
        .log_copy
        .masked_fill(&same.logical_not(), EXCLUDED)
        .logsumexp([2], false);
    Tensor::stack(
        &[
            from_vocab + &copy.log_vocab_share,
            from_copy + &copy.log_copy_share,
        ],
        2,
    )
    .logsumexp([2], false)
}

/// `log p(copy position j)` for every position, `[batch, t, d_len]`: the vocabulary's
/// probability of the token at `j` plus the pointer's probability of position `j` itself (not of
/// every position holding the same token) — how a span decoder scores *where* it reads next.
pub fn position_log_probs(
    vocab_log_probs: &Tensor,
    copy: Option<&CopyDistribution>,
    passage_ids: &Tensor,
) -> Tensor {
    let t = vocab_log_probs.size()[1];
    let d = passage_ids.size()[1];
    let index = passage_ids.unsqueeze(1).expand([-1, t, d], false);
    let from_vocab = vocab_log_probs.gather(2, &index, false);
    match copy {
        None => from_vocab,
        Some(c) => Tensor::stack(
            &[
                from_vocab + c.log_vocab_share.unsqueeze(2),
                &c.log_copy + c.log_copy_share.unsqueeze(2),
            ],
            3,
        )
        .logsumexp([3], false),
    }
}

/// Each document token's cross-attention weight `[batch, d_len]`, from probabilities `probs
/// [batch, heads, q_len, d_len]`: averaged over heads and over the query tokens with
/// `query_keep [batch, q_len] = 1` — the token weights local retrieval sums per sentence
/// ([`crate::token_weights`] on one example), differentiable.
pub fn attention_mass(probs: &Tensor, query_keep: &Tensor) -> Tensor {
    let keep = query_keep.to_kind(Kind::Float);
    let per_query = probs.to_kind(Kind::Float).mean_dim(1, false, Kind::Float);
    (per_query * keep.unsqueeze(2)).sum_dim_intlist(1, false, Kind::Float)
        / keep.sum_dim_intlist(1, true, Kind::Float).clamp_min(1.0)
}

/// The local-attention prior `[batch, 2, d_len]`: `log(m̃_j + 1e-6)` and `log(m_j + 1e-6)`, from
/// the fusion encoder's cross-attention probabilities `probs [batch, heads, q_len, d_len]` over
/// the query tokens with `query_keep [batch, q_len] = 1` (`m`), and `m` averaged over a window of
/// [`PRIOR_RADIUS`] tokens each side (`m̃`).
pub fn local_prior(probs: &Tensor, query_keep: &Tensor) -> Result<Tensor> {
    let mass = attention_mass(probs, query_keep);
    let k = 2 * PRIOR_RADIUS + 1;
    let smooth = mass
        .unsqueeze(1)
        .f_avg_pool1d([k], [1], [PRIOR_RADIUS], false, false)?
        .squeeze_dim(1);
    Ok((Tensor::stack(&[smooth, mass], 1) + 1e-6).log())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn dist(log_copy: &[f32], d: i64, g: f32) -> CopyDistribution {
        let g = Tensor::from_slice(&[g]).reshape([1, 1]);
        CopyDistribution {
            log_copy: Tensor::from_slice(log_copy).reshape([1, 1, d]),
            log_vocab_share: g.log_sigmoid(),
            log_copy_share: (-g).log_sigmoid(),
        }
    }

    #[test]
    fn mixture_adds_the_copy_mass_of_every_position_holding_the_token() {
        // Vocabulary of 4; the document is tokens [2, 3, 2]; copy 0.5, 0.3, 0.2; gate 0.5.
        let vocab = Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4])
            .log()
            .reshape([1, 1, 4]);
        let c = dist(&[0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()], 3, 0.0);
        let ids = Tensor::from_slice(&[2i64, 3, 2]).reshape([1, 3]);
        let prob = |tok: i64, region: Option<&Tensor>| {
            mixture_log_probs(
                &vocab,
                &c,
                &ids,
                &Tensor::from_slice(&[tok]).reshape([1, 1]),
                region,
            )
            .exp()
            .double_value(&[0, 0])
        };
        let p = |tok: i64| prob(tok, None);
        assert!((p(2) - (0.5 * 0.3 + 0.5 * 0.7)).abs() < 1e-6, "{}", p(2));
        assert!((p(3) - (0.5 * 0.4 + 0.5 * 0.3)).abs() < 1e-6);
        assert!((p(0) - 0.5 * 0.1).abs() < 1e-6);
        let total: f64 = (0..4).map(p).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        // A region holding position 2 only: token 2 counts its copy there (0.2), not at 0; token
        // 3, which the region does not hold, still counts its copies anywhere.
        let region = Tensor::from_slice(&[0i64, 0, 1]).reshape([1, 3]);
        let q = |tok: i64| prob(tok, Some(&region));
        assert!((q(2) - (0.5 * 0.3 + 0.5 * 0.2)).abs() < 1e-6, "{}", q(2));
        assert!((q(3) - p(3)).abs() < 1e-9);
        // The same region given per step ([batch, t, d_len]) scores the same; one holding
        // position 0 only counts the copy there (0.5).
        let per_step = region.reshape([1, 1, 3]);
        assert!((prob(2, Some(&per_step)) - q(2)).abs() < 1e-9);
        let first = Tensor::from_slice(&[1i64, 0, 0]).reshape([1, 1, 3]);
        let r = prob(2, Some(&first));
        assert!((r - (0.5 * 0.3 + 0.5 * 0.5)).abs() < 1e-6, "{r}");
        // By position: the copy part is the position's own.
        let pos = position_log_probs(&vocab, Some(&c), &ids).exp();
        assert!((pos.double_value(&[0, 0, 2]) - (0.5 * 0.3 + 0.5 * 0.2)).abs() < 1e-6);
    }

    #[test]
    fn blocked_positions_get_no_copy_mass_and_the_prior_shifts_it() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = BertConfig::tiny(10);
        let pointer = Pointer::new(&vs.root(), &cfg, true);
        let w = cfg.hidden_size;
        let hidden = Tensor::randn([1, 2, w], (Kind::Float, Device::Cpu));
        let states = Tensor::randn([1, 5, w], (Kind::Float, Device::Cpu));
        let question = Tensor::randn([1, 3, w], (Kind::Float, Device::Cpu));
        let question_mask = Tensor::ones([1, 3], (Kind::Int64, Device::Cpu));
        let ids = Tensor::from_slice(&[1i64, 5, 6, 7, 2]).reshape([1, 5]);
        let copyable = Tensor::from_slice(&[0i64, 1, 1, 1, 0]).reshape([1, 5]);
        let flat = Tensor::zeros([1, 2, 5], (Kind::Float, Device::Cpu));
        let peaked = Tensor::from_slice(&[0f32, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            .reshape([1, 2, 5]);
        // Step 0 read `[Decode]` (id 9, nowhere in the document), step 1 read token 5.
        let inputs = Tensor::from_slice(&[9i64, 5]).reshape([1, 2]);
        let a = |prior: &Tensor| {
            pointer
                .forward(
                    &hidden,
                    &inputs,
                    &Passage {
                        ids: &ids,
                        states: &states,
                        copyable: &copyable,
                        question: (&question, &question_mask),
                        prior: Some(prior),
                    },
                )
                .log_copy
                .exp()
        };
        let (flat, peaked) = (a(&flat), a(&peaked));
        for t in 0..2 {
            assert!(flat.double_value(&[0, t, 0]) < 1e-9 && flat.double_value(&[0, t, 4]) < 1e-9);
            assert!(peaked.double_value(&[0, t, 2]) > flat.double_value(&[0, t, 2]));
        }
        // After writing token 5 (position 1), position 2 gets the follow bonus e^β over what
        // the same logits give it at step 0... compared through the ratio to position 3.
        let ratio = |t: i64| flat.double_value(&[0, t, 2]) / flat.double_value(&[0, t, 3]);
        let keys = pointer.keys(&Passage {
            ids: &ids,
            states: &states,
            copyable: &copyable,
            question: (&question, &question_mask),
            prior: None,
        });
        let q = hidden.apply(&pointer.query);
        let raw = q.matmul(&keys.transpose(1, 2)) / (w as f64).sqrt();
        let raw_ratio =
            |t: i64| (raw.double_value(&[0, t, 2]) - raw.double_value(&[0, t, 3])).exp();
        assert!((ratio(0) / raw_ratio(0) - 1.0).abs() < 1e-4);
        assert!((ratio(1) / raw_ratio(1) - FOLLOW_INIT.exp()).abs() < 1e-3 * FOLLOW_INIT.exp());
    }

    #[test]
    fn the_prior_spreads_attention_over_its_window() {
        // All attention of the one kept query token on document token 20 of 40.
        let mut p = vec![0f32; 40];
        p[20] = 1.0;
        let probs = Tensor::from_slice(&p).reshape([1, 1, 1, 40]);
        let keep = Tensor::ones([1, 1], (Kind::Float, Device::Cpu));
        let prior = local_prior(&probs, &keep).unwrap().exp();
        let inside = prior.double_value(&[0, 0, 20 + PRIOR_RADIUS]);
        let outside = prior.double_value(&[0, 0, 20 + PRIOR_RADIUS + 1]);
        assert!(
            (inside - 1.0 / (2 * PRIOR_RADIUS + 1) as f64).abs() < 1e-5,
            "{inside}"
        );
        assert!(outside < 1e-5, "{outside}");
        // The token-level row keeps the mass where it fell.
        assert!((prior.double_value(&[0, 1, 20]) - 1.0).abs() < 1e-5);
        assert!(prior.double_value(&[0, 1, 21]) < 1e-5);
    }
}
