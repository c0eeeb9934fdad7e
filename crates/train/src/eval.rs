//! Evaluation on a triples file (method §5): global retrieval over the file's documents
//! (Recall@k, MAP@k), local retrieval of the gold document's sentences from the cross-attention
//! layer, and generation (ROUGE-1/L for RIR, EM/F1 for QAR).

use std::collections::HashMap;

use gear_data::{split_sentences, Scenario, Span, Triple};
use gear_metrics::{exact_match, f1, rouge_l, rouge_n, RankingMetrics, RankingSummary};
use gear_model::{
    GearModel, GenerationOptions, LocateInput, LocateOptions, Search, UnitAggregation,
};
use serde::Serialize;
use tch::Kind;

use crate::Result;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOptions {
    /// Cut-off of global retrieval (paper: 5).
    pub global_k: usize,
    /// Cut-off of local retrieval (paper: 1 for QA, 3 for RIR).
    pub local_k: usize,
    /// Examples used for generation metrics (0: none).
    pub generation_examples: usize,
    /// Pairs per forward.
    pub batch_size: usize,
    /// How local retrieval adds token weights up per sentence.
    pub aggregation: UnitAggregation,
    /// Fusion layer whose cross-attention ranks sentences (1-based); `None`: the model's.
    pub layer: Option<usize>,
}

impl EvalOptions {
    /// The paper's cut-offs for `scenario`.
    pub fn for_scenario(scenario: Scenario, generation_examples: usize) -> Self {
        let local_k = match scenario {
            Scenario::Qar => 1,
            Scenario::Rir => 3,
        };
        Self {
            global_k: 5,
            local_k,
            generation_examples,
            batch_size: 16,
            aggregation: UnitAggregation::Sum,
            layer: None,
        }
    }
}

/// Generation scores on the 0–1 scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GenerationScores {
    /// Examples generated.
    pub examples: usize,
    /// Mean ROUGE-1 F.
    pub rouge1: f64,
    /// Mean ROUGE-L F.
    pub rouge_l: f64,
    /// Mean exact match (QAR targets).
    pub exact_match: f64,
    /// Mean token F1 (QAR targets).
    pub f1: f64,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Global retrieval over the file's distinct documents.
    pub global: RankingSummary,
    /// Local retrieval over the gold document's sentences.
    pub local: RankingSummary,
    /// Generation.
    pub generation: GenerationScores,
    /// Documents in the retrieval corpus.
    pub documents: usize,
}

/// The gold document's sentences and which of them hold a gold unit.
pub fn local_targets(t: &Triple) -> (Vec<Span>, Vec<usize>) {
    let sentences = split_sentences(&t.document.text);
    let gold = t.unit_spans();
    let relevant = sentences
        .iter()
        .enumerate()
        .filter(|(_, s)| gold.iter().any(|g| g.start < s.end && s.start < g.end))
        .map(|(i, _)| i)
        .collect();
    (sentences, relevant)
}

/// Evaluates `model` on `triples` (evaluation mode throughout).
pub fn evaluate(
    model: &GearModel,
    triples: &[Triple],
    options: &EvalOptions,
) -> Result<EvalReport> {
    if triples.is_empty() {
        return Err(crate::Error::Train("no triples to evaluate".into()));
    }
    let batch = options.batch_size.max(1);
    // Global: distinct documents of the file form the corpus.
    let mut doc_index: HashMap<&str, usize> = HashMap::new();
    let mut docs: Vec<&str> = Vec::new();
    for t in triples {
        doc_index.entry(t.document.id.as_str()).or_insert_with(|| {
            docs.push(t.document.text.as_str());
            docs.len() - 1
        });
    }
    let mut global = RankingMetrics::new(options.global_k);
    if !triples.is_empty() {
        let d = tch::Tensor::cat(
            &docs
                .chunks(batch)
                .map(|c| model.embed_documents(c))
                .collect::<gear_model::Result<Vec<_>>>()?,
            0,
        );
        let queries: Vec<&str> = triples.iter().map(|t| t.query.as_str()).collect();
        let q = tch::Tensor::cat(
            &queries
                .chunks(batch)
                .map(|c| model.embed_queries(c))
                .collect::<gear_model::Result<Vec<_>>>()?,
            0,
        );
        let k = options.global_k.min(docs.len()) as i64;
        let (_, top) = q.matmul(&d.transpose(0, 1)).topk(k, 1, true, true);
        let top = Vec::<i64>::try_from(top.to_kind(Kind::Int64).flatten(0, -1))?;
        for (i, t) in triples.iter().enumerate() {
            let ranked: Vec<usize> = top[i * k as usize..(i + 1) * k as usize]
                .iter()
                .map(|&x| x as usize)
                .collect();
            global.add(&ranked, &[doc_index[t.document.id.as_str()]]);
        }
    }

    // Local: rank the gold document's sentences.
    let mut local = RankingMetrics::new(options.local_k);
    let targets: Vec<(Vec<Span>, Vec<usize>)> = triples.iter().map(local_targets).collect();
    let locate = LocateOptions {
        aggregation: options.aggregation,
        layer: options.layer,
        ..LocateOptions::default()
    };
    for (chunk, tg) in triples.chunks(batch).zip(targets.chunks(batch)) {
        let inputs: Vec<LocateInput<'_>> = chunk
            .iter()
            .zip(tg)
            .map(|(t, (units, _))| LocateInput {
                query: &t.query,
                document: &t.document.text,
                units,
            })
            .collect();
        for (ranking, (_, relevant)) in model.locate_batch(&inputs, &locate)?.iter().zip(tg) {
            let ranked: Vec<usize> = ranking.units.iter().map(|u| u.index).collect();
            local.add(&ranked, relevant);
        }
    }

    // Generation on the first examples.
    let n = options.generation_examples.min(triples.len());
    let mut g = GenerationScores {
        examples: n,
        rouge1: 0.0,
        rouge_l: 0.0,
        exact_match: 0.0,
        f1: 0.0,
    };
    let gen = GenerationOptions {
        max_len: model.config().max_target_len,
        search: Search::Greedy,
        use_cache: true,
    };
    for chunk in triples[..n].chunks(batch) {
        let queries: Vec<&str> = chunk.iter().map(|t| t.query.as_str()).collect();
        let docs: Vec<&str> = chunk.iter().map(|t| t.document.text.as_str()).collect();
        for (out, t) in model.generate(&queries, &docs, &gen)?.iter().zip(chunk) {
            let target = t.target();
            g.rouge1 += rouge_n(out, target, 1).f_measure;
            g.rouge_l += rouge_l(out, target).f_measure;
            g.exact_match += exact_match(out, &[target]);
            g.f1 += f1(out, &[target]);
        }
    }
    if n > 0 {
        let n = n as f64;
        g.rouge1 /= n;
        g.rouge_l /= n;
        g.exact_match /= n;
        g.f1 /= n;
    }
    Ok(EvalReport {
        global: global.summary(),
        local: local.summary(),
        generation: g,
        documents: docs.len(),
    })
}
