//! `gear eval squad --pretrained` against an independent computation: the fixture was written by
//! `xtask/scripts/squad_baseline.py` (sentence-transformers, same protocol, fed the sentence spans
//! `gear eval squad --export-sentences` wrote) — see docs/inference.md. Needs `../shared/data`
//! (CI has it) and fails without it rather than passing silently.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;

use gear_eval::{evaluate, EvalOptions, EvalSet};
use gear_infer::{load_model, ModelSource};
use tch::Device;

#[test]
fn pretrained_bi_encoder_matches_sentence_transformers_on_squad() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/squad-v1.1-dev-a.json");
    assert!(
        data.is_file(),
        "{} is missing: this test needs the shared SQuAD data (../shared/data beside the repository)",
        data.display()
    );
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/squad-v1.1-dev-a.minilm.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let (model, _) = load_model(&ModelSource::Pretrained, Device::Cpu).unwrap();
    let import = gear_data::import_squad(&data).unwrap();
    let options = EvalOptions {
        gear: false,
        ..EvalOptions::for_scenario(gear_data::Scenario::Qar, 0)
    };
    let report = evaluate(&model, &EvalSet::from_squad(import), &options).unwrap();
    assert_eq!(
        report.questions as u64,
        fixture["questions"].as_u64().unwrap()
    );
    assert_eq!(
        report.passages as u64,
        fixture["passages"].as_u64().unwrap()
    );
    let ours = &report.methods["bi-encoder"];
    for key in [
        "global.recall@5",
        "global.map@5",
        "local.recall@1",
        "local.map@1",
    ] {
        let want = fixture[key].as_f64().unwrap();
        let got = ours[key];
        eprintln!("{key}: gear {got:.4}, sentence-transformers {want:.4}");
        assert!((got - want).abs() <= 0.005, "{key}: {got} vs {want}");
    }
}
