//! Rendering an [`Explanation`] for a terminal (ANSI colour) or as a self-contained HTML page:
//! the document with the top sentence underlined and the attended tokens highlighted, as in the
//! paper's figures, then the ranked sentences and the generated text.

use gear_data::Span;

use crate::explain::Explanation;

/// Cuts `text` at every boundary of the top sentence and of the attended tokens; each piece knows
/// whether it lies in the top sentence and the weight of the token covering it.
fn segments(e: &Explanation) -> Vec<(Span, bool, Option<f32>)> {
    let text = &e.document.text;
    let top = e.sentences.first().map(|s| s.span);
    let mut cuts = vec![0, text.len()];
    if let Some(t) = top {
        cuts.extend([t.start, t.end]);
    }
    for t in &e.tokens {
        cuts.extend([t.span.start, t.span.end]);
    }
    cuts.retain(|&c| c <= text.len() && text.is_char_boundary(c));
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| {
            let span = Span::new(w[0], w[1]);
            let in_top = top.is_some_and(|t| t.start <= span.start && span.end <= t.end);
            let weight = e
                .tokens
                .iter()
                .find(|t| t.span.start <= span.start && span.end <= t.span.end)
                .map(|t| t.weight);
            (span, in_top, weight)
        })
        .collect()
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A self-contained HTML page: the document with the top sentence underlined and the attended
/// tokens highlighted (darker = more attention), the `sentences` best ranked sentences, and the
/// generated text.
pub fn render_html(e: &Explanation, sentences: usize) -> String {
    let max = e
        .tokens
        .first()
        .map_or(1.0, |t| t.weight)
        .max(f32::MIN_POSITIVE);
    let mut body = String::new();
    for (span, in_top, weight) in segments(e) {
        let piece = escape_html(span.slice(&e.document.text).unwrap_or(""));
        let piece = match weight {
            Some(w) => format!("<mark style=\"background: rgba(255, 140, 0, {:.2})\" title=\"{w:.4}\">{piece}</mark>", 0.25 + 0.75 * w / max),
            None => piece,
        };
        if in_top {
            body.push_str(&format!("<span class=\"top\">{piece}</span>"));
        } else {
            body.push_str(&piece);
        }
    }
    let mut ranked = String::new();
    for s in e.sentences.iter().take(sentences) {
        ranked.push_str(&format!(
            "<li><b>{:.4}</b> {}</li>",
            s.score,
            escape_html(&s.text)
        ));
    }
    let generated = e
        .generated
        .as_ref()
        .map(|g| {
            format!(
                "<h2>Generated</h2><p class=\"gen\">{}{}</p>",
                escape_html(g),
                escape_html(&read_from(e))
            )
        })
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>GeAR: {title}</title>\
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.5}}\
.top{{text-decoration:underline;text-decoration-color:#06c;text-decoration-thickness:2px}}\
mark{{border-radius:3px;padding:0 1px}}.gen{{background:#eef;padding:.5em}}</style></head>\
<body><h1>{title}</h1><p><b>Query:</b> {query}</p><p class=\"doc\">{body}</p>\
<h2>Sentences by cross-attention</h2><ol>{ranked}</ol>{generated}</body></html>\n",
        title = escape_html(&e.document.title),
        query = escape_html(&e.query),
    )
}

/// The explanation for a terminal: the document with the top sentence underlined and attended
/// tokens in reverse video (with `color`), then the `sentences` best ranked sentences and the
/// generated text.
pub fn render_terminal(e: &Explanation, color: bool, sentences: usize) -> String {
    let mut doc = String::new();
    for (span, in_top, weight) in segments(e) {
        let piece = span.slice(&e.document.text).unwrap_or("");
        let (mut on, off) = (String::new(), "\x1b[0m");
        if color && in_top {
            on.push_str("\x1b[4m");
        }
        if color && weight.is_some() {
            on.push_str("\x1b[30;43m");
        }
        if on.is_empty() {
            doc.push_str(piece);
        } else {
            doc.push_str(&format!("{on}{piece}{off}"));
        }
    }
    let mut out = format!(
        "query: {}\n\n{doc}\n\nsentences by cross-attention:\n",
        e.query
    );
    for s in e.sentences.iter().take(sentences) {
        out.push_str(&format!("  {:.4}  {}\n", s.score, s.text));
    }
    let tokens: Vec<&str> = e.tokens.iter().map(|t| t.text.as_str()).collect();
    out.push_str(&format!("\nmost attended tokens: {}\n", tokens.join(", ")));
    if let Some(g) = &e.generated {
        out.push_str(&format!("\ngenerated: {g}{}\n", read_from(e)));
    }
    out
}

/// Where the generated text was read from: " (read from sentence N, characters a–b)" for span
/// decoding, nothing otherwise.
fn read_from(e: &Explanation) -> String {
    let (Some(span), Some(chars)) = (e.generated_span, e.generated_chars()) else {
        return String::new();
    };
    let mut by_place: Vec<_> = e.sentences.iter().collect();
    by_place.sort_by_key(|s| s.index);
    match by_place.iter().find(|s| s.span.contains(span.start)) {
        Some(s) => format!(
            " (read from sentence {}, characters {}–{})",
            s.index + 1,
            chars.start,
            chars.end
        ),
        None => format!(" (read from characters {}–{})", chars.start, chars.end),
    }
}
