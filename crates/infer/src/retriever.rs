//! The query path as one object: a [`Retriever`] opens an index and the model it was built with
//! once, and answers searches (with the hits' best sentences located in grouped fusion passes),
//! locating, generation and explanations as plain data that serialises with serde. `gear search`,
//! `gear locate|generate|explain` and `gear serve` are formatters over it.
//!
//! Every offset in an answer is a **character** offset (Unicode scalar values, as the triple
//! format's units), converted from the model's byte spans in one place (`located.rs`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use gear_data::Document;
use gear_model::{GearModel, GenerationOptions, LocateOptions, Precision};
use serde::Serialize;

use crate::corpus::Corpus;
use crate::explain::{explain_within, Explanation, Truncation};
use crate::located::{CharSpan, LocatedSentence, LocatedToken};
use crate::pairs::locate_pairs;
use crate::store::{Backend, DocumentIndex};
use crate::{load_model, Error, ModelSource, Result};

/// How [`Retriever::open`] opens an index and its model.
#[derive(Debug, Clone)]
pub struct RetrieverOptions {
    /// The model folder, when not the one the index records (it must hold the same files).
    pub model: Option<PathBuf>,
    /// Where the model runs.
    pub device: tch::Device,
    /// Arithmetic of the model's forwards (checked against the device: bf16 is refused where
    /// the processor has no bfloat16 instructions).
    pub precision: Precision,
    /// Exact or HNSW search.
    pub backend: Backend,
}

impl Default for RetrieverOptions {
    fn default() -> Self {
        Self {
            model: None,
            device: tch::Device::Cpu,
            precision: Precision::Fp32,
            backend: Backend::Exact,
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// 1-based rank.
    pub rank: usize,
    /// Document id.
    pub id: String,
    /// Document title.
    pub title: String,
    /// Cosine of the query and document embeddings.
    pub score: f32,
    /// The document.
    pub text: String,
    /// Its best sentences by cross-attention, best first, when locating was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentences: Option<Vec<LocatedSentence>>,
    /// How a document longer than the model reads at once was read, when it was located.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
}

/// A search's answer for one query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchAnswer {
    /// The query.
    pub query: String,
    /// Best first.
    pub results: Vec<SearchHit>,
}

/// A document's best sentences for a query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Located {
    /// The query.
    pub query: String,
    /// Best first.
    pub sentences: Vec<LocatedSentence>,
    /// How a document longer than the model reads at once was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
}

/// The decoder's answer for a (query, document) pair, beside the sentence local retrieval
/// ranks first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratedAnswer {
    /// The query.
    pub query: String,
    /// The document's id (empty for a text sent along).
    pub doc_id: String,
    /// The generated text.
    pub generated: String,
    /// Where the generated text was read from (span decoding only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<CharSpan>,
    /// The sentence cross-attention ranks first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentence: Option<LocatedSentence>,
    /// How a document longer than the model reads at once was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
}

/// Sentences and the most attended tokens of a (query, document) pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedAnswer {
    /// The query.
    pub query: String,
    /// The document's id.
    pub doc_id: String,
    /// Best first.
    pub sentences: Vec<LocatedSentence>,
    /// Heaviest first.
    pub tokens: Vec<LocatedToken>,
    /// How a document longer than the model reads at once was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
}

/// An index and the model it was built with, opened once; every query path of GeAR-rs. Without
/// an index ([`Retriever::from_model`]) it locates, generates and explains texts sent along.
pub struct Retriever {
    model: GearModel,
    corpus: Option<Box<dyn Corpus>>,
    locate: LocateOptions,
}

