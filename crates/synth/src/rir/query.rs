//! Steps 4 and 5 of the RIR pipeline: rewriting picked sentences into queries (several at once)
//! and post-processing the keywords, with the per-document generator that keeps both
//! reproducible.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

use super::Rewriter;

/// Step 5: de-duplicated keywords in shuffled order, joined by `", "`.
pub fn postprocess_query(raw: &str, rng: &mut ChaCha8Rng) -> String {
    let mut keywords: Vec<String> = Vec::new();
    for k in raw.split([',', '\n', ';']) {
        let k = k
            .trim()
            .trim_matches(|c: char| c == '"' || c == '\'' || c == '.' || c == '-' || c == '*')
            .trim();
        let k = k.split_whitespace().collect::<Vec<_>>().join(" ");
        if !k.is_empty() && !keywords.iter().any(|e| e.eq_ignore_ascii_case(&k)) {
            keywords.push(k);
        }
    }
    // Drop a keyword whose words all appear, in order, inside a longer one.
    let lowered: Vec<String> = keywords
        .iter()
        .map(|k| format!(" {} ", k.to_lowercase()))
        .collect();
    let mut kept: Vec<String> = keywords
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            !lowered
                .iter()
                .enumerate()
                .any(|(j, o)| j != *i && o.len() > lowered[*i].len() && o.contains(&lowered[*i]))
        })
        .map(|(_, k)| k.clone())
        .collect();
    kept.shuffle(rng);
    kept.join(", ")
}

/// The per-document generator.
pub fn document_rng(seed: u64, id: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ gear_data::stable_hash(id))
}

/// Step 4: the rewriter's output for every sentence, in order, `concurrency` at a time.
pub(super) fn rewrite_all(
    rewriter: &dyn Rewriter,
    sentences: &[&str],
    concurrency: usize,
) -> Result<Vec<String>> {
    if concurrency <= 1 || sentences.len() <= 1 {
        return sentences.iter().map(|s| rewriter.rewrite(s)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<String>>>> = sentences
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..concurrency.min(sentences.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(s) = sentences.get(i) else { break };
                let r = rewriter.rewrite(s);
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(Error::Rewrite {
                    rewriter: rewriter.name().into(),
                    message: "worker thread panicked".into(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postprocessing_dedupes_and_reorders_deterministically() {
        let raw = "Super Bowl 50, super bowl 50, Denver Broncos, Broncos, \"Levi's Stadium\".";
        let a = postprocess_query(raw, &mut document_rng(1, "d"));
        let b = postprocess_query(raw, &mut document_rng(1, "d"));
        assert_eq!(a, b);
        let mut parts: Vec<&str> = a.split(", ").collect();
        parts.sort_unstable();
        assert_eq!(parts, ["Denver Broncos", "Levi's Stadium", "Super Bowl 50"]);
        assert_eq!(postprocess_query(" , ,", &mut document_rng(1, "d")), "");
    }
}
