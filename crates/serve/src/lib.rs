//! `gear serve`: GeAR as an HTTP service over an index, the model loaded once.
//!
//! - `POST /embed` — Hugging Face text-embeddings-inference's request and response
//!   (`{"inputs": "…" | ["…", …]}` → `[[f32, …], …]`), so TEI clients work unchanged;
//! - `POST /search` `{query, k, locate}` — top documents, each with its `locate` best sentences
//!   (character spans and scores) by cross-attention;
//! - `POST /locate` `{query, doc_id | document, k}`, `POST /generate` `{query, doc_id}`,
//!   `POST /explain` `{query, doc_id, k}` (the most attended tokens);
//! - `GET /health`, `GET /info`, `GET /metrics` (Prometheus), and a search page at `/`.
//!
//! The model and the index live on one thread of their own; handlers hand it jobs through a
//! bounded queue and wait (with a time limit) for the answer, so libtorch never runs on the
//! async runtime's threads. That thread batches the encoder work of concurrent requests
//! ([`ServeOptions::max_batch`], [`ServeOptions::max_wait`]). `SIGTERM` or Ctrl-C stops
//! accepting, lets in-flight requests finish for at most [`ServeOptions::shutdown_grace`], then
//! closes what is still open and returns. The index is only read; when its files change on disk
//! the server opens them again (verified) or answers 503 until a complete index is back (see
//! `docs/serve.md` for replacing an index under a running server). A retriever over a database
//! store (`gear-store`) is served the same way; while the database cannot be reached, requests
//! that read it get 503 and the next one after it is back is answered.

mod api;
mod checks;
mod compat;
mod error;
mod fault;
mod metrics;
mod worker;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gear_infer::Retriever;

pub use error::ApiError;
pub use metrics::Metrics;

/// How the server listens, batches and bounds requests.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (port 0: any free port, reported to `ready`).
    pub addr: SocketAddr,
    /// Most texts in one batched encoder forward (1: no batching).
    pub max_batch: usize,
    /// Longest wait for more requests after the first of a batch (zero: none; a forward
    /// takes whatever queued while the previous one ran).
    pub max_wait: Duration,
    /// Requests that may wait for the model; beyond it, 503.
    pub queue: usize,
    /// Per-request time limit (waiting included); beyond it, 504.
    pub timeout: Duration,
    /// Largest request body; beyond it, 413.
    pub max_body_bytes: usize,
    /// Longest query, in characters; beyond it, 413.
    pub max_query_chars: usize,
    /// Largest `k` of `/search`.
    pub max_k: usize,
    /// Most `inputs` in one `/embed` request.
    pub max_inputs: usize,
    /// Most tokens `/generate` may ask for.
    pub max_new_tokens: usize,
    /// Longest `document` sent to `/locate`, in characters; beyond it, 413 (locating reads all
    /// of it, so this bounds a request's work before it starts).
    pub max_document_chars: usize,
    /// After `SIGTERM`, how long in-flight requests may take before the server closes the
    /// connections still open and returns.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_batch: 32,
            max_wait: Duration::ZERO,
            queue: 1024,
            timeout: Duration::from_secs(30),
            max_body_bytes: 1 << 20,
            max_query_chars: 2000,
            max_k: 100,
            max_inputs: 256,
            max_new_tokens: 128,
            max_document_chars: 50_000,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option out of range.
    #[error("{0}")]
    Options(String),
    /// Binding, the runtime or the model thread.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The model thread panicked.
    #[error("the model thread panicked")]
    Worker,
}

/// How the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight request was answered and every connection closed.
    Drained,
    /// Connections were still open when [`ServeOptions::shutdown_grace`] ended: they were
    /// closed.
    GraceEnded,
}

