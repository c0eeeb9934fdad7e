//! What a trained [`GearModel`] is used for beyond embedding: local retrieval (units of a document
//! ranked by the fusion encoder's cross-attention from the query, method §3.3) through one entry
//! point, [`GearModel::locate`], for any mix of queries and documents; and generation from
//! fusion(q, d).

use gear_data::Span;
use tch::{Device, Kind, Tensor};

use super::{Encoded, GearModel};
use crate::bert::encoder::{Context, CrossProbs, FusionOptions};
use crate::local::{rank_units, token_weights, top_tokens, LocalRanking, UnitAggregation};
use crate::{Error, Result};

/// Options of [`GearModel::locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocateOptions {
    /// Fusion layer whose cross-attention ranks units (1-based); `None`: the config's.
    pub layer: Option<usize>,
    /// How token weights add up per unit.
    pub aggregation: UnitAggregation,
    /// How many attended tokens to return for highlighting.
    pub top_tokens: usize,
}

/// One document a [`LocateQueries`] reads: its text and its units (byte spans into the text).
#[derive(Debug, Clone, Copy)]
pub struct LocateDocument<'a> {
    /// The document.
    pub text: &'a str,
    /// Its units as byte spans.
    pub units: &'a [Span],
}

/// What [`GearModel::locate`] ranks: queries, the documents they read, and which document each
/// query reads. A document shared by several queries is encoded once.
///
/// ```
/// # use gear_model::LocateQueries;
/// # use gear_data::Span;
/// let units = [Span::new(0, 12), Span::new(13, 30)];
/// let text = "First thing. Then another one.";
/// // One pair.
/// let one = LocateQueries::pair("which thing", text, &units);
/// // Several queries against one document.
/// let many = LocateQueries::against(&["first", "another"], text, &units);
/// // Any mix: documents added once, queries pointing at them.
/// let mut mixed = LocateQueries::default();
/// let d = mixed.document(text, &units);
/// mixed.query("first", d).query("another", d);
/// assert_eq!((one.len(), many.len(), mixed.len()), (1, 2, 2));
/// ```
#[derive(Debug, Clone, Default)]
pub struct LocateQueries<'a> {
    queries: Vec<&'a str>,
    document_of: Vec<usize>,
    documents: Vec<LocateDocument<'a>>,
}

impl<'a> LocateQueries<'a> {
    /// One query against one document.
    pub fn pair(query: &'a str, text: &'a str, units: &'a [Span]) -> Self {
        Self::against(&[query], text, units)
    }

    /// Several queries against one document (its token states computed once).
    pub fn against(queries: &[&'a str], text: &'a str, units: &'a [Span]) -> Self {
        let mut out = Self::default();
        let d = out.document(text, units);
        for q in queries {
            out.query(q, d);
        }
        out
    }

    /// Adds a document; returns its row, for [`LocateQueries::query`].
    pub fn document(&mut self, text: &'a str, units: &'a [Span]) -> usize {
        self.documents.push(LocateDocument { text, units });
        self.documents.len() - 1
    }

    /// Adds a query that reads document row `document` (checked by [`GearModel::locate`]).
    pub fn query(&mut self, query: &'a str, document: usize) -> &mut Self {
        self.queries.push(query);
        self.document_of.push(document);
        self
    }

    /// Adds a query with a document of its own.
    pub fn push_pair(&mut self, query: &'a str, text: &'a str, units: &'a [Span]) -> &mut Self {
        let d = self.document(text, units);
        self.query(query, d)
    }

    /// Queries (rankings [`GearModel::locate`] returns).
    pub fn len(&self) -> usize {
        self.queries.len()
    }

    /// Whether there is no query.
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }
}

