//! `GearConfig`: the shape of a whole GeAR model — encoders, decoder, local-retrieval layer and
//! sequence lengths — as typed TOML (`gear.toml` in a checkpoint folder), validated once.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{BertConfig, Error, Result};

/// How the decoder's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderInit {
    /// Random (normal(0, initializer_range)), as in the paper.
    #[default]
    Random,
    /// Embeddings, self-attention and feed-forward copied from the query encoder's first layers
    /// (cross-attention and the LM head transform stay random).
    FromEncoder,
}

/// How the cross-attention blocks start when GeAR is built from a pretrained encoder
/// ([`crate::GearModel::from_bert_checkpoint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrossAttentionInit {
    /// Random (normal(0, initializer_range)), as BLIP creates them.
    #[default]
    Random,
    /// Each block a copy of its own layer's self-attention (query/key/value projections,
    /// output projection and LayerNorm): query tokens then start by attending to the document
    /// tokens the pretrained encoder finds related, instead of near-uniformly.
    SelfAttention,
    /// Beyond BLIP: fusion blocks that start as token-similarity attention and add nothing to
    /// the query states. Query projection `s·I` (`s = 3·√heads`), key and value projections
    /// `I`, zero biases; zero output projection; output LayerNorm with one gain and one bias
    /// (the root mean square and the mean of the layer's self-attention LayerNorm affine) so
    /// that it nearly returns its input. With `cross_attention_normalize` the logits are then
    /// scaled cosine similarities between query and document token states, which rank a
    /// passage's sentences well before any training (docs/training.md). The decoder's blocks
    /// stay random.
    Similarity,
}

/// The decoder's shape; its width is the encoders' and its vocabulary the tokenizer's
/// (with `[Decode]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// Number of decoder layers.
    pub num_hidden_layers: i64,
    /// Attention heads per layer; must divide the encoder width.
    pub num_attention_heads: i64,
    /// Width of the feed-forward block.
    pub intermediate_size: i64,
    /// Weight initialisation.
    #[serde(default)]
    pub init: DecoderInit,
}

/// A whole GeAR model's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GearConfig {
    /// Which fusion layer's cross-attention ranks sentences, 1-based. Omitted: the paper's layer
    /// 10 of 12 scaled to the encoder's depth (see [`default_local_layer`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_layer: Option<usize>,
    /// Query token limit, special tokens included.
    #[serde(default = "default_query_len")]
    pub max_query_len: usize,
    /// Document token limit, special tokens included.
    #[serde(default = "default_document_len")]
    pub max_document_len: usize,
    /// Generation-target token limit, `[Decode]` and the end token included.
    #[serde(default = "default_target_len")]
    pub max_target_len: usize,
    /// One encoder for queries and documents. The paper uses two (`false`).
    #[serde(default)]
    pub share_encoders: bool,
    /// How cross-attention blocks start when built from a pretrained encoder (a saved model
    /// loads its trained weights whatever this says).
    #[serde(default)]
    pub cross_attention_init: CrossAttentionInit,
    /// Attention heads of the fusion encoder's cross-attention blocks; omitted: the encoder's.
    /// (No weight shape depends on it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_attention_heads: Option<i64>,
    /// Scale query and document token states to RMS 1 before the fusion cross-attention's
    /// projections (beyond BLIP; see [`crate::CrossAttentionShape::normalize`]).
    #[serde(default)]
    pub cross_attention_normalize: bool,
    /// Shape of `E_q` and `E_d` (Hugging Face BERT field names).
    pub encoder: BertConfig,
    /// Shape of the decoder.
    pub decoder: DecoderConfig,
}

fn default_query_len() -> usize {
    64
}
fn default_document_len() -> usize {
    256
}
fn default_target_len() -> usize {
    64
}

/// The paper reads sentence relevance off layer 10 of a 12-layer encoder: quality peaks in the
/// last 3–4 layers, not the top one (its Figure 4). For other depths we keep the same relative
/// position, `round(10/12 · layers)`: 5 of 6 for MiniLM, 10 of 12 for bert-base.
pub fn default_local_layer(layers: usize) -> usize {
    ((layers * 10 + 6) / 12).clamp(1, layers.max(1))
}

impl GearConfig {
    /// Defaults around an encoder shape: a decoder of the encoder's depth, heads and feed-forward
    /// width (the paper's decoder is bert-base sized like its encoders), randomly initialised.
    pub fn for_encoder(encoder: BertConfig) -> Self {
        Self {
            local_layer: None,
            max_query_len: default_query_len(),
            max_document_len: default_document_len().min(encoder.max_tokens() as usize),
            max_target_len: default_target_len(),
            share_encoders: false,
            cross_attention_init: CrossAttentionInit::Random,
            cross_attention_heads: None,
            cross_attention_normalize: false,
            decoder: DecoderConfig {
                num_hidden_layers: encoder.num_hidden_layers,
                num_attention_heads: encoder.num_attention_heads,
                intermediate_size: encoder.intermediate_size,
                init: DecoderInit::Random,
            },
            encoder,
        }
    }

