//! `Span`: a half-open byte range `[start, end)` into a text — how units (sentences) and tokens
//! point into documents.

use serde::{Deserialize, Serialize};

/// A half-open byte range `[start, end)` into a UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// `[start, end)`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the span covers nothing.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether byte `offset` lies inside.
    pub fn contains(&self, offset: usize) -> bool {
        (self.start..self.end).contains(&offset)
    }

    /// The covered text, or `None` when the span is out of bounds or splits a character.
    pub fn slice<'a>(&self, text: &'a str) -> Option<&'a str> {
        text.get(self.start..self.end)
    }

    /// The same range in characters (Unicode scalar values) — the offsets every output of
    /// GeAR-rs gives, as the triple format's units do — or `None` when the span is out of
    /// bounds or splits a character. The one byte → character conversion.
    pub fn char_offsets(&self, text: &str) -> Option<(usize, usize)> {
        let slice = self.slice(text)?;
        let start = text[..self.start].chars().count();
        Some((start, start + slice.chars().count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_offsets_count_characters_not_bytes() {
        let text = "Zürich – the café";
        let span = Span::new(text.find("café").unwrap(), text.len());
        assert_eq!(span.char_offsets(text), Some((13, 17)));
        assert_eq!(Span::new(0, 2).char_offsets(text), None, "splits `ü`");
        assert_eq!(Span::new(0, 99).char_offsets(text), None);
    }

    #[test]
    fn slices_and_contains() {
        let s = Span::new(4, 9);
        assert_eq!(s.slice("The quick fox"), Some("quick"));
        assert!(s.contains(4) && !s.contains(9));
        assert_eq!(s.len(), 5);
        assert_eq!(Span::new(1, 2).slice("é"), None);
    }
}
