//! Bad model folders give clear errors, never panics.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;

use anyhow::Result;
use gear_model::{pretrained, EncoderOptions, Error, SentenceEncoder};

fn copy(from: &Path, to: &Path, name: &str) -> Result<()> {
    std::fs::copy(from.join(name), to.join(name))?;
    Ok(())
}

#[test]
fn folder_without_weights_names_the_file() -> Result<()> {
    let src = pretrained::minilm_dir()?;
    let dir = tempfile::tempdir()?;
    copy(&src, dir.path(), "config.json")?;
    copy(&src, dir.path(), "tokenizer.json")?;
    let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingFile {
                file: "model.safetensors",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("model.safetensors"));
    Ok(())
}

#[test]
fn config_disagreeing_with_weights_names_tensor_and_shapes() -> Result<()> {
    let src = pretrained::minilm_dir()?;
    let dir = tempfile::tempdir()?;
    copy(&src, dir.path(), "tokenizer.json")?;
    copy(&src, dir.path(), "model.safetensors")?;
    let config = std::fs::read_to_string(src.join("config.json"))?
        .replace("\"hidden_size\": 384", "\"hidden_size\": 768");
    assert!(config.contains("768"));
    std::fs::write(dir.path().join("config.json"), config)?;
    let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("384") && msg.contains("768") && msg.contains("embeddings."),
        "{msg}"
    );
    Ok(())
}

#[test]
fn pretrained_checkpoint_leaves_only_the_pooler_unused() -> Result<()> {
    let enc = SentenceEncoder::load(pretrained::minilm_dir()?, &EncoderOptions::default())?;
    let unused: Vec<&str> = enc
        .load_report()
        .unused
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        unused,
        [
            "embeddings.position_ids",
            "pooler.dense.bias",
            "pooler.dense.weight"
        ]
    );
    assert!(enc.load_report().missing.is_empty());
    Ok(())
}

#[test]
fn max_len_beyond_positions_is_rejected() -> Result<()> {
    let opts = EncoderOptions {
        max_len: Some(1000),
        ..EncoderOptions::default()
    };
    let err = SentenceEncoder::load(pretrained::minilm_dir()?, &opts).unwrap_err();
    assert!(err.to_string().contains("512"), "{err}");
    Ok(())
}
