//! Multi-head attention with its output projection, residual and LayerNorm — one struct for
//! BERT's self-attention (`attention.*`) and BLIP's cross-attention (`crossattention.*`).

use tch::{nn, Kind, Tensor};

use crate::layers::{layer_norm, linear};
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
    attn_dropout: f64,
    hidden_dropout: f64,
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
        let s = p / "self";
        let o = p / "output";
        Self {
            query: linear(&(&s / "query"), cfg.hidden_size, cfg.hidden_size, cfg),
            key: linear(&(&s / "key"), kv_width, cfg.hidden_size, cfg),
            value: linear(&(&s / "value"), kv_width, cfg.hidden_size, cfg),
            dense: linear(&(&o / "dense"), cfg.hidden_size, cfg.hidden_size, cfg),
            layer_norm: layer_norm(&(&o / "LayerNorm"), cfg),
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            attn_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        }
    }

    /// `[batch, len, hidden]` → `[batch, heads, len, head_dim]`.
    fn split_heads(&self, x: &Tensor) -> Tensor {
        let (b, n, _) = x.size3().expect("attention inputs are [batch, len, width]");
        x.view([b, n, self.heads, self.head_dim]).transpose(1, 2)
    }

    /// `[batch, heads, len, head_dim]` → `[batch, len, hidden]`.
    fn merge_heads(&self, x: &Tensor) -> Tensor {
        let (b, _, n, _) = x
            .size4()
            .expect("attention outputs are [batch, heads, len, head_dim]");
        x.transpose(1, 2)
            .contiguous()
            .view([b, n, self.heads * self.head_dim])
    }

    fn project_out(&self, context: &Tensor, residual: &Tensor, train: bool) -> Tensor {
        let out = self
            .merge_heads(context)
            .apply(&self.dense)
            .dropout(self.hidden_dropout, train);
        (out + residual).apply(&self.layer_norm)
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
        let kv = context.unwrap_or(hidden);
        let q = self.split_heads(&hidden.apply(&self.query));
        let k = self.split_heads(&kv.apply(&self.key));
        let v = self.split_heads(&kv.apply(&self.value));
        let p = if train { self.attn_dropout } else { 0.0 };
        let ctx =
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), p, false, None, false);
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
        let kv = context.unwrap_or(hidden);
        let q = self.split_heads(&hidden.apply(&self.query));
        let k = self.split_heads(&kv.apply(&self.key));
        let v = self.split_heads(&kv.apply(&self.value));
        let scores = q.matmul(&k.transpose(-1, -2)) / (self.head_dim as f64).sqrt() + mask;
        let probs = scores.softmax(-1, scores.kind());
        let ctx = probs.dropout(self.attn_dropout, train).matmul(&v);
        AttentionOutput {
            hidden: self.project_out(&ctx, hidden, train),
            probs,
        }
    }
}

/// Turns a `[batch, kv_len]` 0/1 mask into the additive `[batch, 1, 1, kv_len]` mask attention
/// adds to its scores: 0 where attended, the dtype's lowest finite value where masked (as Hugging
/// Face does, so a fully masked row stays finite).
pub fn additive_mask(mask: &Tensor, kind: Kind) -> Tensor {
    let lowest = match kind {
        Kind::Half => f64::from(half_min()),
        Kind::BFloat16 => -3.389_531_389_251_535e38,
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    };
    let m = mask.to_kind(kind).unsqueeze(1).unsqueeze(1);
    (1.0 - m) * lowest
}

fn half_min() -> f32 {
    -65504.0
}
