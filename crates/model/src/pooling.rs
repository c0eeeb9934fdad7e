//! Sentence embeddings from token states: mean pooling over real tokens and L2 normalisation,
//! as sentence-transformers' `Pooling(mean)` + `Normalize` modules.

use tch::{Kind, Tensor};

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
    fn normalize_gives_unit_rows_and_keeps_zero_rows_finite() {
        let x = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 0.0]).view([2, 2]);
        let y = Vec::<f32>::try_from(l2_normalize(&x).flatten(0, -1)).unwrap();
        assert_eq!(y, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
