//! Multi-head attention with its output projection, residual and LayerNorm — one struct for
//! BERT's self-attention (`attention.*`) and BLIP's cross-attention (`crossattention.*`).
//!
//! Mirrors [`BertSelfAttention`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L140) and
//! [`BertSelfOutput`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L283); as cross-attention, BLIP's
//! [`BertSelfAttention`](https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/med.py#L97) with `is_cross_attention`. Forwards run in a `bert.attention`
//! span (trace level).

use tch::{nn, Kind, Tensor};

use crate::bert::init::{layer_norm, linear};
use crate::BertConfig;

/// `{self.{query,key,value}, output.{dense,LayerNorm}}` under one prefix.
#[derive(Debug)]
pub struct Attention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    dense: nn::Linear,
    layer_norm: nn::LayerNorm,
    heads: i64,
    head_dim: i64,
    normalize: bool,
    attn_dropout: f64,
    hidden_dropout: f64,
}

/// The shape of a cross-attention block: the attended states' width, its heads, and whether
/// queries and attended states are RMS-normalised before the projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossAttentionShape {
    /// Width of the attended states.
    pub kv_width: i64,
    /// Attention heads (must divide the hidden size).
    pub heads: i64,
    /// Scale every query state and attended state to RMS 1 (norm `√width`) before the query,
    /// key and value projections (the residual keeps the raw state). With identity projections
    /// the attention logits are then scaled cosine similarities of token states.
    pub normalize: bool,
}

impl CrossAttentionShape {
    /// BLIP's block: the layer's own heads, no normalisation.
    pub fn plain(cfg: &BertConfig, kv_width: i64) -> Self {
        Self {
            kv_width,
            heads: cfg.num_attention_heads,
            normalize: false,
        }
    }
}

/// `x / rms(x)` over the last axis (rows of zeros stay zeros).
fn rms_normalize(x: &Tensor) -> Tensor {
    let rms = (x.square().mean_dim(-1, true, x.kind()) + 1e-6).sqrt();
    x / rms
}

/// Projected keys and values, `[batch, heads, kv_len, head_dim]` each — the KV cache of one
/// attention block.
#[derive(Debug)]
pub struct KvCache {
    /// Keys.
    pub key: Tensor,
    /// Values.
    pub value: Tensor,
}

impl KvCache {
    /// This cache with `more` appended along the sequence axis.
    pub fn append(&self, more: &KvCache) -> KvCache {
        KvCache {
            key: Tensor::cat(&[&self.key, &more.key], 2),
            value: Tensor::cat(&[&self.value, &more.value], 2),
        }
    }

