//! `gear eval squad`: the paper's QA evaluation protocol (method §5) on SQuAD-format files.
//!
//! - **Global**: every question against all passages of the given files; Recall@5 and MAP@5.
//! - **Local**: the gold passage's sentences ranked for the question; the relevant sentences are
//!   those holding a gold answer start (several answers may mark several); Recall@1 and MAP@1.
//! - **Generation** (GeAR only): exact match and F1 of the decoder's text against the gold
//!   answers.
//!
//! Methods: `bm25` (Okapi BM25 over passages for global retrieval and over sentences for local
//! retrieval, IDF from all sentences of the file), `hybrid` (global only: reciprocal-rank
//! fusion of BM25's and the bi-encoder's top 100), `gear` (bi-encoder global retrieval, cross-attention local retrieval, decoder),
//! `bi-encoder` (the same encoders as a plain bi-encoder: passages and sentences embedded with
//! `E_d`, ranked by cosine to the `E_q` question embedding — the paper's "BGE-style" local
//! baseline) and `cross-encoder` (local only: each `question [SEP] sentence` pair encoded jointly
//! with full self-attention by `E_d`, scored by the cosine between the mean states of its two
//! segments — the computation of a reranker; no trained reranker head exists here).

use std::collections::{BTreeMap, HashMap};

use gear_data::{split_sentences, Span, SquadImport};
use gear_metrics::{exact_match, f1, RankingMetrics};
use gear_model::{GearModel, GenerationOptions, LocateOptions, Search};
use serde::Serialize;
use tch::Tensor;

use crate::lexical::{reciprocal_rank_fusion, Bm25};
use crate::Result;

/// How deep each ranking goes into the hybrid's fusion (BM25 and dense, per question).
const HYBRID_DEPTH: usize = 100;

/// Options of [`eval_squad`].
#[derive(Debug, Clone, PartialEq)]
pub struct SquadEvalOptions {
    /// Local-retrieval layers to sweep for GeAR (1-based); empty: the model's `local_layer`.
    pub layers: Vec<usize>,
    /// Questions used for generation metrics (0: none).
    pub generation_examples: usize,
    /// Run GeAR's cross-attention local retrieval (off: bi-encoder metrics only).
    pub cross_attention: bool,
    /// Run the cross-encoder-style local baseline (one joint forward per question–sentence pair).
    pub cross_encoder: bool,
    /// Texts per forward.
    pub batch_size: usize,
}

/// One question's local-retrieval target, as exported for the independent cross-check.
#[derive(Debug, Clone, Serialize)]
pub struct LocalTarget {
    /// SQuAD question id.
    pub id: String,
    /// The question.
    pub question: String,
    /// Index of the gold passage in the corpus.
    pub passage: usize,
    /// The passage's sentences as character offsets `[start, end)`.
    pub sentences: Vec<(usize, usize)>,
    /// Indices of the sentences holding a gold answer start.
    pub relevant: Vec<usize>,
}

/// The report: flat metric keys per method (`global.recall@5`, `local.map@1`, …) and the layer
/// sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SquadReport {
    /// Questions evaluated.
    pub questions: usize,
    /// Passages in the retrieval corpus.
    pub passages: usize,
    /// Questions whose gold answers start in no sentence of the splitter (they count as misses
    /// for every local method).
    pub unlocatable: usize,
    /// Metrics per method.
    pub methods: BTreeMap<String, BTreeMap<String, f64>>,
    /// GeAR's local R@1 / MAP@1 per swept layer.
    pub layers: BTreeMap<usize, BTreeMap<String, f64>>,
    /// Wall-clock seconds of each method's local retrieval over all questions (embedding or
    /// encoding included, metrics excluded): `bi-encoder`, `bm25`, `cross-encoder`, `gear`
    /// (the model's own layer).
    pub local_seconds: BTreeMap<String, f64>,
}

/// The local-retrieval targets of every question (gold passage sentences, relevant indices).
pub fn local_targets(data: &SquadImport) -> Vec<LocalTarget> {
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
            let gold = t.unit_spans();
            let relevant = spans
                .iter()
                .enumerate()
                .filter(|(_, s)| gold.contains(s))
                .map(|(i, _)| i)
                .collect();
            let to_chars = |b: usize| text[..b].chars().count();
            LocalTarget {
                id: t.id.clone().unwrap_or_default(),
                question: t.query.clone(),
                passage: index
                    .get(t.document.id.as_str())
                    .copied()
                    .unwrap_or(usize::MAX),
                sentences: spans
                    .iter()
                    .map(|s| (to_chars(s.start), to_chars(s.end)))
                    .collect(),
                relevant,
            }
        })
        .collect()
}

/// Embeds `texts` in length-sorted batches with `f`; rows come back in input order (CPU).
fn embed_in_batches(
    f: impl Fn(&[&str]) -> gear_model::Result<Tensor>,
    texts: &[&str],
    batch: usize,
) -> Result<Tensor> {
    Ok(gear_model::embed_length_sorted(texts, batch, f)?)
}

