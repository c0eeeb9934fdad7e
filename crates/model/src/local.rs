//! Local retrieval: ranking a document's units (sentences) by the fusion encoder's
//! cross-attention (method §3). Pure functions over attention maps and token offsets, so the
//! aggregation can be checked by hand.
//!
//! Aggregation, exactly:
//! 1. Take layer `local_layer`'s cross-attention probabilities `P[h, i, j]` (head `h`, query
//!    token `i`, document token `j`; each row sums to 1 over the document's real tokens).
//! 2. Token weight `w_j` = mean over heads and over the query's real, non-special tokens (no
//!    `[CLS]`, `[SEP]`, padding) of `P[h, i, j]`.
//! 3. A document token belongs to the unit whose byte span contains the token's first byte;
//!    special document tokens belong to no unit.
//! 4. Unit score = `Σ w_j` over its tokens ([`UnitAggregation::Sum`], the default: the attention
//!    mass that lands on the unit) or that sum divided by the unit's token count
//!    ([`UnitAggregation::Mean`], which does not favour long sentences).
//!
//! Units cut off by truncation have no tokens and score 0.
//!
//! No reference code is mirrored: this is the method's local retrieval as
//! `GEAR_METHOD.md` §3.3 states it, read from the cross-attention probabilities that BLIP's
//! layer computes in its cross-attention block
//! ([`BertLayer.forward`](https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/med.py#L361)).

use gear_data::Span;

/// How token weights add up to a unit score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnitAggregation {
    /// Attention mass on the unit's tokens.
    #[default]
    Sum,
    /// Mean attention per token of the unit.
    Mean,
}

/// One unit with its score.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedUnit {
    /// Position of the unit in the input list.
    pub index: usize,
    /// The unit's byte span in the document.
    pub span: Span,
    /// Its score under the chosen aggregation.
    pub score: f32,
    /// Document tokens that fell into it (0: truncated away).
    pub tokens: usize,
}

/// A document token and the attention it received, for highlighting.
#[derive(Debug, Clone, PartialEq)]
pub struct AttendedToken {
    /// Token position in the tokenised document.
    pub position: usize,
    /// Its byte span in the document.
    pub span: Span,
    /// Its weight `w_j`.
    pub weight: f32,
}

/// The result of local retrieval for one (query, document) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRanking {
    /// Units, best first (ties keep input order).
    pub units: Vec<RankedUnit>,
    /// The most attended document tokens, heaviest first.
    pub top_tokens: Vec<AttendedToken>,
}

/// `w_j` from one example's probabilities `probs[h][i][j]` flattened row-major as
/// `[heads, q_len, d_len]`, averaging over heads and the query tokens where `query_keep[i]`.
pub fn token_weights(
    probs: &[f32],
    heads: usize,
    q_len: usize,
    d_len: usize,
    query_keep: &[bool],
) -> Vec<f32> {
    let mut w = vec![0.0f64; d_len];
    let kept: Vec<usize> = (0..q_len)
        .filter(|&i| query_keep.get(i).copied().unwrap_or(false))
        .collect();
    if kept.is_empty() || heads == 0 {
        return vec![0.0; d_len];
    }
    for h in 0..heads {
        for &i in &kept {
            let row = &probs[(h * q_len + i) * d_len..(h * q_len + i + 1) * d_len];
            for (acc, &p) in w.iter_mut().zip(row) {
                *acc += f64::from(p);
            }
        }
    }
    let n = (heads * kept.len()) as f64;
    w.into_iter().map(|x| (x / n) as f32).collect()
}

