//! Embedding documents for the index: one row per document, or — for a document longer than the
//! model reads at once — one per window of whole sentences.

use std::path::Path;

use gear_data::Document;
use gear_model::GearModel;
use tch::Tensor;

use super::BuildOptions;
use crate::{Error, Result};

/// The index rows of some documents: what [`embed_for_index`] returns.
#[derive(Debug)]
pub struct EmbeddedRows {
    /// One vector per row (`[rows, width]`, on the model's device).
    pub vectors: Tensor,
    /// Each row's document, as its position in the corpus (rows of a document are consecutive).
    pub owners: Vec<i64>,
    /// Documents no window takes in whole (cut at the model's length).
    pub cut: usize,
}

/// `docs`, the documents at corpus positions `first..`, embedded as an index embeds them — one
/// row per document, or per window of whole sentences for a document longer than the model
/// reads (`options.windows`), in batches of `options.batch_size` grouped by length. `path` names
/// the destination in errors. What a database store (`gear-store`) writes.
pub fn embed_for_index(
    model: &GearModel,
    docs: &[Document],
    first: usize,
    options: &BuildOptions,
    path: &Path,
) -> Result<EmbeddedRows> {
    let (vectors, owners, cut) = embed_shard(model, docs, first, options, path)?;
    Ok(EmbeddedRows {
        vectors,
        owners,
        cut,
    })
}

/// `docs` (corpus positions from `first`) embedded by `model`'s document encoder, one row per
/// document or per window: the finite vectors, each row's document position, and how many
/// documents no window takes in whole. `path` names the output in errors.
pub(super) fn embed_shard(
    model: &GearModel,
    docs: &[Document],
    first: usize,
    options: &BuildOptions,
    path: &Path,
) -> Result<(Tensor, Vec<i64>, usize)> {
    let (texts, owners, cut) = rows_of(model, docs, first, options.windows)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = gear_model::embed_length_sorted(&refs, options.batch_size.max(1), |b| {
        model.embed_documents(b)
    })?;
    gear_model::check_finite(&vectors, path, "embeddings")
        .map_err(|e| Error::Input(format!("the model produced unusable embeddings: {e}")))?;
    Ok((vectors, owners, cut))
}

/// The texts to embed for `docs` (whose first has index `first` in the corpus), the document
/// index of each, and how many documents still hold text no row takes in.
fn rows_of(
    model: &GearModel,
    docs: &[Document],
    first: usize,
    windows: bool,
) -> Result<(Vec<String>, Vec<i64>, usize)> {
    let max_len = model.config().max_document_len;
    let (mut texts, mut owners, mut cut) = (Vec::new(), Vec::new(), 0usize);
    for (i, d) in docs.iter().enumerate() {
        let owner = (first + i) as i64;
        let fits = model.tokenizer().count_tokens(&d.text)? <= max_len;
        let sentences = if fits || !windows {
            Vec::new()
        } else {
            gear_data::split_sentences(&d.text)
        };
        if sentences.len() < 2 {
            cut += usize::from(!fits);
            texts.push(d.text.clone());
            owners.push(owner);
            continue;
        }
        let w = crate::explain::model_windows(model, &d.text, &sentences)?;
        cut += usize::from(w.cut_sentences > 0);
        for w in w.windows {
            texts.push(d.text[sentences[w.start].start..sentences[w.end - 1].end].to_owned());
            owners.push(owner);
        }
    }
    Ok((texts, owners, cut))
}
