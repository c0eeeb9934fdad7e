//! Locating many (query, document) pairs at once — a search's queries against their hits, a
//! rerank's texts — in grouped fusion passes, with the explanations each pair gets alone.

use gear_data::{split_sentences, Document, Span};
use gear_model::{GearModel, LocateOptions, LocateQueries};

use crate::explain::{
    document_name, explain_within, explanation, past, whole_read_truncation, Explanation,
};
use crate::Result;

/// Pairs of documents that fit the model located in one fusion forward (documents shared by
/// several pairs are encoded once); between two forwards the deadline is checked.
const PAIRS_PER_PASS: usize = 32;

/// Local retrieval of many (query, document) pairs — a search's queries against their hits —
/// with the explanations [`explain_within`] gives pair by pair (no generation): the pairs whose
/// document fits `max_document_len` go through grouped fusion forwards of up to 32 pairs, each
/// distinct document encoded once per forward; a longer document is read window by window as
/// [`explain_within`] reads it. Stops with [`crate::Error::Deadline`] once `deadline` has passed
/// (checked before each forward). Explanations come back in pair order.
pub fn locate_pairs(
    model: &GearModel,
    pairs: &[(&str, &Document)],
    locate: &LocateOptions,
    deadline: Option<std::time::Instant>,
) -> Result<Vec<Explanation>> {
    let kept = model.config().max_document_len;
    // Each distinct document once: its sentences and whether it is read whole.
    let mut rows: std::collections::HashMap<(&str, &str), usize> = Default::default();
    let mut documents: Vec<(&Document, Vec<Span>, usize)> = Vec::new();
    let mut row_of = Vec::with_capacity(pairs.len());
    for (query, document) in pairs {
        crate::check_readable(model, "the query", query)?;
        let key = (document.id.as_str(), document.text.as_str());
        let row = match rows.get(&key) {
            Some(&r) => r,
            None => {
                crate::check_readable(model, &document_name(document), &document.text)?;
                let units = split_sentences(&document.text);
                let tokens = model.tokenizer().count_tokens(&document.text)?;
                documents.push((document, units, tokens));
                rows.insert(key, documents.len() - 1);
                documents.len() - 1
            }
        };
        row_of.push(row);
    }
    let whole = |row: usize| {
        let (_, units, tokens) = &documents[row];
        *tokens <= kept || units.len() < 2
    };
    let mut out: Vec<Option<Explanation>> = vec![None; pairs.len()];
    let grouped: Vec<(usize, usize, usize)> = (0..pairs.len())
        .filter(|&i| whole(row_of[i]))
        .map(|i| (i, row_of[i], documents[row_of[i]].2.min(kept)))
        .collect();
    let planned = plan_passes(&grouped);
    let passes = planned.len();
    for (done, pass) in planned.iter().enumerate() {
        if past(deadline) {
            return Err(crate::Error::Deadline {
                done,
                total: passes,
            });
        }
        let mut request = LocateQueries::default();
        let mut local: std::collections::HashMap<usize, usize> = Default::default();
        for &i in pass {
            let row = row_of[i];
            let (document, units, _) = &documents[row];
            let r = *local
                .entry(row)
                .or_insert_with(|| request.document(&document.text, units));
            request.query(pairs[i].0, r);
        }
        for (&i, ranking) in pass.iter().zip(model.locate(&request, locate)?) {
            let (document, units, tokens) = &documents[row_of[i]];
            let truncated = whole_read_truncation(*tokens, kept, &ranking, units);
            out[i] = Some(explanation(pairs[i].0, document, &ranking, truncated));
        }
    }
    for (i, slot) in out.iter_mut().enumerate() {
        if slot.is_none() {
            let (query, document) = pairs[i];
            *slot = Some(explain_within(
                model, query, document, locate, None, deadline,
            )?);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Most padding a grouped pass may add to the document tokens it encodes: a document padded to
/// the longest of its pass costs what its padding costs, on a CPU as much as real tokens.
const PADDING_ALLOWED: f64 = 0.25;

/// Passes over `(pair, document row, document tokens)`: pairs sorted by their document's
/// length, a pass closed when it holds [`PAIRS_PER_PASS`] pairs or when its next document
/// would pad the pass's distinct documents by more than [`PADDING_ALLOWED`] of their tokens.
/// Returns pair indices per pass.
fn plan_passes(pairs: &[(usize, usize, usize)]) -> Vec<Vec<usize>> {
    let mut sorted = pairs.to_vec();
    sorted.sort_by_key(|&(i, row, tokens)| (tokens, row, i));
    let mut passes: Vec<Vec<usize>> = Vec::new();
    let mut pass: Vec<usize> = Vec::new();
    let mut rows: Vec<usize> = Vec::new();
    let mut real = 0usize;
    for (i, row, tokens) in sorted {
        let new_row = !rows.contains(&row);
        let (docs, sum) = if new_row {
            (rows.len() + 1, real + tokens)
        } else {
            (rows.len(), real)
        };
        // Sorted by length: this document is the pass's longest.
        let padded = docs * tokens;
        let full = pass.len() == PAIRS_PER_PASS;
        if !pass.is_empty() && (full || padded as f64 > (1.0 + PADDING_ALLOWED) * sum as f64) {
            passes.push(std::mem::take(&mut pass));
            rows.clear();
            real = 0;
        }
        if !rows.contains(&row) {
            rows.push(row);
            real += tokens;
        }
        pass.push(i);
    }
    if !pass.is_empty() {
        passes.push(pass);
    }
    passes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_group_similar_lengths_and_cap_padding_and_size() {
        // Pair, document row, tokens: two short documents, one long; pair 3 shares row 0.
        let pairs = [(0, 0, 100), (1, 1, 110), (2, 2, 250), (3, 0, 100)];
        let passes = plan_passes(&pairs);
        assert_eq!(passes, vec![vec![0, 3, 1], vec![2]]);
        // Every pair in exactly one pass.
        let many: Vec<(usize, usize, usize)> = (0..70).map(|i| (i, i % 5, 120)).collect();
        let passes = plan_passes(&many);
        assert!(passes.iter().all(|p| p.len() <= PAIRS_PER_PASS));
        let mut all: Vec<usize> = passes.concat();
        all.sort_unstable();
        assert_eq!(all, (0..70).collect::<Vec<_>>());
        assert!(plan_passes(&[]).is_empty());
    }
}