/// Ranks `units` by the weights of the document tokens they contain.
/// `offsets[j]` is token `j`'s byte span; `special[j]` marks tokens that belong to no unit.
pub fn rank_units(
    weights: &[f32],
    offsets: &[(usize, usize)],
    special: &[bool],
    units: &[Span],
    aggregation: UnitAggregation,
) -> Vec<RankedUnit> {
    let mut sums = vec![0.0f64; units.len()];
    let mut counts = vec![0usize; units.len()];
    for (j, (&(start, _), &w)) in offsets.iter().zip(weights).enumerate() {
        if special.get(j).copied().unwrap_or(true) {
            continue;
        }
        if let Some(u) = units.iter().position(|s| s.contains(start)) {
            sums[u] += f64::from(w);
            counts[u] += 1;
        }
    }
    let mut ranked: Vec<RankedUnit> = units
        .iter()
        .enumerate()
        .map(|(index, &span)| {
            let score = match aggregation {
                UnitAggregation::Sum => sums[index],
                UnitAggregation::Mean if counts[index] > 0 => sums[index] / counts[index] as f64,
                UnitAggregation::Mean => 0.0,
            };
            RankedUnit {
                index,
                span,
                score: score as f32,
                tokens: counts[index],
            }
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    ranked
}

/// The `k` heaviest non-special document tokens.
pub fn top_tokens(
    weights: &[f32],
    offsets: &[(usize, usize)],
    special: &[bool],
    k: usize,
) -> Vec<AttendedToken> {
    let mut tokens: Vec<AttendedToken> = offsets
        .iter()
        .zip(weights)
        .enumerate()
        .filter(|(j, _)| !special.get(*j).copied().unwrap_or(true))
        .map(|(position, (&(s, e), &weight))| AttendedToken {
            position,
            span: Span::new(s, e),
            weight,
        })
        .collect();
    tokens.sort_by(|a, b| {
        b.weight
            .total_cmp(&a.weight)
            .then(a.position.cmp(&b.position))
    });
    tokens.truncate(k);
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_average_heads_and_kept_query_tokens() {
        // 2 heads, 3 query tokens ([CLS], word, [SEP]), 3 document tokens.
        #[rustfmt::skip]
        let probs = [
            // head 0
            0.9, 0.05, 0.05,   0.2, 0.6, 0.2,   0.9, 0.05, 0.05,
            // head 1
            0.9, 0.05, 0.05,   0.4, 0.2, 0.4,   0.9, 0.05, 0.05,
        ];
        let w = token_weights(&probs, 2, 3, 3, &[false, true, false]);
        let want = [0.3, 0.4, 0.3];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn sum_and_mean_rank_differently_on_long_units() {
        // Document "Aa bb cc. Dd." → tokens [CLS] aa bb cc . dd . [SEP]
        let offsets = [
            (0, 0),
            (0, 2),
            (3, 5),
            (6, 8),
            (8, 9),
            (10, 12),
            (12, 13),
            (0, 0),
        ];
        let special = [true, false, false, false, false, false, false, true];
        let weights = [0.5, 0.1, 0.1, 0.1, 0.0, 0.15, 0.05, 0.0];
        let units = [Span::new(0, 9), Span::new(10, 13)];
        let sum = rank_units(&weights, &offsets, &special, &units, UnitAggregation::Sum);
        assert_eq!(sum[0].index, 0);
        assert!((sum[0].score - 0.3).abs() < 1e-6 && (sum[1].score - 0.2).abs() < 1e-6);
        assert_eq!((sum[0].tokens, sum[1].tokens), (4, 2));
        let mean = rank_units(&weights, &offsets, &special, &units, UnitAggregation::Mean);
        assert_eq!(mean[0].index, 1);
        assert!((mean[0].score - 0.1).abs() < 1e-6 && (mean[1].score - 0.075).abs() < 1e-6);
    }

    #[test]
    fn truncated_units_score_zero_and_top_tokens_skip_specials() {
        let offsets = [(0, 0), (0, 3), (4, 7), (0, 0)];
        let special = [true, false, false, true];
        let weights = [0.7, 0.1, 0.2, 0.0];
        let units = [Span::new(0, 7), Span::new(8, 20)];
        let ranked = rank_units(&weights, &offsets, &special, &units, UnitAggregation::Sum);
        assert_eq!(ranked[1].index, 1);
        assert_eq!(ranked[1].tokens, 0);
        assert_eq!(ranked[1].score, 0.0);
        let top = top_tokens(&weights, &offsets, &special, 5);
        assert_eq!(top.iter().map(|t| t.position).collect::<Vec<_>>(), [2, 1]);
    }
}
