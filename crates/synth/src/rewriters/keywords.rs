//! The offline keyword rewriter: turns a sentence into a search-engine style query — a
//! comma-separated list of key phrases — with a RAKE-style extractor (Rose et al., 2010).
//!
//! Candidate phrases are maximal runs of content words between stop words, punctuation and
//! verb-like words (lower-case words ending in `-ed`, `-ing`, `-ly`); each word scores
//! degree / frequency, proper nouns and numbers get a bonus, and a phrase scores the sum of its
//! words. The sentence's subject (its first candidate phrase) is always kept; the best-scoring
//! other phrases fill the query up to `max_keywords`. Phrases longer than `max_phrase_words` keep
//! their last words (the head noun).

use std::collections::HashMap;

use crate::Result;

use crate::Rewriter;

/// Function words, auxiliaries and very common verbs that never start or continue a key phrase.
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "across", "after", "again", "against", "all", "also", "am", "among",
    "an", "and", "any", "are", "around", "as", "at", "be", "became", "because", "become", "been",
    "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do",
    "does", "doing", "down", "during", "each", "even", "every", "few", "for", "from", "further",
    "gave", "get", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him",
    "himself", "his", "how", "however", "i", "if", "in", "into", "is", "it", "its", "itself",
    "just", "known", "later", "like", "made", "make", "many", "may", "me", "might", "more", "most",
    "much", "must", "my", "near", "no", "nor", "not", "now", "of", "off", "on", "once", "one",
    "only", "or", "other", "our", "out", "over", "own", "same", "she", "should", "since", "so",
    "some", "still", "such", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "through", "to", "too", "under", "until", "up", "upon", "us", "very",
    "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "whose", "why",
    "will", "with", "within", "without", "would", "you", "your", "lies", "holds", "draws", "hang",
    "hangs", "now", "spent", "took", "taken", "includes", "included", "consists", "called", "call",
    "named", "shows", "showed", "built", "held", "lay", "reach", "reached", "served", "carried",
    "won",
];

/// Options of the keyword extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeywordOptions {
    /// Most phrases per query.
    pub max_keywords: usize,
    /// Most words per phrase.
    pub max_phrase_words: usize,
}

impl Default for KeywordOptions {
    fn default() -> Self {
        Self {
            max_keywords: 4,
            max_phrase_words: 3,
        }
    }
}

fn is_stop(word: &str) -> bool {
    let lower = word.to_lowercase();
    STOP_WORDS.contains(&lower.as_str())
}

fn is_verb_like(word: &str) -> bool {
    let starts_lower = word.chars().next().is_some_and(char::is_lowercase);
    let n = word.chars().count();
    starts_lower && n > 4 && (word.ends_with("ed") || word.ends_with("ing") || word.ends_with("ly"))
}

/// Phrases of `sentence` in order: runs of content words.
fn candidate_phrases(sentence: &str) -> Vec<Vec<String>> {
    let mut phrases = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut word = String::new();
    let flush_word =
        |word: &mut String, current: &mut Vec<String>, phrases: &mut Vec<Vec<String>>| {
            let w = word
                .trim_matches(|c: char| c == '\'' || c == '-')
                .to_owned();
            word.clear();
            if w.is_empty() {
                return;
            }
            if is_stop(&w) || is_verb_like(&w) {
                if !current.is_empty() {
                    phrases.push(std::mem::take(current));
                }
            } else {
                current.push(w);
            }
        };
    for c in sentence.chars() {
        if c.is_alphanumeric() || ((c == '\'' || c == '-' || c == '’') && !word.is_empty()) {
            word.push(if c == '’' { '\'' } else { c });
        } else {
            flush_word(&mut word, &mut current, &mut phrases);
            if !c.is_whitespace() && !current.is_empty() {
                // Punctuation ends a phrase.
                phrases.push(std::mem::take(&mut current));
            }
        }
    }
    flush_word(&mut word, &mut current, &mut phrases);
    if !current.is_empty() {
        phrases.push(current);
    }
    phrases
}

/// Extracts up to `options.max_keywords` key phrases of `sentence`, lower-cased, in sentence
/// order, the subject first.
pub fn extract_keywords(sentence: &str, options: &KeywordOptions) -> Vec<String> {
    let phrases: Vec<Vec<String>> = candidate_phrases(sentence)
        .into_iter()
        .map(|p| {
            let skip = p.len().saturating_sub(options.max_phrase_words.max(1));
            p[skip..].to_vec()
        })
        .collect();
    if phrases.is_empty() || options.max_keywords == 0 {
        return Vec::new();
    }
    let mut freq: HashMap<String, f64> = HashMap::new();
    let mut degree: HashMap<String, f64> = HashMap::new();
    for p in &phrases {
        for w in p {
            let key = w.to_lowercase();
            *freq.entry(key.clone()).or_default() += 1.0;
            *degree.entry(key).or_default() += p.len() as f64;
        }
    }
    let word_score = |w: &str| {
        let key = w.to_lowercase();
        let base = degree[&key] / freq[&key];
        let salient = w
            .chars()
            .next()
            .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit());
        base + if salient { 1.0 } else { 0.0 }
    };
    let mut scored: Vec<(usize, f64)> = phrases
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, p)| (i, p.iter().map(|w| word_score(w)).sum()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut chosen = vec![0usize];
    chosen.extend(
        scored
            .iter()
            .map(|(i, _)| *i)
            .take(options.max_keywords - 1),
    );
    chosen.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    for i in chosen {
        let phrase = phrases[i].join(" ").to_lowercase();
        if !out.contains(&phrase) {
            out.push(phrase);
        }
    }
    out
}

/// The offline default rewriter: [`extract_keywords`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KeywordRewriter(pub KeywordOptions);

impl Rewriter for KeywordRewriter {
    fn name(&self) -> &str {
        "keywords"
    }
    fn rewrite(&self, sentence: &str) -> Result<String> {
        Ok(extract_keywords(sentence, &self.0).join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_subject_and_salient_phrases() {
        let s = "A brick bridge across the Brebron was completed in 1988 by the engineer Symdom Southtyth.";
        let k = extract_keywords(s, &KeywordOptions::default());
        assert_eq!(k[0], "brick bridge");
        assert!(k.contains(&"brebron".to_string()), "{k:?}");
        assert!(
            k.contains(&"engineer symdom southtyth".to_string()),
            "{k:?}"
        );
        assert!(k.len() <= 4);
        assert!(
            !k.iter()
                .any(|p| p.contains("completed") || p.split(' ').any(|w| w == "the")),
            "{k:?}"
        );
    }

    #[test]
    fn is_not_a_truncation_of_the_sentence() {
        let s = "Super Bowl 50 was an American football game to determine the champion of the National Football League for the 2015 season.";
        let k = extract_keywords(
            s,
            &KeywordOptions {
                max_keywords: 4,
                max_phrase_words: 3,
            },
        );
        assert_eq!(k[0], "super bowl 50");
        assert!(k.contains(&"national football league".to_string()), "{k:?}");
        assert!(k.iter().any(|p| p.contains("2015")), "{k:?}");
        let joined = k.join(" ");
        assert!(!s.to_lowercase().starts_with(&joined));
    }

    #[test]
    fn degenerate_sentences() {
        assert!(extract_keywords("", &KeywordOptions::default()).is_empty());
        assert!(extract_keywords("It was the one that is.", &KeywordOptions::default()).is_empty());
        assert_eq!(
            extract_keywords("Photosynthesis.", &KeywordOptions::default()),
            ["photosynthesis"]
        );
    }
}
