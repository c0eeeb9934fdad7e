//! The one evaluation protocol (method §5), for every method and both scenarios: `gear eval
//! squad`, `gear eval triples`, the trainer's dev evaluation and the `cargo xtask` tables all
//! call [`evaluate`].
//!
//! - **Global**: every query against all documents of the set (its triples' documents, or a
//!   SQuAD file's passages); Recall@5 and MAP@5.
//! - **Local**: the gold document's sentences (one splitter, [`gear_data::split_sentences`]) ranked
//!   for the query; relevant = the sentences holding the start of a gold unit
//!   ([`gear_data::relevant_sentences`]: a SQuAD answer start, an RIR unit sentence); Recall and
//!   MAP at 1 and at 3. Queries whose gold text starts in no sentence are counted
//!   ([`EvalReport::unlocatable`]) and are misses for every method.
//! - **Generation** (GeAR only, on the first `generation_examples` queries, scaled 0–100): the
//!   official SQuAD v1.1 exact match and F1 against the answer for QAR, ROUGE-1/L F against the
//!   unit sentence for RIR.
//!
//! Methods: `gear` (bi-encoder global retrieval, cross-attention local retrieval, decoder),
//! `bi-encoder` (the same encoders as a plain bi-encoder: documents and sentences embedded with
//! `E_d`, ranked by cosine to the `E_q` query embedding), `bm25` (Okapi BM25 over documents and
//! over sentences, IDF from all sentences of the set), `hybrid` (global only: reciprocal-rank
//! fusion of BM25's and the bi-encoder's top 100), `cross-encoder` (local only, untrained: each
//! `query [SEP] sentence` pair encoded jointly by `E_d`, scored by the cosine between the mean
//! states of its two segments) and `reranker` (a trained [`gear_model::CrossEncoder`], added by
//! [`eval_reranker`]).
//!
//! GeAR's local retrieval encodes each document once and runs its queries through the fusion
//! encoder in batches of about `batch_size` queries over several documents
//! ([`GearModel::locate`]); the bi-encoder embeds each distinct sentence once.

mod baselines;
mod gear;
mod generation;

use std::collections::{BTreeMap, HashMap};

use gear_data::{
    relevant_sentences, split_sentences, Document, Scenario, Span, SquadImport, Triple,
};
use gear_metrics::RankingMetrics;
use gear_model::{GearModel, UnitAggregation};
use serde::Serialize;
use tch::Tensor;

use crate::{Error, Result};

pub use baselines::eval_reranker;

/// How deep each ranking goes into the hybrid's fusion (BM25 and dense, per query).
const HYBRID_DEPTH: usize = 100;
/// Cut-off of global retrieval (the paper's).
pub const GLOBAL_K: usize = 5;
/// Cut-offs of local retrieval: the paper's 1 (QAR) and 3 (RIR), both always reported.
pub const LOCAL_KS: [usize; 2] = [1, 3];

/// Queries, their gold documents and units, and the documents global retrieval searches.
#[derive(Debug, Clone, Default)]
pub struct EvalSet {
    /// One query each, with its gold document and units.
    pub triples: Vec<Triple>,
    /// The retrieval corpus; every triple's document is in it (by id).
    pub corpus: Vec<Document>,
}

impl EvalSet {
    /// The triples with their distinct documents (by id, first text wins) as the corpus.
    pub fn from_triples(triples: Vec<Triple>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let corpus = triples
            .iter()
            .filter(|t| seen.insert(t.document.id.clone()))
            .map(|t| t.document.clone())
            .collect();
        Self { triples, corpus }
    }

    /// A SQuAD import: its questions, and all of its passages (answered or not) as the corpus.
    pub fn from_squad(import: SquadImport) -> Self {
        Self {
            triples: import.triples,
            corpus: import.corpus,
        }
    }

