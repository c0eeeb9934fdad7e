//! Steps 1 and 2 of the RIR pipeline: pre-processing a document and finding its candidate units
//! (see [the pipeline's documentation](super)).

use std::collections::HashSet;

use gear_data::{split_sentences, Document, Span, Tokenizer};

use crate::Result;

use super::{RirConfig, RirStats};

const PRONOUNS: &[&str] = &[
    "this", "these", "it", "that", "those", "they", "he", "she", "we", "you", "i",
];

/// A pre-processed document: kept sentences joined by one space, and their spans in that text.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// The document with its new text.
    pub document: Document,
    /// Sentence spans (bytes) in `document.text`.
    pub sentences: Vec<Span>,
    /// Token count of each sentence.
    pub tokens: Vec<usize>,
}

fn content_tokens(tokenizer: &Tokenizer, text: &str) -> Result<usize> {
    // Without [CLS] and [SEP].
    Ok(tokenizer.count_tokens(text)?.saturating_sub(2))
}

fn is_repetitive(sentence: &str) -> bool {
    if sentence.contains("\n\n") || sentence.contains("\r\n\r\n") {
        return true;
    }
    let words: Vec<String> = sentence
        .split_whitespace()
        .map(|w| w.to_lowercase())
        .collect();
    let mut seen = HashSet::new();
    words.windows(3).any(|w| !seen.insert(w.to_vec()))
}

/// Step 1. `None` when the document is dropped (the reason is counted in `stats`).
pub fn preprocess(
    doc: &Document,
    tokenizer: &Tokenizer,
    cfg: &RirConfig,
    stats: &mut RirStats,
) -> Result<Option<Preprocessed>> {
    let mut text = String::new();
    let mut sentences = Vec::new();
    let mut tokens = Vec::new();
    let mut total = 0usize;
    let mut seen = HashSet::new();
    for span in split_sentences(&doc.text) {
        let s = &doc.text[span.start..span.end];
        if is_repetitive(s) || !seen.insert(s.to_lowercase()) {
            stats.sentences_dropped_repetitive += 1;
            continue;
        }
        let n = content_tokens(tokenizer, s)?;
        if total + n > cfg.max_tokens {
            break;
        }
        total += n;
        if !text.is_empty() {
            text.push(' ');
        }
        // Line breaks inside a kept sentence become spaces: units are single lines.
        let clean = s.split_whitespace().collect::<Vec<_>>().join(" ");
        sentences.push(Span::new(text.len(), text.len() + clean.len()));
        text.push_str(&clean);
        tokens.push(n);
    }
    if sentences.len() < cfg.min_sentences {
        stats.dropped_few_sentences += 1;
        return Ok(None);
    }
    if total < cfg.min_tokens {
        stats.dropped_few_tokens += 1;
        return Ok(None);
    }
    Ok(Some(Preprocessed {
        document: Document {
            id: doc.id.clone(),
            title: doc.title.clone(),
            text,
        },
        sentences,
        tokens,
    }))
}

fn first_word(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c == ',')
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
}

/// Step 2's subject test: see the module documentation.
pub fn pronoun_led(sentence: &str) -> bool {
    if PRONOUNS.contains(&first_word(sentence).as_str()) {
        return true;
    }
    if let Some(comma) = sentence.find(',') {
        let intro_words = sentence[..comma].split_whitespace().count();
        if intro_words <= 8 && PRONOUNS.contains(&first_word(&sentence[comma + 1..]).as_str()) {
            return true;
        }
    }
    false
}

/// Step 2: indices of candidate sentences.
pub fn candidates(pre: &Preprocessed, cfg: &RirConfig) -> Vec<usize> {
    (0..pre.sentences.len())
        .filter(|&i| {
            let n = pre.tokens[i];
            let s = &pre.document.text[pre.sentences[i].start..pre.sentences[i].end];
            (cfg.unit_min_tokens..=cfg.unit_max_tokens).contains(&n) && !pronoun_led(s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn pronoun_subjects_are_detected() {
        assert!(pronoun_led("It was built in 1900."));
        assert!(pronoun_led("In 1990, they moved north."));
        assert!(pronoun_led("\"This\" is quoted."));
        assert!(!pronoun_led("The town lies on the river."));
        assert!(!pronoun_led("In 1990, the mill closed, and it burned."));
        assert!(!pronoun_led("Ithaca is an island."));
    }

    #[test]
    fn repeated_phrases_and_line_breaks() {
        assert!(is_repetitive(
            "Click here to read more. Click here to read more."
        ));
        assert!(is_repetitive("A title\n\nand a body."));
        assert!(!is_repetitive("The river flows north into the sea."));
    }
}
