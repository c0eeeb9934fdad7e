//! The model thread: owns the model and the index, takes jobs from a bounded queue, and groups
//! the encoder work of concurrent requests into one forward pass (dynamic batching, as TEI
//! does): with the first embedding or search job it takes every job already queued — and, when
//! `max_wait` is not zero, waits that long for more — up to `max_batch` texts, and runs them
//! together. Searches that asked for located sentences are answered after the plain ones, all
//! their (query, hit) pairs located in grouped fusion passes ([`Retriever::locate_hits`]);
//! `/locate`, `/generate`, `/explain` and `/rerank` run after the batch, each in its own pass.
//!
//! The thread answers plain data ([`Reply`]) or a [`Failure`]; the HTTP layer turns them into
//! JSON and status codes.
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

use gear_infer::{ExplainedAnswer, GeneratedAnswer, Located, Retriever, SearchAnswer};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

mod pairs;
mod reload;

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

/// What the model thread answers, as plain data.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `/embed`, `/v1/embeddings`: one vector per text, and the tokens the encoder read of each
    /// (special tokens included).
    Embedded {
        vectors: Vec<Vec<f32>>,
        tokens: Vec<usize>,
    },
    Searched(SearchAnswer),
    Located(Located),
    Generated(GeneratedAnswer),
    Explained(ExplainedAnswer),
    /// `/rerank`: each text's cosine to the query, in input order, with its located sentences
    /// when asked for.
    Reranked(Vec<Scored>),
}

/// One text scored by `/rerank`.
#[derive(Debug)]
pub(crate) struct Scored {
    /// Position among the texts sent.
    pub index: usize,
    /// Cosine of the query and text embeddings.
    pub cosine: f32,
    /// Its best sentences, when asked for.
    pub located: Option<Located>,
}

/// Why a job has no answer; the HTTP layer chooses the status.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// An input the model cannot read, or a value out of bounds.
    Input(String),
    /// An input longer than the encoder reads, without `truncate`.
    TooLong(String),
    /// No such document in the index.
    UnknownDocument(String),
    /// The request's time limit ended.
    Expired(String),
    /// The index is not being served now.
    Unavailable(String),
    /// The model failed (a bug, not the request's fault).
    Model(String),
}

impl Failure {
    /// An inference error: the request's fault when gear-infer says the input is bad.
    pub(crate) fn from_infer(error: gear_infer::Error) -> Self {
        match error {
            gear_infer::Error::Input(m) => Self::Input(m),
            gear_infer::Error::Unavailable(m) => Self::Unavailable(m),
            gear_infer::Error::UnknownDocument { id, .. } => {
                Self::UnknownDocument(format!("no document `{id}` in the index"))
            }
            gear_infer::Error::Deadline { done, total } => Self::Expired(format!(
                "the request's time limit ended after {done} of {total} passes over the \
                 document; the work stopped there"
            )),
            other => Self::Model(other.to_string()),
        }
    }

    /// The same failure with its message rewritten by `f` (field names of another API).
    pub(crate) fn map_message(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            Self::Input(m) => Self::Input(f(&m)),
            Self::TooLong(m) => Self::TooLong(f(&m)),
            Self::UnknownDocument(m) => Self::UnknownDocument(f(&m)),
            Self::Expired(m) => Self::Expired(f(&m)),
            Self::Unavailable(m) => Self::Unavailable(f(&m)),
            Self::Model(m) => Self::Model(f(&m)),
        }
    }
}