    /// Adds another set (a second file): triples and corpus appended.
    pub fn extend(&mut self, other: EvalSet) {
        let mut seen: std::collections::HashSet<String> =
            self.corpus.iter().map(|d| d.id.clone()).collect();
        self.triples.extend(other.triples);
        self.corpus.extend(
            other
                .corpus
                .into_iter()
                .filter(|d| seen.insert(d.id.clone())),
        );
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Which generation metrics apply (EM/F1 for QAR, ROUGE for RIR).
    pub scenario: Scenario,
    /// GeAR's cross-attention local retrieval (off: its bi-encoder metrics only).
    pub gear: bool,
    /// Fusion layers to sweep for GeAR's local retrieval (1-based); empty: `layer`.
    pub layers: Vec<usize>,
    /// The layer GeAR's own row reads; `None`: the model's `local_layer`.
    pub layer: Option<usize>,
    /// How GeAR adds token weights up per sentence.
    pub aggregation: UnitAggregation,
    /// The bi-encoder, BM25 and hybrid baselines.
    pub baselines: bool,
    /// The untrained cross-encoder-style local baseline (one joint forward per query–sentence
    /// pair; slow).
    pub cross_encoder: bool,
    /// Queries whose generation is scored (0: none).
    pub generation_examples: usize,
    /// Texts per forward.
    pub batch_size: usize,
}

impl EvalOptions {
    /// GeAR and the cheap baselines, `generation_examples` generated, the model's layer.
    pub fn for_scenario(scenario: Scenario, generation_examples: usize) -> Self {
        Self {
            scenario,
            gear: true,
            layers: Vec::new(),
            layer: None,
            aggregation: UnitAggregation::Sum,
            baselines: true,
            cross_encoder: false,
            generation_examples,
            batch_size: 32,
        }
    }
}

/// One query's local-retrieval target, as exported for independent cross-checks.
#[derive(Debug, Clone, Serialize)]
pub struct LocalTarget {
    /// The triple's id (SQuAD question id), or empty.
    pub id: String,
    /// The query.
    pub question: String,
    /// Index of the gold document in the corpus.
    pub passage: usize,
    /// The document's sentences as character offsets `[start, end)`.
    pub sentences: Vec<(usize, usize)>,
    /// Indices of the sentences holding a gold unit's start.
    pub relevant: Vec<usize>,
}

/// The report: flat metric keys per method (`global.recall@5`, `local.map@1`,
/// `generation.f1`, …) and GeAR's layer sweep.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The scenario whose generation metrics were computed.
    pub scenario: Scenario,
    /// Queries evaluated.
    pub questions: usize,
    /// Documents in the retrieval corpus.
    pub passages: usize,
    /// Queries whose gold text starts in no sentence of the splitter (a miss for every local
    /// method).
    pub unlocatable: usize,
    /// Queries whose generation was scored.
    pub generated: usize,
    /// Metrics per method.
    pub methods: BTreeMap<String, BTreeMap<String, f64>>,
    /// GeAR's local metrics per swept layer.
    pub layers: BTreeMap<usize, BTreeMap<String, f64>>,
    /// Wall-clock seconds of each method's local retrieval over all queries (embedding or
    /// encoding included, metrics excluded).
    pub local_seconds: BTreeMap<String, f64>,
    /// GeAR's generated text for each scored query, in order (not part of the JSON report:
    /// `gear eval squad --predictions FILE` writes them).
    #[serde(skip)]
    pub predictions: Vec<Prediction>,
}

/// One generated answer and what it was scored against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prediction {
    /// The triple's id (the SQuAD question id).
    pub id: Option<String>,
    /// The query.
    pub query: String,
    /// What GeAR generated.
    pub generated: String,
    /// The gold texts (the target first).
    pub gold: Vec<String>,
}

impl EvalReport {
    /// One metric of one method, e.g. `metric("gear", "local.recall@1")`.
    pub fn metric(&self, method: &str, key: &str) -> Option<f64> {
        self.methods.get(method)?.get(key).copied()
    }

