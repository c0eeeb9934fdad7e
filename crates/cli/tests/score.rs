//! `gear score squad` prints what the official SQuAD v1.1 script prints.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

#[test]
fn scores_like_the_official_script() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("squad.json");
    std::fs::write(
        &data,
        r#"{"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "The Denver Broncos won.",
        "qas": [
          {"id": "q1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 4}, {"text": "The Broncos", "answer_start": 0}]},
          {"id": "q2", "question": "Who?", "answers": [{"text": "Denver Broncos", "answer_start": 4}]},
          {"id": "q3", "question": "What?", "answers": [{"text": "won", "answer_start": 19}]}
        ]}]}]}"#,
    )
    .unwrap();
    let preds = dir.path().join("preds.json");
    std::fs::write(&preds, r#"{"q1": "the broncos!", "q2": "Denver"}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gear"))
        .args(["score", "squad", "--data"])
        .arg(&data)
        .arg("--predictions")
        .arg(&preds)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // q1 exact (after normalisation), q2 F1 = 2/3, q3 unanswered; Python prints these floats.
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        r#"{"exact_match": 33.333333333333336, "f1": 55.55555555555555}"#
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 question(s) unanswered"));

    std::fs::write(&preds, "[1, 2]").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gear"))
        .args(["score", "squad", "--data"])
        .arg(&data)
        .arg("--predictions")
        .arg(&preds)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("preds.json"));
}
