//! The model thread: owns the model and the index, takes jobs from a bounded queue, and groups
//! the encoder work of concurrent requests into one forward pass (dynamic batching, as TEI
//! does): with the first embedding or search job it takes every job already queued — and, when
//! `max_wait` is not zero, waits that long for more — up to `max_batch` texts, and runs them
//! together. Locating, generation and explanations run one
//! (query, document) pair at a time after the batch.
//!
//! Every job carries its request's deadline: a job whose deadline passed while it waited is
//! dropped unread, and locating a long document stops at the deadline between two forward
//! passes, so a request that timed out stops using the model. Before a batch that reads the
//! index, the thread checks that the index's files are the ones it opened
//! ([`DocumentIndex::changed_on_disk`]); when they changed it opens them again (verified as
//! any open is) and serves the new index, or answers 503 until a complete index is back.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gear_data::Document;
use gear_infer::DocumentIndex;
use gear_model::{GearModel, LocateOptions};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::metrics::Metrics;

mod pairs;
mod reload;

use pairs::{add_truncation, sentences};

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
    /// Texts sent along, scored against the query (`/rerank`), each with its `sentences` best
    /// sentences when above 0.
    Rerank {
        query: String,
        texts: Vec<String>,
        truncate: bool,
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

    /// Whether the task reads the index (its vectors or documents).
    fn reads_index(&self) -> bool {
        match self {
            Task::Embed { .. } | Task::Rerank { .. } => false,
            Task::Locate { document, .. } => matches!(document, DocSource::Id(_)),
            Task::Search { .. } | Task::Generate { .. } | Task::Explain { .. } => true,
        }
    }
}

/// The answer to one job.
pub(crate) type Answer = Result<Value, ApiError>;

/// A task and where its answer goes.
pub(crate) struct Job {
    pub task: Task,
    pub reply: oneshot::Sender<Answer>,
    /// When the request's time limit ends: the client has its 504 by then.
    pub deadline: Instant,
}

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// Why the index is not being served (its files changed and do not open), shared with
/// `/health`.
pub(crate) type IndexProblem = Arc<Mutex<Option<String>>>;

