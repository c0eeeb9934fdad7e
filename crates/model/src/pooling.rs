//! Sentence embeddings from token states: the pooling modes of sentence-transformers' `Pooling`
//! module (CLS, mean, max, mean/√len, last token) and its `Normalize` module.
//!
//! Mirrors [`Pooling.forward`](https://github.com/huggingface/sentence-transformers/blob/v6.2.0/sentence_transformers/sentence_transformer/modules/pooling.py#L123).

use tch::{Kind, Tensor};

use crate::Pooling;

/// `hidden [batch, seq, hidden]` pooled over the positions where `mask [batch, seq]` is 1 (real
/// tokens, padding on the right) → `[batch, hidden]`, as sentence-transformers pools.
pub fn pool(hidden: &Tensor, mask: &Tensor, pooling: Pooling) -> Tensor {
    match pooling {
        Pooling::Cls => hidden.select(1, 0),
        Pooling::Mean => mean_pool(hidden, mask),
        Pooling::Max => {
            // Padding set to -1e9 so it never wins (sentence-transformers does the same).
            let pad = mask.eq(0).unsqueeze(-1);
            hidden.masked_fill(&pad, -1e9).amax([1].as_slice(), false)
        }
        Pooling::MeanSqrtLen => {
            let m = mask.to_kind(hidden.kind()).unsqueeze(-1);
            let summed = (hidden * &m).sum_dim_intlist(1, false, hidden.kind());
            let counts = m.sum_dim_intlist(1, false, hidden.kind()).clamp_min(1e-9);
            summed / counts.sqrt()
        }
        Pooling::LastToken => {
            let last = (mask.sum_dim_intlist(1, false, Kind::Int64) - 1).clamp_min(0);
            let index = last
                .view([-1, 1, 1])
                .expand([-1, 1, hidden.size()[2]], false);
            hidden.gather(1, &index, false).squeeze_dim(1)
        }
    }
}

/// Mean of `hidden [batch, seq, hidden]` over positions where `mask [batch, seq]` is 1.
/// A row with no real token gives zeros rather than NaN.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(hidden.kind()).unsqueeze(-1);
    let summed = (hidden * &m).sum_dim_intlist(1, false, hidden.kind());
    let counts = m.sum_dim_intlist(1, false, hidden.kind()).clamp_min(1e-9);
    summed / counts
}

/// Rows of `x [batch, dim]` scaled to unit L2 norm (norm floored at 1e-12, as `F.normalize`).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x
        .to_kind(Kind::Float)
        .norm_scalaropt_dim(2, [-1].as_slice(), true)
        .clamp_min(1e-12)
        .to_kind(x.kind());
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pool_ignores_padding() {
        let hidden = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 100.0, 100.0]).view([1, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 0]).view([1, 3]);
        let pooled = Vec::<f32>::try_from(mean_pool(&hidden, &mask).flatten(0, -1)).unwrap();
        assert_eq!(pooled, vec![2.0, 3.0]);
    }

    #[test]
    fn every_pooling_mode_ignores_padding() {
        // Two rows: [1,2],[3,4],[pad] and [5,-6],[pad],[pad].
        let hidden = Tensor::from_slice(&[
            1.0f32, 2.0, 3.0, 4.0, 100.0, 100.0, 5.0, -6.0, 100.0, 100.0, 100.0, 100.0,
        ])
        .view([2, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 0, 1, 0, 0]).view([2, 3]);
        let got = |p| Vec::<f32>::try_from(pool(&hidden, &mask, p).flatten(0, -1)).unwrap();
        assert_eq!(got(Pooling::Cls), vec![1.0, 2.0, 5.0, -6.0]);
        assert_eq!(got(Pooling::Mean), vec![2.0, 3.0, 5.0, -6.0]);
        assert_eq!(got(Pooling::Max), vec![3.0, 4.0, 5.0, -6.0]);
        assert_eq!(got(Pooling::LastToken), vec![3.0, 4.0, 5.0, -6.0]);
        let s = 2f32.sqrt();
        let sqrt = got(Pooling::MeanSqrtLen);
        for (a, b) in sqrt.iter().zip([4.0 / s, 6.0 / s, 5.0, -6.0]) {
            assert!((a - b).abs() < 1e-6, "{sqrt:?}");
        }
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero_rows_finite() {
        let x = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 0.0]).view([2, 2]);
        let y = Vec::<f32>::try_from(l2_normalize(&x).flatten(0, -1)).unwrap();
        assert_eq!(y, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
