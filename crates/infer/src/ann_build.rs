//! An index's HNSW graph on disk: built over every stored vector and committed with the index
//! (`build_ann`), or extended by `gear index add` and committed with its new part. Each graph
//! is written under a new generation's name (`hnsw-G.usearch`), so a committed graph file is
//! never written over; the one the previous `index.json` named is removed after the commit.

use std::path::Path;

use tch::{Device, Tensor};

use crate::ann::{HnswConfig, HnswIndex, HnswParams};
use crate::search::VectorIndex;
use crate::{Error, Result};

/// The graph an index records: its file, how it was built, and the rows it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnnMeta {
    /// The graph file, in the index folder.
    pub file: String,
    /// Build settings.
    pub params: HnswParams,
    /// Rows in the graph (all of the index's).
    pub rows: usize,
    /// Numbers the graph files: each rebuild or extension writes `hnsw-<generation>.usearch`,
    /// so a committed graph file is never written over.
    pub generation: u64,
}

impl AnnMeta {
    /// The file name of a graph generation.
    pub(crate) fn file_name(generation: u64) -> String {
        format!("hnsw-{generation}.usearch")
    }
}

/// Builds the HNSW graph of the index in `dir` over every stored vector and commits it (a new
/// `hnsw-G.usearch`, then `index.json` renamed into place; the previous graph file, if any, is
/// removed after the commit). Replaces an existing graph. `progress(rows_done, rows)`.
pub fn build_ann(
    dir: &Path,
    params: &HnswParams,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<AnnMeta> {
    if params.connectivity < 2 || params.ef_construction == 0 {
        return Err(Error::Input(format!(
            "HNSW needs connectivity ≥ 2 and ef_construction ≥ 1 (got {} and {})",
            params.connectivity, params.ef_construction
        )));
    }
    let _lock = gear_data::OutputLock::acquire(dir)?;
    let index = crate::DocumentIndex::open(dir, Device::Cpu)?;
    let parts = index.vector_parts();
    let graph = HnswIndex::build(&parts, params, HnswConfig::default(), progress)?;
    let mut meta = index.meta().clone();
    let generation = meta.ann.as_ref().map_or(1, |a| a.generation + 1);
    let ann = AnnMeta {
        file: AnnMeta::file_name(generation),
        params: *params,
        rows: graph.len(),
        generation,
    };
    let replaced = stage_graph(dir, &mut meta, &graph, ann.clone())?;
    drop(graph);
    drop(parts);
    drop(index);
    crate::store::commit_meta(dir, &meta)?;
    if let Some(old) = replaced {
        let _ = std::fs::remove_file(dir.join(old));
    }
    Ok(ann)
}

/// Saves `graph` as `ann.file` and records it in `meta` (not yet committed). Returns the
/// graph file the previous record named, to remove once `meta` is committed.
pub(crate) fn stage_graph(
    dir: &Path,
    meta: &mut crate::IndexMeta,
    graph: &HnswIndex,
    ann: AnnMeta,
) -> Result<Option<String>> {
    graph.save(&dir.join(&ann.file))?;
    let old = meta.ann.take();
    meta.files
        .retain(|f| old.as_ref().is_none_or(|o| f.name != o.file));
    meta.files
        .push(crate::build::FileStamp::hashed(dir, &ann.file)?);
    let replaced = old.map(|o| o.file).filter(|f| f != &ann.file);
    meta.ann = Some(ann);
    Ok(replaced)
}

/// The graph of an index extended by the rows `gear index add` appends: loaded from
/// `dir/ann.file`, the rows of `more` inserted after its own, ready for [`stage_graph`] under
/// the next generation's name.
pub(crate) fn extended_graph(
    dir: &Path,
    ann: &AnnMeta,
    existing: &[&Tensor],
    more: &[&Tensor],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(HnswIndex, AnnMeta)> {
    let mut graph = HnswIndex::load(&dir.join(&ann.file), existing, &ann.params)?;
    graph.extend(more, progress)?;
    let next = AnnMeta {
        file: AnnMeta::file_name(ann.generation + 1),
        params: ann.params,
        rows: graph.len(),
        generation: ann.generation + 1,
    };
    Ok((graph, next))
}