impl Retriever {
    /// Opens the index in `dir` and its model (or `options.model`, checked to be the same
    /// files), the model running in `options.precision`.
    pub fn open(dir: impl AsRef<Path>, options: &RetrieverOptions) -> Result<Self> {
        options.precision.check(options.device)?;
        let index = DocumentIndex::open_with(dir, options.device, options.backend)?;
        let model_dir = options
            .model
            .clone()
            .unwrap_or_else(|| index.meta().model.clone());
        index.check_model(&model_dir)?;
        let (mut model, _) = load_model(&ModelSource::for_dir(&model_dir), options.device)?;
        model.set_precision(options.precision);
        Ok(Self::new(model, index))
    }

    /// A retriever over a model and an index already open (the model must be the index's).
    pub fn new(model: GearModel, index: DocumentIndex) -> Self {
        Self::with_corpus(model, Box::new(index))
    }

    /// A retriever over any [`Corpus`] (a database store, say) searched with `model`, which
    /// must be the model its vectors were embedded with (the corpus checks that when opened).
    pub fn with_corpus(model: GearModel, corpus: Box<dyn Corpus>) -> Self {
        Self {
            model,
            corpus: Some(corpus),
            locate: LocateOptions::default(),
        }
    }

    /// A retriever without an index: it locates, generates and explains documents passed to
    /// it; searching and looking documents up by id are errors.
    pub fn from_model(model: GearModel) -> Self {
        Self {
            model,
            corpus: None,
            locate: LocateOptions::default(),
        }
    }

    /// The model and the index, for work past querying (adding to the index).
    pub fn into_parts(self) -> (GearModel, Option<Box<dyn Corpus>>) {
        (self.model, self.corpus)
    }

    /// The model.
    pub fn model(&self) -> &GearModel {
        &self.model
    }

    /// The corpus searched, or an error saying there is none.
    pub fn corpus(&self) -> Result<&dyn Corpus> {
        self.corpus.as_deref().ok_or_else(|| {
            Error::Input("no index is open: open the retriever on an index folder".into())
        })
    }

    /// The index folder searched, or an error saying there is none (no corpus, or one that is
    /// not a folder on this machine).
    pub fn index(&self) -> Result<&DocumentIndex> {
        self.corpus()?.as_index().ok_or_else(|| {
            Error::Input(format!(
                "{} is not an index folder on this machine",
                self.corpus().map(|c| c.describe()).unwrap_or_default()
            ))
        })
    }

    /// Serves `index` from now on (an index reopened after its files changed).
    pub fn replace_index(&mut self, index: DocumentIndex) {
        self.corpus = Some(Box::new(index));
    }

    /// How sentences are located (layer, aggregation); the default is the model's.
    pub fn set_locate_options(&mut self, options: LocateOptions) {
        self.locate = options;
    }

    /// The index's document `id`.
    pub fn document(&self, id: &str) -> Result<Document> {
        self.corpus()?.document(id)
    }