/// The answer to one job.
pub(crate) type Answer = Result<Reply, Failure>;

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
    retriever: Retriever,
    fingerprint: String,
    jobs: &Receiver<Job>,
    batching: Batching,
    metrics: &Arc<Metrics>,
    problem: IndexProblem,
) {
    let mut worker = Worker {
        retriever,
        fingerprint,
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
    /// The model and the index served (not read while `problem` holds a reason).
    retriever: Retriever,
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
                let _ = reply.send(Err(Failure::Expired(
                    "the request's time limit ended while it waited for the model".into(),
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
                    match gear_infer::check_readable(self.retriever.model(), "`query`", &query) {
                        Ok(()) => searches.push(SearchJob {
                            query,
                            k,
                            locate,
                            reply,
                            deadline,
                        }),
                        Err(e) => {
                            let _ = reply.send(Err(Failure::from_infer(e)));
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
    ) -> Result<Vec<usize>, Failure> {
        let model = self.retriever.model();
        for (i, text) in texts.iter().enumerate() {
            gear_infer::check_readable(model, &format!("inputs[{i}]"), text)
                .map_err(Failure::from_infer)?;
        }
        let config = model.config();
        let max = match encoder {
            Encoder::Query => config.max_query_len,
            Encoder::Document => config.max_document_len,
        };
        let mut tokens = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let n = model
                .tokenizer()
                .count_tokens(text)
                .map_err(|e| Failure::Input(format!("inputs[{i}]: {e}")))?;
            if n > max && !truncate {
                return Err(Failure::TooLong(format!(
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
                    let _ = reply.send(Ok(Reply::Embedded {
                        vectors: mine,
                        tokens,
                    }));
                }
            }
            Err(e) => {
                for (_, _, reply) in group {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    pub(super) fn embed(&self, texts: &[&str], encoder: Encoder) -> Result<Vec<Vec<f32>>, Failure> {
        let model = self.retriever.model();
        let failed = |e: &dyn std::fmt::Display| Failure::Model(e.to_string());
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.max_batch) {
            self.metrics.batch(chunk.len());
            let t = match encoder {
                Encoder::Query => model.embed_queries(chunk),
                Encoder::Document => model.embed_documents(chunk),
            }
            .map_err(|e| failed(&e))?;
            let rows: Vec<Vec<f32>> =
                Vec::try_from(t.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu))
                    .map_err(|e| failed(&e))?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Search jobs: one query-encoder forward and one index search per `max_batch` queries.
    /// Searches without located sentences are answered at once; then every (query, hit) pair
    /// of the ones that asked for sentences is located in grouped fusion passes, which run
    /// while some client of theirs still waits (their latest deadline).
    fn search_group(&self, mut jobs: Vec<SearchJob>) {
        while !jobs.is_empty() {
            let rest = jobs.split_off(jobs.len().min(self.max_batch));
            let batch = std::mem::replace(&mut jobs, rest);
            let queries: Vec<&str> = batch.iter().map(|j| j.query.as_str()).collect();
            let k = batch.iter().map(|j| j.k).max().unwrap_or(1);
            self.metrics.batch(queries.len());
            let answers = match self.retriever.search(&queries, k, 0, None) {
                Ok(answers) => answers,
                Err(e) => {
                    let e = Failure::from_infer(e);
                    for job in batch {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                    continue;
                }
            };
            let mut locating = Vec::new();
            for (job, mut answer) in batch.into_iter().zip(answers) {
                answer.results.truncate(job.k);
                if job.locate == 0 {
                    let _ = job.reply.send(Ok(Reply::Searched(answer)));
                } else {
                    locating.push((job, answer));
                }
            }
            self.locate_searches(locating);
        }
    }

    /// The located sentences of searches that asked for them, in grouped passes.
    fn locate_searches(&self, mut locating: Vec<(SearchJob, SearchAnswer)>) {
        let Some(deadline) = locating.iter().map(|(j, _)| j.deadline).max() else {
            return;
        };
        let mut asked: Vec<(&mut SearchAnswer, usize)> = locating
            .iter_mut()
            .map(|(job, answer)| (answer, job.locate))
            .collect();
        let outcome = self.retriever.locate_hits(&mut asked, Some(deadline));
        drop(asked);
        match outcome {
            Ok(()) => {
                for (job, answer) in locating {
                    let _ = job.reply.send(Ok(Reply::Searched(answer)));
                }
            }
            Err(e) => {
                let e = Failure::from_infer(e);
                for (job, _) in locating {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