/// Serves jobs until every sender is gone (the server has drained).
pub(crate) fn run(
    model: GearModel,
    index: DocumentIndex,
    jobs: &Receiver<Job>,
    batching: Batching,
    metrics: &Arc<Metrics>,
    problem: IndexProblem,
) {
    let mut worker = Worker {
        model,
        fingerprint: index.meta().fingerprint.clone(),
        index,
        metrics,
        max_batch: batching.max_batch,
        problem,
        failed_at: None,
    };
    loop {
        let first = match jobs.recv_timeout(IDLE_CHECK) {
            Ok(job) => job,
            // Idle: notice changed index files now, so `/health` says so before a request does.
            Err(RecvTimeoutError::Timeout) => {
                worker.refresh_index();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
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
    deadline: Instant,
}

/// Texts, the tokens the encoder reads of each, and where the vectors go.
type EmbedJob = (Vec<String>, Vec<usize>, oneshot::Sender<Answer>);

/// How often an idle model thread checks the index's files.
const IDLE_CHECK: Duration = Duration::from_secs(1);

struct Worker<'a> {
    model: GearModel,
    /// The index served; not read while `problem` holds a reason.
    index: DocumentIndex,
    /// The model fingerprint the served index was built with (a reopened one must match).
    fingerprint: String,
    metrics: &'a Metrics,
    max_batch: usize,
    problem: IndexProblem,
    /// When reopening a changed index last failed.
    failed_at: Option<Instant>,
}

// A client that gave up has dropped its receiver: a failed `send` has nobody to tell.
impl Worker<'_> {
    fn run(&mut self, pending: Vec<Job>) {
        let now = Instant::now();
        if pending.iter().any(|j| j.task.reads_index()) {
            self.refresh_index();
        }
        let unavailable = self.unavailable();
        let mut queries: Vec<EmbedJob> = Vec::new();
        let mut documents: Vec<EmbedJob> = Vec::new();
        let mut searches = Vec::new();
        for Job {
            task,
            reply,
            deadline,
        } in pending
        {
            if now >= deadline {
                // The client has had its 504: nothing to compute.
                let _ = reply.send(Err(ApiError::timeout(
                    "the request's time limit ended while it waited for the model",
                )));
                continue;
            }
            if let (true, Some(e)) = (task.reads_index(), &unavailable) {
                let _ = reply.send(Err(e.clone()));
                continue;
            }
            match task {
                Task::Embed {
                    texts,
                    encoder,
                    truncate,
                } => match self.check_inputs(&texts, encoder, truncate) {
                    Ok(tokens) if encoder == Encoder::Query => queries.push((texts, tokens, reply)),
                    Ok(tokens) => documents.push((texts, tokens, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                // A query the model reads nothing of fails alone, not the batch it joins.
                Task::Search { query, k, locate } => {
                    match gear_infer::check_readable(&self.model, "`query`", &query) {
                        Ok(()) => searches.push(SearchJob {
                            query,
                            k,
                            locate,
                            reply,
                            deadline,
                        }),
                        Err(e) => {
                            let _ = reply.send(Err(ApiError::from_infer(e)));
                        }
                    }
                }
                other => {
                    let _ = reply.send(self.single(other, deadline));
                }
            }
        }
        self.embed_group(Encoder::Query, queries);
        self.embed_group(Encoder::Document, documents);
        self.search_group(searches);
    }

    /// `/embed` inputs: each must hold a token the model reads, and be no longer than the
    /// encoder reads unless `truncate` (TEI refuses them; so do we). The tokens the encoder
    /// reads of each (special tokens included), for OpenAI's `usage`.
    pub(super) fn check_inputs(
        &self,
        texts: &[String],
        encoder: Encoder,
        truncate: bool,
    ) -> Result<Vec<usize>, ApiError> {
        for (i, text) in texts.iter().enumerate() {
            gear_infer::check_readable(&self.model, &format!("inputs[{i}]"), text)
                .map_err(ApiError::from_infer)?;
        }
        let config = self.model.config();
        let max = match encoder {
            Encoder::Query => config.max_query_len,
            Encoder::Document => config.max_document_len,
        };
        let mut tokens = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let n = self
                .model
                .tokenizer()
                .count_tokens(text)
                .map_err(|e| ApiError::validation(format!("inputs[{i}]: {e}")))?;
            if n > max && !truncate {
                return Err(ApiError::too_large(format!(
                    "inputs[{i}] is {n} tokens and the {} encoder reads {max}: shorten it or \
                     pass \"truncate\": true",
                    match encoder {
                        Encoder::Query => "query",
                        Encoder::Document => "document",
                    }
                )));
            }
            tokens.push(n.min(max));
        }
        Ok(tokens)
    }

    /// One encoder's embedding jobs, in forwards of at most `max_batch` texts.
    fn embed_group(&self, encoder: Encoder, group: Vec<EmbedJob>) {
        if group.is_empty() {
            return;
        }
        let texts: Vec<&str> = group
            .iter()
            .flat_map(|(t, _, _)| t.iter().map(String::as_str))
            .collect();
        match self.embed(&texts, encoder) {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for (texts, tokens, reply) in group {
                    let mine: Vec<Vec<f32>> = vectors.by_ref().take(texts.len()).collect();
                    let _ = reply.send(Ok(json!({ "vectors": mine, "tokens": tokens })));
                }
            }
            Err(e) => {
                for (_, _, reply) in group {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    pub(super) fn embed(
        &self,
        texts: &[&str],
        encoder: Encoder,
    ) -> Result<Vec<Vec<f32>>, ApiError> {
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
                let e = self.explain(
                    &job.query,
                    &doc,
                    &LocateOptions::default(),
                    None,
                    job.deadline,
                )?;
                r["sentences"] = sentences(&e, job.locate);
                add_truncation(&mut r, &e);
            }
            results.push(r);
        }
        Ok(json!({ "query": job.query, "results": results }))
    }
}
