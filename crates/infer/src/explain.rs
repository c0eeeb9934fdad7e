//! Local retrieval, generation and the explanation of a (query, document) pair — the top
//! sentences by cross-attention, the ten most attended tokens and the generated text with the
//! span it was read from (`render.rs` draws it for a terminal or as an HTML page).

use gear_data::{split_sentences, Document, Span};
use gear_model::{
    AttendedToken, GearModel, GenerationOptions, LocalRanking, LocateOptions, LocateQueries,
    RankedUnit,
};
use serde::Serialize;

use crate::Result;

/// Everything GeAR says about one (query, document) pair. Its spans are byte spans; what it
/// serialises to (`gear locate --json`) and what [`Explanation::located_sentences`],
/// [`Explanation::located_tokens`] and [`Explanation::generated_chars`] give are character
/// offsets, as every output of GeAR-rs (`/search`, `/locate`, `gear search --json`).
#[derive(Debug, Clone)]
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
    /// Where the generated text sits in the document (byte span), when it was decoded as a
    /// span of the document (`decoder.decoding = "span"` or `--decoding span`).
    pub generated_span: Option<Span>,
    /// Set when the document is longer than the model reads (`max_document_len` tokens).
    pub truncated: Option<Truncation>,
}

/// How a document longer than the model reads at once was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Truncation {
    /// Tokens of the whole document, special tokens included.
    pub tokens: usize,
    /// Tokens the model reads at once (`max_document_len`).
    pub kept: usize,
    /// Windows of whole sentences the document was read in (1: cut at `kept`, when it has a
    /// single sentence).
    pub windows: usize,
    /// Sentences no window reached: they cannot be located (they score 0).
    pub unreachable_sentences: usize,
    /// Sentences longer than a window: read from their beginning only.
    pub cut_sentences: usize,
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
    explain_within(model, query, document, locate, generation, None)
}

/// Windows located in one forward pass of a long document; between passes the deadline of
/// [`explain_within`] is checked.
const WINDOWS_PER_PASS: usize = 8;

/// [`explain`] that stops with [`crate::Error::Deadline`] once `deadline` has passed: checked
/// before each forward pass over (at most 8 windows of) the document and
/// before generating, so work past the deadline is at most one pass. A server gives each
/// request's deadline, so that a request that timed out stops using the model.
pub fn explain_within(
    model: &GearModel,
    query: &str,
    document: &Document,
    locate: &LocateOptions,
    generation: Option<&GenerationOptions>,
    deadline: Option<std::time::Instant>,
) -> Result<Explanation> {
    crate::check_readable(model, "the query", query)?;
    crate::check_readable(model, &document_name(document), &document.text)?;
    let max = model.config().max_query_len;
    if model.tokenizer().count_tokens(query)? > max {
        tracing::warn!(
            max,
            "the query is longer than max_query_len tokens and is truncated"
        );
    }
    let units = split_sentences(&document.text);
    let read = read_document(model, query, &document.text, &units, locate, deadline)?;
    // The decoder reads one window: the one holding the best sentence.
    if generation.is_some() && past(deadline) {
        return Err(crate::Error::Deadline { done: 1, total: 2 });
    }
    let (generated, generated_span) = match generation {
        Some(g) => generated(
            model,
            query,
            read.generation_text,
            read.generation_offset,
            g,
        )?,
        None => (None, None),
    };
    let mut e = explanation(query, document, &read.ranking, read.truncated);
    e.generated = generated;
    e.generated_span = generated_span;
    Ok(e)
}

/// How error messages name a document: by id when it has one.
pub(crate) fn document_name(document: &Document) -> String {
    if document.id.is_empty() {
        "the document".to_owned()
    } else {
        format!("document `{}`", document.id)
    }
}

/// What a document read whole reports: nothing when it fits `kept` tokens; otherwise that it
/// was cut there (it has a single sentence, or none was found).
pub(crate) fn whole_read_truncation(
    tokens: usize,
    kept: usize,
    ranking: &LocalRanking,
    units: &[Span],
) -> Option<Truncation> {
    (tokens > kept).then(|| Truncation {
        tokens,
        kept,
        windows: 1,
        unreachable_sentences: ranking.units.iter().filter(|u| u.tokens == 0).count(),
        // One sentence (or none found) longer than the limit.
        cut_sentences: units.len().max(1),
        sentences: units.len(),
    })
}

