//! The cross-encoder reranker: built over the pretrained MiniLM, saved in Hugging Face's
//! sequence-classification layout, loaded back with identical scores.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use gear_model::{pretrained, CrossEncoder};
use tch::Device;

#[test]
fn a_saved_reranker_loads_back_with_identical_scores() {
    let dir = pretrained::minilm_dir().unwrap();
    tch::manual_seed(4);
    let model = CrossEncoder::from_bert_checkpoint(&dir, 128, Device::Cpu).unwrap();
    let pairs = [
        (
            "who designed the bridge",
            "The bridge was designed by a Scottish engineer.",
        ),
        ("who designed the bridge", "Bread is sold at the market."),
        (
            "river",
            "The river floods every spring, and the old town by its bank floods too.",
        ),
    ];
    // Length-sorted forwards return scores in input order: batch 1 and batch 3 agree.
    let one = model.score(&pairs, 1).unwrap();
    let all = model.score(&pairs, 3).unwrap();
    for (a, b) in one.iter().zip(&all) {
        assert!((a - b).abs() < 1e-4, "{one:?} vs {all:?}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reranker");
    model.save(&out).unwrap();
    model.save(&out).unwrap(); // over an existing folder
    let names: Vec<String> = gear_model::read_tensors(out.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.iter().any(|n| n == "classifier.weight"));
    assert!(names
        .iter()
        .all(|n| n.starts_with("bert.") || n.starts_with("classifier.")));
    let back = CrossEncoder::load(&out, Device::Cpu).unwrap();
    assert_eq!(back.score(&pairs, 3).unwrap(), all);
    let leftovers = std::fs::read_dir(tmp.path()).unwrap().count();
    assert_eq!(
        leftovers, 1,
        "no temporary folder left beside the saved one"
    );

    let err = CrossEncoder::load(tmp.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}
