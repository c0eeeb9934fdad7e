//! The routes, their request types and their checks. Every request that is wrong gets a 4xx
//! with a JSON error (`crate::ApiError`): malformed JSON, wrong types, unknown fields, empty or
//! over-long queries, out-of-range `k`, unknown document ids, bodies over the limit, unknown
//! routes and methods.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::metrics::Metrics;
use gear_infer::{ExplainedAnswer, GeneratedAnswer, Located, SearchAnswer};

use crate::checks::{check_direction, check_doc_id, check_query, check_range, check_texts};
use crate::worker::{DocSource, Encoder, Job, Reply, Task};

/// Request limits (see [`crate::ServeOptions`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_query_chars: usize,
    pub max_k: usize,
    pub max_inputs: usize,
    pub max_new_tokens: usize,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub max_document_chars: usize,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub jobs: SyncSender<Job>,
    pub queue: usize,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub alive: Arc<AtomicBool>,
    pub index_problem: crate::worker::IndexProblem,
    pub info: Arc<Value>,
}

const PAGE: &str = include_str!("page.html");

/// The endpoints metrics are labelled with (anything else is `other`).
const ENDPOINTS: [&str; 11] = [
    "/",
    "/embed",
    "/rerank",
    "/v1/embeddings",
    "/search",
    "/locate",
    "/generate",
    "/explain",
    "/health",
    "/info",
    "/metrics",
];

pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/embed", post(embed))
        .route("/rerank", post(crate::compat::rerank))
        .route("/v1/embeddings", post(crate::compat::openai_embeddings))
        .route("/search", post(search))
        .route("/locate", post(locate))
        .route("/generate", post(generate))
        .route("/explain", post(explain))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                kind: "Validation",
                message: "method not allowed on this endpoint".into(),
            }
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let endpoint = ENDPOINTS
        .iter()
        .find(|e| **e == path)
        .copied()
        .unwrap_or("other");
    let start = Instant::now();
    let response = next.run(req).await;
    state.metrics.request(
        endpoint,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// `Json<T>` whose rejections are JSON errors: 400 for malformed JSON, 415 for a missing
/// content type, 422 for a wrong shape, 413 for a body over the limit. The body must be a JSON
/// object: serde would also fill a request struct from an array (`["query", 3]` as query and
/// `k`), which no client means.
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<Value>::from_request(req, state).await {
            Ok(Json(value)) => {
                if !value.is_object() {
                    let kind = match value {
                        Value::Array(_) => "an array",
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        Value::Bool(_) => "a boolean",
                        _ => "null",
                    };
                    return Err(ApiError::validation(format!(
                        "the request body must be a JSON object with named fields, not {kind}"
                    )));
                }
                serde_json::from_value::<T>(value).map(Self).map_err(|e| {
                    ApiError::validation(format!(
                        "Failed to deserialize the JSON body into the target type: {e}"
                    ))
                })
            }
            Err(rejection) => {
                let status = rejection.status();
                let message = rejection.body_text();
                Err(if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(message)
                } else {
                    ApiError {
                        status,
                        kind: "Validation",
                        message,
                    }
                })
            }
        }
    }
}

pub(crate) async fn submit(state: &AppState, task: Task) -> Result<Reply, ApiError> {
    if !state.alive.load(Ordering::Relaxed) {
        return Err(ApiError::backend("the model thread has stopped"));
    }
    let (reply, answer) = oneshot::channel();
    state
        .jobs
        .try_send(Job {
            task,
            reply,
            deadline: Instant::now() + state.limits.timeout,
        })
        .map_err(|e| match e {
            TrySendError::Full(_) => ApiError::overloaded(format!(
                "{} requests are already waiting for the model; retry later",
                state.queue
            )),
            TrySendError::Disconnected(_) => ApiError::backend("the model thread has stopped"),
        })?;
    match tokio::time::timeout(state.limits.timeout, answer).await {
        Ok(Ok(answer)) => answer.map_err(ApiError::from),
        Ok(Err(_)) => Err(ApiError::backend("the model thread dropped the request")),
        Err(_) => Err(ApiError::timeout(format!(
            "no answer within the {} s request time limit",
            state.limits.timeout.as_secs_f64()
        ))),
    }
}

/// TEI's `inputs`: one text or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(String),
    Many(Vec<String>),
}

/// `POST /embed`, TEI's request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedRequest {
    inputs: Inputs,
    /// TEI's default is `true`; GeAR's embeddings are unit-length, so `false` is refused.
    #[serde(default)]
    normalize: Option<bool>,
    /// Cut inputs longer than the encoder reads (TEI's default `false` refuses them).
    #[serde(default)]
    truncate: Option<bool>,
    /// TEI's `Right` (or `right`) is what we do; `Left` is refused.
    #[serde(default)]
    truncation_direction: Option<String>,
    /// TEI's prompt name: none is defined here, so only `null` is accepted.
    #[serde(default)]
    prompt_name: Option<String>,
    /// Beyond TEI: `document` (default, the index's encoder) or `query`.
    #[serde(default)]
    encoder: Encoder,
}

