//! Input embeddings: word + absolute position (+ token type for BERT), then LayerNorm and
//! dropout. MPNet has no token-type embeddings and counts positions from
//! [`BertConfig::position_offset`] (`pad_token_id + 1`), as Hugging Face's `MPNetEmbeddings` does
//! for right-padded input.
//!
//! Mirrors [`BertEmbeddings`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L54) and
//! [`MPNetEmbeddings`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/mpnet/modeling_mpnet.py#L57); the forward runs in a
//! `bert.embeddings` span (trace level).

use tch::{nn, Tensor};

use crate::bert::config::ModelType;
use crate::bert::init::{embedding, layer_norm};
use crate::{BertConfig, Error, Result};

/// `embeddings.*` of a BERT (or MPNet) checkpoint.
#[derive(Debug)]
pub struct Embeddings {
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    token_type_embeddings: Option<nn::Embedding>,
    layer_norm: nn::LayerNorm,
    dropout: f64,
    max_positions: i64,
    position_offset: i64,
}

impl Embeddings {
    /// Creates the variables under `p` (normally `root / "embeddings"`).
    pub fn new(p: &nn::Path<'_>, cfg: &BertConfig) -> Result<Self> {
        Ok(Self {
            word_embeddings: embedding(&(p / "word_embeddings"), cfg.vocab_size, cfg),
            position_embeddings: embedding(
                &(p / "position_embeddings"),
                cfg.max_position_embeddings,
                cfg,
            ),
            token_type_embeddings: (cfg.model_type == ModelType::Bert)
                .then(|| embedding(&(p / "token_type_embeddings"), cfg.type_vocab_size, cfg)),
            layer_norm: layer_norm(&(p / "LayerNorm"), cfg),
            dropout: cfg.hidden_dropout_prob,
            max_positions: cfg.max_position_embeddings,
            position_offset: cfg.position_offset(),
        })
    }

    /// `input_ids [batch, seq]` (token type 0 everywhere) → `[batch, seq, hidden]`.
    pub fn forward_t(&self, input_ids: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_at_t(input_ids, 0, train)
    }

    /// As [`Embeddings::forward_t`] for tokens starting at position `start` (decoding steps after
    /// a KV cache of `start` positions).
    pub fn forward_at_t(&self, input_ids: &Tensor, start: i64, train: bool) -> Result<Tensor> {
        let _span = tracing::trace_span!("bert.embeddings").entered();
        let seq_len = input_ids.size().last().copied().unwrap_or(0);
        let first = start + self.position_offset;
        if first + seq_len > self.max_positions {
            return Err(Error::Input(format!(
                "sequence of {} tokens exceeds the model's {} positions",
                start + seq_len,
                self.max_positions - self.position_offset
            )));
        }
        let positions = Tensor::arange_start(
            first,
            first + seq_len,
            (tch::Kind::Int64, input_ids.device()),
        );
        let mut x = input_ids.apply(&self.word_embeddings)
            + positions.apply(&self.position_embeddings).unsqueeze(0);
        if let Some(types) = &self.token_type_embeddings {
            x += input_ids.zeros_like().apply(types);
        }
        Ok(x.apply(&self.layer_norm).dropout(self.dropout, train))
    }

    /// The word-embedding matrix `[vocab, hidden]` (a decoder's LM head may tie to it).
    pub fn word_embeddings(&self) -> &Tensor {
        &self.word_embeddings.ws
    }
}