    /// Rows `index` of the batch (beam search reorders hypotheses with it).
    pub fn select(&self, index: &Tensor) -> KvCache {
        KvCache {
            key: self.key.index_select(0, index),
            value: self.value.index_select(0, index),
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.key.size()[2]
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an attention block returns when its probabilities are asked for.
#[derive(Debug)]
pub struct AttentionOutput {
    /// Block output after residual and LayerNorm, `[batch, q_len, hidden]`.
    pub hidden: Tensor,
    /// Attention probabilities before dropout, `[batch, heads, q_len, kv_len]`.
    pub probs: Tensor,
}

impl Attention {
    /// Creates the variables under `p` (`…/attention` or `…/crossattention`); keys and values are
    /// projected from `kv_width`-wide states.
    pub fn new(p: &nn::Path<'_>, cfg: &BertConfig, kv_width: i64) -> Self {
        Self::with_shape(p, cfg, CrossAttentionShape::plain(cfg, kv_width))
    }

    /// As [`Attention::new`] with `shape`'s heads and normalisation.
    pub fn with_shape(p: &nn::Path<'_>, cfg: &BertConfig, shape: CrossAttentionShape) -> Self {
        let s = p / "self";
        let o = p / "output";
        Self {
            query: linear(&(&s / "query"), cfg.hidden_size, cfg.hidden_size, cfg),
            key: linear(&(&s / "key"), shape.kv_width, cfg.hidden_size, cfg),
            value: linear(&(&s / "value"), shape.kv_width, cfg.hidden_size, cfg),
            dense: linear(&(&o / "dense"), cfg.hidden_size, cfg.hidden_size, cfg),
            layer_norm: layer_norm(&(&o / "LayerNorm"), cfg),
            heads: shape.heads,
            head_dim: cfg.hidden_size / shape.heads,
            normalize: shape.normalize,
            attn_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        }
    }

    /// What the projections read: `x`, or `x / rms(x)` when the block normalises.
    fn projected_input(&self, x: &Tensor) -> Tensor {
        if self.normalize {
            rms_normalize(x)
        } else {
            x.shallow_clone()
        }
    }

    /// `[batch, len, hidden]` → `[batch, heads, len, head_dim]`.
    fn split_heads(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        x.view([size[0], size[1], self.heads, self.head_dim])
            .transpose(1, 2)
    }

    /// `[batch, heads, len, head_dim]` → `[batch, len, hidden]`.
    fn merge_heads(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        x.transpose(1, 2)
            .contiguous()
            .view([size[0], size[2], self.heads * self.head_dim])
    }

    fn project_out(&self, context: &Tensor, residual: &Tensor, train: bool) -> Tensor {
        let out = self
            .merge_heads(context)
            .apply(&self.dense)
            .dropout(self.hidden_dropout, train);
        (out + residual).apply(&self.layer_norm)
    }

    /// Keys and values of `states [batch, len, kv_width]`.
    pub fn keys_values(&self, states: &Tensor) -> KvCache {
        let states = self.projected_input(states);
        KvCache {
            key: self.split_heads(&states.apply(&self.key)),
            value: self.split_heads(&states.apply(&self.value)),
        }
    }

    /// Attention from `hidden [batch, q_len, hidden]` to `context` (itself when `None`), with an
    /// additive `mask` broadcastable to `[batch, heads, q_len, kv_len]` (see [`additive_mask`]).
    /// Uses libtorch's fused scaled-dot-product kernel; probabilities are not materialised.
    pub fn forward_t(
        &self,
        hidden: &Tensor,
        context: Option<&Tensor>,
        mask: &Tensor,
        train: bool,
    ) -> Tensor {
        let kv = self.keys_values(context.unwrap_or(hidden));
        self.forward_kv_t(hidden, &kv, Some(mask), train)
    }

    /// Attention from `hidden` to already projected keys and values (a KV cache).
    pub fn forward_kv_t(
        &self,
        hidden: &Tensor,
        kv: &KvCache,
        mask: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let _span = tracing::trace_span!("bert.attention").entered();
        let q = self.split_heads(&self.projected_input(hidden).apply(&self.query));
        let p = if train { self.attn_dropout } else { 0.0 };
        let ctx = Tensor::scaled_dot_product_attention(
            &q, &kv.key, &kv.value, mask, p, false, None, false,
        );
        self.project_out(&ctx, hidden, train)
    }

    /// As [`Attention::forward_t`], computed step by step so the probabilities can be returned.
    pub fn forward_with_probs_t(
        &self,
        hidden: &Tensor,
        context: Option<&Tensor>,
        mask: &Tensor,
        train: bool,
    ) -> AttentionOutput {
        let kv = self.keys_values(context.unwrap_or(hidden));
        self.forward_kv_with_probs_t(hidden, &kv, mask, train)
    }

    /// As [`Attention::forward_kv_t`], returning the probabilities too.
    pub fn forward_kv_with_probs_t(
        &self,
        hidden: &Tensor,
        kv: &KvCache,
        mask: &Tensor,
        train: bool,
    ) -> AttentionOutput {
        let _span = tracing::trace_span!("bert.attention").entered();
        let q = self.split_heads(&self.projected_input(hidden).apply(&self.query));
        let scores = q.matmul(&kv.key.transpose(-1, -2)) / (self.head_dim as f64).sqrt() + mask;
        let probs = scores.softmax(-1, scores.kind());
        let ctx = probs.dropout(self.attn_dropout, train).matmul(&kv.value);
        AttentionOutput {
            hidden: self.project_out(&ctx, hidden, train),
            probs,
        }
    }
}

/// The lowest finite value of `kind`, used as "minus infinity" in additive masks so that a fully
/// masked row stays finite (as Hugging Face does).
pub(crate) fn lowest(kind: Kind) -> f64 {
    match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.389_531_389_251_535e38,
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}

/// Turns a `[batch, kv_len]` 0/1 mask into the additive `[batch, 1, 1, kv_len]` mask attention
/// adds to its scores: 0 where attended, the dtype's lowest finite value where masked.
pub fn additive_mask(mask: &Tensor, kind: Kind) -> Tensor {
    let m = mask.to_kind(kind).unsqueeze(1).unsqueeze(1);
    (1.0 - m) * lowest(kind)
}

/// Additive `[batch, 1, len, len]` mask for causal self-attention over `mask [batch, len]`:
/// position `i` sees positions `j ≤ i` that are not padding.
pub fn causal_mask(mask: &Tensor, kind: Kind) -> Tensor {
    let len = mask.size()[1];
    let causal = Tensor::ones([len, len], (Kind::Bool, mask.device())).tril(0);
    let allowed = causal
        .unsqueeze(0)
        .logical_and(&mask.to_kind(Kind::Bool).unsqueeze(1));
    let zeros = Tensor::zeros([1], (kind, mask.device()));
    zeros
        .where_self(
            &allowed,
            &Tensor::full([1], lowest(kind), (kind, mask.device())),
        )
        .unsqueeze(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tch::{nn::VarStore, Device};

    /// One normalised head with identity key and `s·I` query projections computes
    /// `softmax(s·√width·cos(x_i, y_j))`, whatever the states' norms.
    #[test]
    fn normalised_identity_attention_is_scaled_cosine() {
        let cfg = BertConfig::tiny(10);
        let width = cfg.hidden_size;
        let vs = VarStore::new(Device::Cpu);
        let shape = CrossAttentionShape {
            kv_width: width,
            heads: 1,
            normalize: true,
        };
        let block = Attention::with_shape(&vs.root(), &cfg, shape);
        let s = 2.5;
        tch::no_grad(|| {
            let eye = Tensor::eye(width, (Kind::Float, Device::Cpu));
            let mut vars = vs.variables();
            for (name, scale) in [("self.query", s), ("self.key", 1.0), ("self.value", 1.0)] {
                vars.get_mut(&format!("{name}.weight"))
                    .unwrap()
                    .copy_(&(&eye * scale));
                let _ = vars.get_mut(&format!("{name}.bias")).unwrap().zero_();
            }
        });
        tch::manual_seed(1);
        let x = Tensor::randn([1, 3, width], (Kind::Float, Device::Cpu));
        // Rows of very different norms: normalisation must remove them.
        let y = Tensor::randn([1, 5, width], (Kind::Float, Device::Cpu))
            * Tensor::from_slice(&[0.1f32, 1.0, 10.0, 3.0, 0.5]).view([1, 5, 1]);
        let mask = Tensor::zeros([1, 1, 1, 5], (Kind::Float, Device::Cpu));
        let kv = block.keys_values(&y);
        let probs = block.forward_kv_with_probs_t(&x, &kv, &mask, false).probs;
        let xn = &x / x.norm_scalaropt_dim(2, [-1], true);
        let yn = &y / y.norm_scalaropt_dim(2, [-1], true);
        let cos = xn.matmul(&yn.transpose(-1, -2));
        let want = (cos * (s * (width as f64).sqrt())).softmax(-1, Kind::Float);
        let diff = (probs.squeeze_dim(1) - want).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{diff}");
    }
}