/// Serves `retriever` (its model over its index folder or store) until `SIGTERM` or Ctrl-C,
/// then drains (for at most [`ServeOptions::shutdown_grace`]) and returns how it stopped.
/// `ready` is called with the bound address once the server accepts connections.
pub fn serve(
    retriever: Retriever,
    options: &ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<Stopped, Error> {
    if options.max_batch == 0
        || options.queue == 0
        || options.max_k == 0
        || options.max_document_chars == 0
    {
        return Err(Error::Options(
            "max_batch, queue, max_k and max_document_chars must be at least 1".into(),
        ));
    }
    fault::report_index_faults();
    let io = |context: &str| {
        let context = context.to_owned();
        move |source| Error::Io { context, source }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("starting the async runtime"))?;
    let metrics = Arc::new(Metrics::default());
    let alive = Arc::new(AtomicBool::new(true));
    let index_problem: worker::IndexProblem = Arc::default();
    let corpus = retriever
        .corpus()
        .map_err(|e| Error::Options(format!("gear serve serves an index or a store: {e}")))?;
    let fingerprint = corpus.fingerprint();
    let model = retriever.model();
    let info = serde_json::json!({
        "model": corpus.recorded_model(),
        "documents": corpus.len(),
        "max_query_tokens": model.config().max_query_len,
        "max_document_tokens": model.config().max_document_len,
        "dimensions": model.config().encoder.hidden_size,
        "precision": model.precision().to_string(),
        "max_batch": options.max_batch,
    });
    let (jobs, queue) = std::sync::mpsc::sync_channel(options.queue);
    let batching = worker::Batching {
        max_batch: options.max_batch,
        max_wait: options.max_wait,
    };
    let worker = {
        let metrics = Arc::clone(&metrics);
        let alive = Arc::clone(&alive);
        let problem = Arc::clone(&index_problem);
        std::thread::Builder::new()
            .name("gear-model".into())
            .spawn(move || {
                // Marks the thread gone however it ends (a panic included).
                struct Gone(Arc<AtomicBool>);
                impl Drop for Gone {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::Relaxed);
                    }
                }
                let _gone = Gone(alive);
                worker::run(retriever, fingerprint, &queue, batching, &metrics, problem);
            })
            .map_err(io("starting the model thread"))?
    };
    let state = api::AppState {
        jobs,
        queue: options.queue,
        metrics,
        limits: api::Limits {
            max_query_chars: options.max_query_chars,
            max_k: options.max_k,
            max_inputs: options.max_inputs,
            max_new_tokens: options.max_new_tokens,
            timeout: options.timeout,
            max_body_bytes: options.max_body_bytes,
            max_document_chars: options.max_document_chars,
        },
        alive,
        index_problem,
        info: Arc::new(info),
    };
    let served = runtime.block_on(listen(state, options, ready));
    // Connections still open past the grace period are dropped with the runtime, and with them
    // the last senders: the model thread finishes its queue (each job bounded by its deadline)
    // and ends.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let joined = worker.join();
    let stopped = served?;
    joined.map_err(|_| Error::Worker)?;
    Ok(stopped)
}

/// Binds, serves the router until the shutdown signal, then drains for at most
/// [`ServeOptions::shutdown_grace`].
async fn listen(
    state: api::AppState,
    options: &ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<Stopped, Error> {
    let io = |context: &str| {
        let context = context.to_owned();
        move |source| Error::Io { context, source }
    };
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(io(&format!("listening on {}", options.addr)))?;
    let addr = listener
        .local_addr()
        .map_err(io("reading the bound address"))?;
    ready(addr);
    let (stopping, mut stop) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stopping.send(true);
        })
        .into_future();
    // Draining has a deadline: a client that keeps a connection busy (headers sent a line at a
    // time) must not hold the server past it.
    let grace = options.shutdown_grace;
    let deadline = async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.map(|()| Stopped::Drained).map_err(io("serving")),
        () = deadline => {
            tracing::warn!(
                "connections still open {} s after the shutdown signal: closing them",
                grace.as_secs_f64()
            );
            Ok(Stopped::GraceEnded)
        }
    }
}

/// SIGTERM (Unix) or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
}

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
