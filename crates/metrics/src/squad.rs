//! SQuAD v1.1 exact match and F1, reproducing the official evaluation script's answer
//! normalisation: lower-case, drop ASCII punctuation, drop the words `a`/`an`/`the`, collapse
//! white space; scores are maximised over the gold answers.

use std::collections::HashMap;

/// Python's `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// The official normalisation: `white_space_fix(remove_articles(remove_punc(lower(s))))`.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|c| !PUNCTUATION.contains(*c))
        .collect();
    let no_articles = remove_articles(&no_punc);
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)`: whole words only, a word being a run of word
/// characters (alphanumeric or `_`, as Python's Unicode `\w`).
fn remove_articles(text: &str) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn em_one(prediction: &str, truth: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(truth)
}

fn f1_one(prediction: &str, truth: &str) -> f64 {
    let pred = normalize_answer(prediction);
    let gold = normalize_answer(truth);
    let pred: Vec<&str> = pred.split_whitespace().collect();
    let gold: Vec<&str> = gold.split_whitespace().collect();
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &gold {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0i64;
    for t in &pred {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// 1.0 when the normalised prediction equals a normalised gold answer, else 0.0.
pub fn exact_match<S: AsRef<str>>(prediction: &str, gold: &[S]) -> f64 {
    if gold.iter().any(|g| em_one(prediction, g.as_ref())) {
        1.0
    } else {
        0.0
    }
}

/// Token F1 against the best-matching gold answer.
pub fn f1<S: AsRef<str>>(prediction: &str, gold: &[S]) -> f64 {
    gold.iter()
        .map(|g| f1_one(prediction, g.as_ref()))
        .fold(0.0, f64::max)
}

/// Corpus-level SQuAD scores on the 0–100 scale.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SquadScores {
    /// Mean exact match × 100.
    pub exact_match: f64,
    /// Mean F1 × 100.
    pub f1: f64,
}

/// Scores over `(prediction, gold answers)` pairs; a missing prediction (`None`) scores 0, as
/// the official script treats unanswered questions.
pub fn squad_scores<'a, S: AsRef<str> + 'a>(
    items: impl IntoIterator<Item = (Option<&'a str>, &'a [S])>,
) -> SquadScores {
    let (mut em, mut f, mut n) = (0.0, 0.0, 0usize);
    for (prediction, gold) in items {
        n += 1;
        if let Some(p) = prediction {
            em += exact_match(p, gold);
            f += f1(p, gold);
        }
    }
    let n = n.max(1) as f64;
    SquadScores {
        exact_match: 100.0 * em / n,
        f1: 100.0 * f / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_the_official_script() {
        // Expected values are what the official v1.1 `normalize_answer` returns in Python.
        assert_eq!(normalize_answer("The  Denver Broncos!"), "denver broncos");
        assert_eq!(normalize_answer("an apple, a pear"), "apple pear");
        assert_eq!(normalize_answer("theatre"), "theatre");
        assert_eq!(normalize_answer("the-end"), "theend");
        assert_eq!(normalize_answer("«The» Mind"), "« » mind");
        assert_eq!(normalize_answer("Ünïcödé  A"), "ünïcödé");
        assert_eq!(normalize_answer("3.5 million"), "35 million");
        assert_eq!(normalize_answer(""), "");
        assert_eq!(normalize_answer("A"), "");
    }

    #[test]
    fn exact_match_and_f1_max_over_gold() {
        let gold = ["Denver Broncos", "The Broncos"];
        assert_eq!(exact_match("broncos", &gold), 1.0);
        assert_eq!(exact_match("Denver", &gold), 0.0);
        // "denver" vs "denver broncos": p = 1, r = 1/2 → 2/3
        assert!((f1("Denver", &gold) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(f1("", &gold), 0.0);
        assert_eq!(exact_match("", &gold), 0.0);
        // An empty gold answer matches only an empty prediction in EM; F1 is 0 (official v1.1).
        assert_eq!(exact_match("", &["the"]), 1.0);
        assert_eq!(f1("", &["the"]), 0.0);
        // Repeated tokens count with multiplicity.
        assert!((f1("the the cat cat", &["cat"]) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn corpus_scores_count_missing_predictions_as_zero() {
        let g1 = ["Paris".to_string()];
        let g2 = ["Rome".to_string()];
        let s = squad_scores([(Some("paris"), &g1[..]), (None, &g2[..])]);
        assert_eq!(s.exact_match, 50.0);
        assert_eq!(s.f1, 50.0);
    }
}
