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
        let q = self.split_heads(&hidden.apply(&self.query));
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
        let q = self.split_heads(&hidden.apply(&self.query));
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
