//! Step 6 of the RIR pipeline: the relevance filter on query–document cosine.

use gear_data::{Document, Triple};

use crate::{Error, Result};

use super::{Embedder, RirStats};

/// Cosine similarity (0 for a zero vector), whatever the embedder's normalisation.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator > 0.0 {
        dot / denominator
    } else {
        0.0
    }
}

/// Drops the triples whose query–document cosine under `embedder` is below `threshold`, counting
/// them in each document's stats.
pub(super) fn filter_by_similarity(
    pending: &mut [(&Document, Vec<Triple>, RirStats)],
    embedder: &dyn Embedder,
    threshold: f32,
) -> Result<()> {
    let queries: Vec<&str> = pending
        .iter()
        .flat_map(|(_, t, _)| t.iter().map(|t| t.query.as_str()))
        .collect();
    if queries.is_empty() {
        return Ok(());
    }
    let docs: Vec<&str> = pending
        .iter()
        .filter(|(_, t, _)| !t.is_empty())
        .map(|(_, t, _)| t[0].document.text.as_str())
        .collect();
    let q = embedder.embed(&queries)?;
    let d = embedder.embed(&docs)?;
    if q.len() != queries.len() || d.len() != docs.len() {
        return Err(Error::Embed(format!(
            "asked for {} + {} vectors, got {} + {}",
            queries.len(),
            docs.len(),
            q.len(),
            d.len()
        )));
    }
    let (mut qi, mut di) = (0, 0);
    for (_, triples, s) in pending.iter_mut() {
        if triples.is_empty() {
            continue;
        }
        let doc = &d[di];
        di += 1;
        let before = triples.len();
        let mut keep = Vec::with_capacity(before);
        for t in triples.drain(..) {
            let cos = cosine(&q[qi], doc);
            qi += 1;
            if cos >= threshold {
                keep.push(t);
            }
        }
        s.dropped_low_similarity += before - keep.len();
        *triples = keep;
    }
    Ok(())
}
