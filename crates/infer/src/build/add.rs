//! Appending documents to an index as a new part, committed by one rename of `index.json`.

use std::path::Path;

use gear_data::{Document, JsonlWriter};
use gear_model::{save_tensors, GearModel};
use tch::Tensor;

use super::{check_corpus, embed_shard, warn_truncated, BuildOptions, FileStamp};
use crate::store::{AddedPart, DocumentIndex};
use crate::{Error, Result};

/// Appends `corpus` to the index in `dir`: embeds only the new documents (with `model`, which
/// must be the index's model) into a new part, `documents-K.jsonl` and
/// `embeddings-K.safetensors`, then commits by renaming a new `index.json` into place — the one
/// step that makes the part visible. Until then the index is the previous one, whatever happens
/// to the process; the files of an add that did not commit are ignored and overwritten by the
/// next. Ids already in the index (or twice in `corpus`) are refused. An index with an HNSW
/// graph gets the new rows inserted into it too, in the same commit (`graph_progress(rows_done,
/// rows)`). Returns the documents added.
pub fn add_to_index(
    model: &GearModel,
    model_dir: &Path,
    corpus: &[Document],
    dir: &Path,
    options: &BuildOptions,
    progress: &mut dyn FnMut(usize, usize),
    graph_progress: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    if corpus.is_empty() {
        return Err(Error::Input("the corpus to add holds no documents".into()));
    }
    check_corpus(corpus)?;
    let _lock = gear_data::OutputLock::acquire(dir)?;
    let index = DocumentIndex::open(dir, tch::Device::Cpu)?;
    index.check_model(model_dir)?;
    for (i, d) in corpus.iter().enumerate() {
        match index.document(&d.id) {
            Ok(_) => {
                return Err(Error::Input(format!(
                    "document {} of the corpus to add (`{}`) is already in {}; ids must be \
                     unique",
                    i + 1,
                    d.id,
                    dir.display()
                )))
            }
            Err(Error::UnknownDocument { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut meta = index.meta().clone();
    let shard_size = options.shard_size.max(1);
    let total = corpus.len().div_ceil(shard_size);
    let (mut vectors, mut owners, mut truncated) = (Vec::new(), Vec::new(), 0);
    for (s, docs) in corpus.chunks(shard_size).enumerate() {
        let (v, rows, cut) = embed_shard(model, docs, s * shard_size, options, dir)?;
        truncated += cut;
        vectors.push(v);
        owners.extend(rows);
        progress(s + 1, total);
    }
    warn_truncated(truncated, corpus.len(), model.config().max_document_len);
    let vectors = Tensor::cat(&vectors, 0);
    let k = meta.added.len() + 1;
    let part = AddedPart {
        documents: format!("documents-{k}.jsonl"),
        embeddings: format!("embeddings-{k}.safetensors"),
        documents_sha256: String::new(),
    };
    let rows = owners.len();
    // Both files are written whole (temporary file, rename) before index.json names them.
    save_tensors(
        vec![
            ("embeddings".into(), vectors.to_kind(meta.precision.kind())),
            ("document".into(), Tensor::from_slice(&owners)),
        ],
        dir.join(&part.embeddings),
    )?;
    let _ = std::fs::remove_file(dir.join(&part.documents));
    let mut w = JsonlWriter::create_unlocked(dir.join(&part.documents))?;
    for d in corpus {
        w.write(d)?;
    }
    w.finish()?;
    let part = AddedPart {
        documents_sha256: gear_data::Fingerprint::new()
            .file(&dir.join(&part.documents))?
            .finish(),
        ..part
    };
    meta.files.push(FileStamp::hashed(dir, &part.documents)?);
    meta.files.push(FileStamp::hashed(dir, &part.embeddings)?);
    meta.documents += corpus.len();
    meta.rows = Some(meta.rows.unwrap_or(meta.documents - corpus.len()) + rows);
    meta.added.push(part);
    // The graph, when the index has one, gains the new rows in the same commit (written under
    // its next generation's name; the one the previous index.json names stays until then).
    let replaced = match meta.ann.clone() {
        None => None,
        Some(ann) => {
            let stored = vectors.to_kind(meta.precision.kind());
            let (graph, next) = crate::ann_build::extended_graph(
                dir,
                &ann,
                &index.vector_parts(),
                &[&stored],
                graph_progress,
            )?;
            crate::ann_build::stage_graph(dir, &mut meta, &graph, next)?
        }
    };
    drop(index);
    // The commit.
    crate::store::commit_meta(dir, &meta)?;
    if let Some(old) = replaced {
        let _ = std::fs::remove_file(dir.join(old));
    }
    Ok(corpus.len())
}
