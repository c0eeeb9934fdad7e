//! The baselines beside GeAR on the same queries and sentences: the plain bi-encoder (local
//! retrieval with `E_d` sentence embeddings), BM25 (global and local), the BM25 + dense hybrid
//! (global), the untrained cross-encoder-style pair scorer, and a trained reranker.

use std::collections::{BTreeMap, HashMap};

use gear_data::split_sentences;
use gear_metrics::RankingMetrics;
use gear_model::GearModel;
use tch::Tensor;

use super::{add, local_targets, EvalSet, LocalMetrics, Prepared, GLOBAL_K, HYBRID_DEPTH};
use crate::lexical::{order_by_score, reciprocal_rank_fusion, Bm25};
use crate::Result;

/// The bi-encoder's local retrieval (each distinct sentence embedded once with `E_d`), BM25's
/// global and local retrieval, and the hybrid's global retrieval.
pub(super) fn baselines(
    model: &GearModel,
    prep: &Prepared<'_>,
    q: &Tensor,
    dense: &[Vec<usize>],
    methods: &mut BTreeMap<String, BTreeMap<String, f64>>,
    local_seconds: &mut BTreeMap<String, f64>,
) -> Result<()> {
    let (targets, passages, batch) = (&prep.targets, &prep.passages, prep.batch);
    let started = std::time::Instant::now();
    let mut sentence_rows: HashMap<(usize, usize), usize> = HashMap::new();
    let mut sentence_texts: Vec<&str> = Vec::new();
    for (&passage, spans) in &prep.spans {
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
    for t in targets.iter() {
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

/// The untrained cross-encoder-style local baseline: each `question [SEP] sentence` pair encoded
/// jointly (see [`pair_scores`]). Its `local.*` metrics and the seconds it took.
pub(super) fn cross_encoder(
    model: &GearModel,
    prep: &Prepared<'_>,
) -> Result<(BTreeMap<String, f64>, f64)> {
    let started = std::time::Instant::now();
    let mut local = LocalMetrics::new();
    for t in &prep.targets {
        let passage = prep.passages[t.passage];
        let pairs: Vec<String> = prep.spans[&t.passage]
            .iter()
            .map(|s| format!("{} [SEP] {}", t.question, &passage[s.start..s.end]))
            .collect();
        local.add(&order_by_score(&pair_scores(model, &pairs)?), &t.relevant);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut m = BTreeMap::new();
    local.write(&mut m);
    Ok((m, seconds))
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
/// [`evaluate`](crate::evaluate): every `question [SEP] sentence` pair scored, `batch` pairs per forward.
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
