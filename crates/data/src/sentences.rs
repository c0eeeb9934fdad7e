//! Sentence splitting with byte offsets, for Wikipedia-style prose.
//!
//! A sentence ends at `.`, `!`, `?` or an ellipsis (`...`, `…`), optionally followed by closing
//! quotes or brackets, when white space and then a character that is not a lower-case letter
//! follow. A `.` does not end a sentence after a title or common abbreviation (`Dr.`, `St.`,
//! `e.g.`, `approx.`), after an initial (`J. R. R. Tolkien`) or inside a number or version (`3.5`,
//! `v2.0`, no white space follows) — except that an abbreviation or initial followed by a common
//! sentence opener (`The`, `In`, `He`, …) still ends one (`…moved to the U.S. The next year…`).
//! A `.` with no space after it ends a sentence between a lower-case word and a capitalised one
//! (`…the end.Next…`).
//!
//! Spans are trimmed of surrounding white space, ordered, non-overlapping and non-empty, and
//! together cover every non-white-space character of the text.

use crate::Span;

const TERMINALS: &[char] = &['.', '!', '?', '…'];
const CLOSERS: &[char] = &['"', '\'', '”', '’', ')', ']', '»', '}'];

/// Lower-cased words that end with a `.` that does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "no", "nos", "vol", "vols",
    "fig", "figs", "approx", "inc", "ltd", "co", "corp", "gen", "gov", "sen", "rep", "mt", "ft",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "ca",
    "cf", "ed", "eds", "col", "lt", "capt", "sgt", "rev", "hon", "pp", "op", "al", "est", "dept",
    "univ", "assn", "bros", "ave", "blvd", "rd", "messrs", "pres", "adm", "maj", "cmdr", "brig",
    "cpl", "pvt", "fr", "sra", "srta", "mme", "mlle", "ph", "v",
];

/// Capitalised words that usually open a sentence; after one of them an abbreviation or initial
/// is taken to end the sentence.
const OPENERS: &[&str] = &[
    "The",
    "A",
    "An",
    "In",
    "On",
    "At",
    "He",
    "She",
    "It",
    "They",
    "We",
    "I",
    "This",
    "That",
    "These",
    "Those",
    "There",
    "His",
    "Her",
    "Its",
    "Their",
    "After",
    "Before",
    "During",
    "When",
    "While",
    "However",
    "Although",
    "As",
    "By",
    "For",
    "From",
    "Since",
    "Some",
    "Many",
    "Most",
    "One",
    "Two",
    "Both",
    "Each",
    "According",
    "Other",
    "Following",
    "Despite",
    "Today",
    "Later",
];

/// The evaluation's relevance rule, shared by every method and protocol: the indices of
/// `sentences` that hold the start of one of `units` (byte spans into the same text). A SQuAD
/// question's units are the sentences holding its answer starts, an RIR triple's its unit
/// sentence, so both reduce to "the sentence where the gold text begins". A unit that starts on
/// white space between sentences marks none (such a question is a miss for every method).
pub fn relevant_sentences(sentences: &[Span], units: &[Span]) -> Vec<usize> {
    sentences
        .iter()
        .enumerate()
        .filter(|(_, s)| units.iter().any(|u| s.contains(u.start)))
        .map(|(i, _)| i)
        .collect()
}

/// Splits `text` into sentences; see the module documentation for the rules.
pub fn split_sentences(text: &str) -> Vec<Span> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut spans = Vec::new();
    let mut start = 0usize; // byte offset where the current sentence may start
    let mut i = 0usize;
    while i < chars.len() {
        let (_, c) = chars[i];
        if !TERMINALS.contains(&c) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < chars.len() && TERMINALS.contains(&chars[j + 1].1) {
            j += 1;
        }
        while j + 1 < chars.len() && CLOSERS.contains(&chars[j + 1].1) {
            j += 1;
        }
        // One `.`, possibly followed by closing quotes or brackets (not `...` or `?.`).
        let single_period = c == '.' && chars[i + 1..=j].iter().all(|(_, x)| CLOSERS.contains(x));
        let end_byte = chars.get(j + 1).map_or(text.len(), |(b, _)| *b);
        let next_is_space = chars.get(j + 1).is_none_or(|(_, x)| x.is_whitespace());
        let ends = if next_is_space {
            let next_word = next_word(text, end_byte);
            match next_word.chars().next() {
                None => true,
                Some(n) if n.is_lowercase() => false,
                Some(_) if single_period => {
                    !is_abbreviation(text, chars[i].0) || OPENERS.contains(&next_word)
                }
                Some(_) => true,
            }
        } else {
            // No space after: only `word.Word` with a lower-case word of 2+ letters before.
            single_period && j == i && glued_boundary(&chars, i)
        };
        if ends {
            push_trimmed(text, start, end_byte, &mut spans);
            start = end_byte;
        }
        i = j + 1;
    }
    push_trimmed(text, start, text.len(), &mut spans);
    spans
}

/// The word starting at the first non-space character at or after byte `from`.
fn next_word(text: &str, from: usize) -> &str {
    let rest = text[from..].trim_start();
    let end = rest
        .find(|c: char| c.is_whitespace() || (!c.is_alphanumeric() && c != '\'' && c != '-'))
        .unwrap_or(rest.len());
    if end == 0 {
        // Starts with punctuation (an opening quote or bracket): a sentence start.
        &rest[..rest.chars().next().map_or(0, char::len_utf8)]
    } else {
        &rest[..end]
    }
}

