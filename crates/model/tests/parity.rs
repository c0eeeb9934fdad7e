//! Parity with sentence-transformers' all-MiniLM-L6-v2: the reference vectors in
//! `fixtures/minilm_parity.json` come from `cargo xtask parity-fixture` (Python), so this test
//! needs only the pretrained weights that `cargo xtask setup` installs.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use anyhow::{Context, Result};
use gear_model::{pretrained, EncoderOptions, SentenceEncoder};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    max_seq_length: usize,
    texts: Vec<String>,
    untruncated_tokens: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
}

fn fixture() -> Result<Fixture> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm_parity.json"
    );
    let text = std::fs::read_to_string(path).with_context(|| path.to_string())?;
    Ok(serde_json::from_str(&text)?)
}

fn encoder(batch_size: usize) -> Result<SentenceEncoder> {
    let dir = pretrained::minilm_dir().context("the parity test needs `cargo xtask setup`")?;
    let opts = EncoderOptions {
        batch_size,
        ..EncoderOptions::default()
    };
    Ok(SentenceEncoder::load(dir, &opts)?)
}

#[test]
fn embeddings_match_sentence_transformers() -> Result<()> {
    let fx = fixture()?;
    assert!(fx.texts.len() >= 30);
    assert!(
        fx.untruncated_tokens.iter().any(|&n| n > fx.max_seq_length),
        "the fixture must hold a text beyond the max length"
    );
    let enc = encoder(8)?;
    assert_eq!(enc.tokenizer().max_len(), fx.max_seq_length);
    let ours = enc.embed_vecs(&fx.texts)?;
    assert_eq!(ours.len(), fx.embeddings.len());
    let mut worst_cos = 1.0f64;
    let mut worst_diff = 0.0f32;
    for (i, (a, b)) in ours.iter().zip(&fx.embeddings).enumerate() {
        assert_eq!(a.len(), b.len(), "text {i}: dimension");
        let cos: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            cos >= 0.99999 && diff <= 1e-4,
            "text {i} ({:?}): cosine {cos}, max abs diff {diff}",
            fx.texts[i].chars().take(40).collect::<String>()
        );
        worst_cos = worst_cos.min(cos);
        worst_diff = worst_diff.max(diff);
    }
    eprintln!(
        "parity over {} texts: min cosine {worst_cos:.8}, max |diff| {worst_diff:.2e}",
        ours.len()
    );
    Ok(())
}

#[test]
fn token_counts_match_the_reference_tokenizer() -> Result<()> {
    let fx = fixture()?;
    let enc = encoder(8)?;
    for (text, &n) in fx.texts.iter().zip(&fx.untruncated_tokens) {
        assert_eq!(enc.tokenizer().count_tokens(text)?, n, "{text:?}");
    }
    Ok(())
}

#[test]
fn a_text_alone_equals_the_same_text_in_a_padded_batch() -> Result<()> {
    let enc = encoder(4)?;
    let short = "Where was Super Bowl 50 played?";
    let long = "word ".repeat(300);
    let others = [
        "Super Bowl 50 was an American football game to determine the champion of the National \
         Football League (NFL) for the 2015 season, played at Levi's Stadium.",
        "The game was played on February 7, 2016, at Levi's Stadium in the San Francisco Bay Area \
         at Santa Clara, California, and was the 50th Super Bowl.",
        long.as_str(),
    ];
    let alone = enc.embed_batch(&[short])?;
    let mut batch: Vec<&str> = others.to_vec();
    batch.insert(1, short);
    let together = enc.embed_batch(&batch)?;
    let diff = (alone.get(0) - together.get(1))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff <= 1e-5, "max |diff| {diff}");
    Ok(())
}

#[test]
fn two_forwards_are_identical() -> Result<()> {
    let enc = encoder(8)?;
    let a = enc.embed(&["dropout must be off at inference", "second text"])?;
    let b = enc.embed(&["dropout must be off at inference", "second text"])?;
    assert!(a.equal(&b));
    Ok(())
}
