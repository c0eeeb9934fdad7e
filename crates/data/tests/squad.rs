//! The sentence splitter and SQuAD importer on the real SQuAD files in `../shared/data` (CI has
//! it; the tests fail without it rather than passing silently).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;

use gear_data::{import_squad, split_sentences, TripleReader};

fn shared(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: these tests need the shared SQuAD data (../shared/data beside the repository)",
        path.display()
    );
    path
}

#[test]
fn every_gold_answer_start_falls_in_exactly_one_sentence() {
    let path = shared("squad-v1.1-dev-a.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (mut passages, mut answers, mut sentences) = (0, 0, 0);
    for article in json["data"].as_array().unwrap() {
        for para in article["paragraphs"].as_array().unwrap() {
            let text = para["context"].as_str().unwrap();
            let spans = split_sentences(text);
            passages += 1;
            sentences += spans.len();
            assert!(!spans.is_empty());
            for w in spans.windows(2) {
                assert!(w[0].end <= w[1].start, "overlap in {text:?}");
            }
            for s in &spans {
                assert!(!s.is_empty());
                let piece = s.slice(text).unwrap();
                assert_eq!(piece, piece.trim());
            }
            // Every non-space character is covered.
            let covered: usize = spans
                .iter()
                .map(|s| {
                    s.slice(text)
                        .unwrap()
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .count()
                })
                .sum();
            assert_eq!(covered, text.chars().filter(|c| !c.is_whitespace()).count());
            let byte_at: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
            for qa in para["qas"].as_array().unwrap() {
                for ans in qa["answers"].as_array().unwrap() {
                    let start = byte_at[ans["answer_start"].as_u64().unwrap() as usize];
                    let n = spans.iter().filter(|s| s.contains(start)).count();
                    assert_eq!(n, 1, "answer {:?} at {start} in {text:?}", ans["text"]);
                    answers += 1;
                }
            }
        }
    }
    assert_eq!(passages, 913);
    eprintln!("{passages} passages, {sentences} sentences, {answers} gold answers each in exactly one sentence");
}

#[test]
fn squad_v2_import_counts_and_round_trips() {
    let path = shared("squad-v2.0-train-first10.json");
    let import = import_squad(&path).unwrap();
    let s = import.stats;
    assert_eq!((s.articles, s.passages, s.questions), (10, 694, 4719));
    assert_eq!(s.answerable, 4371);
    assert_eq!(s.unanswerable, 348);
    assert_eq!(import.corpus.len(), 694);
    // The first gold answer lies inside one of its units unless the splitter cut through it.
    let mut cut = Vec::new();
    for t in &import.triples {
        t.validate().unwrap();
        let answer = t.answer.as_deref().unwrap().trim();
        if !t.units.iter().any(|u| u.text.contains(answer)) {
            cut.push(answer.to_owned());
        }
    }
    eprintln!(
        "answers cut by a sentence boundary: {} of {}: {cut:?}",
        cut.len(),
        import.triples.len()
    );
    assert!(
        cut.len() * 200 <= import.triples.len(),
        "more than 0.5% of answers cut: {cut:?}"
    );
    // Written and read back through the triple format unchanged.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.jsonl");
    let mut w = gear_data::JsonlWriter::create(&out).unwrap();
    for t in &import.triples {
        w.write(t).unwrap();
    }
    w.finish().unwrap();
    let back: Vec<_> = TripleReader::open(&out)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back, import.triples);
}

#[test]
fn squad_v1_import_marks_several_sentences_for_spread_answers() {
    let path = shared("squad-v1.1-dev-a.json");
    let import = import_squad(&path).unwrap();
    assert_eq!(import.stats.questions, 4961);
    assert_eq!(import.stats.answerable, 4961);
    assert!(
        import.stats.multi_unit > 0,
        "some dev questions have gold answers in different sentences"
    );
    assert!(import.triples.iter().all(|t| !t.units.is_empty()));
}

#[test]
fn answers_that_do_not_point_at_their_text_and_empty_questions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = |question: &str, start: usize| {
        serde_json::json!({"data": [{"title": "T", "paragraphs": [{
            "context": "The river is long. It flows north.",
            "qas": [{"id": "q1", "question": question,
                     "answers": [{"text": "north", "answer_start": start}]}]}]}]})
        .to_string()
    };
    let path = dir.path().join("s.json");
    std::fs::write(&path, file("Which way?", 28)).unwrap();
    assert_eq!(import_squad(&path).unwrap().triples.len(), 1);

    std::fs::write(&path, file("Which way?", 27)).unwrap();
    let err = import_squad(&path).unwrap_err().to_string();
    assert!(
        err.contains("qas[0].answers[0].answer_start") && err.contains("not at the answer"),
        "{err}"
    );
    std::fs::write(&path, file("  ", 28)).unwrap();
    let err = import_squad(&path).unwrap_err().to_string();
    assert!(err.contains("qas[0].question`: is empty"), "{err}");
}
