//! A sentence-transformers model folder as sentence-transformers reads it: `modules.json` (the
//! module pipeline), the pooling module's `config.json`, `sentence_bert_config.json` (max length,
//! lower-casing).
//!
//! Supported pipelines: `Transformer` → `Pooling` (CLS, mean, max, mean/√len or last token) →
//! optionally `Normalize`. Any other module (`Dense`, `LayerNorm`, …) is refused by name rather
//! than skipped, since skipping it would give different embeddings without a word. A folder
//! without `modules.json` (a plain Hugging Face BERT folder) is read as all-MiniLM-L6-v2's
//! pipeline: mean pooling, then `Normalize` (sentence-transformers itself would not normalise
//! such a folder; cosine similarities are the same either way).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// How token states become one vector (sentence-transformers' `Pooling` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token's state (`[CLS]`; the BGE family).
    Cls,
    /// Mean over real tokens (all-MiniLM-L6-v2, all-mpnet-base-v2).
    Mean,
    /// Element-wise maximum over real tokens.
    Max,
    /// Sum over real tokens divided by √(their count).
    MeanSqrtLen,
    /// The last real token's state (decoder-style embedders).
    LastToken,
}

/// What a model folder says about turning token states into a sentence embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceLayout {
    /// Folder of the transformer's `config.json`, weights and tokenizer (the `Transformer`
    /// module's path; usually the folder itself).
    pub transformer_dir: PathBuf,
    /// The pooling mode.
    pub pooling: Pooling,
    /// Whether a `Normalize` module follows (unit-length embeddings).
    pub normalize: bool,
    /// `sentence_bert_config.json` `max_seq_length`, if given.
    pub max_seq_length: Option<usize>,
    /// `sentence_bert_config.json` `do_lower_case`: texts are lower-cased before tokenising.
    pub do_lower_case: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: Option<i64>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct SbertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

const TRANSFORMER: &str = "sentence_transformers.models.Transformer";
const POOLING: &str = "sentence_transformers.models.Pooling";
const NORMALIZE: &str = "sentence_transformers.models.Normalize";

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = gear_data::read_text(path)?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| Error::Config {
        path: path.to_owned(),
        message: format!("field `{}`: {}", e.path(), e.inner()),
    })
}

