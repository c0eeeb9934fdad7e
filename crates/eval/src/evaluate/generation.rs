//! GeAR's generation, scored against the scenario's target.

use std::collections::BTreeMap;

use gear_data::{Scenario, Triple};
use gear_metrics::{exact_match, f1, rouge_l, rouge_n};
use gear_model::{GearModel, GenerationOptions, Search};

use crate::Result;

/// GeAR's greedy generation for `triples` (their own documents), timed, scored 0–100: EM/F1 against
/// the best of the gold answers (QAR, as the official SQuAD script) or ROUGE-1/L F against the
/// unit sentence (RIR). The model's own decoding (free or span) is used.
pub(super) fn generation(
    model: &GearModel,
    triples: &[Triple],
    scenario: Scenario,
    batch: usize,
) -> Result<(BTreeMap<String, f64>, Vec<String>)> {
    let gen = GenerationOptions {
        max_len: model.config().max_target_len,
        search: Search::Greedy,
        use_cache: true,
        decoding: None,
    };
    let (mut a, mut b) = (0.0, 0.0);
    let mut texts = Vec::with_capacity(triples.len());
    let mut seconds = 0.0;
    for chunk in triples.chunks(batch) {
        let qs: Vec<&str> = chunk.iter().map(|t| t.query.as_str()).collect();
        let ds: Vec<&str> = chunk.iter().map(|t| t.document.text.as_str()).collect();
        let started = std::time::Instant::now();
        let outs = model.generate(&qs, &ds, &gen)?;
        seconds += started.elapsed().as_secs_f64();
        for (out, t) in outs.iter().zip(chunk) {
            let target = t.target();
            match scenario {
                Scenario::Qar => {
                    // The official script: the best over every gold answer.
                    let gold = t.gold_texts();
                    a += exact_match(out, &gold);
                    b += f1(out, &gold);
                }
                Scenario::Rir => {
                    a += rouge_n(out, target, 1).f_measure;
                    b += rouge_l(out, target).f_measure;
                }
            }
        }
        texts.extend(outs);
    }
    let n = triples.len() as f64;
    let (ka, kb) = match scenario {
        Scenario::Qar => ("generation.exact_match", "generation.f1"),
        Scenario::Rir => ("generation.rouge1", "generation.rouge_l"),
    };
    Ok((
        BTreeMap::from([
            (ka.to_string(), 100.0 * a / n),
            (kb.to_string(), 100.0 * b / n),
            // Wall-clock time per answer, batches of `batch` pairs (passages encoded, fused and
            // decoded: the whole cost of an answer).
            ("generation.ms_per_answer".to_string(), 1000.0 * seconds / n),
        ]),
        texts,
    ))
}
