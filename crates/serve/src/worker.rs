//! The model thread: owns the model and the index, takes jobs from a bounded queue, and groups
//! the encoder work of concurrent requests into one forward pass (dynamic batching, as TEI
//! does): with the first embedding or search job it takes every job already queued — and, when
//! `max_wait` is not zero, waits that long for more — up to `max_batch` texts, and runs them
//! together. Locating, generation and explanations run one
//! (query, document) pair at a time after the batch.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gear_data::{Document, Span};
use gear_infer::{explain, DocumentIndex, Explanation};
use gear_model::{GearModel, GenerationOptions, LocateOptions};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Which encoder `/embed` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Encoder {
    /// The query encoder `E_q`.
    Query,
    /// The document encoder `E_d` (the one the index was built with).
    #[default]
    Document,
}

/// The document a `/locate` request reads.
#[derive(Debug, Clone)]
pub(crate) enum DocSource {
    /// A document of the index, by id.
    Id(String),
    /// Text sent with the request.
    Text(String),
}

/// What a job asks of the model.
#[derive(Debug, Clone)]
pub(crate) enum Task {
    Embed {
        texts: Vec<String>,
        encoder: Encoder,
        truncate: bool,
    },
    Search {
        query: String,
        k: usize,
        locate: usize,
    },
    Locate {
        query: String,
        document: DocSource,
        k: usize,
    },
    Generate {
        query: String,
        doc_id: String,
        max_tokens: usize,
    },
    Explain {
        query: String,
        doc_id: String,
        tokens: usize,
        sentences: usize,
    },
}

impl Task {
    /// Texts this task adds to a batched forward (0: not batched).
    fn batch_texts(&self) -> usize {
        match self {
            Task::Embed { texts, .. } => texts.len(),
            Task::Search { .. } => 1,
            _ => 0,
        }
    }
}

/// The answer to one job.
pub(crate) type Answer = Result<Value, ApiError>;

