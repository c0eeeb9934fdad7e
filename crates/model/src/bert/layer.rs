//! One transformer layer: self-attention, then (fusion encoder and decoder) cross-attention, then
//! the feed-forward block, each with residual + LayerNorm — BLIP's text layer.
//!
//! Mirrors BLIP's [`BertLayer`](https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/med.py#L320) (Hugging Face's
//! [`BertLayer`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L356) with the cross-attention block); forwards
//! run in a `bert.layer` span (trace level).

use tch::{nn, Tensor};

use crate::bert::attention::{Attention, CrossAttentionShape, KvCache};
use crate::bert::config::Activation;
use crate::bert::init::{layer_norm, linear};
use crate::BertConfig;

/// `encoder.layer.{i}.*` of a BERT checkpoint, plus `crossattention.*` when built with it.
#[derive(Debug)]
pub struct BertLayer {
    attention: Attention,
    crossattention: Option<Attention>,
    intermediate: nn::Linear,
    output: nn::Linear,
    output_norm: nn::LayerNorm,
    activation: Activation,
    dropout: f64,
}

/// Cross-attention input of a layer: the attended states' keys/values and their additive mask.
#[derive(Debug, Clone, Copy)]
pub struct CrossInput<'a> {
    /// Projected keys and values of the attended states (see [`BertLayer::cross_keys_values`]).
    pub kv: &'a KvCache,
    /// Additive mask `[batch, 1, 1, kv_len]` over the attended states' padding.
    pub mask: &'a Tensor,
    /// Whether to materialise and return the attention probabilities.
    pub keep_probs: bool,
}

/// What a layer returns.
#[derive(Debug)]
pub struct LayerOutput {
    /// Token states after the layer, `[batch, len, hidden]`.
    pub hidden: Tensor,
    /// Cross-attention probabilities `[batch, heads, len, kv_len]` when asked for.
    pub cross_probs: Option<Tensor>,
}

impl BertLayer {
    /// A plain BERT layer under `p` (`…/encoder/layer/{i}`).
    pub fn new(p: &nn::Path<'_>, cfg: &BertConfig) -> Self {
        Self::build(p, cfg, None)
    }

    /// A layer with a cross-attention block (`p/crossattention`) of the given shape.
    pub fn with_cross_attention(
        p: &nn::Path<'_>,
        cfg: &BertConfig,
        cross: CrossAttentionShape,
    ) -> Self {
        Self::build(p, cfg, Some(cross))
    }

    fn build(p: &nn::Path<'_>, cfg: &BertConfig, cross: Option<CrossAttentionShape>) -> Self {
        let out = p / "output";
        Self {
            attention: Attention::new(&(p / "attention"), cfg, cfg.hidden_size),
            crossattention: cross.map(|c| Attention::with_shape(&(p / "crossattention"), cfg, c)),
            intermediate: linear(
                &(p / "intermediate" / "dense"),
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg,
            ),
            output: linear(
                &(&out / "dense"),
                cfg.intermediate_size,
                cfg.hidden_size,
                cfg,
            ),
            output_norm: layer_norm(&(&out / "LayerNorm"), cfg),
            activation: cfg.hidden_act,
            dropout: cfg.hidden_dropout_prob,
        }
    }

    /// Whether this layer has a cross-attention block.
    pub fn has_cross_attention(&self) -> bool {
        self.crossattention.is_some()
    }

    /// Keys/values the cross-attention block projects from `states`; `None` without the block.
    pub fn cross_keys_values(&self, states: &Tensor) -> Option<KvCache> {
        self.crossattention.as_ref().map(|c| c.keys_values(states))
    }

    /// Self-attention over `hidden [batch, len, hidden]` with an additive `mask`, then
    /// cross-attention when `cross` is given (and the layer has the block), then feed-forward.
    pub fn forward_t(
        &self,
        hidden: &Tensor,
        mask: &Tensor,
        cross: Option<CrossInput<'_>>,
        train: bool,
    ) -> LayerOutput {
        let _span = tracing::trace_span!("bert.layer").entered();
        let h = self.attention.forward_t(hidden, None, mask, train);
        self.cross_and_feed_forward_t(h, cross, train)
    }

    /// One decoding step: self-attention over `past` (cached keys/values) and the new positions
    /// of `hidden`. Returns the output and the extended self-attention cache.
    pub fn step_t(
        &self,
        hidden: &Tensor,
        self_mask: Option<&Tensor>,
        past: Option<&KvCache>,
        cross: Option<CrossInput<'_>>,
        train: bool,
    ) -> (LayerOutput, KvCache) {
        let _span = tracing::trace_span!("bert.layer").entered();
        let new = self.attention.keys_values(hidden);
        let kv = match past {
            Some(past) => past.append(&new),
            None => new,
        };
        let h = self.attention.forward_kv_t(hidden, &kv, self_mask, train);
        (self.cross_and_feed_forward_t(h, cross, train), kv)
    }

    fn cross_and_feed_forward_t(
        &self,
        hidden: Tensor,
        cross: Option<CrossInput<'_>>,
        train: bool,
    ) -> LayerOutput {
        let (h, cross_probs) = match (cross, &self.crossattention) {
            (Some(c), Some(block)) if c.keep_probs => {
                let out = block.forward_kv_with_probs_t(&hidden, c.kv, c.mask, train);
                (out.hidden, Some(out.probs))
            }
            (Some(c), Some(block)) => {
                (block.forward_kv_t(&hidden, c.kv, Some(c.mask), train), None)
            }
            _ => (hidden, None),
        };
        LayerOutput {
            hidden: self.feed_forward_t(&h, train),
            cross_probs,
        }
    }

    /// The feed-forward block with its residual and LayerNorm.
    pub fn feed_forward_t(&self, hidden: &Tensor, train: bool) -> Tensor {
        let x = hidden.apply(&self.intermediate);
        let x = match self.activation {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::Relu => x.relu(),
        };
        let x = x.apply(&self.output).dropout(self.dropout, train);
        (x + hidden).apply(&self.output_norm)
    }
}
