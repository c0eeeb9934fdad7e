//! Autoregressive generation from the decoder: greedy and beam search, with or without the KV
//! cache (the uncached path re-runs the whole prefix each step; it exists to check the cache).
//!
//! The decoding loop follows BLIP's generation through Hugging Face's `generate` with
//! [`prepare_inputs_for_generation`](https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/med.py#L932); greedy is [`_sample`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/generation/utils.py#L3123)
//! without sampling, beam search [`_beam_search`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/generation/utils.py#L3578) with its
//! length penalty. Each call runs in a `generate` span (debug level).

use tch::{Device, Kind, Tensor};

use crate::bert::encoder::Context;
use crate::decoder::{Decoder, DecoderCache};
use crate::{Error, Result};

/// How to pick tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Search {
    /// The most likely token at every step.
    Greedy,
    /// Beam search over `width` hypotheses; finished hypotheses are compared by
    /// `log p / length^length_penalty`.
    Beam {
        /// Number of hypotheses kept.
        width: usize,
        /// Length normalisation exponent (1.0 = mean log-probability, 0.0 = none).
        length_penalty: f64,
    },
}

/// Options of [`generate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationOptions {
    /// Most tokens generated per example, end token excluded.
    pub max_len: usize,
    /// Token selection.
    pub search: Search,
    /// Reuse keys/values of earlier positions (O(N) steps) instead of re-running the prefix.
    pub use_cache: bool,
    /// Free or span decoding; `None`: the model's default (`decoder.decoding` in its config).
    /// Span decoding tries `width` start positions under [`Search::Beam`], one under greedy.
    pub decoding: Option<crate::Decoding>,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_len: 32,
            search: Search::Greedy,
            use_cache: true,
            decoding: None,
        }
    }
}

/// Special token ids generation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationTokens {
    /// `[Decode]`, the first decoder input.
    pub start: i64,
    /// The end-of-sequence token (`[SEP]` for BERT vocabularies).
    pub end: i64,
}

/// Generates one token sequence per batch row of `memory` (without the start and end tokens).
pub fn generate(
    decoder: &Decoder,
    memory: Context<'_>,
    tokens: GenerationTokens,
    options: &GenerationOptions,
) -> Result<Vec<Vec<i64>>> {
    let _span = tracing::debug_span!("generate", search = ?options.search).entered();
    tch::no_grad(|| match options.search {
        Search::Greedy => greedy(decoder, memory, tokens, options),
        Search::Beam {
            width,
            length_penalty,
        } => {
            if width == 0 {
                return Err(Error::Input("beam width must be at least 1".into()));
            }
            let batch = memory.states.size()[0];
            (0..batch)
                .map(|b| {
                    let states = memory.states.narrow(0, b, 1);
                    let mask = memory.mask.narrow(0, b, 1);
                    beam(
                        decoder,
                        Context {
                            states: &states,
                            mask: &mask,
                        },
                        tokens,
                        options,
                        width,
                        length_penalty,
                    )
                })
                .collect()
        }
    })
}

/// Next-token log-probabilities `[rows, vocab]` after `prefix [rows, t]`, through the cache or a
/// full re-run.
struct Stepper<'a> {
    decoder: &'a Decoder,
    states: Tensor,
    mask: Tensor,
    cache: Option<DecoderCache>,
    use_cache: bool,
}

impl<'a> Stepper<'a> {
    fn new(decoder: &'a Decoder, memory: Context<'_>, use_cache: bool) -> Result<Self> {
        let cache = if use_cache {
            Some(decoder.start(memory)?)
        } else {
            None
        };
        Ok(Self {
            decoder,
            states: memory.states.shallow_clone(),
            mask: memory.mask.shallow_clone(),
            cache,
            use_cache,
        })
    }

    fn log_probs(&mut self, prefix: &Tensor) -> Result<Tensor> {
        let logits = match (&self.cache, self.use_cache) {
            (Some(cache), true) => {
                let new = if cache.position() == 0 {
                    prefix.shallow_clone()
                } else {
                    prefix.narrow(1, -1, 1)
                };
                let (logits, next) = self.decoder.step(&new, cache)?;
                self.cache = Some(next);
                logits
            }
            _ => {
                let memory = Context {
                    states: &self.states,
                    mask: &self.mask,
                };
                self.decoder
                    .forward_t(prefix, &prefix.ones_like(), memory, false)?
            }
        };
        Ok(logits
            .select(1, -1)
            .to_kind(Kind::Float)
            .log_softmax(-1, Kind::Float))
    }

    /// Keeps rows `index` (beam reordering).
    fn select(&mut self, index: &Tensor) {
        self.states = self.states.index_select(0, index);
        self.mask = self.mask.index_select(0, index);
        if let Some(cache) = &self.cache {
            self.cache = Some(cache.select(index));
        }
    }
}