impl GearModel {
    /// Local retrieval (method §3.3): each query's document units ranked by the fusion
    /// encoder's cross-attention from the query, in query order. The documents are encoded
    /// once, in one padded batch, and every query attends to its own document's states in one
    /// fusion forward (no decoder) — one pair, many queries against one passage, or a search's
    /// many (query, hit) pairs alike. Padding leaves real token states unchanged, so a ranking
    /// does not depend on what it was batched with.
    pub fn locate(
        &self,
        request: &LocateQueries<'_>,
        options: &LocateOptions,
    ) -> Result<Vec<LocalRanking>> {
        let LocateQueries {
            queries,
            document_of,
            documents,
        } = request;
        let _span = tracing::debug_span!(
            "gear.locate",
            queries = queries.len(),
            documents = documents.len()
        )
        .entered();
        if let Some(&r) = document_of.iter().find(|&&r| r >= documents.len()) {
            return Err(Error::Input(format!(
                "document row {r} of a query is outside the {} documents",
                documents.len()
            )));
        }
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let layer = self.checked_local_layer(options)?;
        let q = self.encode_query_texts(queries)?;
        let texts: Vec<&str> = documents.iter().map(|d| d.text).collect();
        let d = self.encode_document_texts(&texts)?;
        let rows: Vec<i64> = document_of.iter().map(|&r| r as i64).collect();
        let probs = self.inference(|| -> Result<Tensor> {
            let states = self.document_states_t(&d.ids, &d.mask, false)?;
            let (states, mask) = if documents.len() == 1 {
                // One document: a view per query, no copy.
                let size = states.size();
                let n = queries.len() as i64;
                (
                    states.expand([n, size[1], size[2]], false),
                    d.mask.expand([n, size[1]], false),
                )
            } else {
                let index = Tensor::from_slice(&rows).to_device(self.device());
                (
                    states.index_select(0, &index),
                    d.mask.index_select(0, &index),
                )
            };
            self.local_probs(&q, &states, &mask, layer)
        })?;
        let per_query: Vec<&[Span]> = document_of.iter().map(|&r| documents[r].units).collect();
        self.rankings(&probs, &q, &d, document_of, &per_query, options)
    }

    fn checked_local_layer(&self, options: &LocateOptions) -> Result<usize> {
        let layer = options.layer.unwrap_or_else(|| self.config.local_layer());
        let layers = self.config.encoder.num_hidden_layers as usize;
        if layer == 0 || layer > layers {
            return Err(Error::Input(format!(
                "local layer {layer} is outside 1..={layers}"
            )));
        }
        Ok(layer)
    }

    /// Layer `layer`'s cross-attention probabilities `[batch, heads, q_len, d_len]` (CPU,
    /// float32) for encoded queries against document states; the fusion stops at that layer.
    fn local_probs(
        &self,
        q: &Encoded,
        states: &Tensor,
        mask: &Tensor,
        layer: usize,
    ) -> Result<Tensor> {
        let options = FusionOptions {
            layers: Some(layer),
            cross_probs: CrossProbs::Layer(layer),
            keep_hidden: None,
        };
        let out = self.fuse_t(&q.ids, &q.mask, Context { states, mask }, options, false)?;
        out.cross_attention(layer)
            .map(|p| p.to_kind(Kind::Float).to_device(Device::Cpu))
            .ok_or_else(|| Error::Input("cross-attention probabilities missing".into()))
    }

    /// Rankings from probabilities: query `b` against document row `doc_rows[b]` of `d`.
    fn rankings(
        &self,
        probs: &Tensor,
        q: &Encoded,
        d: &Encoded,
        doc_rows: &[usize],
        units: &[&[Span]],
        options: &LocateOptions,
    ) -> Result<Vec<LocalRanking>> {
        let (heads, q_len, d_len) = {
            let s = probs.size();
            (s[1] as usize, s[2] as usize, s[3] as usize)
        };
        let mut results = Vec::with_capacity(doc_rows.len());
        for (b, (&row, units)) in doc_rows.iter().zip(units).enumerate() {
            let p = Vec::<f32>::try_from(probs.get(b as i64).flatten(0, -1))?;
            let q_special = &q.batch.special_tokens_mask()[b * q_len..(b + 1) * q_len];
            let keep: Vec<bool> = q_special.iter().map(|s| !s).collect();
            let weights = token_weights(&p, heads, q_len, d_len, &keep);
            let n = d.batch.token_count(row);
            let offsets = d.batch.offsets(row);
            let special = &d.batch.special_tokens_mask()[row * d_len..row * d_len + n];
            results.push(LocalRanking {
                units: rank_units(&weights[..n], offsets, special, units, options.aggregation),
                top_tokens: top_tokens(&weights[..n], offsets, special, options.top_tokens),
            });
        }
        Ok(results)
    }
}
