//! GeAR's generation, scored against the scenario's target.

use std::collections::BTreeMap;

use gear_data::{Scenario, Triple};
use gear_metrics::{exact_match, f1, rouge_l, rouge_n};
use gear_model::{GearModel, GenerationOptions, Search};

use crate::Result;

/// GeAR's greedy generation for `triples` (their own documents), scored 0–100: EM/F1 against
/// the answer (QAR) or ROUGE-1/L F against the unit sentence (RIR).
pub(super) fn generation(
    model: &GearModel,
    triples: &[Triple],
    scenario: Scenario,
    batch: usize,
) -> Result<BTreeMap<String, f64>> {
    let gen = GenerationOptions {
        max_len: model.config().max_target_len,
        search: Search::Greedy,
        use_cache: true,
    };
    let (mut a, mut b) = (0.0, 0.0);
    for chunk in triples.chunks(batch) {
        let qs: Vec<&str> = chunk.iter().map(|t| t.query.as_str()).collect();
        let ds: Vec<&str> = chunk.iter().map(|t| t.document.text.as_str()).collect();
        for (out, t) in model.generate(&qs, &ds, &gen)?.iter().zip(chunk) {
            let target = t.target();
            match scenario {
                Scenario::Qar => {
                    a += exact_match(out, &[target]);
                    b += f1(out, &[target]);
                }
                Scenario::Rir => {
                    a += rouge_n(out, target, 1).f_measure;
                    b += rouge_l(out, target).f_measure;
                }
            }
        }
    }
    let n = triples.len() as f64;
    let (ka, kb) = match scenario {
        Scenario::Qar => ("generation.exact_match", "generation.f1"),
        Scenario::Rir => ("generation.rouge1", "generation.rouge_l"),
    };
    Ok(BTreeMap::from([
        (ka.to_string(), 100.0 * a / n),
        (kb.to_string(), 100.0 * b / n),
    ]))
}
