//! The APIs of other servers that our users' clients already speak: TEI's `POST /rerank` and
//! OpenAI's `POST /v1/embeddings`. Both run on the same model thread as every other route.
//!
//! - `/rerank` takes TEI's request (`query`, `texts`, `truncate`, `truncation_direction`,
//!   `raw_scores`, `return_text`) and answers TEI's list of `{index, score, text?}`, best first,
//!   with TEI's errors. The score is GeAR's bi-encoder cosine of the query (`E_q`) and the text
//!   (`E_d`): the score global retrieval ranks by, comparable across texts (the
//!   cross-attention's mass is normalised within one text, so it cannot rank texts). `raw_scores`
//!   gives the cosine itself, otherwise `(cosine + 1) / 2`, in [0, 1] as TEI's scores are (a
//!   monotone map, not a probability). Beyond TEI, `"sentences": K` adds each text's K best
//!   sentences by cross-attention, with character spans — what a reranker cannot say.
//! - `/v1/embeddings` takes OpenAI's request (`input` a string or a list of strings, `model`,
//!   `encoding_format` `float` or `base64`, `dimensions` only equal to the model's width, `user`)
//!   and answers OpenAI's list with `usage`; errors have OpenAI's shape
//!   (`{"error": {"message", "type", "param", "code"}}`, 400 for a bad request). One model is
//!   served: `model` is echoed back, not checked (as TEI's OpenAI route does). Beyond OpenAI,
//!   `encoder` (`document`, the default, or `query`) and `truncate` (as `/embed`'s; by default an
//!   input longer than the encoder reads is refused, as OpenAI refuses one past its context).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{submit, ApiJson, AppState};
use crate::checks::{check_direction, check_query, check_range, check_texts};
use crate::error::ApiError;
use crate::worker::{Encoder, Reply, Scored, Task};

/// `POST /rerank`, TEI's request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RerankRequest {
    query: String,
    texts: Vec<String>,
    /// TEI's default `false`: a text longer than the document encoder reads is refused.
    #[serde(default)]
    truncate: Option<bool>,
    /// `Right` (or `right`) is what we do; `Left` is refused.
    #[serde(default)]
    truncation_direction: Option<String>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
    /// Beyond TEI: each text's best sentences by cross-attention (0: none).
    #[serde(default)]
    sentences: usize,
}

/// Most sentences `/rerank` returns per text.
const MAX_SENTENCES: usize = 50;

pub(crate) async fn rerank(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RerankRequest>,
) -> Result<Json<Value>, ApiError> {
    let limits = state.limits;
    check_query(&req.query, &limits)?;
    check_texts("texts", &req.texts, &limits)?;
    check_direction(req.truncation_direction.as_deref())?;
    let sentences = check_range("sentences", req.sentences, 0, MAX_SENTENCES)?;
    if sentences > 0 {
        // Locating reads all of each text, window by window: bounded before any work starts.
        if let Some((i, n)) = req
            .texts
            .iter()
            .map(|t| t.chars().count())
            .enumerate()
            .find(|&(_, n)| n > limits.max_document_chars)
        {
            return Err(ApiError::too_large(format!(
                "texts[{i}] is {n} characters; with `sentences` this server locates in at most \
                 {} per text (`gear serve --max-document-chars`)",
                limits.max_document_chars
            )));
        }
    }
    // The texts go to the model thread; a copy stays here only when the answer returns them.
    let count = req.texts.len();
    let returned = req.return_text.then(|| req.texts.clone());
    let task = Task::Rerank {
        query: req.query,
        texts: req.texts,
        truncate: req.truncate.unwrap_or(false),
        sentences,
    };
    let scored = match submit(&state, task).await? {
        Reply::Reranked(scored) => scored,
        other => return Err(ApiError::unexpected("/rerank", &other)),
    };
    let mut ranks: Vec<(f32, Value)> = scored
        .into_iter()
        .map(|r| rank(r, count, returned.as_deref(), req.raw_scores))
        .collect::<Result<_, _>>()?;
    // Best first; equal scores keep the input order.
    ranks.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(Json(ranks.into_iter().map(|(_, r)| r).collect()))
}

