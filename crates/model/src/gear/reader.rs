//! What GeAR's decoder reads and how it is scored and run: its memory (the fusion states, and
//! with [`DecoderMemory::FusionAndDocument`] the document's token states after them), the copy
//! head's passage and prior, the teacher-forced log-probabilities training needs, and
//! generation — free (any vocabulary token) or as a span of the document.

use std::ops::Range;

use gear_data::Span;
use tch::{Device, Kind, Tensor};

use super::{Encoded, GearModel};
use crate::bert::attention::additive_mask;
use crate::bert::encoder::{Context, CrossProbs, EncoderOutput, FusionOptions};
use crate::gear::config::{CopyMode, DecoderMemory, Decoding};
use crate::generate::{generate, GenerationOptions, Search};
use crate::pointer::{attention_mass, local_prior, mixture_log_probs, Passage};
use crate::span::{decode_spans, SpanReader};
use crate::{Error, Result};

/// One batch of (query, document) pairs as the decoder reads them.
#[derive(Debug, Clone, Copy)]
pub struct ReaderInputs<'a> {
    /// The fusion encoder's output over the queries (with the local layer's cross-attention
    /// probabilities when [`GearModel::fusion_options_for_reading`] asked for them).
    pub fused: &'a EncoderOutput,
    /// Query mask `[batch, q_len]`.
    pub query_mask: &'a Tensor,
    /// Query tokens the prior averages over `[batch, q_len]` (real, non-special).
    pub query_keep: &'a Tensor,
    /// Document ids `[batch, d_len]`.
    pub document_ids: &'a Tensor,
    /// Document mask `[batch, d_len]`.
    pub document_mask: &'a Tensor,
    /// Document tokens that may be copied `[batch, d_len]` (real, non-special).
    pub document_copyable: &'a Tensor,
    /// The document encoder's token states `[batch, d_len, width]`.
    pub document_states: &'a Tensor,
    /// Its token states after layer `L − N` when the reader layers start there
    /// ([`crate::ReaderInput::Below`]; see [`GearModel::document_reading_states_t`]), else
    /// `None`.
    pub document_below: Option<&'a Tensor>,
    /// Where targets are copied from when scoring them (training), `[batch, d_len]` 0/1: see
    /// [`crate::mixture_log_probs`]; `None`: anywhere in the document.
    pub copy_region: Option<&'a Tensor>,
}

/// The decoder's memory and the copy head's passage and prior for one batch.
struct Reading {
    states: Tensor,
    mask: Tensor,
    /// The passage's token states the copy head keys on: the document encoder's, or the reader
    /// layers' output when the model has them.
    passage: Tensor,
    prior: Option<Tensor>,
}

/// A generated text and, for span decoding, where it sits in its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The text: the document's own bytes for a span, the decoded tokens otherwise.
    pub text: String,
    /// Byte span of `text` in the document (span decoding only; `None` for free decoding or a
    /// document with no word to start from).
    pub span: Option<Span>,
}

/// 1 where a token is real and not special, `[batch, len]` int64 on `device`.
pub fn keep_mask(batch: &gear_data::Batch, device: Device) -> Tensor {
    let keep: Vec<i64> = batch
        .special_tokens_mask()
        .iter()
        .zip(batch.attention_mask())
        .map(|(&s, &m)| i64::from(!s && m == 1))
        .collect();
    Tensor::from_slice(&keep)
        .view([batch.len() as i64, batch.seq_len() as i64])
        .to_device(device)
}

impl GearModel {
    /// Makes `decoding` the model's default (a saved model keeps it). Free decoding is refused
    /// for a model with a copy head: its vocabulary alone was not trained to produce answers;
    /// it turns [`GearModel::set_skip_question_echoes`] off (it has no spans to pass over).
    pub fn set_decoding(&mut self, decoding: Decoding) -> Result<()> {
        if decoding == Decoding::Free && self.pointer.is_some() {
            return Err(Error::Input(
                "this model copies from the document: it generates with span decoding".into(),
            ));
        }
        self.config.decoder.decoding = decoding;
        if decoding == Decoding::Free {
            self.config.decoder.skip_question_echoes = false;
        }
        Ok(())
    }

    /// Whether span decoding passes over spans made only of the question's tokens
    /// (`decoder.skip_question_echoes`; a saved model keeps it). Refused under free decoding.
    pub fn set_skip_question_echoes(&mut self, skip: bool) -> Result<()> {
        if skip && self.config.decoder.decoding == Decoding::Free {
            return Err(Error::Input(
                "skipping spans that echo the question needs span decoding (this model decodes freely)"
                    .into(),
            ));
        }
        self.config.decoder.skip_question_echoes = skip;
        Ok(())
    }

