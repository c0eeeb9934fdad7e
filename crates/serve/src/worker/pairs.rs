//! Jobs over one (query, document) pair — `/locate`, `/generate`, `/explain` and the located
//! sentences of `/search` — and the JSON they answer with.

use std::time::Instant;

use gear_data::Document;
use gear_infer::{explain_within, Explanation};
use gear_model::{GenerationOptions, LocateOptions};
use serde_json::{json, Value};

use super::{Answer, DocSource, Encoder, Task, Worker};
use crate::error::ApiError;

impl Worker<'_> {
    pub(super) fn single(&self, task: Task, deadline: Instant) -> Answer {
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
                let e = self.explain(&query, &doc, &LocateOptions::default(), None, deadline)?;
                let mut answer = json!({ "query": query, "sentences": sentences(&e, k) });
                add_truncation(&mut answer, &e);
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
                let e = self.explain(
                    &query,
                    &doc,
                    &LocateOptions::default(),
                    Some(&generation),
                    deadline,
                )?;
                let mut answer = json!({
                    "query": query,
                    "doc_id": doc_id,
                    "generated": e.generated.clone().unwrap_or_default(),
                });
                // Where the answer was read from (span decoding) and the sentence local
                // retrieval ranks first, both in character offsets as /search gives them.
                if let Some(span) = e.generated_chars() {
                    answer["span"] = json!(span);
                }
                if let Some(top) = e.located_sentences(1).pop() {
                    answer["sentence"] = json!(top);
                }
                add_truncation(&mut answer, &e);
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
                let e = self.explain(&query, &doc, &options, None, deadline)?;
                let mut answer = json!({
                    "query": query,
                    "doc_id": doc_id,
                    "sentences": sentences(&e, k),
                    "tokens": e.located_tokens(),
                });
                add_truncation(&mut answer, &e);
                Ok(answer)
            }
            Task::Rerank {
                query,
                texts,
                truncate,
                sentences: k,
            } => self.rerank(&query, &texts, truncate, k, deadline),
            Task::Embed { .. } | Task::Search { .. } => Err(ApiError::backend(
                "a batched task reached the single-pair path",
            )),
        }
    }

    /// `/rerank`: each text's cosine to the query under GeAR's bi-encoder (`E_q` against `E_d`,
    /// the score global retrieval ranks by), in input order, with its `k` best sentences by
    /// cross-attention when `k` > 0.
    fn rerank(
        &self,
        query: &str,
        texts: &[String],
        truncate: bool,
        k: usize,
        deadline: Instant,
    ) -> Answer {
        self.check_inputs(&[query.to_owned()], Encoder::Query, truncate)
            .map_err(|e| ApiError {
                message: e.message.replacen("inputs[0]", "`query`", 1),
                ..e
            })?;
        self.check_inputs(texts, Encoder::Document, truncate)
            .map_err(|e| ApiError {
                message: e.message.replacen("inputs[", "texts[", 1),
                ..e
            })?;
        let q = self.embed(&[query], Encoder::Query)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let d = self.embed(&refs, Encoder::Document)?;
        let mut out = Vec::with_capacity(texts.len());
        for (i, (text, vector)) in texts.iter().zip(&d).enumerate() {
            let score: f32 = q[0].iter().zip(vector).map(|(a, b)| a * b).sum();
            let mut r = json!({ "index": i, "cosine": score });
            if k > 0 {
                let doc = Document {
                    id: String::new(),
                    title: String::new(),
                    text: text.clone(),
                };
                let e = self.explain(query, &doc, &LocateOptions::default(), None, deadline)?;
                r["sentences"] = sentences(&e, k);
                add_truncation(&mut r, &e);
            }
            out.push(r);
        }
        Ok(Value::Array(out))
    }

    fn document(&self, id: &str) -> Result<Document, ApiError> {
        self.index.document(id).map_err(|e| match e {
            gear_infer::Error::UnknownDocument { .. } => {
                ApiError::not_found(format!("no document `{id}` in the index"))
            }
            other => ApiError::backend(other),
        })
    }

    pub(super) fn explain(
        &self,
        query: &str,
        doc: &Document,
        locate: &LocateOptions,
        generation: Option<&GenerationOptions>,
        deadline: Instant,
    ) -> Result<Explanation, ApiError> {
        explain_within(&self.model, query, doc, locate, generation, Some(deadline)).map_err(|e| {
            match e {
                gear_infer::Error::Deadline { done, total } => ApiError::timeout(format!(
                    "the request's time limit ended after {done} of {total} passes over the \
                     document; the work stopped there"
                )),
                other => ApiError::from_infer(other),
            }
        })
    }
}

/// Every answer read from an [`Explanation`] says how a document longer than the model reads
/// at once was read (windows, sentences cut or out of reach), under `truncated`.
pub(super) fn add_truncation(answer: &mut Value, e: &Explanation) {
    if let Some(t) = e.truncated {
        answer["truncated"] = json!(t);
    }
}

/// The `k` best sentences with character offsets.
pub(super) fn sentences(e: &Explanation, k: usize) -> Value {
    json!(e.located_sentences(k))
}