    /// GeAR's figures on one line (what training prints after each dev evaluation).
    pub fn gear_line(&self) -> String {
        let m = |k: &str| self.metric("gear", k).unwrap_or(f64::NAN);
        let generation = match self.scenario {
            Scenario::Qar => format!(
                "EM={:.1} F1={:.1}",
                m("generation.exact_match"),
                m("generation.f1")
            ),
            Scenario::Rir => format!(
                "ROUGE-1={:.1} ROUGE-L={:.1}",
                m("generation.rouge1"),
                m("generation.rouge_l")
            ),
        };
        format!(
            "global R@5={:.3} MAP@5={:.3} | local R@1={:.3} MAP@1={:.3} R@3={:.3} MAP@3={:.3} | {generation} ({} generated)",
            m("global.recall@5"),
            m("global.map@5"),
            m("local.recall@1"),
            m("local.map@1"),
            m("local.recall@3"),
            m("local.map@3"),
            self.generated
        )
    }
}

/// Recall/MAP at each of [`LOCAL_KS`].
pub(super) struct LocalMetrics(Vec<RankingMetrics>);

impl LocalMetrics {
    pub(super) fn new() -> Self {
        Self(LOCAL_KS.iter().map(|&k| RankingMetrics::new(k)).collect())
    }

    pub(super) fn add(&mut self, ranked: &[usize], relevant: &[usize]) {
        for m in &mut self.0 {
            m.add(ranked, relevant);
        }
    }

    pub(super) fn write(&self, map: &mut BTreeMap<String, f64>) {
        for (m, k) in self.0.iter().zip(LOCAL_KS) {
            add(map, "local", k, m);
        }
    }
}

/// Writes `m`'s recall and MAP at `k` as `{prefix}.recall@{k}` and `{prefix}.map@{k}`.
pub(super) fn add(map: &mut BTreeMap<String, f64>, prefix: &str, k: usize, m: &RankingMetrics) {
    let s = m.summary();
    map.insert(format!("{prefix}.recall@{k}"), s.recall);
    map.insert(format!("{prefix}.map@{k}"), s.map);
}

/// The local-retrieval target of every triple (gold document's sentences, relevant indices).
/// A triple whose document is not in the corpus is an error naming it.
pub fn local_targets(data: &EvalSet) -> Result<Vec<LocalTarget>> {
    let index: HashMap<&str, usize> = data
        .corpus
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i))
        .collect();
    data.triples
        .iter()
        .map(|t| {
            let text = &t.document.text;
            let spans = split_sentences(text);
            let relevant = relevant_sentences(&spans, &t.unit_spans());
            let to_chars = |b: usize| text[..b].chars().count();
            let passage = *index.get(t.document.id.as_str()).ok_or_else(|| {
                Error::Input(format!(
                    "the document {:?} of query {:?} is not in the evaluation corpus",
                    t.document.id, t.query
                ))
            })?;
            Ok(LocalTarget {
                id: t.id.clone().unwrap_or_default(),
                question: t.query.clone(),
                passage,
                sentences: spans
                    .iter()
                    .map(|s| (to_chars(s.start), to_chars(s.end)))
                    .collect(),
                relevant,
            })
        })
        .collect()
}

/// What every method of one evaluation shares: the local targets, the texts, each gold
/// document's sentences (split once) and the queries per gold document.
pub(super) struct Prepared<'a> {
    /// One per query, in order.
    pub targets: Vec<LocalTarget>,
    /// The corpus's texts.
    pub passages: Vec<&'a str>,
    /// The queries' texts.
    pub questions: Vec<&'a str>,
    /// The sentences of every gold document.
    pub spans: BTreeMap<usize, Vec<Span>>,
    /// The queries of every gold document.
    pub by_passage: BTreeMap<usize, Vec<usize>>,
    /// Texts per forward.
    pub batch: usize,
}

impl<'a> Prepared<'a> {
    fn new(data: &'a EvalSet, batch: usize) -> Result<Self> {
        let targets = local_targets(data)?;
        let passages: Vec<&str> = data.corpus.iter().map(|d| d.text.as_str()).collect();
        let questions: Vec<&str> = data.triples.iter().map(|t| t.query.as_str()).collect();
        let mut spans: BTreeMap<usize, Vec<Span>> = BTreeMap::new();
        let mut by_passage: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, t) in targets.iter().enumerate() {
            spans
                .entry(t.passage)
                .or_insert_with(|| split_sentences(passages[t.passage]));
            by_passage.entry(t.passage).or_default().push(i);
        }
        Ok(Self {
            targets,
            passages,
            questions,
            spans,
            by_passage,
            batch,
        })
    }
}

