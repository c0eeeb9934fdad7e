//! bfloat16 inference against float32 on real text: GeAR started from the pretrained MiniLM
//! (`cargo xtask setup`) locating and generating over held-out SQuAD paragraphs
//! (`../shared/data`). bfloat16 runs on any CPU (emulated where the processor lacks bfloat16
//! instructions: slower, with the same rounding), so the tolerances hold everywhere.
//!
//! Tolerances: query and document embeddings keep a cosine ≥ 0.999 to float32's; the sentence
//! ranked first changes for at most 1 question in 10, and every sentence's score moves by at
//! most 0.02 (scores are attention mass in [0, 1]); greedy generation, reading the same
//! probabilities rounded to bfloat16, gives the same first token for at least 8 in 10.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use anyhow::{Context, Result};
use gear_model::{
    pretrained, GearModel, GenerationOptions, LocateOptions, LocateQueries, Precision,
};
use tch::{Device, Tensor};

/// Enough to see a ranking change; few, since emulated bfloat16 runs ≈ 5× slower than float32.
const QUESTIONS: usize = 16;

fn min_row_cosine(a: &Tensor, b: &Tensor) -> f64 {
    let cos = (a * b).sum_dim_intlist(1, false, tch::Kind::Float)
        / (a.norm_scalaropt_dim(2, [1].as_slice(), false)
            * b.norm_scalaropt_dim(2, [1].as_slice(), false));
    cos.min().double_value(&[])
}

#[test]
fn bf16_locates_and_generates_as_fp32_on_real_paragraphs() -> Result<()> {
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/squad-v1.1-dev-a.json"
    );
    let squad = gear_data::import_squad(data).context("../shared/data holds the SQuAD sample")?;
    // Every 17th question: many paragraphs, not the first article's alone.
    let triples: Vec<_> = squad.triples.iter().step_by(17).take(QUESTIONS).collect();
    assert_eq!(triples.len(), QUESTIONS);
    let sentences: Vec<Vec<gear_data::Span>> = triples
        .iter()
        .map(|t| gear_data::split_sentences(&t.document.text))
        .collect();
    let mut inputs = LocateQueries::default();
    for (t, s) in triples.iter().zip(&sentences) {
        inputs.push_pair(&t.query, &t.document.text, s);
    }
    let queries: Vec<&str> = triples.iter().map(|t| t.query.as_str()).collect();
    let documents: Vec<&str> = triples.iter().map(|t| t.document.text.as_str()).collect();
    let generation = GenerationOptions {
        max_len: 3,
        ..GenerationOptions::default()
    };

    let (mut model, _) =
        GearModel::from_bert_checkpoint(pretrained::minilm_dir()?, None, Device::Cpu)?;
    let run = |model: &GearModel| -> Result<_> {
        Ok((
            model.embed_queries(&queries)?,
            model.embed_documents(&documents)?,
            model.locate(&inputs, &LocateOptions::default())?,
            model.generate(&queries, &documents, &generation)?,
        ))
    };
    let (q32, d32, loc32, gen32) = run(&model)?;
    model.set_precision(Precision::Bf16);
    let (q16, d16, loc16, gen16) = run(&model)?;

    let (q_cos, d_cos) = (min_row_cosine(&q32, &q16), min_row_cosine(&d32, &d16));
    let mut changed = 0;
    let mut worst = 0.0f32;
    for (a, b) in loc32.iter().zip(&loc16) {
        changed += usize::from(a.units[0].index != b.units[0].index);
        for u in &a.units {
            let v = b.units.iter().find(|v| v.index == u.index).unwrap();
            worst = worst.max((u.score - v.score).abs());
        }
    }
    let first_word = |s: &str| s.split_whitespace().next().unwrap_or("").to_owned();
    let same_start = gen32
        .iter()
        .zip(&gen16)
        .filter(|(a, b)| first_word(a) == first_word(b))
        .count();
    eprintln!(
        "bf16 vs fp32 over {QUESTIONS} questions: min cosine queries {q_cos:.6}, documents \
         {d_cos:.6}; top sentence changed for {changed}; max score change {worst:.2e}; same \
         first generated word {same_start}"
    );
    assert!(q_cos >= 0.999 && d_cos >= 0.999, "{q_cos} {d_cos}");
    assert!(
        changed * 10 <= QUESTIONS,
        "top sentence changed for {changed}"
    );
    assert!(worst <= 0.02, "a sentence's score moved by {worst}");
    assert!(same_start * 10 >= 8 * QUESTIONS, "{gen32:?}\n{gen16:?}");
    // bfloat16 products really ran.
    assert!((&q32 - &q16).abs().max().double_value(&[]) > 1e-6);
    Ok(())
}
