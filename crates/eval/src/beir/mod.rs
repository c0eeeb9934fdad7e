//! `gear eval beir`: global retrieval on a BEIR dataset with BEIR's measures — nDCG@10 (graded),
//! Recall@100, MAP@100 and MRR@10, computed as `trec_eval` (through `pytrec_eval`, which BEIR
//! uses) computes them — for the bi-encoder, BM25 and their reciprocal-rank-fusion hybrid.
//!
//! Each method retrieves the top [`DEPTH`] documents per query over the whole corpus (title and
//! text joined by a space, as BEIR's dense models read them). A document whose id equals the
//! query's is dropped from the ranking first, as BEIR does (`ignore_identical_ids`; some
//! datasets hold every query as a document too). Queries without a judgement in the split are
//! not evaluated; measures are means over the judged queries.

mod mine;

use std::collections::BTreeMap;

use gear_data::{BeirData, Document};
use gear_metrics::{
    average_precision_trec_at_k, ndcg_at_k_graded, recall_at_k, reciprocal_rank_at_k,
};
use gear_model::GearModel;
use serde::Serialize;

use crate::lexical::{reciprocal_rank_fusion, Bm25};
use crate::Result;

pub use mine::{beir_triples, mine_negatives, MinedTriples, Miner};

/// How many documents each method ranks per query (the deepest cut-off, Recall@100 / MAP@100).
pub const DEPTH: usize = 100;

/// One method's ranking for every query: document ids, best first.
pub type Run = BTreeMap<String, Vec<String>>;

/// The report of [`eval_beir`].
#[derive(Debug, Clone, Serialize)]
pub struct BeirReport {
    /// Queries evaluated (those judged in the split).
    pub queries: usize,
    /// Documents in the corpus.
    pub documents: usize,
    /// Per method (`bi-encoder`, `bm25`, `hybrid`): `ndcg@10`, `recall@100`, `map@100`,
    /// `mrr@10`.
    pub methods: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per method, the rankings the measures were computed on (for checking them elsewhere).
    #[serde(skip)]
    pub runs: BTreeMap<String, Run>,
}

/// BEIR's four measures for one ranking against one query's judgements.
pub fn beir_measures(ranked: &[String], judged: &[(String, i32)]) -> [f64; 4] {
    let relevant: Vec<String> = judged
        .iter()
        .filter(|(_, g)| *g > 0)
        .map(|(d, _)| d.clone())
        .collect();
    [
        ndcg_at_k_graded(ranked, judged, 10),
        recall_at_k(ranked, &relevant, 100),
        average_precision_trec_at_k(ranked, &relevant, 100),
        reciprocal_rank_at_k(ranked, &relevant, 10),
    ]
}

/// The names of [`beir_measures`]' four values.
pub const MEASURES: [&str; 4] = ["ndcg@10", "recall@100", "map@100", "mrr@10"];

/// Evaluates `model`'s bi-encoder (when given), BM25 and the hybrid on `data`.
pub fn eval_beir(
    model: Option<&GearModel>,
    data: &BeirData,
    batch_size: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<BeirReport> {
    if data.queries.is_empty() {
        return Err(crate::Error::Input("no judged queries to evaluate".into()));
    }
    let texts = corpus_texts(data);
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let queries: Vec<&str> = data.queries.iter().map(|(_, q)| q.as_str()).collect();
    let depth = DEPTH.min(texts.len());
    // One extra, so a dropped identical id still leaves `depth`.
    let fetch = (depth + 1).min(texts.len());
    let id_of = |row: usize| data.corpus[row].id.clone();
    let trim = |qid: &str, rows: Vec<usize>| -> Vec<String> {
        rows.into_iter()
            .map(id_of)
            .filter(|d| d != qid)
            .take(depth)
            .collect()
    };

    let mut rows: BTreeMap<String, Vec<Vec<usize>>> = BTreeMap::new();
    progress("bm25");
    rows.insert("bm25".into(), bm25_rows(&text_refs, &queries, fetch));
    if let Some(model) = model {
        let dense = dense_rows(model, &text_refs, &queries, fetch, batch_size, progress)?;
        let hybrid = dense
            .iter()
            .zip(&rows["bm25"])
            .map(|(d, l)| {
                reciprocal_rank_fusion(&[d.as_slice(), l.as_slice()])
                    .into_iter()
                    .take(fetch)
                    .collect()
            })
            .collect();
        rows.insert("bi-encoder".into(), dense);
        rows.insert("hybrid".into(), hybrid);
    }

    let mut methods = BTreeMap::new();
    let mut runs = BTreeMap::new();
    for (method, per_query) in rows {
        let mut sums = [0.0f64; 4];
        let mut run = Run::new();
        for ((qid, _), ranked_rows) in data.queries.iter().zip(per_query) {
            let ranked = trim(qid, ranked_rows);
            let m = beir_measures(&ranked, &data.qrels[qid]);
            for (s, v) in sums.iter_mut().zip(m) {
                *s += v;
            }
            run.insert(qid.clone(), ranked);
        }
        let n = data.queries.len() as f64;
        methods.insert(
            method.clone(),
            MEASURES
                .iter()
                .zip(sums)
                .map(|(name, s)| ((*name).to_owned(), s / n))
                .collect(),
        );
        runs.insert(method, run);
    }
    Ok(BeirReport {
        queries: data.queries.len(),
        documents: data.corpus.len(),
        methods,
        runs,
    })
}

/// Each corpus document as the dense models and BM25 read it: title and text joined by a space.
pub(super) fn corpus_texts(data: &BeirData) -> Vec<String> {
    document_texts(&data.corpus)
}

/// Documents as the dense models and BM25 read them: title and text joined by a space.
pub(super) fn document_texts<'a>(documents: impl IntoIterator<Item = &'a Document>) -> Vec<String> {
    documents
        .into_iter()
        .map(|d| {
            if d.title.is_empty() {
                d.text.clone()
            } else {
                format!("{} {}", d.title, d.text)
            }
        })
        .collect()
}

/// BM25's top `fetch` rows of `texts` for each query.
pub(super) fn bm25_rows(texts: &[&str], queries: &[&str], fetch: usize) -> Vec<Vec<usize>> {
    let bm25 = Bm25::fit(texts);
    queries
        .iter()
        .map(|q| {
            bm25.search(q)
                .into_iter()
                .take(fetch)
                .map(|(row, _)| row)
                .collect()
        })
        .collect()
}

/// The bi-encoder's top `fetch` rows of `texts` for each query (exact inner product).
pub(super) fn dense_rows(
    model: &GearModel,
    texts: &[&str],
    queries: &[&str],
    fetch: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Vec<usize>>> {
    progress("embedding the corpus");
    let batch = batch_size.max(1);
    let docs = gear_model::embed_length_sorted(texts, batch, |t| model.embed_documents(t))?;
    progress("embedding the queries");
    let q = gear_model::embed_length_sorted(queries, batch, |t| model.embed_queries(t))?;
    let mut dense = Vec::with_capacity(queries.len());
    // Scores in blocks of queries, so memory stays `block × corpus`.
    for start in (0..queries.len()).step_by(256) {
        let end = (start + 256).min(queries.len());
        let block = q.narrow(0, start as i64, (end - start) as i64);
        let (_, top) = block
            .matmul(&docs.transpose(0, 1))
            .topk(fetch as i64, 1, true, true);
        let top = Vec::<i64>::try_from(top.flatten(0, -1))?;
        for chunk in top.chunks(fetch) {
            dense.push(chunk.iter().map(|&r| r as usize).collect::<Vec<_>>());
        }
    }
    Ok(dense)
}
