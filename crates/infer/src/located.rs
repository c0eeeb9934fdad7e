//! What GeAR says about a (query, document) pair as every output gives it: character offsets
//! (Unicode scalar values, as the triple format's units) — [`LocatedSentence`],
//! [`LocatedToken`], [`CharSpan`] — from an [`Explanation`]'s byte spans, and the JSON an
//! `Explanation` serialises to (`gear locate --json`).

use gear_data::{Document, Span};
use serde::Serialize;

use crate::explain::{Explanation, Truncation};

/// A ranked sentence with character offsets into its document (Unicode scalar values, as the
/// triple format's units): what `gear search --json`, `gear locate --json`, `/search`,
/// `/locate` and `/rerank` give.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocatedSentence {
    /// Position among the document's sentences.
    pub index: usize,
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// Score under the chosen aggregation.
    pub score: f32,
    /// The sentence.
    pub text: String,
}

/// An attended token with character offsets into its document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocatedToken {
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// Its attention weight.
    pub weight: f32,
    /// The covered text.
    pub text: String,
}

/// A character range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CharSpan {
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

impl Explanation {
    fn chars(&self, span: Span) -> (usize, usize) {
        span.char_offsets(&self.document.text).unwrap_or((0, 0))
    }

    /// The `k` best sentences, best first, with character offsets.
    pub fn located_sentences(&self, k: usize) -> Vec<LocatedSentence> {
        self.sentences
            .iter()
            .take(k)
            .map(|s| {
                let (start, end) = self.chars(s.span);
                LocatedSentence {
                    index: s.index,
                    start,
                    end,
                    score: s.score,
                    text: s.text.clone(),
                }
            })
            .collect()
    }

    /// The most attended tokens, heaviest first, with character offsets.
    pub fn located_tokens(&self) -> Vec<LocatedToken> {
        self.tokens
            .iter()
            .map(|t| {
                let (start, end) = self.chars(t.span);
                LocatedToken {
                    start,
                    end,
                    weight: t.weight,
                    text: t.text.clone(),
                }
            })
            .collect()
    }

    /// Where the generated text was read from, in characters (span decoding only).
    pub fn generated_chars(&self) -> Option<CharSpan> {
        self.generated_span.map(|s| {
            let (start, end) = self.chars(s);
            CharSpan { start, end }
        })
    }
}

impl Serialize for Explanation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            query: &'a str,
            document: &'a Document,
            sentences: Vec<LocatedSentence>,
            tokens: Vec<LocatedToken>,
            generated: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            generated_span: Option<CharSpan>,
            #[serde(skip_serializing_if = "Option::is_none")]
            truncated: Option<Truncation>,
        }
        Shown {
            query: &self.query,
            document: &self.document,
            sentences: self.located_sentences(usize::MAX),
            tokens: self.located_tokens(),
            generated: &self.generated,
            generated_span: self.generated_chars(),
            truncated: self.truncated,
        }
        .serialize(serializer)
    }
}
