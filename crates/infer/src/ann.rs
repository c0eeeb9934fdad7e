//! Approximate search over an HNSW graph (the `usearch` crate): [`HnswIndex`] builds a graph
//! over stored vectors with the inserts spread over the cores, saves it, opens a saved one
//! memory-mapped, and extends a loaded one. How an index keeps its graph on disk (`gear index
//! ann`, `gear index build --ann hnsw`, `gear index add`) is `ann_build.rs`.
//!
//! The graph keeps its own copy of every vector, quantised (int8 by default: a quarter of the
//! float32 file) — it navigates with those. The candidates it returns (`rerank × k`) are then
//! scored again against the index's stored vectors, so every score a search reports is the
//! exact cosine, and the order of the final top-k is exact among the candidates.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::search::{Hit, VectorIndex};
use crate::{Error, Result};

/// How the graph stores its copy of the vectors (it navigates with them; results are scored
/// again with the index's own vectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphVectors {
    /// One byte a value (scaled by 127): a quarter of float32.
    #[default]
    I8,
    /// float16: half of float32.
    F16,
    /// float32: a full second copy.
    F32,
}

impl GraphVectors {
    fn scalar(self) -> ScalarKind {
        match self {
            Self::I8 => ScalarKind::I8,
            Self::F16 => ScalarKind::F16,
            Self::F32 => ScalarKind::F32,
        }
    }
}

/// How the graph is built (recorded in `index.json`, reused by `gear index add`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HnswParams {
    /// Links per node (HNSW's M).
    pub connectivity: usize,
    /// Candidate list size while inserting (quality of the graph).
    pub ef_construction: usize,
    /// The graph's copy of the vectors.
    pub vectors: GraphVectors,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            connectivity: 32,
            ef_construction: 200,
            vectors: GraphVectors::I8,
        }
    }
}

/// Search-time HNSW settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswConfig {
    /// Candidate list size while searching (recall vs speed; raised to the candidates asked
    /// for when that is more).
    pub ef_search: usize,
    /// Candidates taken from the graph per result wanted, scored again exactly (1: the graph's
    /// own order).
    pub rerank: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self {
            ef_search: 64,
            rerank: 4,
        }
    }
}

fn usearch_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Index {
        path: path.to_owned(),
        message: format!("HNSW graph: {what}: {e}"),
    }
}

fn options(dim: usize, params: &HnswParams) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        metric: MetricKind::IP,
        quantization: params.vectors.scalar(),
        connectivity: params.connectivity,
        expansion_add: params.ef_construction,
        expansion_search: HnswConfig::default().ef_search,
        multi: false,
    }
}

/// An empty graph for `dim`-wide vectors (`path` names it in errors).
fn new_graph(dim: usize, params: &HnswParams, path: &Path) -> Result<Index> {
    Index::new(&options(dim, params)).map_err(|e| usearch_error(path, "new", e))
}

/// The width of the rows of `parts` (0 when there are none).
fn width(parts: &[&Tensor]) -> usize {
    parts.first().map_or(0, |p| p.size()[1] as usize)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Rows inserted per progress report (and per float32 copy of the rows being inserted).
const INSERT_BLOCK: i64 = 16_384;

/// Inserts the rows of `parts` (row numbers starting at `first`) into `graph`, spread over the
/// cores; `progress(done, total)` after each block.
fn insert(
    graph: &Index,
    parts: &[&Tensor],
    first: usize,
    path: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let total: usize = parts.iter().map(|p| p.size()[0] as usize).sum();
    let threads = threads();
    graph
        .reserve_capacity_and_threads(graph.size() + total, threads)
        .map_err(|e| usearch_error(path, "reserve", e))?;
    let mut key = first as u64;
    let mut done = 0;
    for part in parts {
        let (rows, dim) = (part.size()[0], part.size()[1] as usize);
        let mut at = 0;
        while at < rows {
            let len = INSERT_BLOCK.min(rows - at);
            let block =
                Vec::<f32>::try_from(part.narrow(0, at, len).to_kind(Kind::Float).flatten(0, -1))?;
            let failed = std::sync::Mutex::new(None);
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (block, failed) = (&block, &failed);
                    s.spawn(move || {
                        for (i, row) in block.chunks_exact(dim).enumerate().skip(t).step_by(threads)
                        {
                            if let Err(e) = graph.add(key + i as u64, row) {
                                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                                return;
                            }
                        }
                    });
                }
            });
            if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
                return Err(usearch_error(path, "insert", e));
            }
            key += len as u64;
            at += len;
            done += len as usize;
            progress(done, total);
        }
    }
    Ok(())
}