/// The explanation of a ranking of `document`'s sentences (no generated text), after warning
/// about what a long document's reading left out.
pub(crate) fn explanation(
    query: &str,
    document: &Document,
    ranking: &LocalRanking,
    truncated: Option<Truncation>,
) -> Explanation {
    if let Some(t) = &truncated {
        if t.cut_sentences > 0 || t.unreachable_sentences > 0 {
            tracing::warn!(
                "the document has {} tokens and the model reads {} at once: {} of its {} \
                 sentences are longer than that and are read from their beginning only{}",
                t.tokens,
                t.kept,
                t.cut_sentences,
                t.sentences,
                if t.unreachable_sentences > 0 {
                    format!(
                        ", and {} cannot be located at all (split it into shorter sentences or \
                         passages)",
                        t.unreachable_sentences
                    )
                } else {
                    String::new()
                }
            );
        }
    }
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
    Explanation {
        query: query.to_owned(),
        document: document.clone(),
        sentences,
        tokens,
        generated: None,
        generated_span: None,
        truncated,
    }
}

/// The decoder's text for the window `text` (at byte `at` of the document) and its span in the
/// whole document.
fn generated(
    model: &GearModel,
    query: &str,
    text: &str,
    at: usize,
    options: &GenerationOptions,
) -> Result<(Option<String>, Option<Span>)> {
    let g = model.generate_located(&[query], &[text], options)?.pop();
    let span = g.as_ref().and_then(|g| g.span);
    Ok((
        g.map(|g| g.text),
        span.map(|s| Span::new(s.start + at, s.end + at)),
    ))
}

/// A document as the model read it: the ranking over all its sentences, what was cut, and the
/// text the decoder should read.
struct Reading<'a> {
    ranking: LocalRanking,
    truncated: Option<Truncation>,
    generation_text: &'a str,
    /// Byte offset of `generation_text` in the document.
    generation_offset: usize,
}

/// Reads `text` whole when it fits `max_document_len`; otherwise in windows of whole sentences
/// that each fit, consecutive windows sharing one sentence, located in passes of
/// [`WINDOWS_PER_PASS`] windows. A
/// sentence's score is its best over the windows holding it (scores are attention mass within a
/// window), and the attended tokens are the heaviest over all windows.
fn read_document<'a>(
    model: &GearModel,
    query: &str,
    text: &'a str,
    units: &[Span],
    options: &LocateOptions,
    deadline: Option<std::time::Instant>,
) -> Result<Reading<'a>> {
    let kept = model.config().max_document_len;
    let tokens = model.tokenizer().count_tokens(text)?;
    if tokens <= kept || units.len() < 2 {
        let ranking = model
            .locate(&LocateQueries::pair(query, text, units), options)?
            .remove(0);
        let truncated = whole_read_truncation(tokens, kept, &ranking, units);
        return Ok(Reading {
            ranking,
            truncated,
            generation_text: text,
            generation_offset: 0,
        });
    }
    let Windowing {
        windows,
        cut_sentences,
    } = counted_windows(model, text, units, deadline)?;
    let mut rankings = Vec::with_capacity(windows.len());
    let passes = windows.len().div_ceil(WINDOWS_PER_PASS);
    for (done, pass) in windows.chunks(WINDOWS_PER_PASS).enumerate() {
        if past(deadline) {
            return Err(crate::Error::Deadline {
                done,
                total: passes,
            });
        }
        rankings.extend(locate_windows(model, query, text, units, pass, options)?);
    }
    let (ranking, top_window) = merge_windows(units, &windows, &rankings, options.top_tokens);
    let w = &windows[top_window];
    Ok(Reading {
        truncated: Some(Truncation {
            tokens,
            kept,
            windows: windows.len(),
            unreachable_sentences: ranking.units.iter().filter(|u| u.tokens == 0).count(),
            cut_sentences,
            sentences: units.len(),
        }),
        ranking,
        generation_text: &text[units[w.start].start..units[w.end - 1].end],
        generation_offset: units[w.start].start,
    })
}

/// Whether `deadline` (if any) has passed.
pub(crate) fn past(deadline: Option<std::time::Instant>) -> bool {
    deadline.is_some_and(|d| std::time::Instant::now() >= d)
}

/// Each window of `text` (sentence ranges of `units`) located for `query`, in one batch; a
/// window's units are spans within the window's text.
fn locate_windows(
    model: &GearModel,
    query: &str,
    text: &str,
    units: &[Span],
    windows: &[std::ops::Range<usize>],
    options: &LocateOptions,
) -> Result<Vec<LocalRanking>> {
    let local: Vec<Vec<Span>> = windows
        .iter()
        .map(|w| {
            let base = units[w.start].start;
            units[w.clone()]
                .iter()
                .map(|u| Span::new(u.start - base, u.end - base))
                .collect()
        })
        .collect();
    let mut request = LocateQueries::default();
    for (w, spans) in windows.iter().zip(&local) {
        request.push_pair(
            query,
            &text[units[w.start].start..units[w.end - 1].end],
            spans,
        );
    }
    Ok(model.locate(&request, options)?)
}

