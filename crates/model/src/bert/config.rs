//! Encoder configuration (BERT, or MPNet), read from a Hugging Face `config.json` and validated
//! once.
//!
//! The fields are those of Hugging Face's `BertConfig` and `MPNetConfig` (`config.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The feed-forward activation of a BERT layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU (`erf` form), BERT's `"gelu"`.
    #[serde(rename = "gelu")]
    Gelu,
    /// The `tanh` approximation of GELU, `"gelu_new"` / `"gelu_pytorch_tanh"`.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
    /// `"relu"`.
    #[serde(rename = "relu")]
    Relu,
}

/// The encoder family of a checkpoint (`config.json`'s `model_type`). Both run through one
/// implementation ([`crate::Bert`]); MPNet differs in three places only — its checkpoint names
/// (`attention.attn.{q,k,v,o}`, `attention.LayerNorm`), its position ids (offset past the padding
/// id, `pad_token_id + 1`, and no token-type embeddings) and a learned relative-position bias
/// (`encoder.relative_attention_bias`, T5-style buckets) added to every self-attention's logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// BERT (and BERT-shaped models: MiniLM, BGE, …).
    #[default]
    Bert,
    /// MPNet (e.g. all-mpnet-base-v2).
    Mpnet,
}

/// Shape and hyper-parameters of a BERT (or MPNet) encoder, named as in Hugging Face's
/// `config.json`.
///
/// Fields of `config.json` that GeAR does not use (`architectures`, `model_type`, …) are ignored
/// when reading a checkpoint's file: it is a foreign format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
    /// Vocabulary size (rows of `embeddings.word_embeddings`).
    pub vocab_size: i64,
    /// Width of the token states.
    pub hidden_size: i64,
    /// Number of transformer layers.
    pub num_hidden_layers: i64,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_attention_heads: i64,
    /// Width of the feed-forward block.
    pub intermediate_size: i64,
    /// Feed-forward activation.
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    /// Dropout on embeddings and block outputs (training only).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (training only).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Number of learned positions; longer inputs are rejected.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: i64,
    /// Number of token-type (segment) embeddings.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Standard deviation of the normal initialisation of new weights.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: i64,
    /// The encoder family.
    #[serde(default)]
    pub model_type: ModelType,
    /// Buckets of MPNet's relative-position bias (unused by BERT).
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: i64,
}

/// The `config.json` keys [`BertConfig`] reads.
const FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "initializer_range",
    "pad_token_id",
    "model_type",
    "relative_attention_num_buckets",
];

fn default_act() -> Activation {
    Activation::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_positions() -> i64 {
    512
}
fn default_type_vocab() -> i64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init_range() -> f64 {
    0.02
}
fn default_buckets() -> i64 {
    32
}

impl BertConfig {
    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        // `read_text`: a byte-order mark (some editors write one) is not JSON.
        let text = gear_data::read_text(path)?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates `config.json` text; `path` is used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(kind) = raw.get("model_type").and_then(|v| v.as_str()) {
            if !["bert", "mpnet"].contains(&kind) {
                return Err(Error::Config {
                    path: path.to_owned(),
                    message: format!(
                        "field `model_type`: only \"bert\" (and BERT-shaped models) and \"mpnet\" are supported, got {kind:?}"
                    ),
                });
            }
        }
        if let Some(kind) = raw.get("position_embedding_type").and_then(|v| v.as_str()) {
            if kind != "absolute" {
                return Err(Error::Config {
                    path: path.to_owned(),
                    message: format!(
                        "field `position_embedding_type`: only \"absolute\" is supported, got {kind:?}"
                    ),
                });
            }
        }
        // config.json is a foreign format with many fields GeAR does not use: keep ours only.
        let raw = match raw {
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.into_iter()
                    .filter(|(k, _)| FIELDS.contains(&k.as_str()))
                    .collect(),
            ),
            other => other,
        };
        let cfg: Self = serde_json::from_value(raw).map_err(|e| Error::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| Error::Config {
            path: path.to_owned(),
            message,
        })?;
        Ok(cfg)
    }

    /// The shape of all-MiniLM-L6-v2 (6 layers, width 384, 12 heads, uncased WordPiece vocabulary).
    pub fn minilm_l6() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            max_position_embeddings: 512,
            ..Self::tiny(30522)
        }
    }

    /// A small random-initialisable config for tests and examples.
    pub fn tiny(vocab_size: i64) -> Self {
        Self {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            hidden_act: Activation::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 64,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
            pad_token_id: 0,
            model_type: ModelType::Bert,
            relative_attention_num_buckets: 32,
        }
    }

    /// Position id of the first token: 0 for BERT, `pad_token_id + 1` for MPNet (whose ids
    /// count from past the padding id, as fairseq's do).
    pub fn position_offset(&self) -> i64 {
        match self.model_type {
            ModelType::Bert => 0,
            ModelType::Mpnet => self.pad_token_id + 1,
        }
    }

    /// The longest input in tokens: the learned positions past [`BertConfig::position_offset`].
    pub fn max_tokens(&self) -> i64 {
        self.max_position_embeddings - self.position_offset()
    }

    /// Checks the invariants every constructor relies on; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (field, value) in positive {
            if value <= 0 {
                return Err(format!("field `{field}` must be positive, got {value}"));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "field `num_attention_heads` ({}) must divide `hidden_size` ({})",
                self.num_attention_heads, self.hidden_size
            ));
        }
        for (field, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("field `{field}` must be in [0, 1), got {p}"));
            }
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(format!(
                "field `layer_norm_eps` must be positive, got {}",
                self.layer_norm_eps
            ));
        }
        if self.max_tokens() <= 0 {
            return Err(format!(
                "field `max_position_embeddings` ({}) leaves no position past the offset {}",
                self.max_position_embeddings,
                self.position_offset()
            ));
        }
        if self.model_type == ModelType::Mpnet && self.relative_attention_num_buckets < 2 {
            return Err(format!(
                "field `relative_attention_num_buckets` must be at least 2, got {}",
                self.relative_attention_num_buckets
            ));
        }
        if !(0..self.vocab_size).contains(&self.pad_token_id) {
            return Err(format!(
                "field `pad_token_id` ({}) must be below `vocab_size` ({})",
                self.pad_token_id, self.vocab_size
            ));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }
}