/// One of TEI's `Rank`s, with its score: `{index, score, text?, sentences?, truncated?}`.
/// `count` texts were sent; `texts` are they when the answer returns them.
fn rank(
    r: Scored,
    count: usize,
    texts: Option<&[String]>,
    raw: bool,
) -> Result<(f32, Value), ApiError> {
    if r.index >= count {
        return Err(ApiError::backend("a /rerank answer without a valid index"));
    }
    let score = if raw {
        r.cosine
    } else {
        f32::midpoint(r.cosine, 1.0)
    };
    let mut out = json!({ "index": r.index, "score": score });
    if let Some(texts) = texts {
        out["text"] = json!(texts[r.index]);
    }
    if let Some(located) = r.located {
        out["sentences"] = json!(located.sentences);
        if let Some(t) = located.truncated {
            out["truncated"] = json!(t);
        }
    }
    Ok((score, out))
}

/// OpenAI's `input`: text, a list of texts, or token ids (refused: ids of another tokenizer).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum OpenAiInput {
    One(String),
    Many(Vec<String>),
    // Matched only to be refused by name.
    Tokens(#[allow(dead_code)] Vec<i64>),
    ManyTokens(#[allow(dead_code)] Vec<Vec<i64>>),
}

/// `POST /v1/embeddings`, OpenAI's request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenAiEmbeddingRequest {
    input: OpenAiInput,
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
    /// OpenAI's end-user id, for abuse monitoring; accepted so clients that send it work, and
    /// neither stored nor logged here.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
    /// Beyond OpenAI: which encoder (`document`, the default, or `query`).
    #[serde(default)]
    encoder: Encoder,
    /// Beyond OpenAI: cut inputs longer than the encoder reads instead of refusing them.
    #[serde(default)]
    truncate: bool,
}

/// An error in OpenAI's shape; validation errors are 400, as OpenAI answers them.
pub(crate) struct OpenAiError {
    error: ApiError,
    param: Option<&'static str>,
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self { error, param: None }
    }
}

fn invalid(param: &'static str, message: impl Into<String>) -> OpenAiError {
    OpenAiError {
        error: ApiError::validation(message),
        param: Some(param),
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = match self.error.status {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        let kind = match status.as_u16() {
            400..=499 => "invalid_request_error",
            504 => "timeout",
            _ => "server_error",
        };
        let body = json!({"error": {
            "message": self.error.message,
            "type": kind,
            "param": self.param,
            "code": null,
        }});
        (status, Json(body)).into_response()
    }
}

pub(crate) async fn openai_embeddings(
    State(state): State<AppState>,
    req: Result<ApiJson<OpenAiEmbeddingRequest>, ApiError>,
) -> Result<Json<Value>, OpenAiError> {
    let ApiJson(req) = req?;
    let texts =
        match req.input {
            OpenAiInput::One(t) => vec![t],
            OpenAiInput::Many(ts) => ts,
            OpenAiInput::Tokens(_) | OpenAiInput::ManyTokens(_) => return Err(invalid(
                "input",
                "token-id inputs are not supported: their ids belong to another tokenizer; send \
                 the text",
            )),
        };
    check_texts("input", &texts, &state.limits).map_err(|e| invalid("input", e.message))?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(
                "encoding_format",
                format!("`encoding_format` `{other}`: use `float` or `base64`"),
            ))
        }
    };
    let width = state.info["dimensions"].as_u64().unwrap_or(0);
    if let Some(d) = req.dimensions.filter(|&d| d != width) {
        return Err(invalid(
            "dimensions",
            format!("`dimensions` {d}: this model's embeddings have {width} dimensions, and GeAR cannot shorten them"),
        ));
    }
    let task = Task::Embed {
        texts,
        encoder: req.encoder,
        truncate: req.truncate,
    };
    let reply = submit(&state, task).await.map_err(|e| {
        let message = e.message.replace("inputs[", "input[");
        match e.status {
            // An input the model cannot read, or one past what the encoder reads: OpenAI's 400
            // for an input past the context.
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => {
                invalid("input", message)
            }
            _ => OpenAiError::from(ApiError { message, ..e }),
        }
    })?;
    let (vectors, tokens) = match reply {
        Reply::Embedded { vectors, tokens } => (vectors, tokens.iter().sum::<usize>()),
        other => return Err(ApiError::unexpected("/v1/embeddings", &other).into()),
    };
    let data = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                json!(encode_base64(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect::<Vec<_>>();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// OpenAI's `base64` format: the float32 values, little-endian, base64-encoded.
fn encode_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
