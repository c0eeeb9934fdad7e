//! Jobs over (query, document) pairs — `/locate`, `/generate`, `/explain` and `/rerank` — each
//! through the [`gear_infer::Retriever`], answered as typed data.

use std::time::Instant;

use gear_data::Document;
use gear_model::GenerationOptions;

use super::{Answer, DocSource, Encoder, Failure, Reply, Scored, Task, Worker};

impl Worker<'_> {
    pub(super) fn single(&self, task: Task, deadline: Instant) -> Answer {
        let r = &self.retriever;
        match task {
            Task::Locate { query, document, k } => {
                let doc = match document {
                    DocSource::Id(id) => self.document(&id)?,
                    DocSource::Text(text) => text_document(text),
                };
                let located = r
                    .locate(&[(&query, &doc)], k, Some(deadline))
                    .map_err(Failure::from_infer)?;
                one(located).map(Reply::Located)
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
                r.generate(&query, &doc, &generation, Some(deadline))
                    .map(Reply::Generated)
                    .map_err(Failure::from_infer)
            }
            Task::Explain {
                query,
                doc_id,
                tokens,
                sentences,
            } => {
                let doc = self.document(&doc_id)?;
                r.explain_answer(&query, &doc, sentences, tokens, Some(deadline))
                    .map(Reply::Explained)
                    .map_err(Failure::from_infer)
            }
            Task::Rerank {
                query,
                texts,
                truncate,
                sentences,
            } => self.rerank(&query, texts, truncate, sentences, deadline),
            Task::Embed { .. } | Task::Search { .. } => Err(Failure::Model(
                "a batched task reached the single-pair path".into(),
            )),
        }
    }

    /// `/rerank`: each text's cosine to the query under GeAR's bi-encoder (`E_q` against `E_d`,
    /// the score global retrieval ranks by), in input order, with its `k` best sentences by
    /// cross-attention when `k` > 0 (all texts located in grouped passes).
    fn rerank(
        &self,
        query: &str,
        texts: Vec<String>,
        truncate: bool,
        k: usize,
        deadline: Instant,
    ) -> Answer {
        self.check_inputs(&[query.to_owned()], Encoder::Query, truncate)
            .map_err(|e| e.map_message(|m| m.replacen("inputs[0]", "`query`", 1)))?;
        self.check_inputs(&texts, Encoder::Document, truncate)
            .map_err(|e| e.map_message(|m| m.replacen("inputs[", "texts[", 1)))?;
        let q = self.embed(&[query], Encoder::Query)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let d = self.embed(&refs, Encoder::Document)?;
        let cosines = d
            .iter()
            .map(|v| q[0].iter().zip(v).map(|(a, b)| a * b).sum::<f32>());
        let mut located: Vec<Option<gear_infer::Located>> = if k > 0 {
            let docs: Vec<Document> = texts.into_iter().map(text_document).collect();
            let pairs: Vec<(&str, &Document)> = docs.iter().map(|d| (query, d)).collect();
            self.retriever
                .locate(&pairs, k, Some(deadline))
                .map_err(Failure::from_infer)?
                .into_iter()
                .map(Some)
                .collect()
        } else {
            Vec::new()
        };
        Ok(Reply::Reranked(
            cosines
                .enumerate()
                .map(|(index, cosine)| Scored {
                    index,
                    cosine,
                    located: located.get_mut(index).and_then(Option::take),
                })
                .collect(),
        ))
    }

    fn document(&self, id: &str) -> Result<Document, Failure> {
        self.retriever.document(id).map_err(Failure::from_infer)
    }
}

/// A text sent with the request, as a document without id or title.
fn text_document(text: String) -> Document {
    Document {
        id: String::new(),
        title: String::new(),
        text,
    }
}

/// The one answer of a one-pair request.
fn one(mut located: Vec<gear_infer::Located>) -> Result<gear_infer::Located, Failure> {
    located
        .pop()
        .ok_or_else(|| Failure::Model("locating one pair gave no answer".into()))
}
