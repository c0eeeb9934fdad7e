//! Span decoding ([`crate::Decoding::Span`]): generation constrained to a span of the document.
//! The first token is a word of the document (any copyable position that does not continue a
//! word piece), every later token the document's next one, or the end; the decoder's scores
//! (with the copy head, the probability of reading *that position*) pick among them. Greedy over
//! `starts` start positions, the best by total log-probability, end included.
//!
//! What comes back are token ranges of the document, so the generated answer is the document's
//! own text at a known place (the byte span is what `gear generate` and `/generate` report).

use std::collections::HashSet;
use std::ops::Range;

use tch::{Device, Kind, Tensor};

use crate::bert::encoder::Context;
use crate::decoder::Decoder;
use crate::generate::GenerationTokens;
use crate::pointer::{position_log_probs, Passage, Pointer};
use crate::{Error, Result};

/// The decoder and copy head a span decoder runs.
#[derive(Debug, Clone, Copy)]
pub struct SpanReader<'a> {
    /// The decoder.
    pub decoder: &'a Decoder,
    /// Its copy head, if it has one.
    pub pointer: Option<&'a Pointer>,
    /// `[Decode]` and the end token.
    pub tokens: GenerationTokens,
}

/// One row's state during decoding.
#[derive(Debug, Clone, Copy)]
struct Row {
    start: i64,
    last: i64,
    score: f64,
    done: bool,
}

/// Decodes one span per row of `memory`/`passage`: `[start, end)` token positions of the
/// document, `None` where the document has no word to start from. `word_start [batch, d_len]`
/// marks positions that begin a word; `max_len` bounds the span's tokens; `starts ≥ 1` start
/// positions are tried per row. `question [batch, q_len]`, when given, holds the ids of each
/// row's question tokens (anything negative is ignored): a span made only of them (the answer
/// "oxygen" to "What is the second most abundant element after oxygen?") is chosen only when
/// the row has no other candidate among at least 4 starts (rows that need them
/// are decoded a second time).
pub fn decode_spans(
    reader: SpanReader<'_>,
    memory: Context<'_>,
    passage: Passage<'_>,
    word_start: &Tensor,
    max_len: usize,
    starts: usize,
    question: Option<&Tensor>,
) -> Result<Vec<Option<Range<usize>>>> {
    let _span = tracing::debug_span!("generate", search = "span", starts).entered();
    if starts == 0 || max_len == 0 {
        return Err(Error::Input(
            "span decoding needs at least one start and one token".into(),
        ));
    }
    let question = question.map(question_tokens).transpose()?;
    let asked = |row: usize| question.as_ref().and_then(|q| q.get(row));
    let d_len = passage.ids.size()[1] as usize;
    let ids = Vec::<i64>::try_from(passage.ids.flatten(0, -1).to_device(Device::Cpu))?;
    let document = |row: usize| &ids[row * d_len..(row + 1) * d_len];
    let first = tch::no_grad(|| decode(reader, memory, passage, word_start, max_len, starts))?;
    let mut spans = Vec::new();
    // Rows with fewer than `starts` candidates that do not echo the question: later starts
    // may give them one, so they are decoded again from more.
    let mut again = Vec::new();
    for (row, candidates) in first.chunks(starts.min(d_len.max(1))).enumerate() {
        spans.push(pick(candidates, starts, document(row), asked(row)));
        if let Some(q) = asked(row) {
            let new = candidates
                .iter()
                .filter(|r| r.score.is_finite() && !echoes(r, document(row), q))
                .count();
            if new < starts && starts < ECHO_FALLBACK {
                again.push(row as i64);
            }
        }
    }
    if !again.is_empty() {
        let index = Tensor::from_slice(&again).to_device(passage.ids.device());
        let take = |t: &Tensor| t.index_select(0, &index);
        let (states, mask) = (take(memory.states), take(memory.mask));
        let subset = PassageRows::select(&passage, &index);
        let memory = Context {
            states: &states,
            mask: &mask,
        };
        let words = take(word_start);
        let more = tch::no_grad(|| {
            decode(
                reader,
                memory,
                subset.passage(),
                &words,
                max_len,
                ECHO_FALLBACK,
            )
        })?;
        for (&row, candidates) in again
            .iter()
            .zip(more.chunks(ECHO_FALLBACK.min(d_len.max(1))))
        {
            let row = row as usize;
            spans[row] = pick(candidates, starts, document(row), asked(row));
        }
    }
    Ok(spans)
}

/// Starts decoded, at least, for a row whose spans echo the question.
const ECHO_FALLBACK: usize = 4;

