//! GeAR's text decoder (BLIP's `BertLMHeadModel` shape): causal self-attention, cross-attention
//! over the fusion encoder's token states, feed-forward, and an LM head tied to the decoder's
//! word embeddings. Keys: `decoder.bert.{embeddings,encoder.layer.{i}}.*`,
//! `decoder.cls.predictions.{transform.dense,transform.LayerNorm,bias}`.
//!
//! Mirrors BLIP's [`BertLMHeadModel`](https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/med.py#L811) (decoder mode: causal mask, cross-attention
//! to the encoder states) and Hugging Face's [`BertLMPredictionHead`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L487).
//! Its forward runs in a `decoder` span (trace level).

use tch::{nn, Kind, Tensor};

use crate::bert::attention::{additive_mask, causal_mask, KvCache};
use crate::bert::config::Activation;
use crate::bert::embeddings::Embeddings;
use crate::bert::encoder::Context;
use crate::bert::init::{layer_norm, linear};
use crate::bert::layer::{BertLayer, CrossInput};
use crate::{BertConfig, Error, Result};

/// The decoder.
#[derive(Debug)]
pub struct Decoder {
    embeddings: Embeddings,
    layers: Vec<BertLayer>,
    transform: nn::Linear,
    transform_norm: nn::LayerNorm,
    bias: Tensor,
    activation: Activation,
    config: BertConfig,
}

/// Generation state: per layer the self-attention keys/values of every position decoded so far
/// and the cross-attention keys/values of the memory (projected once). Passed in and returned by
/// [`Decoder::step`], never hidden inside the decoder.
#[derive(Debug)]
pub struct DecoderCache {
    self_kv: Vec<KvCache>,
    cross_kv: Vec<KvCache>,
    memory_mask: Tensor,
    position: i64,
}

impl DecoderCache {
    /// Number of positions decoded so far.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The cache of batch rows `index` (beam search keeps the surviving hypotheses with it).
    pub fn select(&self, index: &Tensor) -> DecoderCache {
        DecoderCache {
            self_kv: self.self_kv.iter().map(|kv| kv.select(index)).collect(),
            cross_kv: self.cross_kv.iter().map(|kv| kv.select(index)).collect(),
            memory_mask: self.memory_mask.index_select(0, index),
            position: self.position,
        }
    }
}