/// Global retrieval with the model's bi-encoder.
struct DenseGlobal {
    /// The query embeddings `[queries, width]`.
    q: Tensor,
    /// Every query's top [`HYBRID_DEPTH`] documents.
    dense: Vec<Vec<usize>>,
    /// Recall/MAP at [`GLOBAL_K`].
    metrics: BTreeMap<String, f64>,
}

/// See [`DenseGlobal`].
fn dense_global(model: &GearModel, prep: &Prepared<'_>) -> Result<DenseGlobal> {
    let batch = prep.batch;
    let p = gear_model::embed_length_sorted(&prep.passages, batch, |t| model.embed_documents(t))?;
    let q = gear_model::embed_length_sorted(&prep.questions, batch, |t| model.embed_queries(t))?;
    let depth = HYBRID_DEPTH.min(prep.passages.len());
    let k = GLOBAL_K.min(prep.passages.len());
    let (_, top) = q
        .matmul(&p.transpose(0, 1))
        .topk(depth as i64, 1, true, true);
    let top = Vec::<i64>::try_from(top.flatten(0, -1))?;
    let dense: Vec<Vec<usize>> = top
        .chunks(depth)
        .map(|row| row.iter().map(|&x| x as usize).collect())
        .collect();
    let mut global = RankingMetrics::new(GLOBAL_K);
    for (ranked, t) in dense.iter().zip(&prep.targets) {
        global.add(&ranked[..k], &[t.passage]);
    }
    let mut global_map = BTreeMap::new();
    add(&mut global_map, "global", GLOBAL_K, &global);
    Ok(DenseGlobal {
        q,
        dense,
        metrics: global_map,
    })
}

/// Evaluates `model` (and the baselines `options` asks for) on `data`; see the module docs.
pub fn evaluate(model: &GearModel, data: &EvalSet, options: &EvalOptions) -> Result<EvalReport> {
    if data.triples.is_empty() {
        return Err(Error::Input("no queries to evaluate".into()));
    }
    let prep = Prepared::new(data, options.batch_size.max(1))?;
    let mut methods: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut local_seconds = BTreeMap::new();

    // Global retrieval: GeAR's is its bi-encoder, so both rows share these numbers.
    let DenseGlobal {
        q,
        dense,
        metrics: global_map,
    } = dense_global(model, &prep)?;
    if options.baselines {
        baselines::baselines(model, &prep, &q, &dense, &mut methods, &mut local_seconds)?;
        methods
            .entry("bi-encoder".into())
            .or_default()
            .extend(global_map.clone());
    }
    if options.cross_encoder {
        let (m, seconds) = baselines::cross_encoder(model, &prep)?;
        local_seconds.insert("cross-encoder".into(), seconds);
        methods.entry("cross-encoder".into()).or_default().extend(m);
    }

    // GeAR: cross-attention local retrieval at its own layer and each swept layer.
    let local = gear::gear_local(model, &prep, options)?;
    let gear_row = methods.entry("gear".into()).or_default();
    gear_row.extend(global_map);
    if let Some((m, seconds)) = local.own {
        local_seconds.insert("gear".into(), seconds);
        gear_row.extend(m);
    }
    let generated = options.generation_examples.min(prep.targets.len());
    let mut predictions = Vec::new();
    if generated > 0 {
        let (scores, texts) = generation::generation(
            model,
            &data.triples[..generated],
            options.scenario,
            prep.batch,
        )?;
        gear_row.extend(scores);
        predictions = data.triples[..generated]
            .iter()
            .zip(texts)
            .map(|(t, text)| Prediction {
                id: t.id.clone(),
                query: t.query.clone(),
                generated: text,
                gold: t.gold_texts().into_iter().map(str::to_owned).collect(),
            })
            .collect();
    }
    Ok(EvalReport {
        scenario: options.scenario,
        questions: prep.targets.len(),
        passages: prep.passages.len(),
        unlocatable: prep
            .targets
            .iter()
            .filter(|t| t.relevant.is_empty())
            .count(),
        generated,
        methods,
        layers: local.sweep,
        local_seconds,
        predictions,
    })
}