/// Whether candidate `r` of `document` is made only of `question`'s tokens.
fn echoes(r: &Row, document: &[i64], question: &HashSet<i64>) -> bool {
    (r.start..=r.last).all(|j| question.contains(&document[j as usize]))
}

/// The span of `candidates` (in the order of their start's probability): the best by total
/// log-probability among the first `starts`; with `question`, spans made only of its tokens
/// are passed over, for the first `starts` non-echoing candidates, and used only when every
/// candidate echoes.
fn pick(
    candidates: &[Row],
    starts: usize,
    document: &[i64],
    question: Option<&HashSet<i64>>,
) -> Option<Range<usize>> {
    let finite = || candidates.iter().filter(|r| r.score.is_finite());
    let echo = |r: &&Row| question.is_some_and(|q| echoes(r, document, q));
    let best = |rows: Vec<&Row>| {
        rows.into_iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .map(|r| r.start as usize..r.last as usize + 1)
    };
    best(finite().filter(|r| !echo(r)).take(starts).collect())
        .or_else(|| best(finite().take(starts).collect()))
}

/// Log-probabilities of reading each document position next `[rows, d_len]` and of ending
/// `[rows]`, after decoder states `hidden [rows, 1, width]` that read `inputs [rows, 1]`
/// (`keys`: the copy head's document keys, when it has one).
fn next_scores(
    reader: SpanReader<'_>,
    hidden: &Tensor,
    inputs: &Tensor,
    passage: &Passage<'_>,
    keys: Option<&Tensor>,
) -> (Tensor, Tensor) {
    let vocab = reader
        .decoder
        .logits(hidden)
        .to_kind(Kind::Float)
        .log_softmax(-1, Kind::Float);
    let copy = reader
        .pointer
        .zip(keys)
        .map(|(p, k)| p.forward_with_keys(hidden, inputs, passage, k));
    let positions = position_log_probs(&vocab, copy.as_ref(), passage.ids).squeeze_dim(1);
    let mut end = vocab.select(1, 0).select(1, reader.tokens.end);
    if let Some(c) = &copy {
        end += c.log_vocab_share.select(1, 0);
    }
    (positions, end)
}

/// Rows of a [`Passage`] (`index_select` along the batch), owned.
struct PassageRows {
    ids: Tensor,
    states: Tensor,
    copyable: Tensor,
    question: (Tensor, Tensor),
    prior: Option<Tensor>,
}

impl PassageRows {
    fn select(passage: &Passage<'_>, index: &Tensor) -> Self {
        let take = |t: &Tensor| t.index_select(0, index);
        Self {
            ids: take(passage.ids),
            states: take(passage.states),
            copyable: take(passage.copyable),
            question: (take(passage.question.0), take(passage.question.1)),
            prior: passage.prior.map(take),
        }
    }

    fn passage(&self) -> Passage<'_> {
        Passage {
            ids: &self.ids,
            states: &self.states,
            copyable: &self.copyable,
            question: (&self.question.0, &self.question.1),
            prior: self.prior.as_ref(),
        }
    }
}

/// Each row's question token ids (negative ones dropped).
fn question_tokens(question: &Tensor) -> Result<Vec<HashSet<i64>>> {
    let width = question.size()[1].max(0) as usize;
    let ids = Vec::<i64>::try_from(question.flatten(0, -1).to_device(Device::Cpu))?;
    Ok(ids
        .chunks(width.max(1))
        .take(question.size()[0] as usize)
        .map(|row| row.iter().copied().filter(|&i| i >= 0).collect())
        .collect())
}