/// Approximate search over a persisted HNSW graph, its candidates scored again against the
/// index's vectors.
pub struct HnswIndex {
    graph: Index,
    /// The index's vectors (every part), for exact scores.
    parts: Vec<Tensor>,
    /// First row of each part, and the total.
    starts: Vec<i64>,
    config: HnswConfig,
}

impl HnswIndex {
    pub(crate) fn with_parts(graph: Index, parts: &[&Tensor], config: HnswConfig) -> Self {
        let mut starts = vec![0];
        for p in parts {
            starts.push(starts[starts.len() - 1] + p.size()[0]);
        }
        Self {
            graph,
            parts: parts.iter().map(|p| p.shallow_clone()).collect(),
            starts,
            config,
        }
    }

    /// Builds a graph in memory over the rows of `parts` (unit rows, in order).
    /// `progress(rows_done, rows)` as it goes.
    pub fn build(
        parts: &[&Tensor],
        params: &HnswParams,
        config: HnswConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let here = Path::new("<memory>");
        let graph = new_graph(width(parts), params, here)?;
        insert(&graph, parts, 0, here, progress)?;
        Ok(Self::with_parts(graph, parts, config))
    }

    /// Opens the graph file `path` (memory-mapped, read-only) over the rows of `parts`; the
    /// graph must hold exactly those rows at their width.
    pub fn open(
        path: &Path,
        parts: &[&Tensor],
        params: &HnswParams,
        config: HnswConfig,
    ) -> Result<Self> {
        let dim = width(parts);
        let graph = new_graph(dim, params, path)?;
        graph
            .view(&path.to_string_lossy())
            .map_err(|e| usearch_error(path, "open", e))?;
        let rows: i64 = parts.iter().map(|p| p.size()[0]).sum();
        if graph.size() as i64 != rows || graph.dimensions() != dim {
            return Err(Error::Index {
                path: path.to_owned(),
                message: format!(
                    "HNSW graph holds {} × {} vectors, the index {rows} × {dim}; rebuild it with \
                     `gear index ann`",
                    graph.size(),
                    graph.dimensions()
                ),
            });
        }
        Ok(Self::with_parts(graph, parts, config))
    }

    /// Loads the graph file `path` into memory (to extend it), over the rows of `parts`.
    pub(crate) fn load(path: &Path, parts: &[&Tensor], params: &HnswParams) -> Result<Self> {
        let graph = new_graph(width(parts), params, path)?;
        graph
            .load(&path.to_string_lossy())
            .map_err(|e| usearch_error(path, "load", e))?;
        Ok(Self::with_parts(graph, parts, HnswConfig::default()))
    }

    /// Appends the rows of `more` (numbered on after the graph's), scored against `more` too.
    pub(crate) fn extend(
        &mut self,
        more: &[&Tensor],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let first = self.graph.size();
        insert(&self.graph, more, first, Path::new("<memory>"), progress)?;
        for p in more {
            self.starts
                .push(self.starts[self.starts.len() - 1] + p.size()[0]);
            self.parts.push(p.shallow_clone());
        }
        Ok(())
    }

