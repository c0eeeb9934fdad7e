//! What a trained [`GearModel`] is used for beyond embedding: local retrieval (units of a document
//! ranked by the fusion encoder's cross-attention from the query, method §3.3) for one pair, a
//! batch of pairs, many queries against one document or against a few shared documents; and
//! generation from fusion(q, d).

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

/// One (query, document, units) input of [`GearModel::locate_batch`].
#[derive(Debug, Clone, Copy)]
pub struct LocateInput<'a> {
    /// The query.
    pub query: &'a str,
    /// The document.
    pub document: &'a str,
    /// Its units as byte spans.
    pub units: &'a [Span],
}

impl GearModel {
    /// Local retrieval for one pair: the document's units ranked by cross-attention.
    pub fn locate(
        &self,
        query: &str,
        document: &str,
        units: &[Span],
        options: &LocateOptions,
    ) -> Result<LocalRanking> {
        let mut out = self.locate_batch(
            &[LocateInput {
                query,
                document,
                units,
            }],
            options,
        )?;
        out.pop()
            .ok_or_else(|| Error::Input("empty locate batch".into()))
    }

    /// Local retrieval for a batch of pairs, in one padded forward (no decoder).
    pub fn locate_batch(
        &self,
        inputs: &[LocateInput<'_>],
        options: &LocateOptions,
    ) -> Result<Vec<LocalRanking>> {
        let _span = tracing::debug_span!("gear.locate", pairs = inputs.len()).entered();
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let layer = self.checked_local_layer(options)?;
        let queries: Vec<&str> = inputs.iter().map(|i| i.query).collect();
        let documents: Vec<&str> = inputs.iter().map(|i| i.document).collect();
        let q = self.encode_query_texts(&queries)?;
        let d = self.encode_document_texts(&documents)?;
        let probs = self.inference(|| -> Result<Tensor> {
            let states = self.document_states_t(&d.ids, &d.mask, false)?;
            self.local_probs(&q, &states, &d.mask, layer)
        })?;
        let units: Vec<&[Span]> = inputs.iter().map(|i| i.units).collect();
        let rows: Vec<usize> = (0..inputs.len()).collect();
        self.rankings(&probs, &q, &d, &rows, &units, options)
    }

    /// Local retrieval of several queries against one document: the document's token states
    /// are computed once and shared by one fusion forward over all the queries (what a search
    /// does when several questions hit the same passage). Rankings come back in query order.
    pub fn locate_many(
        &self,
        queries: &[&str],
        document: &str,
        units: &[Span],
        options: &LocateOptions,
    ) -> Result<Vec<LocalRanking>> {
        let _span =
            tracing::debug_span!("gear.locate", queries = queries.len(), documents = 1).entered();
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let layer = self.checked_local_layer(options)?;
        let n = queries.len() as i64;
        let q = self.encode_query_texts(queries)?;
        let d = self.encode_document_texts(&[document])?;
        let probs = self.inference(|| -> Result<Tensor> {
            let states = self.document_states_t(&d.ids, &d.mask, false)?;
            let size = states.size();
            let states = states.expand([n, size[1], size[2]], false);
            let mask = d.mask.expand([n, size[1]], false);
            self.local_probs(&q, &states, &mask, layer)
        })?;
        let units: Vec<&[Span]> = vec![units; queries.len()];
        let rows = vec![0; queries.len()];
        self.rankings(&probs, &q, &d, &rows, &units, options)
    }

    /// Local retrieval of many queries against a few documents: the documents are encoded once,
    /// in one padded batch, and every query attends to its own document's states (row
    /// `document_of[i]` of `documents`) in one fusion forward — an evaluation's or a search's
    /// many (query, hit) pairs at the batch sizes the CPU and GPU kernels like. `units[r]` are
    /// document `r`'s units. Rankings come back in query order and equal
    /// [`GearModel::locate_many`]'s (padding leaves real token states unchanged).
    pub fn locate_grouped(
        &self,
        queries: &[&str],
        document_of: &[usize],
        documents: &[&str],
        units: &[&[Span]],
        options: &LocateOptions,
    ) -> Result<Vec<LocalRanking>> {
        let _span = tracing::debug_span!(
            "gear.locate",
            queries = queries.len(),
            documents = documents.len()
        )
        .entered();
        if queries.len() != document_of.len() || documents.len() != units.len() {
            return Err(Error::Input(format!(
                "{} queries with {} document rows, {} documents with {} unit lists",
                queries.len(),
                document_of.len(),
                documents.len(),
                units.len()
            )));
        }
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
        let d = self.encode_document_texts(documents)?;
        let rows: Vec<i64> = document_of.iter().map(|&r| r as i64).collect();
        let probs = self.inference(|| -> Result<Tensor> {
            let index = Tensor::from_slice(&rows).to_device(self.device());
            let states = self
                .document_states_t(&d.ids, &d.mask, false)?
                .index_select(0, &index);
            let mask = d.mask.index_select(0, &index);
            self.local_probs(&q, &states, &mask, layer)
        })?;
        let per_query: Vec<&[Span]> = document_of.iter().map(|&r| units[r]).collect();
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