/// The decoded candidates, `starts` (at most `d_len`) per row in row order.
fn decode(
    reader: SpanReader<'_>,
    memory: Context<'_>,
    passage: Passage<'_>,
    word_start: &Tensor,
    max_len: usize,
    starts: usize,
) -> Result<Vec<Row>> {
    let batch = passage.ids.size()[0];
    let d_len = passage.ids.size()[1];
    let device = passage.ids.device();
    let k = (starts as i64).min(d_len.max(1));
    let cache = reader.decoder.start(memory)?;
    let first = Tensor::full([batch, 1], reader.tokens.start, (Kind::Int64, device));
    let (hidden, cache) = reader.decoder.step_hidden(&first, &cache)?;
    let keys = reader.pointer.map(|p| p.keys(&passage));
    let (positions, _) = next_scores(reader, &hidden, &first, &passage, keys.as_ref());
    let copyable = passage.copyable.to_kind(Kind::Bool);
    let startable = copyable.logical_and(&word_start.to_kind(Kind::Bool));
    let (top, at) = positions
        .masked_fill(&startable.logical_not(), f64::NEG_INFINITY)
        .topk(k, 1, true, true);

    // Rows × starts from here on.
    let index = Tensor::arange(batch, (Kind::Int64, device)).repeat_interleave_self_int(k, 0, None);
    let mut cache = cache.select(&index);
    let selected = PassageRows::select(&passage, &index);
    let rows_passage = selected.passage();
    let ids = rows_passage.ids;
    let keys = keys.map(|k| k.index_select(0, &index));
    let copyable_cpu = to_bools(rows_passage.copyable)?;
    let word_cpu = to_bools(&word_start.to_kind(Kind::Bool).index_select(0, &index))?;
    let top = Vec::<f32>::try_from(top.flatten(0, -1).to_device(Device::Cpu))?;
    let at = Vec::<i64>::try_from(at.flatten(0, -1).to_device(Device::Cpu))?;
    let mut rows: Vec<Row> = top
        .iter()
        .zip(&at)
        .map(|(&s, &j)| Row {
            start: j,
            last: j,
            score: f64::from(s),
            done: !s.is_finite(),
        })
        .collect();
    let d = d_len as usize;
    for _ in 1..max_len {
        if rows.iter().all(|r| r.done) {
            break;
        }
        let last: Vec<i64> = rows.iter().map(|r| r.last).collect();
        let last = Tensor::from_slice(&last).to_device(device).unsqueeze(1);
        let fed = ids.gather(1, &last, false);
        let (hidden, next) = reader.decoder.step_hidden(&fed, &cache)?;
        cache = next;
        let (positions, end) = next_scores(reader, &hidden, &fed, &rows_passage, keys.as_ref());
        let following = (&last + 1).clamp_max(d_len - 1);
        let cont = Vec::<f32>::try_from(
            positions
                .gather(1, &following, false)
                .squeeze_dim(1)
                .to_device(Device::Cpu),
        )?;
        let end = Vec::<f32>::try_from(end.to_device(Device::Cpu))?;
        for (r, row) in rows.iter_mut().enumerate() {
            if row.done {
                continue;
            }
            let next = row.last as usize + 1;
            let can_continue = next < d && copyable_cpu[r * d + next];
            let forced = can_continue && !word_cpu[r * d + next];
            if can_continue && (forced || cont[r] > end[r]) {
                row.last += 1;
                row.score += f64::from(cont[r]);
            } else {
                row.score += f64::from(end[r]);
                row.done = true;
            }
        }
    }
    Ok(rows)
}

fn to_bools(t: &Tensor) -> Result<Vec<bool>> {
    Ok(Vec::<bool>::try_from(
        t.to_kind(Kind::Bool).flatten(0, -1).to_device(Device::Cpu),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: i64, last: i64, score: f64) -> Row {
        Row {
            start,
            last,
            score,
            done: true,
        }
    }

    #[test]
    fn spans_that_echo_the_question_are_passed_over() {
        // Document tokens 10..=15; the question holds 11 and 12.
        let document = [10, 11, 12, 13, 14, 15];
        let question: HashSet<i64> = [11, 12, 99].into_iter().collect();
        // In the order of their start's probability.
        let candidates = [
            row(1, 2, -0.5),              // "11 12": only question tokens
            row(3, 4, -2.0),              // "13 14"
            row(2, 3, -1.0),              // "12 13": one token is new
            row(0, 0, f64::NEG_INFINITY), // no start there
        ];
        // Without the question, the most likely start (one start tried).
        assert_eq!(pick(&candidates, 1, &document, None), Some(1..3));
        // With it, the next start whose span says something new.
        assert_eq!(pick(&candidates, 1, &document, Some(&question)), Some(3..5));
        // Two starts: the better total of the first two non-echoing candidates.
        assert_eq!(pick(&candidates, 2, &document, Some(&question)), Some(2..4));
        assert_eq!(pick(&candidates, 2, &document, None), Some(1..3));
        // Every candidate echoes: the echo is kept rather than nothing.
        let echoes = [row(1, 1, -1.0), row(2, 2, -0.2)];
        assert_eq!(pick(&echoes, 1, &document, Some(&question)), Some(1..2));
        assert_eq!(pick(&echoes, 2, &document, Some(&question)), Some(2..3));
        // No finite candidate: no span.
        assert_eq!(pick(&candidates[3..], 1, &document, Some(&question)), None);
    }
}
