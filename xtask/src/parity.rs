//! `cargo xtask parity-fixture`: regenerate the reference embeddings with sentence-transformers.

use anyhow::Result;

use crate::cmd::status;
use crate::setup::{self, Env};

pub fn run(env: &Env) -> Result<()> {
    setup::ensure_sentence_transformers(env)?;
    let root = crate::workspace_root();
    let fixtures = root.join("crates/model/tests/fixtures");
    status(
        env.command(&env.python)
            .env("HF_HUB_OFFLINE", "1")
            .arg(root.join("xtask/scripts/parity_fixture.py"))
            .arg("--model")
            .arg(env.minilm_dir())
            .arg("--texts")
            .arg(fixtures.join("parity_texts.json"))
            .arg("--out")
            .arg(fixtures.join("minilm_parity.json"))
            .arg("--pooling-out")
            .arg(fixtures.join("pooling_parity.json")),
    )
}