    /// Whether the copy head reads the fusion encoder's local-layer cross-attention.
    pub fn copies_with_local_attention(&self) -> bool {
        self.config.decoder.copy == CopyMode::LocalAttention
    }

    /// The fusion options reading needs: every layer, and the local layer's probabilities when
    /// the copy head uses them (or `keep_local` asks for them, for the local-retrieval loss).
    /// With [`crate::ReaderInput::Below`], the states of layer `L − N` are kept too.
    pub fn fusion_options_for_reading(&self, keep_local: bool) -> FusionOptions {
        FusionOptions {
            layers: None,
            cross_probs: if keep_local || self.copies_with_local_attention() {
                CrossProbs::Layer(self.config.local_layer())
            } else {
                CrossProbs::None
            },
            keep_hidden: self.config.reader_below_layer(),
        }
    }

    /// The document encoder's token states `[batch, d_len, width]`, and the states after layer
    /// `L − N` when the reader layers start there ([`crate::ReaderInput::Below`]).
    pub fn document_reading_states_t(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let options = FusionOptions {
            keep_hidden: self.config.reader_below_layer(),
            ..FusionOptions::default()
        };
        let out = self
            .document_bert()
            .forward_fused_t(ids, mask, None, options, train)?;
        Ok((out.hidden, out.kept))
    }

    /// The passage's token states after the reader layers: each layer's self-attention runs
    /// over the question's fusion states followed by the passage's, so every passage token reads
    /// the question; the passage part is returned, `[batch, d_len, width]`. The first layer
    /// reads the encoders' outputs, or their states after layer `L − N`
    /// ([`crate::ReaderInput::Below`]). Without reader layers, the document encoder's states.
    pub fn read_passage_t(&self, x: &ReaderInputs<'_>, train: bool) -> Result<Tensor> {
        let kind = x.fused.hidden.kind();
        if self.reader.is_empty() {
            return Ok(x.document_states.to_kind(kind));
        }
        let (question, passage) = match self.config.reader_below_layer() {
            None => (&x.fused.hidden, x.document_states),
            Some(layer) => {
                let missing = |what: &str| {
                    Error::Input(format!(
                        "the reader layers read layer {layer}'s {what} states, which were not kept"
                    ))
                };
                (
                    x.fused.kept.as_ref().ok_or_else(|| missing("fusion"))?,
                    x.document_below.ok_or_else(|| missing("document"))?,
                )
            }
        };
        let passage = passage.to_kind(kind);
        let q_len = question.size()[1];
        let d_len = passage.size()[1];
        let mut hidden = Tensor::cat(&[question, &passage], 1);
        let mask = additive_mask(&Tensor::cat(&[x.query_mask, x.document_mask], 1), kind);
        for layer in &self.reader {
            hidden = layer.forward_t(&hidden, &mask, None, train).hidden;
        }
        Ok(hidden.narrow(1, q_len, d_len))
    }

    fn reading(&self, x: &ReaderInputs<'_>, train: bool) -> Result<Reading> {
        let passage = self.read_passage_t(x, train)?;
        let (states, mask) = match self.config.decoder.memory {
            DecoderMemory::Fusion => (x.fused.hidden.shallow_clone(), x.query_mask.shallow_clone()),
            DecoderMemory::FusionAndDocument => (
                Tensor::cat(&[&x.fused.hidden, &passage], 1),
                Tensor::cat(&[x.query_mask, x.document_mask], 1),
            ),
        };
        let prior = if self.copies_with_local_attention() {
            let layer = self.config.local_layer();
            let probs = x.fused.cross_attention(layer).ok_or_else(|| {
                Error::Input(format!(
                    "the copy head reads layer {layer}'s cross-attention, which the fusion forward did not keep"
                ))
            })?;
            Some(local_prior(probs, x.query_keep)?)
        } else {
            None
        };
        Ok(Reading {
            states,
            mask,
            passage,
            prior,
        })
    }

