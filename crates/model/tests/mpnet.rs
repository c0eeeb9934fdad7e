//! all-mpnet-base-v2 (MPNet) read as sentence-transformers reads it, compared with
//! sentence-transformers itself (Python, the venv `cargo xtask setup` made) on the parity texts;
//! the same folder initialises GeAR, whose document side then embeds exactly as the folder does;
//! and a GeAR model on MPNet exports back to a sentence-transformers folder. Needs
//! `cargo xtask setup --model all-mpnet-base-v2` (which `cargo xtask test` runs).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use gear_model::{pretrained, EncoderOptions, GearModel, ModelType, SentenceEncoder};

fn python() -> PathBuf {
    pretrained::gear_home().unwrap().join("venv/bin/python")
}

fn texts() -> Result<Vec<String>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/parity_texts.json"
    );
    Ok(serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| path.to_string())?,
    )?)
}

fn mpnet() -> PathBuf {
    pretrained::mpnet_dir()
        .unwrap_or_else(|e| panic!("{e} (cargo xtask test installs it before running the tests)"))
}

/// sentence-transformers' embeddings of `texts` with the model folder `dir`.
fn reference(dir: &std::path::Path, texts: &[String]) -> Result<Vec<Vec<f32>>> {
    let script = concat!(
        "import json, sys\nfrom sentence_transformers import SentenceTransformer\n",
        "m = SentenceTransformer(sys.argv[1], device='cpu')\n",
        "texts = json.load(open(sys.argv[2]))\n",
        "print(json.dumps(m.encode(texts, batch_size=8, convert_to_numpy=True).tolist()))"
    );
    let tmp = tempfile::NamedTempFile::new()?;
    std::fs::write(tmp.path(), serde_json::to_string(texts)?)?;
    let run = Command::new(python())
        .env("HF_HUB_OFFLINE", "1")
        .args(["-c", script])
        .arg(dir)
        .arg(tmp.path())
        .output()?;
    assert!(
        run.status.success(),
        "sentence-transformers failed on {}: {}",
        dir.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    Ok(serde_json::from_slice(&run.stdout)?)
}

fn worst_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0f32, f32::max)
}

#[test]
fn all_mpnet_base_v2_matches_sentence_transformers() -> Result<()> {
    let texts = texts()?;
    assert!(texts.len() >= 30);
    let dir = mpnet();
    let enc = SentenceEncoder::load(&dir, &EncoderOptions::default())?;
    assert_eq!(enc.config().model_type, ModelType::Mpnet);
    assert_eq!(enc.config().num_hidden_layers, 12);
    // sentence_bert_config.json's limit, and a text beyond it (truncated the same way).
    assert_eq!(enc.tokenizer().max_len(), 384);
    assert!(texts
        .iter()
        .any(|t| enc.tokenizer().count_tokens(t).unwrap() > 384));
    // Every checkpoint tensor but the pooler is used.
    assert!(enc
        .load_report()
        .unused
        .iter()
        .all(|n| n.starts_with("pooler.") || n == "embeddings.position_ids"));
    let ours = enc.embed_vecs(&texts)?;
    let theirs = reference(&dir, &texts)?;
    let worst = worst_diff(&ours, &theirs);
    eprintln!(
        "all-mpnet-base-v2, {} texts: max |diff| {worst:.2e}",
        texts.len()
    );
    assert!(worst <= 1e-4, "max |diff| {worst}");
    Ok(())
}

#[test]
fn gear_initialised_from_mpnet_embeds_as_the_folder_and_exports_back() -> Result<()> {
    let texts: Vec<String> = texts()?.into_iter().take(8).collect();
    let dir = mpnet();
    let encoder = gear_model::BertConfig::from_json_file(dir.join("config.json"))?;
    let mut config = gear_model::GearConfig::for_encoder(encoder);
    config.decoder.num_hidden_layers = 1;
    config.max_document_len = 384;
    tch::manual_seed(0);
    let (model, report) = GearModel::from_bert_checkpoint(&dir, Some(config), tch::Device::Cpu)?;
    // The relative-position bias reached both encoders; only GeAR's new blocks were created.
    assert!(report
        .loaded
        .contains("document_encoder.encoder.relative_attention_bias.weight"));
    assert!(report
        .created
        .iter()
        .all(|n| gear_model::is_new_parameter(n)));
    let folder = SentenceEncoder::load(&dir, &EncoderOptions::default())?.embed(&texts)?;
    let diff = (model.embed_documents(&texts)? - folder)
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff <= 1e-5, "GeAR's E_d vs the folder: max |diff| {diff}");

    // Back out as a sentence-transformers folder that sentence-transformers reads.
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("st");
    model.export_sentence_transformers(&out, gear_model::EncoderSide::Document)?;
    let ours: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(model.embed_documents(&texts)?)?;
    let theirs = reference(&out, &texts)?;
    let worst = worst_diff(&ours, &theirs);
    eprintln!("exported MPNet GeAR document side: max |diff| {worst:.2e}");
    assert!(worst <= 1e-4, "max |diff| {worst}");
    Ok(())
}