/// A task and where its answer goes.
pub(crate) struct Job {
    pub task: Task,
    pub reply: oneshot::Sender<Answer>,
}

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// Serves jobs until every sender is gone (the server has drained).
pub(crate) fn run(
    model: GearModel,
    index: DocumentIndex,
    jobs: &Receiver<Job>,
    batching: Batching,
    metrics: &Arc<Metrics>,
) {
    let worker = Worker {
        model,
        index,
        metrics,
        max_batch: batching.max_batch,
    };
    while let Ok(first) = jobs.recv() {
        let mut texts = first.task.batch_texts();
        let mut pending = vec![first];
        if texts > 0 {
            let deadline = Instant::now() + batching.max_wait;
            while texts < batching.max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match jobs.recv_timeout(left) {
                    Ok(job) => {
                        texts += job.task.batch_texts();
                        pending.push(job);
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        worker.run(pending);
    }
}

struct SearchJob {
    query: String,
    k: usize,
    locate: usize,
    reply: oneshot::Sender<Answer>,
}

type EmbedJob = (Vec<String>, oneshot::Sender<Answer>);

struct Worker<'a> {
    model: GearModel,
    index: DocumentIndex,
    metrics: &'a Metrics,
    max_batch: usize,
}

// A client that gave up has dropped its receiver: a failed `send` has nobody to tell.
impl Worker<'_> {
    fn run(&self, pending: Vec<Job>) {
        let mut queries: Vec<EmbedJob> = Vec::new();
        let mut documents: Vec<EmbedJob> = Vec::new();
        let mut searches = Vec::new();
        for Job { task, reply } in pending {
            match task {
                Task::Embed {
                    texts,
                    encoder,
                    truncate,
                } => match self.check_lengths(&texts, encoder, truncate) {
                    Ok(()) if encoder == Encoder::Query => queries.push((texts, reply)),
                    Ok(()) => documents.push((texts, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Task::Search { query, k, locate } => searches.push(SearchJob {
                    query,
                    k,
                    locate,
                    reply,
                }),
                other => {
                    let _ = reply.send(self.single(other));
                }
            }
        }
        self.embed_group(Encoder::Query, queries);
        self.embed_group(Encoder::Document, documents);
        self.search_group(searches);
    }

    /// TEI refuses inputs longer than the model reads unless `truncate` is set; so do we.
    fn check_lengths(
        &self,
        texts: &[String],
        encoder: Encoder,
        truncate: bool,
    ) -> Result<(), ApiError> {
        if truncate {
            return Ok(());
        }
        let config = self.model.config();
        let max = match encoder {
            Encoder::Query => config.max_query_len,
            Encoder::Document => config.max_document_len,
        };
        for (i, text) in texts.iter().enumerate() {
            let n = self
                .model
                .tokenizer()
                .count_tokens(text)
                .map_err(|e| ApiError::validation(format!("inputs[{i}]: {e}")))?;
            if n > max {
                return Err(ApiError::too_large(format!(
                    "inputs[{i}] is {n} tokens and the {} encoder reads {max}: shorten it or \
                     pass \"truncate\": true",
                    match encoder {
                        Encoder::Query => "query",
                        Encoder::Document => "document",
                    }
                )));
            }
        }
        Ok(())
    }

    /// One encoder's embedding jobs, in forwards of at most `max_batch` texts.
    fn embed_group(&self, encoder: Encoder, group: Vec<EmbedJob>) {
        if group.is_empty() {
            return;
        }
        let texts: Vec<&str> = group
            .iter()
            .flat_map(|(t, _)| t.iter().map(String::as_str))
            .collect();
        match self.embed(&texts, encoder) {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for (texts, reply) in group {
                    let mine: Vec<Vec<f32>> = vectors.by_ref().take(texts.len()).collect();
                    let _ = reply.send(Ok(json!(mine)));
                }
            }
            Err(e) => {
                for (_, reply) in group {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn embed(&self, texts: &[&str], encoder: Encoder) -> Result<Vec<Vec<f32>>, ApiError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.max_batch) {
            self.metrics.batch(chunk.len());
            let t = match encoder {
                Encoder::Query => self.model.embed_queries(chunk),
                Encoder::Document => self.model.embed_documents(chunk),
            }
            .map_err(ApiError::backend)?;
            let rows: Vec<Vec<f32>> =
                Vec::try_from(t.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu))
                    .map_err(ApiError::backend)?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Search jobs: one query-encoder forward and one index search per `max_batch` queries.
    fn search_group(&self, mut jobs: Vec<SearchJob>) {
        while !jobs.is_empty() {
            let rest = jobs.split_off(jobs.len().min(self.max_batch));
            let batch = std::mem::replace(&mut jobs, rest);
            let queries: Vec<&str> = batch.iter().map(|j| j.query.as_str()).collect();
            let k = batch.iter().map(|j| j.k).max().unwrap_or(1);
            self.metrics.batch(queries.len());
            match self.index.search(&self.model, &queries, k) {
                Ok(hits) => {
                    for (job, hits) in batch.into_iter().zip(hits) {
                        let answer = self.search_answer(&job, hits);
                        let _ = job.reply.send(answer);
                    }
                }
                Err(e) => {
                    let e = ApiError::from_infer(e);
                    for job in batch {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    fn search_answer(&self, job: &SearchJob, hits: Vec<(Document, f32)>) -> Answer {
        let mut results = Vec::new();
        for (rank, (doc, score)) in hits.into_iter().take(job.k).enumerate() {
            let mut r = json!({
                "rank": rank + 1,
                "id": doc.id,
                "title": doc.title,
                "score": score,
                "text": doc.text,
            });
            if job.locate > 0 {
                let e = self.explain(&job.query, &doc, &LocateOptions::default(), None)?;
                r["sentences"] = sentences(&e, job.locate);
                if let Some(t) = e.truncated {
                    r["truncated"] = json!(t);
                }
            }
            results.push(r);
        }
        Ok(json!({ "query": job.query, "results": results }))
    }

    fn single(&self, task: Task) -> Answer {
        match task {
            Task::Locate { query, document, k } => {
                let doc = match document {
                    DocSource::Id(id) => self.document(&id)?,
                    DocSource::Text(text) => Document {
                        id: String::new(),
                        title: String::new(),
                        text,
                    },
                };
                let e = self.explain(&query, &doc, &LocateOptions::default(), None)?;
                let mut answer = json!({ "query": query, "sentences": sentences(&e, k) });
                if let Some(t) = e.truncated {
                    answer["truncated"] = json!(t);
                }
                Ok(answer)
            }
            Task::Generate {
                query,
                doc_id,
                max_tokens,
            } => {
                let doc = self.document(&doc_id)?;
                let generation = GenerationOptions {
                    max_len: max_tokens,
                    ..GenerationOptions::default()
                };
                let e = self.explain(&query, &doc, &LocateOptions::default(), Some(&generation))?;
                let mut answer = json!({
                    "query": query,
                    "doc_id": doc_id,
                    "generated": e.generated.clone().unwrap_or_default(),
                });
                // Where the answer was read from (span decoding) and the sentence local
                // retrieval ranks first, both in character offsets as /search gives them.
                if let Some(span) = e.generated_span {
                    let (start, end) = char_span(&doc.text, span);
                    answer["span"] = json!({"start": start, "end": end});
                }
                if let Some(top) = e.sentences.first() {
                    let (start, end) = char_span(&doc.text, top.span);
                    answer["sentence"] = json!({
                        "index": top.index, "start": start, "end": end,
                        "score": top.score, "text": top.text,
                    });
                }
                Ok(answer)
            }
            Task::Explain {
                query,
                doc_id,
                tokens,
                sentences: k,
            } => {
                let doc = self.document(&doc_id)?;
                let options = LocateOptions {
                    top_tokens: tokens,
                    ..LocateOptions::default()
                };
                let e = self.explain(&query, &doc, &options, None)?;
                let attended: Vec<Value> = e
                    .tokens
                    .iter()
                    .map(|t| {
                        let (start, end) = char_span(&doc.text, t.span);
                        json!({"start": start, "end": end, "weight": t.weight, "text": t.text})
                    })
                    .collect();
                Ok(json!({
                    "query": query,
                    "doc_id": doc_id,
                    "sentences": sentences(&e, k),
                    "tokens": attended,
                }))
            }
            Task::Embed { .. } | Task::Search { .. } => Err(ApiError::backend(
                "a batched task reached the single-pair path",
            )),
        }
    }

    fn document(&self, id: &str) -> Result<Document, ApiError> {
        self.index.document(id).map_err(|e| match e {
            gear_infer::Error::UnknownDocument { .. } => {
                ApiError::not_found(format!("no document `{id}` in the index"))
            }
            other => ApiError::backend(other),
        })
    }

    fn explain(
        &self,
        query: &str,
        doc: &Document,
        locate: &LocateOptions,
        generation: Option<&GenerationOptions>,
    ) -> Result<Explanation, ApiError> {
        explain(&self.model, query, doc, locate, generation).map_err(ApiError::from_infer)
    }
}

/// The `k` best sentences with character spans (Unicode scalar values, as the triple format).
fn sentences(e: &Explanation, k: usize) -> Value {
    e.sentences
        .iter()
        .take(k)
        .map(|s| {
            let (start, end) = char_span(&e.document.text, s.span);
            json!({"index": s.index, "start": start, "end": end, "score": s.score, "text": s.text})
        })
        .collect()
}

fn char_span(text: &str, span: Span) -> (usize, usize) {
    let start = text.get(..span.start).map_or(0, |t| t.chars().count());
    let len = text
        .get(span.start..span.end)
        .map_or(0, |t| t.chars().count());
    (start, start + len)
}