    /// Reads and validates a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_toml_str(&gear_data::read_text(path)?, path)
    }

    /// Parses and validates TOML text; `path` names it in errors.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self> {
        gear_data::parse_config(text).map_err(|message| Error::Config {
            path: path.to_owned(),
            message,
        })
    }

    /// The TOML text of this config.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config {
            path: crate::bert::config::memory_path(),
            message: e.to_string(),
        })
    }

    /// The resolved local-retrieval layer, 1-based.
    pub fn local_layer(&self) -> usize {
        self.local_layer
            .unwrap_or_else(|| default_local_layer(self.encoder.num_hidden_layers as usize))
    }

    /// The fusion encoder's cross-attention shape.
    pub fn fusion_cross_attention(&self) -> crate::CrossAttentionShape {
        crate::CrossAttentionShape {
            kv_width: self.encoder.hidden_size,
            heads: self
                .cross_attention_heads
                .unwrap_or(self.encoder.num_attention_heads),
            normalize: self.cross_attention_normalize,
        }
    }

    /// The decoder as a BERT shape with `vocab_size` tokens (the tokenizer's, `[Decode]` included).
    pub fn decoder_bert(&self, vocab_size: i64) -> BertConfig {
        BertConfig {
            vocab_size,
            num_hidden_layers: self.decoder.num_hidden_layers,
            num_attention_heads: self.decoder.num_attention_heads,
            intermediate_size: self.decoder.intermediate_size,
            ..self.encoder.clone()
        }
    }

    /// Checks every invariant; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.encoder
            .validate()
            .map_err(|m| format!("[encoder] {m}"))?;
        let layers = self.encoder.num_hidden_layers as usize;
        if let Some(l) = self.local_layer {
            if l == 0 || l > layers {
                return Err(format!(
                    "field `local_layer` ({l}) must be within 1..={layers}"
                ));
            }
        }
        let positions = self.encoder.max_tokens() as usize;
        for (field, value) in [
            ("max_query_len", self.max_query_len),
            ("max_document_len", self.max_document_len),
            ("max_target_len", self.max_target_len),
        ] {
            if !(2..=positions).contains(&value) {
                return Err(format!(
                    "field `{field}` ({value}) must be within 2..={positions} (the encoder's positions)"
                ));
            }
        }
        if let Some(h) = self.cross_attention_heads {
            if h <= 0 || self.encoder.hidden_size % h != 0 {
                return Err(format!(
                    "field `cross_attention_heads` ({h}) must divide the encoder width ({})",
                    self.encoder.hidden_size
                ));
            }
        }
        let d = &self.decoder;
        if d.num_hidden_layers <= 0 || d.num_attention_heads <= 0 || d.intermediate_size <= 0 {
            return Err("[decoder] `num_hidden_layers`, `num_attention_heads` and `intermediate_size` must be positive".into());
        }
        if self.encoder.hidden_size % d.num_attention_heads != 0 {
            return Err(format!(
                "[decoder] field `num_attention_heads` ({}) must divide the encoder width ({})",
                d.num_attention_heads, self.encoder.hidden_size
            ));
        }
        if d.init == DecoderInit::FromEncoder
            && (d.num_hidden_layers > self.encoder.num_hidden_layers
                || d.num_attention_heads != self.encoder.num_attention_heads
                || d.intermediate_size != self.encoder.intermediate_size)
        {
            return Err("[decoder] `init = \"from_encoder\"` needs at most the encoder's layers and its heads and intermediate size".into());
        }
        Ok(())
    }
}

impl gear_data::TomlConfig for GearConfig {
    fn check(&self) -> std::result::Result<(), String> {
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_local_layer_scales_the_papers_choice() {
        assert_eq!(default_local_layer(12), 10);
        assert_eq!(default_local_layer(6), 5);
        assert_eq!(default_local_layer(2), 2);
        assert_eq!(default_local_layer(1), 1);
    }

    #[test]
    fn toml_round_trip_and_unknown_fields() {
        let cfg = GearConfig::for_encoder(BertConfig::tiny(40));
        let text = cfg.to_toml_string().unwrap();
        let back = GearConfig::from_toml_str(&text, Path::new("gear.toml")).unwrap();
        assert_eq!(back, cfg);
        let bad = text.replace("max_query_len", "max_qeury_len");
        let msg = GearConfig::from_toml_str(&bad, Path::new("/x/gear.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("/x/gear.toml") && msg.contains("max_qeury_len"),
            "{msg}"
        );
        let bad = text.replace("[decoder]", "[decoder]\nlayers = 3");
        assert!(GearConfig::from_toml_str(&bad, Path::new("g.toml")).is_err());
    }

    #[test]
    fn invalid_values_name_their_field() {
        let mut cfg = GearConfig::for_encoder(BertConfig::tiny(40));
        cfg.local_layer = Some(3);
        assert!(cfg.validate().unwrap_err().contains("local_layer"));
        cfg.local_layer = None;
        cfg.max_document_len = 1000;
        assert!(cfg.validate().unwrap_err().contains("max_document_len"));
        cfg.max_document_len = 32;
        cfg.decoder.num_attention_heads = 5;
        assert!(cfg.validate().unwrap_err().contains("num_attention_heads"));
    }
}