/// The windows' rankings as one over the whole document: a sentence scores its best over the
/// windows holding it, the `top_tokens` heaviest attended tokens over all windows (spans in the
/// document). Also the window of the best sentence.
fn merge_windows(
    units: &[Span],
    windows: &[std::ops::Range<usize>],
    rankings: &[LocalRanking],
    top_tokens: usize,
) -> (LocalRanking, usize) {
    let mut best: Vec<Option<(f32, usize, usize)>> = vec![None; units.len()];
    let mut attended: Vec<AttendedToken> = Vec::new();
    for (wi, (w, ranking)) in windows.iter().zip(rankings).enumerate() {
        let base = units[w.start].start;
        for u in &ranking.units {
            let i = w.start + u.index;
            if best[i].is_none_or(|(score, _, _)| u.score > score) {
                best[i] = Some((u.score, u.tokens, wi));
            }
        }
        attended.extend(ranking.top_tokens.iter().map(|t| AttendedToken {
            position: t.position,
            span: Span::new(t.span.start + base, t.span.end + base),
            weight: t.weight,
        }));
    }
    let mut ranked: Vec<RankedUnit> = best
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (score, tokens, _) = b.unwrap_or((0.0, 0, 0));
            RankedUnit {
                index: i,
                span: units[i],
                score,
                tokens,
            }
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    attended.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    attended.dedup_by_key(|t| t.span);
    attended.truncate(top_tokens);
    let top_window = ranked
        .first()
        .and_then(|u| best[u.index])
        .map_or(0, |(_, _, wi)| wi);
    (
        LocalRanking {
            units: ranked,
            top_tokens: attended,
        },
        top_window,
    )
}

/// How a document is split into windows the model reads at once.
pub(crate) struct Windowing {
    /// Sentence index ranges, in order.
    pub(crate) windows: Vec<std::ops::Range<usize>>,
    /// Sentences longer than a window (read from their beginning only).
    pub(crate) cut_sentences: usize,
}

/// [`sentence_windows`] over `units` of `text` for `model`'s `max_document_len`: each window's
/// content tokens fit the limit less `[CLS]`, `[SEP]` and a margin for tokens that merge
/// differently in context.
pub(crate) fn model_windows(model: &GearModel, text: &str, units: &[Span]) -> Result<Windowing> {
    counted_windows(model, text, units, None)
}

/// Sentences tokenised between two checks of the deadline in [`counted_windows`].
const SENTENCES_PER_CHECK: usize = 64;

/// [`model_windows`], stopping at `deadline` (checked every [`SENTENCES_PER_CHECK`] sentences:
/// counting the tokens of a very long document is work too).
fn counted_windows(
    model: &GearModel,
    text: &str,
    units: &[Span],
    deadline: Option<std::time::Instant>,
) -> Result<Windowing> {
    let budget = model.config().max_document_len.saturating_sub(4).max(1);
    let mut counts = Vec::with_capacity(units.len());
    for (i, u) in units.iter().enumerate() {
        if i % SENTENCES_PER_CHECK == 0 && past(deadline) {
            return Err(crate::Error::Deadline { done: 0, total: 1 });
        }
        counts.push(
            model
                .tokenizer()
                .count_tokens(u.slice(text).unwrap_or(""))?
                .saturating_sub(2),
        );
    }
    Ok(Windowing {
        cut_sentences: counts.iter().filter(|&&c| c > budget).count(),
        windows: sentence_windows(&counts, budget),
    })
}

/// Windows of whole sentences (index ranges) whose token counts sum to at most `budget` (a
/// longer sentence gets a window of its own), each window starting on the last sentence of the
/// one before, so that every sentence is read with some context on both sides. The last window
/// reaches back as far as the budget allows: windows of similar length spread attention over
/// similar numbers of tokens, which keeps their sentence scores comparable.
pub fn sentence_windows(counts: &[usize], budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut windows: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    while start < counts.len() {
        let mut end = start + 1;
        let mut sum = counts[start];
        while end < counts.len() && sum + counts[end] <= budget {
            sum += counts[end];
            end += 1;
        }
        if end == counts.len() {
            while start > 0 && sum + counts[start - 1] <= budget {
                start -= 1;
                sum += counts[start];
            }
            // A window now inside this one adds nothing.
            while windows.last().is_some_and(|w| w.start >= start) {
                windows.pop();
            }
            windows.push(start..end);
            break;
        }
        windows.push(start..end);
        // Overlap one sentence, unless that would not move forward.
        start = if end - 1 > start { end - 1 } else { end };
    }
    windows
}
