//! The one evaluation protocol end to end on a tiny random GeAR: every method's figures on a
//! SQuAD file and on RIR triples, with the scenario's measures.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::tiny_gear;
use gear_data::Document;
use gear_synth::generate_corpus;

#[test]
fn squad_evaluation_reports_every_method_and_layer() {
    let dir = tempfile::tempdir().unwrap();
    let squad = dir.path().join("tiny-squad.json");
    let docs = generate_corpus(2, 11);
    let d0 = &docs[0].text;
    let d1 = &docs[1].text;
    let start0 = d0.find("river").or_else(|| d0.find("the")).unwrap();
    let start1 = d1.chars().count() / 2;
    // Each answer is the word at its start, so the import's start check holds.
    let word_at = |text: &str, c: usize| -> String {
        text.chars()
            .skip(c)
            .take_while(|ch| !ch.is_whitespace())
            .collect()
    };
    let (x, y) = (
        word_at(d0, d0[..start0].chars().count()),
        word_at(d1, start1),
    );
    let json = serde_json::json!({"data": [{"title": "T", "paragraphs": [
        {"context": d0, "qas": [{"id": "a", "question": "where is the river bridge", "answers": [{"text": x, "answer_start": d0[..start0].chars().count()}]}]},
        {"context": d1, "qas": [{"id": "b", "question": "the mill", "answers": [{"text": y, "answer_start": start1}]}]}
    ]}]});
    std::fs::write(&squad, json.to_string()).unwrap();
    let model = tiny_gear(&[d0, d1, "where is the river bridge", "the mill"], 400, 16);
    let data = gear_data::import_squad(&squad).unwrap();
    let options = gear_eval::EvalOptions {
        layers: vec![1, 2],
        cross_encoder: true,
        batch_size: 4,
        ..gear_eval::EvalOptions::for_scenario(gear_data::Scenario::Qar, 2)
    };
    let r = gear_eval::evaluate(&model, &gear_eval::EvalSet::from_squad(data), &options).unwrap();
    assert_eq!((r.questions, r.passages), (2, 2));
    for (method, keys) in [
        (
            "gear",
            &[
                "global.recall@5",
                "global.map@5",
                "local.recall@1",
                "local.map@1",
                "generation.exact_match",
                "generation.f1",
            ][..],
        ),
        (
            "bi-encoder",
            &[
                "global.recall@5",
                "global.map@5",
                "local.recall@1",
                "local.map@1",
            ][..],
        ),
        ("cross-encoder", &["local.recall@1", "local.map@1"][..]),
    ] {
        for k in keys {
            let v = r.methods[method][*k];
            assert!((0.0..=100.0).contains(&v), "{method} {k} = {v}");
        }
    }
    assert_eq!(r.layers.keys().copied().collect::<Vec<_>>(), [1, 2]);
    // Global retrieval over two passages always finds the gold one in the top 5.
    assert_eq!(r.methods["bi-encoder"]["global.recall@5"], 1.0);
}

/// The one protocol on RIR triples: unit sentences are relevant by their start, R@1 and R@3 are
/// both reported (R@3 is 1 when a document has at most three sentences), generation is scored
/// with ROUGE (not EM/F1), and a unit starting between sentences is counted as unlocatable.
#[test]
fn rir_triples_are_evaluated_by_the_same_protocol() {
    let text = "The mill stands by the river. Its wheel turned for a century. Trains came later.";
    let model = tiny_gear(&[text, "wheel, century", "mill, river"], 400, 16);
    let doc = Document {
        id: "d".into(),
        title: "Mill".into(),
        text: text.into(),
    };
    let triple = |query: &str, start: usize, end: usize| gear_data::Triple {
        id: None,
        query: query.into(),
        document: doc.clone(),
        units: vec![gear_data::Unit {
            start,
            end,
            text: text[start..end].into(),
        }],
        answer: None,
        alternative_answers: Vec::new(),
        scenario: gear_data::Scenario::Rir,
        negatives: Vec::new(),
    };
    let second = text.find("Its").unwrap();
    let data = gear_eval::EvalSet::from_triples(vec![
        triple("wheel, century", second, text.find("Trains").unwrap() - 1),
        // Starts on the space between the first two sentences: no sentence holds it.
        triple("mill, river", second - 1, second + 3),
    ]);
    let options = gear_eval::EvalOptions::for_scenario(gear_data::Scenario::Rir, 2);
    let r = gear_eval::evaluate(&model, &data, &options).unwrap();
    assert_eq!(
        (r.questions, r.passages, r.unlocatable, r.generated),
        (2, 1, 1, 2)
    );
    for method in ["gear", "bi-encoder", "bm25"] {
        let m = &r.methods[method];
        // Three sentences: the locatable query's unit is always in the top 3, the other never.
        assert_eq!(m["local.recall@3"], 0.5, "{method}");
        assert!(
            m["local.recall@1"] <= 0.5 && m["local.map@1"] <= 0.5,
            "{method}"
        );
    }
    let g = &r.methods["gear"];
    assert!(g.contains_key("generation.rouge1") && g.contains_key("generation.rouge_l"));
    assert!(!g.contains_key("generation.f1"));
    assert!(r.methods.contains_key("hybrid"));
    // One document: global retrieval always finds it.
    assert_eq!(g["global.recall@5"], 1.0);
    // The same set through `gear eval triples`' options without baselines: GeAR alone.
    let alone = gear_eval::EvalOptions {
        baselines: false,
        ..options
    };
    let r2 = gear_eval::evaluate(&model, &data, &alone).unwrap();
    assert_eq!(r2.methods.keys().collect::<Vec<_>>(), ["gear"]);
    assert_eq!(r2.methods["gear"]["local.recall@3"], 0.5);
}
