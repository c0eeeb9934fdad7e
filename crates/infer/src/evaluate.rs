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
//! ([`GearModel::locate_grouped`]); the bi-encoder embeds each distinct sentence once.

use std::collections::{BTreeMap, HashMap};

use gear_data::{
    relevant_sentences, split_sentences, Document, Scenario, Span, SquadImport, Triple,
};
use gear_metrics::{exact_match, f1, rouge_l, rouge_n, RankingMetrics};
use gear_model::{GearModel, GenerationOptions, LocateOptions, Search, UnitAggregation};
use serde::Serialize;
use tch::Tensor;

use crate::lexical::{order_by_score, reciprocal_rank_fusion, Bm25};
use crate::{Error, Result};

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
struct LocalMetrics(Vec<RankingMetrics>);

impl LocalMetrics {
    fn new() -> Self {
        Self(LOCAL_KS.iter().map(|&k| RankingMetrics::new(k)).collect())
    }

    fn add(&mut self, ranked: &[usize], relevant: &[usize]) {
        for m in &mut self.0 {
            m.add(ranked, relevant);
        }
    }

    fn write(&self, map: &mut BTreeMap<String, f64>) {
        for (m, k) in self.0.iter().zip(LOCAL_KS) {
            add(map, "local", k, m);
        }
    }
}

