//! Local retrieval, generation and the explanation of a (query, document) pair — the top
//! sentences by cross-attention and the ten most attended tokens — rendered for a terminal (ANSI
//! colour) or as a self-contained HTML page, as in the paper's highlighted figures.

use gear_data::{split_sentences, Document, Span};
use gear_model::{GearModel, GenerationOptions, LocalRanking, LocateOptions};
use serde::Serialize;

use crate::Result;

/// Everything GeAR says about one (query, document) pair.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The query.
    pub query: String,
    /// The document.
    pub document: Document,
    /// Sentences ranked by cross-attention, best first (byte spans into the text).
    pub sentences: Vec<RankedSentence>,
    /// The most attended document tokens, heaviest first.
    pub tokens: Vec<AttendedSpan>,
    /// The decoder's text, when asked for.
    pub generated: Option<String>,
    /// Set when the document is longer than the model reads (`max_document_len` tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
}

/// How much of a document the model did not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Truncation {
    /// Tokens of the whole document, special tokens included.
    pub tokens: usize,
    /// Tokens the model reads (`max_document_len`).
    pub kept: usize,
    /// Sentences that start past the cut: they cannot be located (they score 0).
    pub unreachable_sentences: usize,
    /// Sentences in all.
    pub sentences: usize,
}

/// One ranked sentence.
#[derive(Debug, Clone, Serialize)]
pub struct RankedSentence {
    /// Position among the document's sentences.
    pub index: usize,
    /// Byte span in the text.
    pub span: Span,
    /// Score under the chosen aggregation.
    pub score: f32,
    /// The sentence.
    pub text: String,
}

/// An attended token.
#[derive(Debug, Clone, Serialize)]
pub struct AttendedSpan {
    /// Byte span in the text.
    pub span: Span,
    /// Its attention weight.
    pub weight: f32,
    /// The covered text.
    pub text: String,
}

/// Ranks `document`'s sentences for `query` and, with `generation`, generates text.
pub fn explain(
    model: &GearModel,
    query: &str,
    document: &Document,
    locate: &LocateOptions,
    generation: Option<&GenerationOptions>,
) -> Result<Explanation> {
    if query.trim().is_empty() {
        return Err(crate::Error::Input("the query is empty".into()));
    }
    if document.text.trim().is_empty() {
        return Err(crate::Error::Input(format!(
            "document `{}` is empty",
            document.id
        )));
    }
    let max = model.config().max_query_len;
    if model.tokenizer().count_tokens(query)? > max {
        tracing::warn!(
            max,
            "the query is longer than max_query_len tokens and is truncated"
        );
    }
    let units = split_sentences(&document.text);
    let truncated = truncation(model, &document.text, &units)?;
    if let Some(t) = &truncated {
        tracing::warn!(
            "the document has {} tokens and the model reads {}: {} of its {} sentences lie past \
             the cut and cannot be located (split it into passages to search all of it)",
            t.tokens,
            t.kept,
            t.unreachable_sentences,
            t.sentences
        );
    }
    let ranking: LocalRanking = model.locate(query, &document.text, &units, locate)?;
    let text = &document.text;
    let sentences = ranking
        .units
        .iter()
        .map(|u| RankedSentence {
            index: u.index,
            span: u.span,
            score: u.score,
            text: u.span.slice(text).unwrap_or("").to_owned(),
        })
        .collect();
    let tokens = ranking
        .top_tokens
        .iter()
        .map(|t| AttendedSpan {
            span: t.span,
            weight: t.weight,
            text: t.span.slice(text).unwrap_or("").to_owned(),
        })
        .collect();
    let generated = match generation {
        Some(g) => model.generate(&[query], &[text.as_str()], g)?.pop(),
        None => None,
    };
    Ok(Explanation {
        query: query.to_owned(),
        document: document.clone(),
        sentences,
        tokens,
        generated,
        truncated,
    })
}

/// What truncation at `max_document_len` cuts off `text`, if anything.
fn truncation(model: &GearModel, text: &str, units: &[Span]) -> Result<Option<Truncation>> {
    let kept = model.config().max_document_len;
    let tokens = model.tokenizer().count_tokens(text)?;
    if tokens <= kept {
        return Ok(None);
    }
    let batch = model
        .tokenizer()
        .with_max_len(kept)?
        .encode_batch(&[text])?;
    let cut = batch
        .offsets(0)
        .iter()
        .map(|&(_, end)| end)
        .max()
        .unwrap_or(0);
    Ok(Some(Truncation {
        tokens,
        kept,
        unreachable_sentences: units.iter().filter(|u| u.start >= cut).count(),
        sentences: units.len(),
    }))
}

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
        .map(|g| format!("<h2>Generated</h2><p class=\"gen\">{}</p>", escape_html(g)))
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
        out.push_str(&format!("\ngenerated: {g}\n"));
    }
    out
}