    /// Teacher-forced `log p(target_ids[:, i+1] | target_ids[..=i], q, d)`, `[batch, t − 1]`:
    /// the LM head's, or the copy head's mixture with it.
    pub fn target_log_probs_t(
        &self,
        target_ids: &Tensor,
        target_mask: &Tensor,
        x: &ReaderInputs<'_>,
        train: bool,
    ) -> Result<Tensor> {
        let r = self.reading(x, train)?;
        let memory = Context {
            states: &r.states,
            mask: &r.mask,
        };
        let hidden = self
            .decoder
            .hidden_t(target_ids, target_mask, memory, train)?;
        let t = target_ids.size()[1];
        let hidden = hidden.narrow(1, 0, t - 1);
        let labels = target_ids.narrow(1, 1, t - 1);
        let vocab = self
            .decoder
            .logits(&hidden)
            .to_kind(Kind::Float)
            .log_softmax(-1, Kind::Float);
        Ok(match &self.pointer {
            None => vocab.gather(2, &labels.unsqueeze(2), false).squeeze_dim(2),
            Some(pointer) => {
                let inputs = target_ids.narrow(1, 0, t - 1);
                let copy = pointer.forward(&hidden, &inputs, &passage_of(x, &r));
                mixture_log_probs(&vocab, &copy, x.document_ids, &labels, x.copy_region)
            }
        })
    }

    /// 1 where a document token begins a word (is not a `##` continuation piece), `[batch,
    /// d_len]`.
    fn word_starts(&self, ids: &Tensor) -> Tensor {
        self.continuation
            .to_device(ids.device())
            .index_select(0, &ids.flatten(0, -1))
            .view_as(ids)
            .logical_not()
    }

    /// Generates text for each (query, document) pair from fusion(q, d).
    pub fn generate<S: AsRef<str>>(
        &self,
        queries: &[S],
        documents: &[S],
        options: &GenerationOptions,
    ) -> Result<Vec<String>> {
        Ok(self
            .generate_located(queries, documents, options)?
            .into_iter()
            .map(|g| g.text)
            .collect())
    }

    /// Generates for each (query, document) pair, with the document span the text was read
    /// from when decoding spans ([`GenerationOptions::decoding`], default the model's).
    pub fn generate_located<S: AsRef<str>>(
        &self,
        queries: &[S],
        documents: &[S],
        options: &GenerationOptions,
    ) -> Result<Vec<Generated>> {
        let _span = tracing::debug_span!("gear.generate", pairs = queries.len()).entered();
        if queries.len() != documents.len() {
            return Err(Error::Input(format!(
                "{} queries but {} documents",
                queries.len(),
                documents.len()
            )));
        }
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let q = self.encode_query_texts(queries)?;
        let d = self.encode_document_texts(documents)?;
        let decoding = options.decoding.unwrap_or(self.config.decoder.decoding);
        self.inference(|| match decoding {
            Decoding::Free => self.generate_free(&q, &d, options),
            Decoding::Span => self.generate_spans(&q, &d, documents, options, false),
            Decoding::LocatedSpan => self.generate_spans(&q, &d, documents, options, true),
        })
    }