fn add(map: &mut BTreeMap<String, f64>, prefix: &str, k: usize, m: &RankingMetrics) {
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

/// Evaluates `model` (and the baselines `options` asks for) on `data`; see the module docs.
pub fn evaluate(model: &GearModel, data: &EvalSet, options: &EvalOptions) -> Result<EvalReport> {
    if data.triples.is_empty() {
        return Err(Error::Input("no queries to evaluate".into()));
    }
    let batch = options.batch_size.max(1);
    let targets = local_targets(data)?;
    let passages: Vec<&str> = data.corpus.iter().map(|d| d.text.as_str()).collect();
    let questions: Vec<&str> = targets.iter().map(|t| t.question.as_str()).collect();
    let mut methods: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut local_seconds = BTreeMap::new();

    // Global retrieval: GeAR's is its bi-encoder, so both rows share these numbers.
    let p = gear_model::embed_length_sorted(&passages, batch, |t| model.embed_documents(t))?;
    let q = gear_model::embed_length_sorted(&questions, batch, |t| model.embed_queries(t))?;
    let depth = HYBRID_DEPTH.min(passages.len());
    let k = GLOBAL_K.min(passages.len());
    let (_, top) = q
        .matmul(&p.transpose(0, 1))
        .topk(depth as i64, 1, true, true);
    let top = Vec::<i64>::try_from(top.flatten(0, -1))?;
    let dense: Vec<Vec<usize>> = top
        .chunks(depth)
        .map(|row| row.iter().map(|&x| x as usize).collect())
        .collect();
    let mut global = RankingMetrics::new(GLOBAL_K);
    for (ranked, t) in dense.iter().zip(&targets) {
        global.add(&ranked[..k], &[t.passage]);
    }
    let mut global_map = BTreeMap::new();
    add(&mut global_map, "global", GLOBAL_K, &global);

    // Every document's sentences, split once.
    let mut passage_spans: BTreeMap<usize, Vec<Span>> = BTreeMap::new();
    let mut by_passage: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        passage_spans
            .entry(t.passage)
            .or_insert_with(|| split_sentences(passages[t.passage]));
        by_passage.entry(t.passage).or_default().push(i);
    }

    if options.baselines {
        baselines(
            model,
            &targets,
            &passages,
            &passage_spans,
            &q,
            &dense,
            batch,
            &mut methods,
            &mut local_seconds,
        )?;
        methods
            .entry("bi-encoder".into())
            .or_default()
            .extend(global_map.clone());
    }

    if options.cross_encoder {
        let started = std::time::Instant::now();
        let mut local = LocalMetrics::new();
        for t in &targets {
            let spans = &passage_spans[&t.passage];
            let pairs: Vec<String> = spans
                .iter()
                .map(|s| {
                    format!(
                        "{} [SEP] {}",
                        t.question,
                        &passages[t.passage][s.start..s.end]
                    )
                })
                .collect();
            local.add(&order_by_score(&pair_scores(model, &pairs)?), &t.relevant);
        }
        local_seconds.insert("cross-encoder".into(), started.elapsed().as_secs_f64());
        local.write(methods.entry("cross-encoder".into()).or_default());
    }

    // GeAR: cross-attention local retrieval at its own layer and each swept layer.
    let own_layer = options
        .layer
        .unwrap_or_else(|| model.config().local_layer());
    let mut layers: Vec<usize> = Vec::new();
    if options.gear {
        layers.push(own_layer);
        layers.extend(options.layers.iter().filter(|&&l| l != own_layer));
    }
    // Documents grouped, by length, so that each fusion forward holds about `batch` queries
    // (each document's states computed once, in one padded batch with its group's).
    let mut by_length: Vec<usize> = by_passage.keys().copied().collect();
    by_length.sort_by_key(|&p| (passages[p].len(), p));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut in_group = 0usize;
    for p in by_length {
        let n = by_passage[&p].len();
        match groups.last_mut() {
            Some(g) if in_group + n <= batch => {
                g.push(p);
                in_group += n;
            }
            _ => {
                groups.push(vec![p]);
                in_group = n;
            }
        }
    }
    let mut sweep = BTreeMap::new();
    let gear_row = methods.entry("gear".into()).or_default();
    gear_row.extend(global_map);
    for &layer in &layers {
        let started = std::time::Instant::now();
        let mut local = LocalMetrics::new();
        let locate = LocateOptions {
            layer: Some(layer),
            aggregation: options.aggregation,
            ..LocateOptions::default()
        };
        for group in &groups {
            let docs: Vec<&str> = group.iter().map(|&p| passages[p]).collect();
            let units: Vec<&[Span]> = group.iter().map(|p| passage_spans[p].as_slice()).collect();
            let mut texts = Vec::new();
            let mut document_of = Vec::new();
            let mut asked = Vec::new();
            for (row, p) in group.iter().enumerate() {
                for &i in &by_passage[p] {
                    texts.push(questions[i]);
                    document_of.push(row);
                    asked.push(i);
                }
            }
            let rankings = model.locate_grouped(&texts, &document_of, &docs, &units, &locate)?;
            for (r, &i) in rankings.iter().zip(&asked) {
                let ranked: Vec<usize> = r.units.iter().map(|u| u.index).collect();
                local.add(&ranked, &targets[i].relevant);
            }
        }
        let mut m = BTreeMap::new();
        local.write(&mut m);
        if layer == own_layer {
            local_seconds.insert("gear".into(), started.elapsed().as_secs_f64());
            gear_row.extend(m.clone());
        }
        if options.layers.contains(&layer) {
            sweep.insert(layer, m);
        }
    }

    let generated = options.generation_examples.min(targets.len());
    if generated > 0 {
        let scores = generation(model, &data.triples[..generated], options.scenario, batch)?;
        gear_row.extend(scores);
    }
    Ok(EvalReport {
        scenario: options.scenario,
        questions: targets.len(),
        passages: passages.len(),
        unlocatable: targets.iter().filter(|t| t.relevant.is_empty()).count(),
        generated,
        methods,
        layers: sweep,
        local_seconds,
    })
}

