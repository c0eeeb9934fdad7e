//! Copying a local index into a store, resumably.

use gear_infer::DocumentIndex;

use crate::build::vector_rows;
use crate::tables::{self, StorePlan};
use crate::{HnswSettings, Result, StoreAddress};

/// Documents and vectors written per transaction by [`push`].
const PUSH_BATCH: usize = 512;

/// Copies the index `index` into the store at `address`, then builds the HNSW index with
/// `hnsw`. Documents and their vectors go in transactions of 512 documents keyed by row, so an
/// interrupted push resumes where it stopped without duplicate rows; a store holding another
/// model's vectors or another corpus is refused. `progress(done, total)` reports documents
/// written. Returns the documents written by this call.
pub fn push(
    index: &DocumentIndex,
    address: &StoreAddress,
    hnsw: HnswSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    let owners = index.owners();
    // Rows of each document, in order: document d owns rows first_row[d]..first_row[d + 1].
    let mut first_row = vec![0usize; index.len() + 1];
    for &o in owners {
        first_row[o + 1] += 1;
    }
    for d in 0..index.len() {
        first_row[d + 1] += first_row[d];
    }
    let meta = index.meta();
    let plan = StorePlan {
        model: meta.model.display().to_string(),
        fingerprint: meta.fingerprint.clone(),
        dim: meta.dim,
        documents: index.len(),
        corpus: Some(fingerprint_of(index, index.len())?),
    };
    let mut client = address.connect()?;
    let mut prefix = |n: usize| fingerprint_of(index, n);
    if tables::begin(&mut client, address, &plan, &mut prefix)?.complete {
        return Ok(0);
    }
    let present = tables::present_rows(&mut client, address, 0..index.len())?;
    if !present.is_empty() && present.len() < index.len() {
        tracing::info!(
            "{}: resuming an interrupted push ({} of {} documents are in)",
            address.target,
            present.len(),
            index.len()
        );
    }
    let vectors = index.vectors().to_kind(tch::Kind::Float);
    let mut written = 0;
    progress(present.len(), index.len());
    let mut start = 0;
    while start < index.len() {
        let end = (start + PUSH_BATCH).min(index.len());
        let held = tables::held(&present, start..end);
        if held < end - start {
            let docs = (start..end)
                .map(|d| index.document_at(d))
                .collect::<gear_infer::Result<Vec<_>>>()?;
            let (r0, r1) = (first_row[start], first_row[end]);
            let rows: Vec<i64> = owners[r0..r1].iter().map(|&o| o as i64).collect();
            let part = vectors.narrow(0, r0 as i64, (r1 - r0) as i64);
            let vectors = vector_rows(&part, &rows)?;
            tables::write_rows(&mut client, address, start, &docs, &vectors)?;
            written += end - start - held;
        }
        start = end;
        progress(present.len() + written, index.len());
    }
    tables::finish(&mut client, address, hnsw)?;
    Ok(written)
}

/// The corpus fingerprint of the index's first `n` documents (as [`gear_infer::build_index`]
/// records a corpus: every document's id, title and text, in order).
fn fingerprint_of(index: &DocumentIndex, n: usize) -> Result<String> {
    let mut unread = None;
    let fingerprint = gear_infer::corpus_fingerprint(
        (0..n.min(index.len()))
            .map_while(|d| index.document_at(d).map_err(|e| unread = Some(e)).ok()),
    );
    match unread {
        Some(e) => Err(e.into()),
        None => Ok(fingerprint),
    }
}
