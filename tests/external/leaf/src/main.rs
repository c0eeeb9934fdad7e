//! The smallest useful program over `gear-data` and `gear-metrics`: read (q, d, u) triples, find
//! each unit's sentence, and score a ranking.

use gear_data::{split_sentences, Triple};
use gear_metrics::{ndcg_at_k, recall_at_k};

fn main() {
    let line = r#"{"query": "crowd, cheered", "scenario": "rir",
        "document": {"id": "d1", "title": "T", "text": "Édith sang. The crowd cheered loudly."},
        "units": [{"start": 12, "end": 37, "text": "The crowd cheered loudly."}]}"#;
    let triple: Triple = serde_json::from_str(line).expect("a valid triple");
    triple.validate().expect("offsets match the text");
    let sentences = split_sentences(&triple.document.text);
    let unit = triple.unit_spans()[0];
    let relevant: Vec<usize> = (0..sentences.len())
        .filter(|&i| sentences[i] == unit)
        .collect();
    let ranked = vec![1, 0];
    println!(
        "sentences {} relevant {:?} recall@1 {:.1} ndcg@2 {:.3}",
        sentences.len(),
        relevant,
        recall_at_k(&ranked, &relevant, 1),
        ndcg_at_k(&ranked, &relevant, 2)
    );
}