/// The bi-encoder's local retrieval (each distinct sentence embedded once with `E_d`), BM25's
/// global and local retrieval, and the hybrid's global retrieval.
#[allow(clippy::too_many_arguments)]
fn baselines(
    model: &GearModel,
    targets: &[LocalTarget],
    passages: &[&str],
    passage_spans: &BTreeMap<usize, Vec<Span>>,
    q: &Tensor,
    dense: &[Vec<usize>],
    batch: usize,
    methods: &mut BTreeMap<String, BTreeMap<String, f64>>,
    local_seconds: &mut BTreeMap<String, f64>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let mut sentence_rows: HashMap<(usize, usize), usize> = HashMap::new();
    let mut sentence_texts: Vec<&str> = Vec::new();
    for (&passage, spans) in passage_spans {
        for (j, s) in spans.iter().enumerate() {
            sentence_rows.insert((passage, j), sentence_texts.len());
            sentence_texts.push(&passages[passage][s.start..s.end]);
        }
    }
    let sentences =
        gear_model::embed_length_sorted(&sentence_texts, batch, |t| model.embed_documents(t))?;
    let mut bi_local = LocalMetrics::new();
    for (i, t) in targets.iter().enumerate() {
        let rows: Vec<i64> = (0..t.sentences.len())
            .map(|j| sentence_rows[&(t.passage, j)] as i64)
            .collect();
        let scores = sentences
            .index_select(0, &Tensor::from_slice(&rows))
            .matmul(&q.get(i as i64));
        bi_local.add(&order_by_score(&Vec::<f32>::try_from(scores)?), &t.relevant);
    }
    local_seconds.insert("bi-encoder".into(), started.elapsed().as_secs_f64());
    bi_local.write(methods.entry("bi-encoder".into()).or_default());

    // BM25: documents for global retrieval; the same sentences for local retrieval, IDF over
    // every sentence of the set.
    let bm25_passages = Bm25::fit(passages);
    let mut bm25_global = RankingMetrics::new(GLOBAL_K);
    let mut hybrid_global = RankingMetrics::new(GLOBAL_K);
    for (t, dense) in targets.iter().zip(dense) {
        let lexical: Vec<usize> = bm25_passages
            .search(&t.question)
            .into_iter()
            .take(HYBRID_DEPTH)
            .map(|(id, _)| id)
            .collect();
        bm25_global.add(&lexical, &[t.passage]);
        hybrid_global.add(&reciprocal_rank_fusion(&[dense, &lexical]), &[t.passage]);
    }
    let started = std::time::Instant::now();
    let bm25_sentences = Bm25::fit(&sentence_texts);
    let mut bm25_local = LocalMetrics::new();
    for t in targets {
        let rows: Vec<usize> = (0..t.sentences.len())
            .map(|j| sentence_rows[&(t.passage, j)])
            .collect();
        bm25_local.add(
            &order_by_score(&bm25_sentences.scores(&t.question, &rows)),
            &t.relevant,
        );
    }
    local_seconds.insert("bm25".into(), started.elapsed().as_secs_f64());
    let bm = methods.entry("bm25".into()).or_default();
    add(bm, "global", GLOBAL_K, &bm25_global);
    bm25_local.write(bm);
    add(
        methods.entry("hybrid".into()).or_default(),
        "global",
        GLOBAL_K,
        &hybrid_global,
    );
    Ok(())
}

/// GeAR's greedy generation for `triples` (their own documents), scored 0–100: EM/F1 against
/// the answer (QAR) or ROUGE-1/L F against the unit sentence (RIR).
fn generation(
    model: &GearModel,
    triples: &[Triple],
    scenario: Scenario,
    batch: usize,
) -> Result<BTreeMap<String, f64>> {
    let gen = GenerationOptions {
        max_len: model.config().max_target_len,
        search: Search::Greedy,
        use_cache: true,
    };
    let (mut a, mut b) = (0.0, 0.0);
    for chunk in triples.chunks(batch) {
        let qs: Vec<&str> = chunk.iter().map(|t| t.query.as_str()).collect();
        let ds: Vec<&str> = chunk.iter().map(|t| t.document.text.as_str()).collect();
        for (out, t) in model.generate(&qs, &ds, &gen)?.iter().zip(chunk) {
            let target = t.target();
            match scenario {
                Scenario::Qar => {
                    a += exact_match(out, &[target]);
                    b += f1(out, &[target]);
                }
                Scenario::Rir => {
                    a += rouge_n(out, target, 1).f_measure;
                    b += rouge_l(out, target).f_measure;
                }
            }
        }
    }
    let n = triples.len() as f64;
    let (ka, kb) = match scenario {
        Scenario::Qar => ("generation.exact_match", "generation.f1"),
        Scenario::Rir => ("generation.rouge1", "generation.rouge_l"),
    };
    Ok(BTreeMap::from([
        (ka.to_string(), 100.0 * a / n),
        (kb.to_string(), 100.0 * b / n),
    ]))
}

