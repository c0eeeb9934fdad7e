//! One BERT layer: self-attention, then (for the fusion encoder) cross-attention, then the
//! feed-forward block, each with residual + LayerNorm.

use tch::{nn, Tensor};

use crate::attention::Attention;
use crate::config::Activation;
use crate::layers::{layer_norm, linear};
use crate::BertConfig;

/// `encoder.layer.{i}.*` of a BERT checkpoint.
#[derive(Debug)]
pub struct BertLayer {
    attention: Attention,
    intermediate: nn::Linear,
    output: nn::Linear,
    output_norm: nn::LayerNorm,
    activation: Activation,
    dropout: f64,
}

impl BertLayer {
    /// Creates the variables under `p` (`…/encoder/layer/{i}`).
    pub fn new(p: &nn::Path<'_>, cfg: &BertConfig) -> Self {
        let out = p / "output";
        Self {
            attention: Attention::new(&(p / "attention"), cfg, cfg.hidden_size),
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

    /// Self-attention over `hidden [batch, len, hidden]` with an additive `mask`.
    pub fn forward_t(&self, hidden: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let h = self.attention.forward_t(hidden, None, mask, train);
        self.feed_forward_t(&h, train)
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