impl SentenceLayout {
    /// Reads the layout of the model folder `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        let (transformer_dir, pooling, normalize) = if modules_path.is_file() {
            let modules: Vec<Module> = read_json(&modules_path)?;
            Self::pipeline(dir, &modules_path, &modules)?
        } else {
            (dir.to_owned(), Pooling::Mean, true)
        };
        let sbert = transformer_dir.join("sentence_bert_config.json");
        let (max_seq_length, do_lower_case) = if sbert.is_file() {
            let c: SbertConfig = read_json(&sbert)?;
            if c.max_seq_length == Some(0) {
                return Err(Error::Config {
                    path: sbert,
                    message: "field `max_seq_length` must be at least 1".into(),
                });
            }
            (c.max_seq_length, c.do_lower_case)
        } else {
            (None, false)
        };
        Ok(Self {
            transformer_dir,
            pooling,
            normalize,
            max_seq_length,
            do_lower_case,
        })
    }

    fn pipeline(
        dir: &Path,
        modules_path: &Path,
        modules: &[Module],
    ) -> Result<(PathBuf, Pooling, bool)> {
        let bad = |message: String| Error::Config {
            path: modules_path.to_owned(),
            message,
        };
        let kinds: Vec<&str> = modules.iter().map(|m| m.kind.as_str()).collect();
        if let Some((i, m)) = modules
            .iter()
            .enumerate()
            .find(|(_, m)| ![TRANSFORMER, POOLING, NORMALIZE].contains(&m.kind.as_str()))
        {
            return Err(bad(format!(
                "module {i} has type `{}`, which GeAR-rs cannot run (supported: Transformer, \
                 then Pooling, then optionally Normalize)",
                m.kind
            )));
        }
        let expected: &[&[&str]] = &[&[TRANSFORMER, POOLING], &[TRANSFORMER, POOLING, NORMALIZE]];
        if !expected.contains(&kinds.as_slice()) {
            return Err(bad(format!(
                "modules {kinds:?}: GeAR-rs runs Transformer, then Pooling, then optionally \
                 Normalize"
            )));
        }
        let transformer_dir = dir.join(&modules[0].path);
        let pooling_path = dir.join(&modules[1].path).join("config.json");
        let c: PoolingConfig = read_json(&pooling_path)?;
        let bad_pooling = |message: String| Error::Config {
            path: pooling_path.clone(),
            message,
        };
        if c.pooling_mode_weightedmean_tokens {
            return Err(bad_pooling(
                "`pooling_mode_weightedmean_tokens` is not supported".into(),
            ));
        }
        let modes = [
            (c.pooling_mode_cls_token, Pooling::Cls),
            (c.pooling_mode_mean_tokens, Pooling::Mean),
            (c.pooling_mode_max_tokens, Pooling::Max),
            (c.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
            (c.pooling_mode_lasttoken, Pooling::LastToken),
        ];
        let on: Vec<Pooling> = modes.iter().filter(|(b, _)| *b).map(|(_, p)| *p).collect();
        let pooling = match on.as_slice() {
            [one] => *one,
            [] => return Err(bad_pooling("no pooling mode is set".into())),
            many => {
                return Err(bad_pooling(format!(
                    "several pooling modes at once ({many:?}, concatenated by \
                     sentence-transformers) are not supported"
                )))
            }
        };
        if c.word_embedding_dimension == Some(0) {
            return Err(bad_pooling(
                "field `word_embedding_dimension` must be positive".into(),
            ));
        }
        Ok((transformer_dir, pooling, modules.len() == 3))
    }

    /// `word_embedding_dimension` of the pooling config must equal the encoder's width.
    pub fn check_width(dir: &Path, hidden_size: i64) -> Result<()> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(());
        }
        let modules: Vec<Module> = read_json(&modules_path)?;
        let Some(pooling) = modules.iter().find(|m| m.kind == POOLING) else {
            return Ok(());
        };
        let path = dir.join(&pooling.path).join("config.json");
        let c: PoolingConfig = read_json(&path)?;
        match c.word_embedding_dimension {
            Some(w) if w != hidden_size => Err(Error::Config {
                path,
                message: format!(
                    "field `word_embedding_dimension` is {w} but the encoder is {hidden_size} wide"
                ),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_folder_is_mean_normalised_and_sbert_settings_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let plain = SentenceLayout::read(dir.path()).unwrap();
        assert_eq!(
            (
                plain.pooling,
                plain.normalize,
                plain.max_seq_length,
                plain.do_lower_case
            ),
            (Pooling::Mean, true, None, false)
        );
        std::fs::write(
            dir.path().join("modules.json"),
            r#"[{"idx":0,"name":"0","path":"0_Transformer","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("0_Transformer")).unwrap();
        std::fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(
            dir.path().join("0_Transformer/sentence_bert_config.json"),
            r#"{"max_seq_length": 128, "do_lower_case": true}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            r#"{"word_embedding_dimension": 8, "pooling_mode_cls_token": true}"#,
        )
        .unwrap();
        let layout = SentenceLayout::read(dir.path()).unwrap();
        assert_eq!(layout.transformer_dir, dir.path().join("0_Transformer"));
        assert_eq!(
            (
                layout.pooling,
                layout.normalize,
                layout.max_seq_length,
                layout.do_lower_case
            ),
            (Pooling::Cls, false, Some(128), true)
        );
        let err = SentenceLayout::check_width(dir.path(), 16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`word_embedding_dimension` is 8"), "{err}");
    }
}
