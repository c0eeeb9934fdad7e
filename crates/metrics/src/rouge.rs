//! ROUGE-N and ROUGE-L F-measures over lower-cased alphanumeric tokens (the tokenisation of
//! Google's `rouge-score` package without stemming).

use std::collections::HashMap;

use serde::Serialize;

/// Precision, recall and F-measure of one ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RougeScore {
    /// Matched / candidate units.
    pub precision: f64,
    /// Matched / reference units.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f_measure: f64,
}

impl RougeScore {
    fn from_counts(matched: usize, candidate: usize, reference: usize) -> Self {
        let precision = if candidate == 0 {
            0.0
        } else {
            matched as f64 / candidate as f64
        };
        let recall = if reference == 0 {
            0.0
        } else {
            matched as f64 / reference as f64
        };
        let f_measure = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Self {
            precision,
            recall,
            f_measure,
        }
    }
}

/// Lower-cases and splits on every character that is not alphanumeric.
pub fn rouge_tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if n > 0 && tokens.len() >= n {
        for w in tokens.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// ROUGE-N: clipped n-gram overlap between `candidate` and `reference`.
pub fn rouge_n(candidate: &str, reference: &str, n: usize) -> RougeScore {
    let (c, r) = (rouge_tokens(candidate), rouge_tokens(reference));
    let (cn, rn) = (ngrams(&c, n), ngrams(&r, n));
    let matched = cn
        .iter()
        .map(|(g, &k)| k.min(rn.get(g).copied().unwrap_or(0)))
        .sum();
    RougeScore::from_counts(matched, cn.values().sum(), rn.values().sum())
}

/// ROUGE-L: longest common subsequence of tokens.
pub fn rouge_l(candidate: &str, reference: &str) -> RougeScore {
    let (c, r) = (rouge_tokens(candidate), rouge_tokens(reference));
    let mut prev = vec![0usize; r.len() + 1];
    let mut cur = vec![0usize; r.len() + 1];
    for a in &c {
        for (j, b) in r.iter().enumerate() {
            cur[j + 1] = if a == b {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    RougeScore::from_counts(prev[r.len()], c.len(), r.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn by_hand() {
        let cand = "the cat sat on the mat";
        let refr = "the cat lay on the red mat";
        // unigrams: the×2, cat, on, mat match = 5; |c| = 6, |r| = 7
        let r1 = rouge_n(cand, refr, 1);
        close(r1.precision, 5.0 / 6.0);
        close(r1.recall, 5.0 / 7.0);
        close(
            r1.f_measure,
            2.0 * (5.0 / 6.0) * (5.0 / 7.0) / (5.0 / 6.0 + 5.0 / 7.0),
        );
        // bigrams: "the cat", "on the" match = 2 of 5 and 6
        let r2 = rouge_n(cand, refr, 2);
        close(r2.precision, 2.0 / 5.0);
        close(r2.recall, 2.0 / 6.0);
        // LCS: the cat on the mat = 5
        let rl = rouge_l(cand, refr);
        close(rl.precision, 5.0 / 6.0);
        close(rl.recall, 5.0 / 7.0);
    }

    #[test]
    fn tokenisation_and_empty_inputs() {
        assert_eq!(
            rouge_tokens("Super-Bowl 50, Levi's!"),
            ["super", "bowl", "50", "levi", "s"]
        );
        close(rouge_n("", "a b", 1).f_measure, 0.0);
        close(rouge_l("a b", "").f_measure, 0.0);
        close(rouge_l("A B C", "a b c").f_measure, 1.0);
    }
}