    /// Writes the graph to `path` (a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        self.graph
            .save(&tmp.to_string_lossy())
            .map_err(|e| usearch_error(&tmp, "save", e))?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Exact scores of `rows[i]` against query row `owner[i]` of `queries` (`flat`: the same
    /// queries as one float32 slice, `dim` wide).
    fn rescore(
        &self,
        queries: &Tensor,
        flat: &[f32],
        dim: usize,
        rows: &[i64],
        owner: &[i64],
    ) -> Result<Vec<f32>> {
        let mut scores = vec![0f32; rows.len()];
        for (p, part) in self.parts.iter().enumerate() {
            let (lo, hi) = (self.starts[p], self.starts[p + 1]);
            let at: Vec<usize> = (0..rows.len())
                .filter(|&i| (lo..hi).contains(&rows[i]))
                .collect();
            if at.is_empty() {
                continue;
            }
            if let Some(data) = float_rows(part) {
                // float32 rows: a dot product each, read where they lie.
                for &i in &at {
                    let r = (rows[i] - lo) as usize;
                    let q = owner[i] as usize;
                    scores[i] = data[r * dim..(r + 1) * dim]
                        .iter()
                        .zip(&flat[q * dim..(q + 1) * dim])
                        .map(|(a, b)| a * b)
                        .sum();
                }
                continue;
            }
            let local: Vec<i64> = at.iter().map(|&i| rows[i] - lo).collect();
            let q: Vec<i64> = at.iter().map(|&i| owner[i]).collect();
            let v = part
                .index_select(0, &Tensor::from_slice(&local))
                .to_kind(Kind::Float);
            let s = (v * queries.index_select(0, &Tensor::from_slice(&q))).sum_dim_intlist(
                [1].as_slice(),
                false,
                Kind::Float,
            );
            for (&i, x) in at.iter().zip(Vec::<f32>::try_from(s)?) {
                scores[i] = x;
            }
        }
        Ok(scores)
    }
}

/// The values of a contiguous float32 CPU tensor as a slice (other tensors: `None`).
fn float_rows(t: &Tensor) -> Option<&[f32]> {
    if t.kind() != Kind::Float || t.device() != Device::Cpu || !t.is_contiguous() {
        return None;
    }
    let len = t.numel();
    if len == 0 {
        return Some(&[]);
    }
    // SAFETY: the tensor is contiguous, on the CPU and float32, so `data_ptr` points at `len`
    // initialised, aligned f32 values; the slice borrows `t`, which keeps its storage alive
    // (the mapping, for an opened index, outlives the tensor too); nothing writes to index
    // vectors while they are searched (they are read-only after open).
    #[allow(unsafe_code)]
    unsafe {
        Some(std::slice::from_raw_parts(t.data_ptr() as *const f32, len))
    }
}

impl VectorIndex for HnswIndex {
    fn len(&self) -> usize {
        self.graph.size()
    }