    /// The top `k` documents for each query — all queries embedded in one forward — with each
    /// hit's `locate` best sentences when `locate` > 0, every (query, hit) pair located in
    /// grouped fusion passes ([`Retriever::locate_hits`]). Stops at `deadline` between passes.
    pub fn search<S: AsRef<str>>(
        &self,
        queries: &[S],
        k: usize,
        locate: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<SearchAnswer>> {
        let refs: Vec<&str> = queries.iter().map(AsRef::as_ref).collect();
        let found = self.corpus()?.search(&self.model, &refs, k)?;
        let mut answers: Vec<SearchAnswer> = queries
            .iter()
            .zip(found)
            .map(|(query, hits)| SearchAnswer {
                query: query.as_ref().to_owned(),
                results: hits
                    .into_iter()
                    .enumerate()
                    .map(|(rank, (doc, score))| SearchHit {
                        rank: rank + 1,
                        id: doc.id,
                        title: doc.title,
                        score,
                        text: doc.text,
                        sentences: None,
                        truncated: None,
                    })
                    .collect(),
            })
            .collect();
        if locate > 0 {
            let mut all: Vec<(&mut SearchAnswer, usize)> =
                answers.iter_mut().map(|a| (a, locate)).collect();
            self.locate_hits(&mut all, deadline)?;
        }
        Ok(answers)
    }

    /// Locates the hits of searches already answered: each answer's results get their `k` best
    /// sentences (`k` of its pair; 0: left as they are). Every (query, hit) pair of all the
    /// answers goes through grouped fusion passes together ([`crate::locate_pairs`]: a document
    /// hit by several queries is encoded once per pass). Stops at `deadline` between passes.
    pub fn locate_hits(
        &self,
        answers: &mut [(&mut SearchAnswer, usize)],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let documents: Vec<Vec<Document>> = answers
            .iter()
            .map(|(a, k)| {
                let hits = if *k > 0 { a.results.as_slice() } else { &[] };
                hits.iter()
                    .map(|h| Document {
                        id: h.id.clone(),
                        title: h.title.clone(),
                        text: h.text.clone(),
                    })
                    .collect()
            })
            .collect();
        let pairs: Vec<(&str, &Document)> = answers
            .iter()
            .zip(&documents)
            .flat_map(|((a, _), docs)| docs.iter().map(|d| (a.query.as_str(), d)))
            .collect();
        let mut located = locate_pairs(&self.model, &pairs, &self.locate, deadline)?.into_iter();
        for ((answer, k), docs) in answers.iter_mut().zip(&documents) {
            for (hit, e) in answer
                .results
                .iter_mut()
                .zip(located.by_ref().take(docs.len()))
            {
                hit.sentences = Some(e.located_sentences(*k));
                hit.truncated = e.truncated;
            }
        }
        Ok(())
    }

    /// Each (query, document) pair's `k` best sentences — documents of any length (read window
    /// by window when longer than the model reads at once), the pairs located in grouped
    /// fusion passes. Stops at `deadline` between passes.
    pub fn locate(
        &self,
        pairs: &[(&str, &Document)],
        k: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<Located>> {
        Ok(locate_pairs(&self.model, pairs, &self.locate, deadline)?
            .into_iter()
            .map(|e| Located {
                sentences: e.located_sentences(k),
                truncated: e.truncated,
                query: e.query,
            })
            .collect())
    }

    /// The decoder's answer for `query` from `document`, with the sentence it ranks first.
    pub fn generate(
        &self,
        query: &str,
        document: &Document,
        generation: &GenerationOptions,
        deadline: Option<Instant>,
    ) -> Result<GeneratedAnswer> {
        let e = self.explain(query, document, 0, Some(generation), deadline)?;
        Ok(GeneratedAnswer {
            query: e.query.clone(),
            doc_id: e.document.id.clone(),
            generated: e.generated.clone().unwrap_or_default(),
            span: e.generated_chars(),
            sentence: e.located_sentences(1).pop(),
            truncated: e.truncated,
        })
    }

    /// The `k` best sentences and the `tokens` most attended tokens of `document` for `query`.
    pub fn explain_answer(
        &self,
        query: &str,
        document: &Document,
        k: usize,
        tokens: usize,
        deadline: Option<Instant>,
    ) -> Result<ExplainedAnswer> {
        let e = self.explain(query, document, tokens, None, deadline)?;
        Ok(ExplainedAnswer {
            query: e.query.clone(),
            doc_id: e.document.id.clone(),
            sentences: e.located_sentences(k),
            tokens: e.located_tokens(),
            truncated: e.truncated,
        })
    }

    /// Everything GeAR says about a pair (what `gear explain` renders): all sentences ranked,
    /// the `tokens` most attended tokens, and the generated text with `generation`.
    pub fn explain(
        &self,
        query: &str,
        document: &Document,
        tokens: usize,
        generation: Option<&GenerationOptions>,
        deadline: Option<Instant>,
    ) -> Result<Explanation> {
        let options = LocateOptions {
            top_tokens: tokens,
            ..self.locate
        };
        explain_within(&self.model, query, document, &options, generation, deadline)
    }
}