impl Decoder {
    /// Creates the variables under `p` (`root/decoder`); `cfg.vocab_size` must count `[Decode]`.
    pub fn new(p: &nn::Path<'_>, cfg: &BertConfig, memory_width: i64) -> Result<Self> {
        cfg.validate().map_err(|message| Error::Config {
            path: crate::bert::config::memory_path(),
            message,
        })?;
        let bert = p / "bert";
        let layers_path = &bert / "encoder" / "layer";
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                BertLayer::with_cross_attention(
                    &(&layers_path / i),
                    cfg,
                    crate::CrossAttentionShape::plain(cfg, memory_width),
                )
            })
            .collect();
        let head = p / "cls" / "predictions";
        let transform = &head / "transform";
        Ok(Self {
            embeddings: Embeddings::new(&(&bert / "embeddings"), cfg)?,
            layers,
            transform: linear(
                &(&transform / "dense"),
                cfg.hidden_size,
                cfg.hidden_size,
                cfg,
            ),
            transform_norm: layer_norm(&(&transform / "LayerNorm"), cfg),
            bias: head.zeros("bias", &[cfg.vocab_size]),
            activation: cfg.hidden_act,
            config: cfg.clone(),
        })
    }

    /// The decoder's shape.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// LM-head logits `[batch, t, vocab]` of decoder states `hidden [batch, t, width]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let h = hidden.apply(&self.transform);
        let h = match self.activation {
            Activation::Gelu => h.gelu("none"),
            Activation::GeluTanh => h.gelu("tanh"),
            Activation::Relu => h.relu(),
        };
        h.apply(&self.transform_norm)
            .matmul(&self.embeddings.word_embeddings().transpose(0, 1))
            + &self.bias
    }

    fn check_memory(&self, ids: &Tensor, memory: &Context<'_>) -> Result<()> {
        let (s, m) = (memory.states.size(), memory.mask.size());
        if s.len() != 3 || m.len() != 2 || s[0] != m[0] || s[1] != m[1] || s[0] != ids.size()[0] {
            return Err(Error::Input(format!(
                "memory states {s:?} / mask {m:?} must be [batch, len, width] / [batch, len] with the targets' batch {:?}",
                ids.size()
            )));
        }
        Ok(())
    }

    /// Teacher-forced logits `[batch, t, vocab]` for inputs `ids [batch, t]` (starting with
    /// `[Decode]`) with padding `mask [batch, t]`, conditioned on `memory` (the fusion encoder's
    /// output). Position `i` sees inputs `0..=i` only.
    pub fn forward_t(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        memory: Context<'_>,
        train: bool,
    ) -> Result<Tensor> {
        Ok(self.logits(&self.hidden_t(ids, mask, memory, train)?))
    }

    /// Teacher-forced last-layer states `[batch, t, width]` (what [`Decoder::forward_t`] turns
    /// into logits, and what a copy head reads).
    pub fn hidden_t(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        memory: Context<'_>,
        train: bool,
    ) -> Result<Tensor> {
        let _span = tracing::trace_span!("decoder").entered();
        if ids.size() != mask.size() || ids.dim() != 2 {
            return Err(Error::Input(format!(
                "decoder ids {:?} and mask {:?} must both be [batch, t]",
                ids.size(),
                mask.size()
            )));
        }
        self.check_memory(ids, &memory)?;
        let mut hidden = self.embeddings.forward_t(ids, train)?;
        let self_mask = causal_mask(mask, hidden.kind());
        let memory_mask = additive_mask(memory.mask, hidden.kind());
        for layer in &self.layers {
            let kv = layer
                .cross_keys_values(memory.states)
                .ok_or_else(|| Error::Input("decoder layer without cross-attention".into()))?;
            let cross = CrossInput {
                kv: &kv,
                mask: &memory_mask,
                keep_probs: false,
            };
            hidden = layer
                .forward_t(&hidden, &self_mask, Some(cross), train)
                .hidden;
        }
        Ok(hidden)
    }

    /// A fresh generation state over `memory`: its cross-attention keys/values, no position yet.
    pub fn start(&self, memory: Context<'_>) -> Result<DecoderCache> {
        let cross_kv = self
            .layers
            .iter()
            .map(|l| {
                l.cross_keys_values(memory.states)
                    .ok_or_else(|| Error::Input("decoder layer without cross-attention".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DecoderCache {
            self_kv: Vec::new(),
            cross_kv,
            memory_mask: additive_mask(memory.mask, memory.states.kind()),
            position: 0,
        })
    }

    /// Decodes `ids [batch, n]` after the positions in `cache` (evaluation mode): returns their
    /// logits `[batch, n, vocab]` and the extended cache. After the first call `n` must be 1.
    pub fn step(&self, ids: &Tensor, cache: &DecoderCache) -> Result<(Tensor, DecoderCache)> {
        let (hidden, next) = self.step_hidden(ids, cache)?;
        Ok((self.logits(&hidden).to_kind(Kind::Float), next))
    }

    /// As [`Decoder::step`], returning the last-layer states `[batch, n, width]` instead of
    /// logits.
    pub fn step_hidden(
        &self,
        ids: &Tensor,
        cache: &DecoderCache,
    ) -> Result<(Tensor, DecoderCache)> {
        let n = ids.size()[1];
        if cache.position > 0 && n != 1 {
            return Err(Error::Input(format!(
                "after the first step the decoder takes one token per step, got {n}"
            )));
        }
        let mut hidden = self.embeddings.forward_at_t(ids, cache.position, false)?;
        let self_mask = (n > 1).then(|| causal_mask(&ids.ones_like(), hidden.kind()));
        let mut self_kv = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let cross = CrossInput {
                kv: &cache.cross_kv[i],
                mask: &cache.memory_mask,
                keep_probs: false,
            };
            let (out, kv) = layer.step_t(
                &hidden,
                self_mask.as_ref(),
                cache.self_kv.get(i),
                Some(cross),
                false,
            );
            hidden = out.hidden;
            self_kv.push(kv);
        }
        let next = DecoderCache {
            self_kv,
            cross_kv: cache
                .cross_kv
                .iter()
                .map(|kv| KvCache {
                    key: kv.key.shallow_clone(),
                    value: kv.value.shallow_clone(),
                })
                .collect(),
            memory_mask: cache.memory_mask.shallow_clone(),
            position: cache.position + n,
        };
        Ok((hidden, next))
    }
}
