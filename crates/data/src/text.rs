//! What every reader does to text before it looks at it: a byte-order mark at the start of a
//! file is not content, and a text is blank when no character of it is read by a tokenizer
//! (white space, control and format characters such as U+200B ZERO WIDTH SPACE or NUL).

/// The byte-order mark some editors (and Windows tools) put at the start of a UTF-8 file.
pub const BOM: char = '\u{feff}';

/// `text` without a leading byte-order mark. Readers call it on a file's first line (or on a
/// whole file), so a BOM never reaches a JSON or TSV parser as a stray character.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix(BOM).unwrap_or(text)
}

/// Whether `text` holds nothing a model reads: only white space, control characters (NUL,
/// escape codes) and invisible format characters (zero-width spaces and joiners, direction
/// marks, soft hyphens, byte-order marks). The BERT normaliser drops all of these, so such a
/// text tokenises to no token at all.
pub fn is_blank(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_whitespace() || c.is_control() || is_format(c) || c == '\u{fffd}')
}

/// Why `text` is blank, as a reader's message (`None` when it is not): `is empty`, or that it
/// holds only characters no model reads.
pub fn blank_reason(text: &str) -> Option<&'static str> {
    if text.trim().is_empty() {
        Some("is empty")
    } else if is_blank(text) {
        Some("holds only characters no model reads (control or zero-width characters)")
    } else {
        None
    }
}

/// Unicode general category Cf (format characters), which tokenizers remove.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061c}'
            | '\u{06dd}'
            | '\u{070f}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_texts_are_blank_and_visible_ones_are_not() {
        for blank in [
            "",
            "  \n\t",
            "\u{200b}\u{200b}",
            "\0\0",
            "\u{1b}\u{7f}",
            "\u{feff}",
            "\u{200d} \u{2060}",
        ] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for text in ["a", "\u{200b}a", "é", "日本", "?", "\0x"] {
            assert!(!is_blank(text), "{text:?}");
        }
    }

    #[test]
    fn only_a_leading_bom_is_stripped() {
        assert_eq!(strip_bom("\u{feff}{\"a\":1}"), "{\"a\":1}");
        assert_eq!(strip_bom("{\"a\":1}"), "{\"a\":1}");
        assert_eq!(strip_bom("x\u{feff}"), "x\u{feff}");
    }
}
