//! A cross-encoder reranker (the paper's BGE-Reranker role, method §5): BERT reads
//! `[CLS] query [SEP] text [SEP]` with full self-attention and a linear head on the `[CLS]`
//! state gives one relevance score. Variables follow Hugging Face's
//! `BertForSequenceClassification` with one label (`bert.*`, `classifier.{weight,bias}`), so a
//! saved folder (`config.json`, `model.safetensors`, `tokenizer.json`) has that layout.
//!
//! Mirrors [`BertForSequenceClassification`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L1070) with
//! `num_labels = 1`; its forward runs in a `cross_encoder` span (trace level).

use std::path::Path;

use gear_data::Tokenizer;
use tch::{nn, nn::Module, nn::VarStore, Device, Kind, Tensor};

use crate::checkpoint::{
    load_safetensors_mapped, required_file, save_safetensors, write_folder_atomically, LoadMode,
};
use crate::{Bert, BertConfig, Error, Result};

const WEIGHTS: &str = "model.safetensors";
const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";

/// The reranker: encoder, head, tokenizer.
#[derive(Debug)]
pub struct CrossEncoder {
    vs: VarStore,
    bert: Bert,
    classifier: nn::Linear,
    tokenizer: Tokenizer,
}

/// Tokenised `(query, text)` pairs as tensors on the model's device.
#[derive(Debug)]
pub struct EncodedPairs {
    /// `[pairs, len]`.
    pub ids: Tensor,
    /// `[pairs, len]`, 1 = token.
    pub mask: Tensor,
}

impl CrossEncoder {
    fn build(config: &BertConfig, tokenizer: Tokenizer, device: Device) -> Result<Self> {
        crate::checkpoint::check_tokenizer_fits(&tokenizer, config.vocab_size, "vocab_size", &[])?;
        let vs = VarStore::new(device);
        let root = vs.root();
        let bert = Bert::new(&(&root / "bert"), config)?;
        let classifier = nn::linear(
            &root / "classifier",
            config.hidden_size,
            1,
            nn::LinearConfig::default(),
        );
        Ok(Self {
            vs,
            bert,
            classifier,
            tokenizer,
        })
    }

    /// A new reranker over a pretrained BERT folder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`): the encoder is loaded, the head is new (seeded by libtorch's
    /// generator); pairs are cut at `max_len` tokens.
    pub fn from_bert_checkpoint(
        dir: impl AsRef<Path>,
        max_len: usize,
        device: Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::from_json_file(required_file(dir, CONFIG)?)?;
        let tokenizer = Tokenizer::from_file(required_file(dir, TOKENIZER)?, max_len)?;
        let mut model = Self::build(&config, tokenizer, device)?;
        let report = load_safetensors_mapped(
            &mut model.vs,
            required_file(dir, WEIGHTS)?,
            LoadMode::Partial,
            |name| name.strip_prefix("bert.").map(str::to_owned),
        )?;
        let unexpected: Vec<&String> = report
            .missing
            .iter()
            .filter(|n| !n.starts_with("classifier."))
            .collect();
        if !unexpected.is_empty() {
            return Err(Error::Input(format!(
                "{}: the encoder lacks {unexpected:?}",
                dir.join(WEIGHTS).display()
            )));
        }
        Ok(model)
    }

    /// Loads a reranker saved by [`CrossEncoder::save`] (every tensor must be present).
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::from_json_file(required_file(dir, CONFIG)?)?;
        let tokenizer =
            Tokenizer::from_file(required_file(dir, TOKENIZER)?, config.max_tokens() as usize)?;
        let mut model = Self::build(&config, tokenizer, device)?;
        load_safetensors_mapped(
            &mut model.vs,
            required_file(dir, WEIGHTS)?,
            LoadMode::Strict,
            |n| Some(n.to_owned()),
        )?;
        Ok(model)
    }

    /// Writes `dir/{config.json, model.safetensors, tokenizer.json}`, built in a temporary
    /// folder beside `dir` that replaces it only once complete.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        write_folder_atomically(dir.as_ref(), "cross-encoder", |tmp| {
            save_safetensors(&self.vs, tmp.join(WEIGHTS))?;
            let config = serde_json::to_string_pretty(self.bert.config())
                .map_err(|e| Error::Input(format!("cannot write the configuration: {e}")))?;
            std::fs::write(tmp.join(CONFIG), config).map_err(|source| Error::Io {
                path: tmp.to_owned(),
                source,
            })?;
            Ok(self.tokenizer.save(tmp.join(TOKENIZER))?)
        })
    }

    /// The variables (encoder and head), for an optimiser.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The text a pair is read as: `query [SEP] text` (one segment id, as the encoder was
    /// pretrained); the tokenizer adds `[CLS]` and the final `[SEP]` and cuts at its limit.
    pub fn pair_text(query: &str, text: &str) -> String {
        format!("{query} [SEP] {text}")
    }

    /// Tokenises pair texts ([`CrossEncoder::pair_text`]).
    pub fn encode_pairs<S: AsRef<str>>(&self, texts: &[S]) -> Result<EncodedPairs> {
        let batch = self.tokenizer.encode_batch(texts)?;
        let (ids, mask) = crate::batch_tensors(&batch, self.device());
        Ok(EncodedPairs { ids, mask })
    }

    /// Relevance logits `[pairs]` of encoded pairs.
    pub fn forward_t(&self, pairs: &EncodedPairs, train: bool) -> Result<Tensor> {
        let _span = tracing::trace_span!("cross_encoder").entered();
        let hidden = self.bert.forward_t(&pairs.ids, &pairs.mask, train)?.hidden;
        Ok(self.classifier.forward(&hidden.select(1, 0)).squeeze_dim(1))
    }

    /// Logits `[pairs]` (CPU) of pair texts in input order, computed in length-sorted forwards of
    /// `batch` pairs (little padding); differentiable when `train` and outside `no_grad`.
    pub fn logits_t(&self, texts: &[&str], batch: usize, train: bool) -> Result<Tensor> {
        if texts.is_empty() {
            return Ok(Tensor::zeros([0], (Kind::Float, Device::Cpu)));
        }
        let rows = crate::embed_length_sorted(texts, batch, |chunk| {
            Ok(self
                .forward_t(&self.encode_pairs(chunk)?, train)?
                .unsqueeze(1))
        })?;
        Ok(rows.squeeze_dim(1))
    }

    /// Scores `(query, text)` pairs (evaluation mode), in input order, `batch` pairs per forward.
    pub fn score(&self, pairs: &[(&str, &str)], batch: usize) -> Result<Vec<f32>> {
        let texts: Vec<String> = pairs.iter().map(|(q, t)| Self::pair_text(q, t)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let logits = tch::no_grad(|| self.logits_t(&refs, batch, false))?;
        Ok(Vec::<f32>::try_from(logits)?)
    }
}
