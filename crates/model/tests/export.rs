//! `GearModel::export_sentence_transformers`: the exported folder gives the checkpoint's own
//! embeddings in sentence-transformers (Python, the venv `cargo xtask setup` made) and in
//! `SentenceEncoder`, for both sides of a bi-encoder whose encoders differ; and a checkpoint
//! folder loads directly as a `SentenceEncoder` (its document encoder).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;
use gear_model::{pretrained, EncoderOptions, EncoderSide, GearConfig, GearModel, SentenceEncoder};
use tch::Device;

fn python() -> PathBuf {
    let home = std::env::var_os("GEAR_HOME")
        .expect("GEAR_HOME is unset: run the tests through `cargo xtask test`");
    PathBuf::from(home).join("venv/bin/python")
}

const TEXTS: &[&str] = &[
    "where is the eiffel tower",
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.",
    "Ünïcödé, 中文 and emoji 🎉 too",
    "x",
];

#[test]
fn an_exported_bi_encoder_embeds_the_same_in_sentence_transformers() -> Result<()> {
    let dir = pretrained::minilm_dir()?;
    let mut config = GearConfig::for_encoder(gear_model::BertConfig::from_json_file(
        dir.join("config.json"),
    )?);
    config.share_encoders = false;
    config.max_query_len = 32;
    let (mut model, _) = GearModel::from_bert_checkpoint(&dir, Some(config), Device::Cpu)?;
    // Move both encoders away from MiniLM (and from each other), as training would.
    tch::manual_seed(3);
    tch::no_grad(|| {
        for (name, mut t) in model.var_store_mut().variables() {
            if name.ends_with(".weight") && t.dim() == 2 {
                let _ = t.g_add_(&(t.randn_like() * 0.02));
            }
        }
    });
    let tmp = tempfile::tempdir()?;
    for (side, name) in [
        (EncoderSide::Query, "query"),
        (EncoderSide::Document, "document"),
    ] {
        let out = tmp.path().join(name);
        model.export_sentence_transformers(&out, side)?;
        let ours = match side {
            EncoderSide::Query => model.embed_queries(TEXTS)?,
            EncoderSide::Document => model.embed_documents(TEXTS)?,
        };
        let ours: Vec<Vec<f32>> = (0..TEXTS.len() as i64)
            .map(|i| Vec::try_from(ours.get(i)).unwrap())
            .collect();

        // Our own loader reads the folder back.
        let back = SentenceEncoder::load(&out, &EncoderOptions::default())?.embed_vecs(TEXTS)?;
        // sentence-transformers reads it too.
        let script = concat!(
            "import json, sys\nfrom sentence_transformers import SentenceTransformer\n",
            "m = SentenceTransformer(sys.argv[1], device='cpu')\n",
            "print(json.dumps(m.encode(json.loads(sys.argv[2]), convert_to_numpy=True).tolist()))"
        );
        let run = Command::new(python())
            .env("HF_HUB_OFFLINE", "1")
            .args(["-c", script])
            .arg(&out)
            .arg(serde_json::to_string(TEXTS)?)
            .output()?;
        assert!(
            run.status.success(),
            "sentence-transformers could not load the export: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let theirs: Vec<Vec<f32>> = serde_json::from_slice(&run.stdout)?;
        for (label, other) in [
            ("SentenceEncoder", &back),
            ("sentence-transformers", &theirs),
        ] {
            let worst = ours
                .iter()
                .zip(other.iter())
                .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
                .fold(0.0f32, f32::max);
            eprintln!("{name} side, {label}: max |diff| {worst:.2e}");
            assert!(worst <= 1e-5, "{name} side, {label}: max |diff| {worst}");
        }
    }
    // A checkpoint folder loads directly as its document encoder.
    let ck = tmp.path().join("checkpoint");
    model.save(&ck)?;
    let direct = SentenceEncoder::load(&ck, &EncoderOptions::default())?.embed(TEXTS)?;
    let diff = (direct - model.embed_documents(TEXTS)?)
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        diff <= 1e-6,
        "checkpoint as SentenceEncoder: max |diff| {diff}"
    );

    // The two sides are different encoders here, so the export picked the right one.
    let q = SentenceEncoder::load(tmp.path().join("query"), &EncoderOptions::default())?;
    let d = SentenceEncoder::load(tmp.path().join("document"), &EncoderOptions::default())?;
    let diff = (q.embed(TEXTS)? - d.embed(TEXTS)?)
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        diff > 1e-3,
        "query and document exports are the same ({diff})"
    );
    Ok(())
}
