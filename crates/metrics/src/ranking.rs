//! Ranking metrics over one query's ranked list and its set of relevant items.

use serde::Serialize;

fn is_relevant<T: PartialEq>(item: &T, relevant: &[T]) -> bool {
    relevant.contains(item)
}

/// `|relevant ∩ top-k| / |relevant|`; 0 when nothing is relevant.
pub fn recall_at_k<T: PartialEq>(ranked: &[T], relevant: &[T], k: usize) -> f64 {
    let relevant = dedup(relevant);
    if relevant.is_empty() {
        return 0.0;
    }
    let hits = dedup(&ranked[..k.min(ranked.len())])
        .into_iter()
        .filter(|r| relevant.contains(r))
        .count();
    hits as f64 / relevant.len() as f64
}

/// `AP@k = (1 / min(|relevant|, k)) · Σ_{i ≤ k} precision@i · rel(i)` (method §5).
pub fn average_precision_at_k<T: PartialEq>(ranked: &[T], relevant: &[T], k: usize) -> f64 {
    let relevant = dedup(relevant);
    if relevant.is_empty() || k == 0 {
        return 0.0;
    }
    precision_sum(ranked, &relevant, k) / relevant.len().min(k) as f64
}

/// `Σ_{i ≤ k} precision@i · rel(i)`, a repeated item counting once.
fn precision_sum<T: PartialEq>(ranked: &[T], relevant: &[&T], k: usize) -> f64 {
    let mut hits = 0usize;
    let mut sum = 0.0;
    let mut seen: Vec<&T> = Vec::new();
    for (i, item) in ranked.iter().take(k).enumerate() {
        if seen.contains(&item) {
            continue;
        }
        seen.push(item);
        if relevant.contains(&item) {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    sum
}

/// `1 / rank` of the first relevant item within the top `k`, else 0.
pub fn reciprocal_rank_at_k<T: PartialEq>(ranked: &[T], relevant: &[T], k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|r| is_relevant(r, relevant))
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// Binary-relevance nDCG@k: `DCG = Σ_{i ≤ k} rel(i) / log2(i + 1)` over the ideal DCG.
pub fn ndcg_at_k<T: PartialEq>(ranked: &[T], relevant: &[T], k: usize) -> f64 {
    let relevant = dedup(relevant);
    if relevant.is_empty() || k == 0 {
        return 0.0;
    }
    let mut seen: Vec<&T> = Vec::new();
    let mut dcg = 0.0;
    for (i, item) in ranked.iter().take(k).enumerate() {
        if seen.contains(&item) {
            continue;
        }
        seen.push(item);
        if relevant.contains(&item) {
            dcg += 1.0 / ((i + 2) as f64).log2();
        }
    }
    let ideal: f64 = (0..relevant.len().min(k))
        .map(|i| 1.0 / ((i + 2) as f64).log2())
        .sum();
    dcg / ideal
}

/// Graded nDCG@k as `trec_eval`'s `ndcg_cut` (and so BEIR) computes it: the gain of a ranked
/// item is its judged relevance (0 when unjudged or ≤ 0), discounted by `log2(rank + 1)`; the
/// ideal DCG ranks the positive judgements by relevance. 0 when nothing is relevant.
pub fn ndcg_at_k_graded<T: PartialEq>(ranked: &[T], judged: &[(T, i32)], k: usize) -> f64 {
    let gain = |item: &T| {
        judged
            .iter()
            .find(|(j, _)| j == item)
            .map_or(0.0, |(_, g)| f64::from((*g).max(0)))
    };
    let mut seen: Vec<&T> = Vec::new();
    let mut dcg = 0.0;
    for (i, item) in ranked.iter().take(k).enumerate() {
        if seen.contains(&item) {
            continue;
        }
        seen.push(item);
        dcg += gain(item) / ((i + 2) as f64).log2();
    }
    let mut ideal: Vec<f64> = judged
        .iter()
        .map(|(_, g)| f64::from((*g).max(0)))
        .filter(|g| *g > 0.0)
        .collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| g / ((i + 2) as f64).log2())
        .sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

/// AP@k as `trec_eval`'s `map_cut` (and so BEIR) computes it: the precision at each relevant
/// item within the top `k`, summed and divided by the number of relevant items (all of them,
/// not `min(|relevant|, k)` as [`average_precision_at_k`], the paper's definition).
pub fn average_precision_trec_at_k<T: PartialEq>(ranked: &[T], relevant: &[T], k: usize) -> f64 {
    let relevant = dedup(relevant);
    if relevant.is_empty() {
        return 0.0;
    }
    precision_sum(ranked, &relevant, k) / relevant.len() as f64
}

fn dedup<T: PartialEq>(items: &[T]) -> Vec<&T> {
    let mut out: Vec<&T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Means of the ranking metrics at one cut-off `k`, accumulated query by query.
#[derive(Debug, Clone, Default)]
pub struct RankingMetrics {
    k: usize,
    queries: usize,
    recall: f64,
    ap: f64,
    rr: f64,
    ndcg: f64,
}

/// The averages of a [`RankingMetrics`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RankingSummary {
    /// Cut-off.
    pub k: usize,
    /// Queries averaged.
    pub queries: usize,
    /// Mean Recall@k.
    pub recall: f64,
    /// MAP@k.
    pub map: f64,
    /// MRR@k.
    pub mrr: f64,
    /// Mean nDCG@k.
    pub ndcg: f64,
}

impl RankingMetrics {
    /// An empty accumulator at cut-off `k`.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            ..Self::default()
        }
    }

    /// Adds one query's ranking.
    pub fn add<T: PartialEq>(&mut self, ranked: &[T], relevant: &[T]) {
        self.queries += 1;
        self.recall += recall_at_k(ranked, relevant, self.k);
        self.ap += average_precision_at_k(ranked, relevant, self.k);
        self.rr += reciprocal_rank_at_k(ranked, relevant, self.k);
        self.ndcg += ndcg_at_k(ranked, relevant, self.k);
    }

    /// The means so far (zeros before any query).
    pub fn summary(&self) -> RankingSummary {
        let n = self.queries.max(1) as f64;
        RankingSummary {
            k: self.k,
            queries: self.queries,
            recall: self.recall / n,
            map: self.ap / n,
            mrr: self.rr / n,
            ndcg: self.ndcg / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn single_relevant_item() {
        let ranked = [4, 2, 9, 1, 7];
        close(recall_at_k(&ranked, &[9], 5), 1.0);
        close(recall_at_k(&ranked, &[9], 2), 0.0);
        close(average_precision_at_k(&ranked, &[9], 5), 1.0 / 3.0);
        close(reciprocal_rank_at_k(&ranked, &[9], 5), 1.0 / 3.0);
        close(ndcg_at_k(&ranked, &[9], 5), 1.0 / 4f64.log2());
        close(average_precision_at_k(&ranked, &[4], 1), 1.0);
    }

    #[test]
    fn several_relevant_items_by_hand() {
        // Relevant {a, c, x}; ranking a b c d: hits at 1 and 3.
        let ranked = ["a", "b", "c", "d"];
        let relevant = ["a", "c", "x"];
        close(recall_at_k(&ranked, &relevant, 4), 2.0 / 3.0);
        // AP@4 = (1/min(3,4)) · (1/1 + 2/3) = 5/9
        close(average_precision_at_k(&ranked, &relevant, 4), 5.0 / 9.0);
        // AP@1 = (1/min(3,1)) · 1 = 1 (the paper's local MAP@1 for several gold sentences)
        close(average_precision_at_k(&ranked, &relevant, 1), 1.0);
        // AP@3 with the first hit at rank 2: (1/3) · (1/2)
        close(
            average_precision_at_k(&["b", "a", "d"], &relevant, 3),
            1.0 / 6.0,
        );
        // nDCG@4 = (1 + 1/log2 4) / (1 + 1/log2 3 + 1/log2 4)
        let want = (1.0 + 0.5) / (1.0 + 1.0 / 3f64.log2() + 0.5);
        close(ndcg_at_k(&ranked, &relevant, 4), want);
    }

    #[test]
    fn degenerate_inputs() {
        let empty: [u32; 0] = [];
        close(recall_at_k(&[1, 2], &empty, 2), 0.0);
        close(average_precision_at_k(&empty, &[1], 5), 0.0);
        close(ndcg_at_k(&[1], &[1], 0), 0.0);
        // Duplicates neither inflate recall nor AP.
        close(recall_at_k(&[1, 1, 1], &[1, 2], 3), 0.5);
        close(average_precision_at_k(&[1, 1], &[1, 2], 2), 0.5);
    }

    #[test]
    fn accumulator_averages() {
        let mut m = RankingMetrics::new(2);
        m.add(&[1, 2], &[1]);
        m.add(&[3, 4], &[1]);
        let s = m.summary();
        assert_eq!(s.queries, 2);
        close(s.recall, 0.5);
        close(s.map, 0.5);
        close(s.mrr, 0.5);
    }
}