/// Cross-encoder-style scores of `question [SEP] sentence` texts: one joint forward of `E_d`,
/// cosine between the mean token states before and after the first `[SEP]`.
fn pair_scores(model: &GearModel, pairs: &[String]) -> Result<Vec<f32>> {
    let enc = model.encode_document_texts(pairs)?;
    let sep = i64::from(model.tokenizer().token_to_id("[SEP]").unwrap_or(0));
    let states = tch::no_grad(|| model.document_states_t(&enc.ids, &enc.mask, false))?;
    let ids = Vec::<i64>::try_from(enc.ids.flatten(0, -1).to_device(tch::Device::Cpu))?;
    let len = enc.batch.seq_len();
    let mut first = vec![0f32; pairs.len() * len];
    let mut second = vec![0f32; pairs.len() * len];
    for b in 0..pairs.len() {
        let n = enc.batch.token_count(b);
        let row = &ids[b * len..b * len + n];
        // [CLS] question [SEP] sentence [SEP]
        let cut = row
            .iter()
            .skip(1)
            .position(|&t| t == sep)
            .map_or(n - 1, |p| p + 1);
        for j in 1..cut {
            first[b * len + j] = 1.0;
        }
        for j in cut + 1..n.saturating_sub(1) {
            second[b * len + j] = 1.0;
        }
    }
    let shape = [pairs.len() as i64, len as i64];
    let device = states.device();
    let m1 = Tensor::from_slice(&first).view(shape).to_device(device);
    let m2 = Tensor::from_slice(&second).view(shape).to_device(device);
    let a = gear_model::l2_normalize(&gear_model::mean_pool(&states, &m1));
    let b = gear_model::l2_normalize(&gear_model::mean_pool(&states, &m2));
    Ok(Vec::<f32>::try_from(
        (a * b)
            .sum_dim_intlist(1, false, tch::Kind::Float)
            .to_device(tch::Device::Cpu),
    )?)
}

/// Local retrieval with a trained cross-encoder reranker over the same sentences as
/// [`evaluate`]: every `question [SEP] sentence` pair scored, `batch` pairs per forward.
/// Returns its `local.*` metrics and the seconds it took.
pub fn eval_reranker(
    reranker: &gear_model::CrossEncoder,
    data: &EvalSet,
    batch: usize,
) -> Result<(BTreeMap<String, f64>, f64)> {
    let started = std::time::Instant::now();
    let targets = local_targets(data)?;
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for (t, triple) in targets.iter().zip(&data.triples) {
        let text = &triple.document.text;
        groups.push((pairs.len(), t.sentences.len()));
        for s in split_sentences(text) {
            pairs.push((&t.question, &text[s.start..s.end]));
        }
    }
    let scores = reranker.score(&pairs, batch)?;
    let mut local = LocalMetrics::new();
    for (t, &(start, len)) in targets.iter().zip(&groups) {
        local.add(&order_by_score(&scores[start..start + len]), &t.relevant);
    }
    let mut m = BTreeMap::new();
    local.write(&mut m);
    Ok((m, started.elapsed().as_secs_f64()))
}