fn greedy(
    decoder: &Decoder,
    memory: Context<'_>,
    tokens: GenerationTokens,
    options: &GenerationOptions,
) -> Result<Vec<Vec<i64>>> {
    let batch = memory.states.size()[0];
    let device = memory.states.device();
    let mut prefix = Tensor::full([batch, 1], tokens.start, (Kind::Int64, device));
    let mut out: Vec<Vec<i64>> = vec![Vec::new(); batch as usize];
    let mut done = vec![false; batch as usize];
    let mut stepper = Stepper::new(decoder, memory, options.use_cache)?;
    for _ in 0..options.max_len {
        let next = stepper.log_probs(&prefix)?.argmax(-1, false);
        let next_cpu = Vec::<i64>::try_from(next.to_device(Device::Cpu))?;
        for (row, &tok) in next_cpu.iter().enumerate() {
            if done[row] {
                continue;
            }
            if tok == tokens.end {
                done[row] = true;
            } else {
                out[row].push(tok);
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        prefix = Tensor::cat(&[&prefix, &next.unsqueeze(1)], 1);
    }
    Ok(out)
}

fn beam(
    decoder: &Decoder,
    memory: Context<'_>,
    tokens: GenerationTokens,
    options: &GenerationOptions,
    width: usize,
    length_penalty: f64,
) -> Result<Vec<i64>> {
    let device = memory.states.device();
    let w = width as i64;
    let expand = Tensor::zeros([w], (Kind::Int64, device));
    let states = memory.states.index_select(0, &expand);
    let mask = memory.mask.index_select(0, &expand);
    let mut stepper = Stepper::new(
        decoder,
        Context {
            states: &states,
            mask: &mask,
        },
        options.use_cache,
    )?;
    let mut prefix = Tensor::full([w, 1], tokens.start, (Kind::Int64, device));
    // Only the first hypothesis is live at the start; the copies would duplicate it.
    let mut scores: Vec<f64> = (0..width)
        .map(|i| if i == 0 { 0.0 } else { f64::NEG_INFINITY })
        .collect();
    let mut finished: Vec<(f64, Vec<i64>)> = Vec::new();
    let normalise = |score: f64, len: usize| score / (len.max(1) as f64).powf(length_penalty);

    for _ in 0..options.max_len {
        let logp = stepper.log_probs(&prefix)?.to_device(Device::Cpu);
        let vocab = logp.size()[1];
        let total = logp
            + Tensor::from_slice(&scores)
                .to_kind(Kind::Float)
                .unsqueeze(1);
        let (top_scores, top_ids) = total.flatten(0, -1).topk(2 * w, 0, true, true);
        let top_scores = Vec::<f32>::try_from(top_scores)?;
        let top_ids = Vec::<i64>::try_from(top_ids)?;
        let mut keep_rows = Vec::with_capacity(width);
        let mut keep_tokens = Vec::with_capacity(width);
        let mut keep_scores = Vec::with_capacity(width);
        for (&s, &flat) in top_scores.iter().zip(&top_ids) {
            let s = f64::from(s);
            if s == f64::NEG_INFINITY {
                break;
            }
            let (row, tok) = (flat / vocab, flat % vocab);
            if tok == tokens.end {
                let seq = prefix_tokens(&prefix, row)?;
                finished.push((normalise(s, seq.len() + 1), seq));
            } else if keep_rows.len() < width {
                keep_rows.push(row);
                keep_tokens.push(tok);
                keep_scores.push(s);
            }
            if keep_rows.len() == width {
                break;
            }
        }
        // As Hugging Face's `early_stopping=True`: stop once `width` hypotheses have ended.
        if keep_rows.is_empty() {
            scores.fill(f64::NEG_INFINITY);
            break;
        }
        if finished.len() >= width {
            break;
        }
        while keep_rows.len() < width {
            keep_rows.push(keep_rows[0]);
            keep_tokens.push(keep_tokens[0]);
            keep_scores.push(f64::NEG_INFINITY);
        }
        let index = Tensor::from_slice(&keep_rows).to_device(device);
        stepper.select(&index);
        let next = Tensor::from_slice(&keep_tokens)
            .to_device(device)
            .unsqueeze(1);
        prefix = Tensor::cat(&[&prefix.index_select(0, &index), &next], 1);
        scores = keep_scores;
    }
    if finished.len() < width {
        // Out of steps: live hypotheses compete with the ended ones.
        for (row, &s) in scores.iter().enumerate() {
            if s > f64::NEG_INFINITY {
                let seq = prefix_tokens(&prefix, row as i64)?;
                finished.push((normalise(s, seq.len()), seq));
            }
        }
    }
    Ok(finished
        .into_iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, seq)| seq)
        .unwrap_or_default())
}

/// Tokens of hypothesis `row` without the start token.
fn prefix_tokens(prefix: &Tensor, row: i64) -> Result<Vec<i64>> {
    let seq = Vec::<i64>::try_from(prefix.get(row).to_device(Device::Cpu))?;
    Ok(seq[1..].to_vec())
}
