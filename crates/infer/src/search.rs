//! Vector search behind a trait, so the approximate backend (`ann.rs`) can sit beside the
//! exact one.

use tch::{Device, Kind, Tensor};

use crate::Result;

/// One search result: a row of the index and its cosine score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Row (document position) in the index.
    pub row: usize,
    /// Inner product of unit vectors (cosine).
    pub score: f32,
}

/// A searchable set of unit vectors (`Send`: an open index can move to a server's model
/// thread).
pub trait VectorIndex: Send {
    /// Number of vectors.
    fn len(&self) -> usize;
    /// Whether the index is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `k` best rows for each query row of `queries [n, dim]`, best first.
    fn search(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<Hit>>>;
}

/// Exact search: one matrix product and a top-k per batch of queries (per part, merged, for an
/// index that grew by `gear index add`).
pub struct ExactIndex {
    parts: Vec<Tensor>,
}

/// Queries scored per matrix product (bounds the `[batch, N]` score matrix).
const QUERY_BATCH: i64 = 256;

/// float16 rows widened to float32 per matrix product.
const HALF_BLOCK: i64 = 65_536;

impl ExactIndex {
    /// An index over `vectors [N, dim]`, moved to `device`.
    pub fn new(vectors: &Tensor, device: Device) -> Self {
        Self::from_parts(&[vectors], device)
    }

    /// An index over the rows of several matrices, in order (row numbers run on across them).
    /// float16 parts stay float16 on the CPU (scored in float32 a block of rows at a time);
    /// everything else becomes float32 on `device`.
    pub fn from_parts(parts: &[&Tensor], device: Device) -> Self {
        Self {
            parts: parts
                .iter()
                .map(|v| match (v.kind(), device) {
                    (Kind::Half, Device::Cpu) => v.shallow_clone(),
                    _ => v.to_kind(Kind::Float).to_device(device),
                })
                .collect(),
        }
    }
}

impl VectorIndex for ExactIndex {
    fn len(&self) -> usize {
        self.parts.iter().map(|p| p.size()[0] as usize).sum()
    }

    fn search(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<Hit>>> {
        let k = k.min(self.len()) as i64;
        let n = queries.size()[0];
        let mut out = Vec::with_capacity(n as usize);
        if k == 0 {
            return Ok(vec![Vec::new(); n as usize]);
        }
        let device = self.parts[0].device();
        let queries = queries.to_kind(Kind::Float).to_device(device);
        let mut start = 0;
        while start < n {
            let len = QUERY_BATCH.min(n - start);
            let batch = queries.narrow(0, start, len);
            // Each part's own top-k (row numbers shifted to the whole index), then the best k.
            let mut scores = Vec::new();
            let mut rows = Vec::new();
            let mut offset = 0i64;
            for part in &self.parts {
                let size = part.size()[0];
                // float16 rows are widened a block at a time, so memory stays near half.
                let block = if part.kind() == Kind::Half {
                    HALF_BLOCK
                } else {
                    size.max(1)
                };
                let mut at = 0;
                while at < size {
                    let len = block.min(size - at);
                    let rows_f32 = part.narrow(0, at, len).to_kind(Kind::Float);
                    let kk = k.min(len);
                    let (s, r) = batch
                        .matmul(&rows_f32.transpose(0, 1))
                        .topk(kk, 1, true, true);
                    scores.push(s);
                    rows.push(r + offset + at);
                    at += len;
                }
                offset += size;
            }
            let (top_scores, top_rows) = if scores.len() == 1 {
                (scores.remove(0), rows.remove(0))
            } else {
                let (s, at) = Tensor::cat(&scores, 1).topk(k, 1, true, true);
                (s, Tensor::cat(&rows, 1).gather(1, &at, false))
            };
            let top_scores =
                Vec::<f32>::try_from(top_scores.to_device(Device::Cpu).flatten(0, -1))?;
            let top_rows = Vec::<i64>::try_from(top_rows.to_device(Device::Cpu).flatten(0, -1))?;
            for q in 0..len as usize {
                let range = q * k as usize..(q + 1) * k as usize;
                out.push(
                    top_rows[range.clone()]
                        .iter()
                        .zip(&top_scores[range])
                        .map(|(&row, &score)| Hit {
                            row: row as usize,
                            score,
                        })
                        .collect(),
                );
            }
            start += len;
        }
        Ok(out)
    }
}

/// Share of the exact top-`k` rows the approximate search also returns, averaged over queries.
pub fn recall_against_exact(exact: &[Vec<Hit>], approximate: &[Vec<Hit>]) -> f64 {
    let mut total = 0.0;
    for (e, a) in exact.iter().zip(approximate) {
        if e.is_empty() {
            continue;
        }
        let found = e
            .iter()
            .filter(|h| a.iter().any(|x| x.row == h.row))
            .count();
        total += found as f64 / e.len() as f64;
    }
    total / exact.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_search_returns_the_true_top_k() {
        tch::manual_seed(3);
        let v = Tensor::randn([500, 16], (Kind::Float, Device::Cpu));
        let v = &v / v.norm_scalaropt_dim(2, [1].as_slice(), true);
        let q = Tensor::randn([300, 16], (Kind::Float, Device::Cpu));
        let index = ExactIndex::new(&v, Device::Cpu);
        let hits = index.search(&q, 7).unwrap();
        assert_eq!(hits.len(), 300);
        let vv = Vec::<f32>::try_from(v.flatten(0, -1)).unwrap();
        let qq = Vec::<f32>::try_from(q.flatten(0, -1)).unwrap();
        for (i, h) in hits.iter().enumerate() {
            // Brute force in plain Rust.
            let mut all: Vec<(usize, f32)> = (0..500)
                .map(|r| {
                    (
                        r,
                        (0..16)
                            .map(|d| qq[i * 16 + d] * vv[r * 16 + d])
                            .sum::<f32>(),
                    )
                })
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let want: Vec<usize> = all[..7].iter().map(|x| x.0).collect();
            let got: Vec<usize> = h.iter().map(|x| x.row).collect();
            assert_eq!(got, want, "query {i}");
            for (x, y) in h.iter().zip(&all[..7]) {
                assert!((x.score - y.1).abs() < 1e-5);
            }
        }
        assert!(index.search(&q, 0).unwrap().iter().all(Vec::is_empty));
        assert_eq!(
            index.search(&q.narrow(0, 0, 1), 1000).unwrap()[0].len(),
            500
        );
    }
}
