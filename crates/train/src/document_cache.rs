//! The frozen document side (`optim.freeze_document_encoder`, beyond the paper): `E_d`'s token
//! states of each distinct document, computed once in evaluation mode and reused by every later
//! batch that holds the document, so a training step costs only the query side.

use std::collections::HashMap;

use gear_model::GearModel;
use tch::{Device, Kind, Tensor};

use crate::Result;

/// Token states `[tokens, hidden]` (no padding, float32) per document, keyed by a hash of the
/// document's text: the encoder's output, and its states after layer `L − N` when the reader
/// layers start there.
#[derive(Default)]
pub(crate) struct DocumentCache {
    states: HashMap<u64, (Tensor, Option<Tensor>)>,
}

impl DocumentCache {
    /// `E_d` token states `[batch, len, hidden]` of a tokenised batch (`ids`, `mask`
    /// `[batch, len]`; `keys[i]` names row `i`'s document), with the states the reader layers
    /// start from when they read below the top: documents not seen yet are encoded (evaluation
    /// mode, no gradient) and kept. Real positions equal
    /// `model.document_reading_states_t(ids, mask, false)`; padding positions are zeros (masked
    /// wherever the states are used).
    pub(crate) fn batch_states(
        &mut self,
        model: &GearModel,
        ids: &Tensor,
        mask: &Tensor,
        keys: &[u64],
    ) -> Result<(Tensor, Option<Tensor>)> {
        let lengths = Vec::<i64>::try_from(
            mask.sum_dim_intlist(1, false, Kind::Int64)
                .to_device(Device::Cpu),
        )?;
        let mut missing: Vec<i64> = Vec::new();
        for (row, key) in keys.iter().enumerate() {
            let queued = missing.iter().any(|&m| keys[m as usize] == *key);
            if !self.states.contains_key(key) && !queued {
                missing.push(row as i64);
            }
        }
        if !missing.is_empty() {
            let rows = Tensor::from_slice(&missing).to_device(ids.device());
            let (states, below) = tch::no_grad(|| {
                model.document_reading_states_t(
                    &ids.index_select(0, &rows),
                    &mask.index_select(0, &rows),
                    false,
                )
            })?;
            let row_of = |t: &Tensor, i: usize, len: i64| {
                t.get(i as i64)
                    .narrow(0, 0, len)
                    .to_kind(Kind::Float)
                    .copy()
            };
            for (i, &row) in missing.iter().enumerate() {
                let len = lengths[row as usize];
                let kept = (
                    row_of(&states, i, len),
                    below.as_ref().map(|b| row_of(b, i, len)),
                );
                self.states.insert(keys[row as usize], kept);
            }
        }
        let seq_len = ids.size()[1];
        let padded = |s: &Tensor| s.constant_pad_nd([0, 0, 0, seq_len - s.size()[0]]);
        let top: Vec<Tensor> = keys.iter().map(|k| padded(&self.states[k].0)).collect();
        let below: Option<Vec<Tensor>> = keys
            .iter()
            .map(|k| self.states[k].1.as_ref().map(padded))
            .collect();
        Ok((Tensor::stack(&top, 0), below.map(|b| Tensor::stack(&b, 0))))
    }

    /// Documents held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gear_data::Tokenizer;
    use gear_model::{BertConfig, DecoderMemory, GearConfig, ReaderInput};

    fn encode(tok: &Tokenizer, texts: &[&str]) -> (Tensor, Tensor) {
        let b = tok.encode_batch(texts).unwrap();
        let shape = [b.len() as i64, b.seq_len() as i64];
        (
            Tensor::from_slice(b.ids()).view(shape),
            Tensor::from_slice(b.attention_mask()).view(shape),
        )
    }

    #[test]
    fn cached_states_equal_fresh_ones_at_every_padding() {
        let texts = [
            "a short one",
            "a much longer document with many more words in it than the others",
            "a medium document here",
        ];
        let tok = Tokenizer::word_level(&texts, 64).unwrap();
        let mut enc = BertConfig::tiny(tok.vocab_size() as i64);
        enc.hidden_dropout_prob = 0.5; // evaluation mode must switch it off
        tch::manual_seed(3);
        // Reader layers that start below the top: the cache keeps those states too.
        let mut config = GearConfig::for_encoder(enc);
        config.decoder.memory = DecoderMemory::FusionAndDocument;
        config.decoder.reader_layers = 1;
        config.decoder.reader_input = ReaderInput::Below;
        let model = GearModel::new(config, tok.clone(), Device::Cpu).unwrap();
        let mut cache = DocumentCache::default();
        // First batch: a short and a medium document (one of them twice) → all misses.
        let batches: [&[usize]; 2] = [&[0, 2, 0], &[1, 0, 2]];
        for batch in batches {
            let chosen: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
            let keys: Vec<u64> = batch.iter().map(|&i| i as u64).collect();
            let (ids, mask) = encode(&tok, &chosen);
            let (top, below) = cache.batch_states(&model, &ids, &mask, &keys).unwrap();
            let want = tch::no_grad(|| model.document_states_t(&ids, &mask, false)).unwrap();
            let (_, want_below) =
                tch::no_grad(|| model.document_reading_states_t(&ids, &mask, false)).unwrap();
            let m = mask.unsqueeze(-1).to_kind(Kind::Float);
            for (got, want) in [(top, want), (below.unwrap(), want_below.unwrap())] {
                let diff = ((&got - &want) * &m).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "real positions differ by {diff}");
                let pad = (&got * (m.ones_like() - &m)).abs().max().double_value(&[]);
                assert_eq!(pad, 0.0, "padding positions must be zeros");
            }
        }
        assert_eq!(cache.len(), 3);
    }
}