fn add(map: &mut BTreeMap<String, f64>, prefix: &str, k: usize, m: &RankingMetrics) {
    let s = m.summary();
    map.insert(format!("{prefix}.recall@{k}"), s.recall);
    map.insert(format!("{prefix}.map@{k}"), s.map);
}

/// Evaluates `model` on the questions and passages of `data` (see the module documentation).
pub fn eval_squad(
    model: &GearModel,
    data: &SquadImport,
    options: &SquadEvalOptions,
) -> Result<SquadReport> {
    let batch = options.batch_size.max(1);
    let targets = local_targets(data);
    let passages: Vec<&str> = data.corpus.iter().map(|d| d.text.as_str()).collect();
    let questions: Vec<&str> = targets.iter().map(|t| t.question.as_str()).collect();
    let mut methods: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();

    // Global retrieval: GeAR's is its bi-encoder, so both methods share these numbers.
    let p = embed_in_batches(|t| model.embed_documents(t), &passages, batch)?;
    let q = embed_in_batches(|t| model.embed_queries(t), &questions, batch)?;
    let k = 5.min(passages.len()) as i64;
    let mut global = RankingMetrics::new(5);
    let mut bm25_global = RankingMetrics::new(5);
    let mut hybrid_global = RankingMetrics::new(5);
    let bm25_passages = Bm25::fit(&passages);
    let depth = HYBRID_DEPTH.min(passages.len()) as i64;
    if k > 0 {
        let (_, top) = q.matmul(&p.transpose(0, 1)).topk(depth, 1, true, true);
        let top = Vec::<i64>::try_from(top.flatten(0, -1))?;
        for (i, t) in targets.iter().enumerate() {
            let dense: Vec<usize> = top[i * depth as usize..(i + 1) * depth as usize]
                .iter()
                .map(|&x| x as usize)
                .collect();
            global.add(&dense[..k as usize], &[t.passage]);
            let lexical: Vec<usize> = bm25_passages
                .search(&t.question)
                .into_iter()
                .take(depth as usize)
                .map(|(id, _)| id)
                .collect();
            bm25_global.add(&lexical, &[t.passage]);
            hybrid_global.add(&reciprocal_rank_fusion(&[&dense, &lexical]), &[t.passage]);
        }
    }

    let mut local_seconds = BTreeMap::new();
    // Bi-encoder local retrieval: each distinct sentence embedded once with E_d.
    let started = std::time::Instant::now();
    let mut sentence_rows: HashMap<(usize, usize), usize> = HashMap::new();
    let mut sentence_texts: Vec<&str> = Vec::new();
    let mut passage_spans: HashMap<usize, Vec<Span>> = HashMap::new();
    for t in &targets {
        let spans = passage_spans
            .entry(t.passage)
            .or_insert_with(|| split_sentences(passages[t.passage]));
        for (j, s) in spans.iter().enumerate() {
            sentence_rows.entry((t.passage, j)).or_insert_with(|| {
                sentence_texts.push(&passages[t.passage][s.start..s.end]);
                sentence_texts.len() - 1
            });
        }
    }
    let sentences = embed_in_batches(|t| model.embed_documents(t), &sentence_texts, batch)?;
    let mut bi_local = RankingMetrics::new(1);
    for (i, t) in targets.iter().enumerate() {
        let rows: Vec<i64> = (0..t.sentences.len())
            .map(|j| sentence_rows[&(t.passage, j)] as i64)
            .collect();
        let scores = sentences
            .index_select(0, &Tensor::from_slice(&rows))
            .matmul(&q.get(i as i64));
        let scores = Vec::<f32>::try_from(scores)?;
        let mut ranked: Vec<usize> = (0..scores.len()).collect();
        ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        bi_local.add(&ranked, &t.relevant);
    }
    local_seconds.insert("bi-encoder".into(), started.elapsed().as_secs_f64());
    let bi = methods.entry("bi-encoder".into()).or_default();
    add(bi, "global", 5, &global);
    add(bi, "local", 1, &bi_local);

    // BM25 local retrieval: the same sentences, IDF over every sentence of the file.
    let started = std::time::Instant::now();
    let bm25_sentences = Bm25::fit(&sentence_texts);
    let mut bm25_local = RankingMetrics::new(1);
    for t in &targets {
        let rows: Vec<usize> = (0..t.sentences.len())
            .map(|j| sentence_rows[&(t.passage, j)])
            .collect();
        let order = bm25_sentences.rank(&t.question, &rows);
        let ranked: Vec<usize> = order
            .iter()
            .map(|r| rows.iter().position(|x| x == r).unwrap_or(usize::MAX))
            .collect();
        bm25_local.add(&ranked, &t.relevant);
    }
    local_seconds.insert("bm25".into(), started.elapsed().as_secs_f64());
    let bm = methods.entry("bm25".into()).or_default();
    add(bm, "global", 5, &bm25_global);
    add(bm, "local", 1, &bm25_local);
    add(
        methods.entry("hybrid".into()).or_default(),
        "global",
        5,
        &hybrid_global,
    );

    if options.cross_encoder {
        let started = std::time::Instant::now();
        let mut ce_local = RankingMetrics::new(1);
        for chunk in targets.chunks(batch) {
            for t in chunk {
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
                let scores = pair_scores(model, &pairs)?;
                let mut ranked: Vec<usize> = (0..scores.len()).collect();
                ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
                ce_local.add(&ranked, &t.relevant);
            }
        }
        local_seconds.insert("cross-encoder".into(), started.elapsed().as_secs_f64());
        add(
            methods.entry("cross-encoder".into()).or_default(),
            "local",
            1,
            &ce_local,
        );
    }

    // GeAR local retrieval from cross-attention, for each swept layer.
    let default_layer = model.config().local_layer();
    let layers = match (options.cross_attention, options.layers.is_empty()) {
        (false, _) => Vec::new(),
        (true, true) => vec![default_layer],
        (true, false) => options.layers.clone(),
    };
    let mut by_passage: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        by_passage.entry(t.passage).or_default().push(i);
    }
    let mut sweep = BTreeMap::new();
    for &layer in &layers {
        let started = std::time::Instant::now();
        let mut local = RankingMetrics::new(1);
        let locate = LocateOptions {
            layer: Some(layer),
            ..LocateOptions::default()
        };
        // Each passage's states once, shared by all its questions.
        for (&passage, questions) in &by_passage {
            let spans = &passage_spans[&passage];
            for chunk in questions.chunks(batch) {
                let queries: Vec<&str> = chunk
                    .iter()
                    .map(|&i| targets[i].question.as_str())
                    .collect();
                let rankings = model.locate_many(&queries, passages[passage], spans, &locate)?;
                for (r, &i) in rankings.iter().zip(chunk) {
                    let ranked: Vec<usize> = r.units.iter().map(|u| u.index).collect();
                    local.add(&ranked, &targets[i].relevant);
                }
            }
        }
        let mut m = BTreeMap::new();
        add(&mut m, "local", 1, &local);
        if layer == default_layer {
            local_seconds.insert("gear".into(), started.elapsed().as_secs_f64());
            let g = methods.entry("gear".into()).or_default();
            add(g, "global", 5, &global);
            add(g, "local", 1, &local);
        }
        sweep.insert(layer, m);
    }

    // Generation on the first questions.
    let n = options.generation_examples.min(targets.len());
    if n > 0 {
        let gen = GenerationOptions {
            max_len: model.config().max_target_len,
            search: Search::Greedy,
            use_cache: true,
        };
        let (mut em, mut f) = (0.0, 0.0);
        for (chunk, triples) in targets[..n]
            .chunks(batch)
            .zip(data.triples[..n].chunks(batch))
        {
            let qs: Vec<&str> = chunk.iter().map(|t| t.question.as_str()).collect();
            let ds: Vec<&str> = chunk.iter().map(|t| passages[t.passage]).collect();
            for (out, t) in model.generate(&qs, &ds, &gen)?.iter().zip(triples) {
                let gold = [t.answer.clone().unwrap_or_default()];
                em += exact_match(out, &gold);
                f += f1(out, &gold);
            }
        }
        let g = methods.entry("gear".into()).or_default();
        g.insert("generation.exact_match".into(), 100.0 * em / n as f64);
        g.insert("generation.f1".into(), 100.0 * f / n as f64);
    }
    Ok(SquadReport {
        questions: targets.len(),
        passages: passages.len(),
        unlocatable: targets.iter().filter(|t| t.relevant.is_empty()).count(),
        methods,
        layers: sweep,
        local_seconds,
    })
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
/// [`eval_squad`]: every `question [SEP] sentence` pair scored, `batch` pairs per forward.
/// Returns `local.recall@1` / `local.map@1` and the seconds it took.
pub fn eval_reranker(
    reranker: &gear_model::CrossEncoder,
    data: &SquadImport,
    batch: usize,
) -> Result<(BTreeMap<String, f64>, f64)> {
    let started = std::time::Instant::now();
    let targets = local_targets(data);
    let mut local = RankingMetrics::new(1);
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
    for (t, &(start, len)) in targets.iter().zip(&groups) {
        let s = &scores[start..start + len];
        let mut ranked: Vec<usize> = (0..len).collect();
        ranked.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
        local.add(&ranked, &t.relevant);
    }
    let mut m = BTreeMap::new();
    add(&mut m, "local", 1, &local);
    Ok((m, started.elapsed().as_secs_f64()))
}
