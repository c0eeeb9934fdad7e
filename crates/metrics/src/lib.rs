//! Retrieval and generation metrics for GeAR-rs, with no libtorch dependency.
//!
//! - Ranking: [`recall_at_k`], [`average_precision_at_k`] (MAP@k is its mean), [`reciprocal_rank_at_k`],
//!   [`ndcg_at_k`], and [`RankingMetrics`] to average them over queries — with the method
//!   document's definitions, several relevant items allowed (§5).
//! - SQuAD: [`exact_match`], [`f1`] with the official v1.1 answer normalisation, maximised over
//!   gold answers by [`squad_scores`].
//! - ROUGE: [`rouge_n`] and [`rouge_l`] F-measures.
//!
//! ```
//! use gear_metrics::{average_precision_at_k, recall_at_k, f1};
//!
//! let ranked = ["d3", "d1", "d7"];
//! let relevant = ["d1", "d9"];
//! assert_eq!(recall_at_k(&ranked, &relevant, 3), 0.5);
//! assert_eq!(average_precision_at_k(&ranked, &relevant, 3), 0.25); // (1/2) · (1/2)
//! assert!((f1("the Denver Broncos", &["Denver Broncos"]) - 1.0).abs() < 1e-12);
//! ```

mod ranking;
mod rouge;
mod squad;

pub use ranking::{
    average_precision_at_k, average_precision_trec_at_k, ndcg_at_k, ndcg_at_k_graded, recall_at_k,
    reciprocal_rank_at_k, RankingMetrics, RankingSummary,
};
pub use rouge::{rouge_l, rouge_n, rouge_tokens, RougeScore};
pub use squad::{exact_match, f1, normalize_answer, squad_scores, SquadScores};

/// The README's examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