/// Where a config came from, for error messages.
pub(crate) fn memory_path() -> PathBuf {
    PathBuf::from("<memory>")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{
      "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
      "hidden_dropout_prob": 0.1, "hidden_size": 384, "initializer_range": 0.02,
      "intermediate_size": 1536, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
      "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0,
      "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522
    }"#;

    #[test]
    fn parses_hugging_face_config() {
        let cfg = BertConfig::from_json_str(MINILM, Path::new("config.json")).unwrap();
        assert_eq!(cfg.hidden_size, 384);
        assert_eq!(cfg.num_hidden_layers, 6);
        assert_eq!(cfg.head_dim(), 32);
        assert_eq!(cfg.hidden_act, Activation::Gelu);
    }

    #[test]
    fn bad_head_count_names_the_field_and_file() {
        let text = MINILM.replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 5");
        let err = BertConfig::from_json_str(&text, Path::new("/m/config.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/m/config.json"), "{msg}");
        assert!(msg.contains("num_attention_heads"), "{msg}");
    }

    #[test]
    fn missing_and_unsupported_fields_are_errors() {
        let text = MINILM.replace("\"hidden_size\": 384,", "");
        let msg = BertConfig::from_json_str(&text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("hidden_size"), "{msg}");
        let text = MINILM.replace("\"absolute\"", "\"relative_key\"");
        let msg = BertConfig::from_json_str(&text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("position_embedding_type"), "{msg}");
        let text = MINILM.replace("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"swish\"");
        assert!(BertConfig::from_json_str(&text, Path::new("c.json")).is_err());
    }

    #[test]
    fn mpnet_configs_are_read_and_other_families_refused_by_name() {
        let mpnet = r#"{"architectures": ["MPNetForMaskedLM"], "hidden_act": "gelu",
          "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
          "max_position_embeddings": 514, "model_type": "mpnet", "num_attention_heads": 12,
          "num_hidden_layers": 12, "pad_token_id": 1, "relative_attention_num_buckets": 32,
          "vocab_size": 30527}"#;
        let cfg = BertConfig::from_json_str(mpnet, Path::new("config.json")).unwrap();
        assert_eq!(cfg.model_type, ModelType::Mpnet);
        assert_eq!((cfg.position_offset(), cfg.max_tokens()), (2, 512));
        let bert = BertConfig::from_json_str(MINILM, Path::new("config.json")).unwrap();
        assert_eq!((bert.model_type, bert.max_tokens()), (ModelType::Bert, 512));
        let text = MINILM.replace("\"model_type\": \"bert\"", "\"model_type\": \"roberta\"");
        let msg = BertConfig::from_json_str(&text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("model_type") && msg.contains("roberta"),
            "{msg}"
        );
    }

    #[test]
    fn tiny_config_is_valid() {
        assert_eq!(BertConfig::tiny(100).validate(), Ok(()));
    }
}
