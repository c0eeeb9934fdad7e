//! Small constructors shared by every block: BERT's initialisation (normal(0, initializer_range)
//! weights, zero biases, unit LayerNorm) applied to tch's `nn` layers.
//!
//! Mirrors [`BertPreTrainedModel._init_weights`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L536).

use tch::nn;

use crate::BertConfig;

pub(crate) fn linear(p: &nn::Path<'_>, in_dim: i64, out_dim: i64, cfg: &BertConfig) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: cfg.initializer_range,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, in_dim, out_dim, config)
}

pub(crate) fn embedding(p: &nn::Path<'_>, rows: i64, cfg: &BertConfig) -> nn::Embedding {
    embedding_of_width(p, rows, cfg.hidden_size, cfg)
}

pub(crate) fn embedding_of_width(
    p: &nn::Path<'_>,
    rows: i64,
    width: i64,
    cfg: &BertConfig,
) -> nn::Embedding {
    let config = nn::EmbeddingConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: cfg.initializer_range,
        },
        ..Default::default()
    };
    nn::embedding(p, rows, width, config)
}

pub(crate) fn layer_norm(p: &nn::Path<'_>, cfg: &BertConfig) -> nn::LayerNorm {
    let config = nn::LayerNormConfig {
        eps: cfg.layer_norm_eps,
        ..Default::default()
    };
    nn::layer_norm(p, vec![cfg.hidden_size], config)
}
