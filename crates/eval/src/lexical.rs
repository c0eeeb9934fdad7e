//! Lexical baselines beside GeAR: Okapi BM25 over any list of texts (the `bm25` crate's
//! embedder and scorer: English tokenisation, stop words, stemming), and reciprocal-rank fusion
//! of several rankings — the usual BM25 + dense hybrid for global retrieval.

use bm25::{Embedder, EmbedderBuilder, Embedding, Language, Scorer};

/// RRF's rank offset (Cormack et al., 2009): `score = Σ 1 / (RRF_K + rank)`, ranks from 1.
pub const RRF_K: f64 = 60.0;

/// A BM25 index over a fixed list of texts; ids are positions in that list.
pub struct Bm25 {
    embedder: Embedder,
    scorer: Scorer<usize>,
    len: usize,
}

impl std::fmt::Debug for Bm25 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25")
            .field("texts", &self.len)
            .field("avgdl", &self.embedder.avgdl())
            .finish()
    }
}

impl Bm25 {
    /// Fits BM25 (k1 = 1.2, b = 0.75, average length from `texts`) and indexes every text; IDF
    /// comes from the same texts.
    pub fn fit(texts: &[&str]) -> Self {
        let embedder = EmbedderBuilder::with_fit_to_corpus(Language::English, texts).build();
        let mut scorer = Scorer::new();
        for (i, t) in texts.iter().enumerate() {
            scorer.upsert(&i, embedder.embed(t));
        }
        Self {
            embedder,
            scorer,
            len: texts.len(),
        }
    }

    /// Texts indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The query's sparse embedding (reuse it for several [`Bm25::score`] calls).
    pub fn embed_query(&self, query: &str) -> Embedding {
        self.embedder.embed(query)
    }

    /// BM25 score of text `id` for an embedded query (0 for an unknown id or no shared term).
    pub fn score(&self, query: &Embedding, id: usize) -> f32 {
        self.scorer.score(&id, query).unwrap_or(0.0)
    }

    /// Every text sharing a term with the query, best first (ties: lower id first).
    pub fn search(&self, query: &str) -> Vec<(usize, f32)> {
        let mut hits: Vec<(usize, f32)> = self
            .scorer
            .matches(&self.embed_query(query))
            .into_iter()
            .map(|d| (d.id, d.score))
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits
    }

    /// BM25 scores of the texts `ids` for `query`, in the order of `ids`.
    pub fn scores(&self, query: &str, ids: &[usize]) -> Vec<f32> {
        let q = self.embed_query(query);
        ids.iter().map(|&i| self.score(&q, i)).collect()
    }

    /// `ids` ordered by BM25 score for `query`, best first (ties keep the input order).
    pub fn rank(&self, query: &str, ids: &[usize]) -> Vec<usize> {
        order_by_score(&self.scores(query, ids))
            .into_iter()
            .map(|o| ids[o])
            .collect()
    }
}

/// Indices `0..scores.len()` by descending score (ties: lower index first).
pub(crate) fn order_by_score(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// Reciprocal-rank fusion: each ranking (best first) gives item `x` at 1-based rank `r` the
/// score `1 / (RRF_K + r)`; items are returned by total score, best first (ties: lower id).
/// An item missing from a ranking gets nothing from it.
pub fn reciprocal_rank_fusion(rankings: &[&[usize]]) -> Vec<usize> {
    let mut scores: std::collections::HashMap<usize, f64> = std::collections::HashMap::new();
    for ranking in rankings {
        for (r, &x) in ranking.iter().enumerate() {
            *scores.entry(x).or_default() += 1.0 / (RRF_K + (r + 1) as f64);
        }
    }
    let mut fused: Vec<(usize, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused.into_iter().map(|(x, _)| x).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_prefers_the_text_with_the_rare_query_term() {
        let texts = [
            "The river flows through the old town.",
            "The bridge over the river was built by an engineer in 1890.",
            "Bread and cheese are sold at the market.",
        ];
        let bm25 = Bm25::fit(&texts);
        let hits = bm25.search("who built the bridge");
        assert_eq!(hits[0].0, 1, "{hits:?}");
        assert!(hits.iter().all(|h| h.0 != 2), "no shared term: {hits:?}");
        assert_eq!(bm25.rank("market cheese", &[0, 1, 2]), [2, 0, 1]);
        let q = bm25.embed_query("bridge");
        assert_eq!(bm25.score(&q, 0), 0.0);
        assert!(bm25.score(&q, 1) > 0.0);
        assert_eq!(bm25.score(&q, 99), 0.0);
    }

    #[test]
    fn rrf_adds_reciprocal_ranks() {
        // a: 1/61 + 1/63; b: 1/62 + 1/61; c: 1/63 + 1/62 → b > a > c.
        let fused = reciprocal_rank_fusion(&[&[0, 1, 2], &[1, 2, 0]]);
        assert_eq!(fused, [1, 0, 2]);
        // An item only one ranking knows still appears, after those both rank well.
        let fused = reciprocal_rank_fusion(&[&[0, 1], &[1, 0, 7]]);
        // Equal totals (0 and 1 swap ranks): the lower id first.
        assert_eq!(fused, [0, 1, 7]);
    }
}