async fn embed(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<Json<Value>, ApiError> {
    let texts = match req.inputs {
        Inputs::One(t) => vec![t],
        Inputs::Many(ts) => ts,
    };
    check_texts("inputs", &texts, &state.limits)?;
    if req.normalize == Some(false) {
        return Err(ApiError::validation(
            "GeAR's embeddings are unit-length: `normalize: false` is not available",
        ));
    }
    check_direction(req.truncation_direction.as_deref())?;
    if let Some(p) = &req.prompt_name {
        return Err(ApiError::validation(format!(
            "`prompt_name` `{p}`: this model defines no prompts"
        )));
    }
    let task = Task::Embed {
        texts,
        encoder: req.encoder,
        truncate: req.truncate.unwrap_or(false),
    };
    match submit(&state, task).await? {
        Reply::Embedded { vectors, .. } => Ok(Json(json!(vectors))),
        other => Err(ApiError::unexpected("/embed", &other)),
    }
}

/// `POST /search`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    query: String,
    #[serde(default = "ten")]
    k: usize,
    #[serde(default)]
    locate: usize,
}

fn ten() -> usize {
    10
}

fn three() -> usize {
    3
}

async fn search(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<SearchAnswer>, ApiError> {
    let limits = state.limits;
    check_query(&req.query, &limits)?;
    let task = Task::Search {
        k: check_range("k", req.k, 1, limits.max_k)?,
        locate: check_range("locate", req.locate, 0, 50)?,
        query: req.query,
    };
    match submit(&state, task).await? {
        Reply::Searched(answer) => Ok(Json(answer)),
        other => Err(ApiError::unexpected("/search", &other)),
    }
}

/// `POST /locate`: a document of the index (`doc_id`) or one sent along (`document`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocateRequest {
    query: String,
    #[serde(default)]
    doc_id: Option<String>,
    #[serde(default)]
    document: Option<String>,
    #[serde(default = "three")]
    k: usize,
}

async fn locate(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LocateRequest>,
) -> Result<Json<Located>, ApiError> {
    check_query(&req.query, &state.limits)?;
    let document = match (req.doc_id, req.document) {
        (Some(id), None) => {
            check_doc_id(&id)?;
            DocSource::Id(id)
        }
        (None, Some(text)) => {
            if let Some(why) = gear_data::blank_reason(&text) {
                return Err(ApiError::validation(format!("`document` {why}")));
            }
            // Bounded before any work starts: locating reads the whole text, window by window.
            let n = text.chars().count();
            if n > state.limits.max_document_chars {
                return Err(ApiError::too_large(format!(
                    "`document` is {n} characters; this server locates in at most {} per \
                     request (`gear serve --max-document-chars`): send the passage, or index \
                     the document and pass its `doc_id`",
                    state.limits.max_document_chars
                )));
            }
            DocSource::Text(text)
        }
        _ => {
            return Err(ApiError::validation(
                "pass exactly one of `doc_id` and `document`",
            ))
        }
    };
    let task = Task::Locate {
        query: req.query,
        document,
        k: check_range("k", req.k, 1, 100)?,
    };
    match submit(&state, task).await? {
        Reply::Located(answer) => Ok(Json(answer)),
        other => Err(ApiError::unexpected("/locate", &other)),
    }
}

/// `POST /generate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateRequest {
    query: String,
    doc_id: String,
    #[serde(default)]
    max_tokens: Option<usize>,
}

async fn generate(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> Result<Json<GeneratedAnswer>, ApiError> {
    let limits = state.limits;
    check_query(&req.query, &limits)?;
    check_doc_id(&req.doc_id)?;
    let task = Task::Generate {
        max_tokens: check_range(
            "max_tokens",
            req.max_tokens.unwrap_or(32),
            1,
            limits.max_new_tokens,
        )?,
        query: req.query,
        doc_id: req.doc_id,
    };
    match submit(&state, task).await? {
        Reply::Generated(answer) => Ok(Json(answer)),
        other => Err(ApiError::unexpected("/generate", &other)),
    }
}

/// `POST /explain`: the `k` most attended tokens and the best `sentences`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainRequest {
    query: String,
    doc_id: String,
    #[serde(default = "ten")]
    k: usize,
    #[serde(default = "three")]
    sentences: usize,
}

async fn explain(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ExplainRequest>,
) -> Result<Json<ExplainedAnswer>, ApiError> {
    check_query(&req.query, &state.limits)?;
    check_doc_id(&req.doc_id)?;
    let task = Task::Explain {
        tokens: check_range("k", req.k, 1, 100)?,
        sentences: check_range("sentences", req.sentences, 0, 100)?,
        query: req.query,
        doc_id: req.doc_id,
    };
    match submit(&state, task).await? {
        Reply::Explained(answer) => Ok(Json(answer)),
        other => Err(ApiError::unexpected("/explain", &other)),
    }
}

async fn health(State(state): State<AppState>) -> Response {
    let problem = state.index_problem.lock().ok().and_then(|p| p.clone());
    if let Some(problem) = problem {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "Unhealthy",
            message: format!("the index is not being served: {problem}"),
        }
        .into_response();
    }
    if state.alive.load(Ordering::Relaxed) {
        Json(json!({"status": "ok"})).into_response()
    } else {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "Unhealthy",
            message: "the model thread has stopped".into(),
        }
        .into_response()
    }
}

async fn info(State(state): State<AppState>) -> Json<Value> {
    Json((*state.info).clone())
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