    fn read_inputs<T>(
        &self,
        q: &Encoded,
        d: &Encoded,
        keep_local: bool,
        then: impl FnOnce(&ReaderInputs<'_>, Reading) -> Result<T>,
    ) -> Result<T> {
        let device = self.device();
        let (states, below) = self.document_reading_states_t(&d.ids, &d.mask, false)?;
        let fused = self.fuse_t(
            &q.ids,
            &q.mask,
            Context {
                states: &states,
                mask: &d.mask,
            },
            self.fusion_options_for_reading(keep_local),
            false,
        )?;
        let query_keep = keep_mask(&q.batch, device);
        let copyable = keep_mask(&d.batch, device);
        let x = ReaderInputs {
            fused: &fused,
            query_mask: &q.mask,
            query_keep: &query_keep,
            document_ids: &d.ids,
            document_mask: &d.mask,
            document_copyable: &copyable,
            document_states: &states,
            document_below: below.as_ref(),
            copy_region: None,
        };
        let r = self.reading(&x, false)?;
        then(&x, r)
    }

    fn generate_free(
        &self,
        q: &Encoded,
        d: &Encoded,
        options: &GenerationOptions,
    ) -> Result<Vec<Generated>> {
        if self.pointer.is_some() {
            return Err(Error::Input(
                "this model copies from the document: generate with span decoding".into(),
            ));
        }
        let sequences = self.read_inputs(q, d, false, |_, r| {
            generate(
                &self.decoder,
                Context {
                    states: &r.states,
                    mask: &r.mask,
                },
                self.tokens,
                options,
            )
        })?;
        sequences
            .iter()
            .map(|ids| {
                let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
                Ok(Generated {
                    text: self.texts.target().decode(&ids)?,
                    span: None,
                })
            })
            .collect()
    }

    fn generate_spans<S: AsRef<str>>(
        &self,
        q: &Encoded,
        d: &Encoded,
        documents: &[S],
        options: &GenerationOptions,
        in_located_sentence: bool,
    ) -> Result<Vec<Generated>> {
        let starts = match options.search {
            Search::Greedy => 1,
            Search::Beam { width, .. } => width,
        };
        let skip_echoes = self.config.decoder.skip_question_echoes;
        let ranges = self.read_inputs(q, d, in_located_sentence, |x, r| {
            let passage = passage_of(x, &r);
            let question = skip_echoes.then(|| q.ids.masked_fill(&x.query_keep.eq(0), -1));
            let mut may_start = self.word_starts(x.document_ids);
            if in_located_sentence {
                // A row whose located sentence offers no start (none can happen for a sentence
                // with tokens; kept as a guard) starts anywhere.
                let located =
                    may_start.logical_and(&self.located_sentences(x, &d.batch, documents)?);
                let usable = located.logical_and(x.document_copyable).any_dim(1, true);
                may_start = located.where_self(&usable, &may_start);
            }
            decode_spans(
                SpanReader {
                    decoder: &self.decoder,
                    pointer: self.pointer.as_ref(),
                    tokens: self.tokens,
                },
                Context {
                    states: &r.states,
                    mask: &r.mask,
                },
                passage,
                &may_start,
                options.max_len,
                starts,
                question.as_ref(),
            )
        })?;
        Ok(ranges
            .into_iter()
            .zip(documents)
            .enumerate()
            .map(|(row, (range, doc))| located(doc.as_ref(), d.batch.offsets(row), range))
            .collect())
    }
}

impl GearModel {
    /// 1 for the tokens of the sentence local retrieval ranks first in each row's document
    /// (the sentence with the most local-layer attention mass, as [`crate::rank_units`] sums
    /// it), `[batch, d_len]` bool; a row whose sentences all lost their tokens to truncation
    /// keeps every token.
    fn located_sentences<S: AsRef<str>>(
        &self,
        x: &ReaderInputs<'_>,
        documents: &gear_data::Batch,
        texts: &[S],
    ) -> Result<Tensor> {
        let layer = self.config.local_layer();
        let probs = x.fused.cross_attention(layer).ok_or_else(|| {
            Error::Input(format!(
                "located-span decoding reads layer {layer}'s cross-attention, which the fusion forward did not keep"
            ))
        })?;
        let mass = attention_mass(probs, x.query_keep).to_device(Device::Cpu);
        let (rows, len) = (texts.len(), documents.seq_len());
        let weights = Vec::<f32>::try_from(mass.flatten(0, -1))?;
        let special = documents.special_tokens_mask();
        let mut keep = vec![false; rows * len];
        for (row, text) in texts.iter().enumerate() {
            let offsets = documents.offsets(row);
            let special = &special[row * len..(row + 1) * len];
            let units = gear_data::split_sentences(text.as_ref());
            let ranked = crate::rank_units(
                &weights[row * len..(row + 1) * len],
                offsets,
                special,
                &units,
                crate::UnitAggregation::Sum,
            );
            let top = ranked.first().filter(|u| u.tokens > 0).map(|u| u.span);
            for (j, &(start, _)) in offsets.iter().enumerate().take(len) {
                keep[row * len + j] = match top {
                    Some(span) => !special[j] && span.contains(start),
                    None => true,
                };
            }
        }
        Ok(Tensor::from_slice(&keep)
            .view([rows as i64, len as i64])
            .to_device(x.document_ids.device()))
    }
}

/// The copy head's view of a batch.
fn passage_of<'a>(x: &ReaderInputs<'a>, r: &'a Reading) -> Passage<'a> {
    Passage {
        ids: x.document_ids,
        states: &r.passage,
        copyable: x.document_copyable,
        question: (&x.fused.hidden, x.query_mask),
        prior: r.prior.as_ref(),
    }
}

/// The document text under token range `range` (byte offsets `offsets`).
fn located(document: &str, offsets: &[(usize, usize)], range: Option<Range<usize>>) -> Generated {
    let span = range.and_then(|r| {
        let start = offsets.get(r.start)?.0;
        let end = offsets.get(r.end.checked_sub(1)?)?.1;
        let span = Span::new(start, end);
        (!span.is_empty() && span.slice(document).is_some()).then_some(span)
    });
    Generated {
        text: span
            .and_then(|s| s.slice(document))
            .unwrap_or_default()
            .to_owned(),
        span,
    }
}