    fn search(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<Hit>>> {
        let q = queries.to_kind(Kind::Float).to_device(Device::Cpu);
        let (n, dim) = (q.size()[0] as usize, q.size()[1] as usize);
        let k = k.min(self.len());
        if k == 0 || n == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let count = (k * self.config.rerank.max(1)).min(self.len());
        self.graph
            .change_expansion_search(self.config.ef_search.max(count));
        let flat = Vec::<f32>::try_from(q.flatten(0, -1))?;
        let rows: Vec<&[f32]> = flat.chunks(dim.max(1)).collect();
        let graph = &self.graph;
        let one = |r: &[f32]| {
            graph
                .search(r, count)
                .map(|m| m.keys)
                .map_err(|e| usearch_error(Path::new("<search>"), "search", e))
        };
        // Queries are independent: split them over the cores (a lone query runs here).
        let per = rows.len().div_ceil(threads()).max(1);
        let found: Vec<Result<Vec<u64>>> = if per >= rows.len() {
            rows.iter().map(|r| one(r)).collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = rows
                    .chunks(per)
                    .map(|chunk| {
                        let one = &one;
                        s.spawn(move || chunk.iter().map(|r| one(r)).collect::<Vec<_>>())
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        };
        let found = found.into_iter().collect::<Result<Vec<_>>>()?;
        let (mut all_rows, mut owner) = (Vec::new(), Vec::new());
        for (i, keys) in found.iter().enumerate() {
            all_rows.extend(keys.iter().map(|&key| key as i64));
            owner.extend(std::iter::repeat_n(i as i64, keys.len()));
        }
        let scores = self.rescore(&q, &flat, dim, &all_rows, &owner)?;
        let mut at = 0;
        Ok(found
            .iter()
            .map(|keys| {
                let mut hits: Vec<Hit> = keys
                    .iter()
                    .zip(&scores[at..at + keys.len()])
                    .map(|(&key, &score)| Hit {
                        row: key as usize,
                        score,
                    })
                    .collect();
                at += keys.len();
                hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
                hits.truncate(k);
                hits
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{recall_against_exact, ExactIndex};

    fn unit_rows(n: i64, dim: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let v = Tensor::randn([n, dim], (Kind::Float, Device::Cpu));
        &v / v.norm_scalaropt_dim(2, [1].as_slice(), true)
    }

    #[test]
    fn a_saved_graph_answers_as_it_did_before_saving() {
        let (a, b) = (unit_rows(700, 24, 1), unit_rows(300, 24, 2));
        let queries = unit_rows(200, 24, 3);
        let exact = ExactIndex::from_parts(&[&a, &b], Device::Cpu)
            .search(&queries, 10)
            .unwrap();
        for vectors in [GraphVectors::I8, GraphVectors::F16, GraphVectors::F32] {
            let params = HnswParams {
                vectors,
                ..HnswParams::default()
            };
            let mut last = (0, 0);
            let built = HnswIndex::build(&[&a, &b], &params, HnswConfig::default(), &mut |d, t| {
                last = (d, t)
            })
            .unwrap();
            assert_eq!(last, (1000, 1000));
            let before = built.search(&queries, 10).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("g.usearch");
            built.save(&path).unwrap();
            let reopened =
                HnswIndex::open(&path, &[&a, &b], &params, HnswConfig::default()).unwrap();
            assert_eq!(
                reopened.search(&queries, 10).unwrap(),
                before,
                "{vectors:?}"
            );
            let recall = recall_against_exact(&exact, &before);
            assert!(recall > 0.95, "{vectors:?}: recall@10 {recall}");
            // Scores are the exact ones.
            for (e, h) in exact.iter().zip(&before) {
                for hit in h {
                    if let Some(x) = e.iter().find(|x| x.row == hit.row) {
                        assert!((x.score - hit.score).abs() < 1e-5);
                    }
                }
            }
            // A graph over other rows is refused.
            let err = HnswIndex::open(&path, &[&a], &params, HnswConfig::default())
                .err()
                .expect("row count differs")
                .to_string();
            assert!(
                err.contains("1000 × 24") && err.contains("700 × 24"),
                "{err}"
            );
        }
    }

    #[test]
    fn extending_a_loaded_graph_finds_the_new_rows() {
        let (a, b) = (unit_rows(400, 16, 4), unit_rows(100, 16, 5));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.usearch");
        let params = HnswParams::default();
        HnswIndex::build(&[&a], &params, HnswConfig::default(), &mut |_, _| {})
            .unwrap()
            .save(&path)
            .unwrap();
        let mut graph = HnswIndex::load(&path, &[&a], &params).unwrap();
        graph.extend(&[&b], &mut |_, _| {}).unwrap();
        assert_eq!(graph.len(), 500);
        // Each new row is its own nearest neighbour, numbered after the old rows.
        let hits = graph.search(&b, 1).unwrap();
        let found = hits
            .iter()
            .enumerate()
            .filter(|(i, h)| h[0].row == 400 + i)
            .count();
        assert!(found >= 98, "{found} of 100 new rows found themselves");
    }
}