/// Whether the `.` at byte `dot` closes a title, abbreviation or initial.
fn is_abbreviation(text: &str, dot: usize) -> bool {
    let before = &text[..dot];
    let word_start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '.'))
        .map_or(0, |(b, c)| b + c.len_utf8());
    let word = &before[word_start..];
    if word.is_empty() {
        return false;
    }
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return true;
    }
    let mut letters = word.chars();
    // A single capital letter: an initial.
    if let (Some(first), None) = (letters.next(), letters.next()) {
        return first.is_uppercase();
    }
    // Dotted letters: "U.S", "e.g", "i.e", "a.m", "Ph.D".
    word.contains('.')
        && word
            .split('.')
            .all(|part| part.chars().count() <= 2 && !part.is_empty())
}

fn glued_boundary(chars: &[(usize, char)], dot: usize) -> bool {
    let next = chars.get(dot + 1).map(|(_, c)| *c);
    let after = chars.get(dot + 2).map(|(_, c)| *c);
    let before: Vec<char> = chars[..dot]
        .iter()
        .rev()
        .map(|(_, c)| *c)
        .take_while(|c| c.is_alphabetic())
        .collect();
    matches!(next, Some(n) if n.is_uppercase())
        && matches!(after, Some(a) if a.is_lowercase())
        && before.len() >= 2
        && before.iter().all(|c| c.is_lowercase())
}

fn push_trimmed(text: &str, start: usize, end: usize, spans: &mut Vec<Span>) {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    let trimmed = piece.trim();
    if !trimmed.is_empty() {
        spans.push(Span::new(start + lead, start + lead + trimmed.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<&str> {
        split_sentences(text)
            .iter()
            .map(|s| &text[s.start..s.end])
            .collect()
    }

    #[test]
    fn relevant_sentences_are_those_holding_a_unit_start() {
        let text = "Alpha one. Beta two. Gamma three.";
        let sentences = split_sentences(text);
        // An answer inside the second sentence, a unit that is the third sentence, and a unit
        // starting on the space between the first two sentences (marks nothing).
        let answer = Span::new(16, 19);
        let unit = sentences[2];
        let gap = Span::new(10, 12);
        assert_eq!(relevant_sentences(&sentences, &[answer]), [1]);
        assert_eq!(relevant_sentences(&sentences, &[unit, answer]), [1, 2]);
        assert!(relevant_sentences(&sentences, &[gap]).is_empty());
        // A span that overlaps a sentence but starts before it does not make it relevant.
        assert_eq!(relevant_sentences(&sentences, &[Span::new(5, 15)]), [0]);
    }

    #[test]
    fn plain_sentences_and_trailing_text() {
        assert_eq!(
            split("One. Two! Three? Four"),
            ["One.", "Two!", "Three?", "Four"]
        );
        assert_eq!(split("  Leading space.  Two  "), ["Leading space.", "Two"]);
        assert!(split("   ").is_empty());
    }

    #[test]
    fn abbreviations_titles_and_initials() {
        assert_eq!(
            split("Dr. Smith met St. Peter in the U.S. Army. It rained."),
            ["Dr. Smith met St. Peter in the U.S. Army.", "It rained."]
        );
        assert_eq!(
            split("Fruit, e.g. apples, i.e. food. Next."),
            ["Fruit, e.g. apples, i.e. food.", "Next."]
        );
        assert_eq!(
            split("J. R. R. Tolkien wrote it. He died."),
            ["J. R. R. Tolkien wrote it.", "He died."]
        );
        assert_eq!(
            split("He moved to the U.S. The next year he left."),
            ["He moved to the U.S.", "The next year he left."]
        );
        assert_eq!(
            split("It weighs approx. 5 kg. Done."),
            ["It weighs approx. 5 kg.", "Done."]
        );
    }

    #[test]
    fn numbers_versions_and_glued_periods() {
        assert_eq!(
            split("Pi is 3.14 roughly. Use v2.0 now."),
            ["Pi is 3.14 roughly.", "Use v2.0 now."]
        );
        assert_eq!(
            split("It ended.Then it began."),
            ["It ended.", "Then it began."]
        );
        assert_eq!(
            split("Visit example.com today."),
            ["Visit example.com today."]
        );
    }

    #[test]
    fn quotes_brackets_and_ellipses() {
        assert_eq!(
            split("He said \"Stop.\" Then he left."),
            ["He said \"Stop.\"", "Then he left."]
        );
        assert_eq!(split("(See above.) The end."), ["(See above.)", "The end."]);
        assert_eq!(
            split("Wait... What now? Yes…  Fine."),
            ["Wait...", "What now?", "Yes…", "Fine."]
        );
        assert_eq!(split("Wait... and then."), ["Wait... and then."]);
        assert_eq!(split("Really?! \"Yes.\""), ["Really?!", "\"Yes.\""]);
    }

    #[test]
    fn non_ascii_text() {
        assert_eq!(
            split("Ça va. Él está aquí. Ωμέγα."),
            ["Ça va.", "Él está aquí.", "Ωμέγα."]
        );
        assert_eq!(
            split("北京是首都。 Beijing is big. Über alles."),
            ["北京是首都。 Beijing is big.", "Über alles."]
        );
    }
}
