//! A trained GeAR bi-encoder as a sentence-transformers folder, for every tool that reads one.
//!
//! The folder holds one side of the bi-encoder — the query encoder `E_q` without its
//! cross-attention blocks, or the document encoder `E_d` (the same weights when the encoders are
//! shared) — as a Hugging Face `BertModel` (`config.json`, `model.safetensors`, `tokenizer.json`)
//! plus the sentence-transformers pipeline GeAR embeds with: mean pooling, then `Normalize`
//! (`modules.json`, `1_Pooling/config.json`), and the side's token limit
//! (`sentence_bert_config.json`). `SentenceTransformer(dir)` and [`SentenceEncoder::load`]
//! (crate::SentenceEncoder::load) both give the embeddings [`GearModel::embed_queries`] /
//! [`GearModel::embed_documents`] give.

use std::path::Path;

use crate::checkpoint::{save_tensors, write_folder_atomically};
use crate::{Error, GearModel, Result};

/// Which encoder of the bi-encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderSide {
    /// `E_q`, the query encoder (its cross-attention blocks left out).
    Query,
    /// `E_d`, the document encoder.
    Document,
}

impl GearModel {
    /// Writes `side`'s encoder to `dir` as a sentence-transformers folder, atomically (a
    /// temporary folder renamed into place).
    pub fn export_sentence_transformers(&self, dir: &Path, side: EncoderSide) -> Result<()> {
        let config = self.config();
        let prefix = match side {
            EncoderSide::Query => "query_encoder.",
            EncoderSide::Document if config.share_encoders => "query_encoder.",
            EncoderSide::Document => "document_encoder.",
        };
        let tensors: Vec<(String, tch::Tensor)> = self
            .var_store()
            .variables()
            .into_iter()
            .filter(|(name, _)| !name.contains(".crossattention."))
            .filter_map(|(name, t)| {
                name.strip_prefix(prefix).map(|rest| {
                    let key = match config.encoder.model_type {
                        crate::ModelType::Bert => rest.to_owned(),
                        crate::ModelType::Mpnet => crate::bert::encoder::mpnet_checkpoint_key(rest),
                    };
                    (key, t.detach())
                })
            })
            .collect();
        if tensors.is_empty() {
            return Err(Error::Input(format!(
                "the checkpoint holds no `{prefix}*` weights to export"
            )));
        }
        let (max_len, tokenizer) = match side {
            EncoderSide::Query => (config.max_query_len, self.query_tokenizer()),
            EncoderSide::Document => (config.max_document_len, self.tokenizer()),
        };
        let mut bert = serde_json::to_value(&config.encoder).map_err(json_error)?;
        let architecture = match config.encoder.model_type {
            crate::ModelType::Bert => "BertModel",
            crate::ModelType::Mpnet => "MPNetModel",
        };
        bert["architectures"] = serde_json::json!([architecture]);
        let files = [
            ("config.json", bert),
            (
                "modules.json",
                serde_json::json!([
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
                ]),
            ),
            (
                "1_Pooling/config.json",
                serde_json::json!({
                    "word_embedding_dimension": config.encoder.hidden_size,
                    "pooling_mode_cls_token": false,
                    "pooling_mode_mean_tokens": true,
                    "pooling_mode_max_tokens": false,
                    "pooling_mode_mean_sqrt_len_tokens": false,
                }),
            ),
            (
                "sentence_bert_config.json",
                serde_json::json!({"max_seq_length": max_len, "do_lower_case": false}),
            ),
        ];
        write_folder_atomically(dir, "sentence-transformers", |tmp| {
            save_tensors(tensors, tmp.join("model.safetensors"))?;
            save_encoder_tokenizer(tokenizer, &tmp.join("tokenizer.json"))?;
            for (name, value) in &files {
                let path = tmp.join(name);
                let io = |source| Error::Io {
                    path: path.clone(),
                    source,
                };
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let text = serde_json::to_string_pretty(value).map_err(json_error)?;
                std::fs::write(&path, text).map_err(io)?;
            }
            std::fs::create_dir_all(tmp.join("2_Normalize")).map_err(|source| Error::Io {
                path: tmp.join("2_Normalize"),
                source,
            })
        })
    }
}

/// The tokenizer without GeAR's `[Decode]` token, which only the decoder reads: the exported
/// encoder's embedding matrix has no row for it.
fn save_encoder_tokenizer(tokenizer: &gear_data::Tokenizer, path: &Path) -> Result<()> {
    tokenizer.save(path)?;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mut json: serde_json::Value = serde_json::from_str(&text).map_err(json_error)?;
    if let Some(added) = json
        .get_mut("added_tokens")
        .and_then(serde_json::Value::as_array_mut)
    {
        added.retain(|t| {
            t.get("content").and_then(|c| c.as_str()) != Some(crate::gear::DECODE_TOKEN)
        });
    }
    std::fs::write(path, serde_json::to_string(&json).map_err(json_error)?).map_err(io)
}

fn json_error(e: serde_json::Error) -> Error {
    Error::Input(format!("serialising the export: {e}"))
}
