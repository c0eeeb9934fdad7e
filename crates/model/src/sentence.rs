//! A sentence-embedding model as sentence-transformers runs it: tokenizer, BERT, the folder's
//! pooling (see [`SentenceLayout`]: CLS, mean, max, mean/√len or last token) and, when the folder
//! says so, L2 normalisation — loaded from a sentence-transformers or Hugging Face model folder.
//!
//! Mirrors `SentenceTransformer.encode` (length-sorted batches, then pooling as
//! [`Pooling.forward`](https://github.com/huggingface/sentence-transformers/blob/v6.2.0/sentence_transformers/sentence_transformer/modules/pooling.py#L123)); each `embed` runs in a `sentence_encoder.embed` span (debug
//! level).

use std::path::{Path, PathBuf};

use gear_data::Tokenizer;
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::checkpoint::{
    load_safetensors, load_safetensors_mapped, required_file, LoadMode, LoadReport,
};
use crate::pooling::{l2_normalize, pool};
use crate::{Bert, BertConfig, Error, Precision, Result, SentenceLayout};

/// Options for [`SentenceEncoder::load`].
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    /// Token limit per text, special tokens included. `None`: the folder's
    /// `sentence_bert_config.json` `max_seq_length`, else the model's position count.
    pub max_len: Option<usize>,
    /// Where the weights live and the forward runs.
    pub device: Device,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// The forward's arithmetic. [`SentenceEncoder::load`] refuses bfloat16 on a CPU without
    /// bfloat16 instructions ([`Precision::check`]).
    pub precision: Precision,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            max_len: None,
            device: Device::Cpu,
            batch_size: 32,
            precision: Precision::Fp32,
        }
    }
}

/// A loaded sentence encoder. Inference only: every forward runs with `train = false` under
/// `no_grad`.
#[derive(Debug)]
pub struct SentenceEncoder {
    // Owns the variables `bert` uses.
    _vs: VarStore,
    bert: Bert,
    tokenizer: Tokenizer,
    device: Device,
    batch_size: usize,
    precision: Precision,
    dir: PathBuf,
    report: LoadReport,
    layout: SentenceLayout,
}

impl SentenceEncoder {
    /// Loads a model folder: a sentence-transformers or Hugging Face BERT folder
    /// (`config.json`, `model.safetensors` loaded strictly, `tokenizer.json`, and the pipeline
    /// files [`SentenceLayout`] reads), or a GeAR checkpoint (`gear.toml`), whose document
    /// encoder `E_d` it loads — the embeddings [`crate::GearModel::embed_documents`] gives.
    pub fn load(dir: impl AsRef<Path>, opts: &EncoderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let gear_toml = dir.join("gear.toml");
        let (layout, config, gear_prefix) = if gear_toml.is_file() {
            let gear = crate::GearConfig::from_toml_file(&gear_toml)?;
            let layout = SentenceLayout {
                transformer_dir: dir.to_owned(),
                pooling: crate::Pooling::Mean,
                normalize: true,
                max_seq_length: Some(gear.max_document_len),
                do_lower_case: false,
            };
            let prefix = if gear.share_encoders {
                "query_encoder."
            } else {
                "document_encoder."
            };
            (layout, gear.encoder, Some(prefix))
        } else {
            let layout = SentenceLayout::read(dir)?;
            let config =
                BertConfig::from_json_file(required_file(&layout.transformer_dir, "config.json")?)?;
            SentenceLayout::check_width(dir, config.hidden_size)?;
            (layout, config, None)
        };
        let model_dir = layout.transformer_dir.clone();
        let file = |name: &'static str| required_file(&model_dir, name);
        let weights = file("model.safetensors")?;
        let tokenizer_path = file("tokenizer.json")?;
        if opts.batch_size == 0 {
            return Err(Error::Input("batch size must be at least 1".into()));
        }
        opts.precision.check(opts.device)?;
        let max_len = match opts.max_len {
            Some(n) => n,
            None => layout
                .max_seq_length
                .unwrap_or(config.max_tokens() as usize),
        };
        if i64::try_from(max_len).map_or(true, |m| m > config.max_tokens()) {
            return Err(Error::Input(format!(
                "max length {max_len} exceeds the model's {} positions",
                config.max_tokens()
            )));
        }
        let tokenizer = Tokenizer::from_file(&tokenizer_path, max_len)?;
        // A GeAR checkpoint's tokenizer carries `[Decode]`, which only its decoder reads.
        let decoder_only = usize::from(
            gear_prefix.is_some() && tokenizer.token_to_id(crate::gear::DECODE_TOKEN).is_some(),
        );
        if (tokenizer.vocab_size() - decoder_only) as i64 > config.vocab_size {
            return Err(Error::Config {
                path: dir.join("config.json"),
                message: format!(
                    "field `vocab_size` ({}) is smaller than the tokenizer's vocabulary ({})",
                    config.vocab_size,
                    tokenizer.vocab_size()
                ),
            });
        }
        let decoder_tokens: &[&str] = if decoder_only == 1 {
            &[crate::gear::DECODE_TOKEN]
        } else {
            &[]
        };
        crate::checkpoint::check_tokenizer_fits(
            &tokenizer,
            config.vocab_size,
            "vocab_size",
            decoder_tokens,
        )?;
        let mut vs = VarStore::new(opts.device);
        let bert = Bert::new(&vs.root(), &config)?;
        let report = match gear_prefix {
            None if config.model_type == crate::ModelType::Mpnet => {
                load_safetensors_mapped(&mut vs, &weights, LoadMode::Strict, |name| {
                    Some(crate::bert::encoder::mpnet_checkpoint_key(name))
                })?
            }
            None => load_safetensors(&mut vs, &weights, LoadMode::Strict)?,
            Some(prefix) => load_safetensors_mapped(&mut vs, &weights, LoadMode::Strict, |name| {
                Some(format!("{prefix}{name}"))
            })?,
        };
        vs.freeze();
        Ok(Self {
            _vs: vs,
            bert,
            tokenizer,
            device: opts.device,
            batch_size: opts.batch_size,
            precision: opts.precision,
            dir: dir.to_owned(),
            report,
            layout,
        })
    }

    /// The encoder's configuration.
    pub fn config(&self) -> &BertConfig {
        self.bert.config()
    }

    /// The tokenizer (with this encoder's max length).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What loading the weights did (checkpoint tensors left unused, e.g. `pooler.*`).
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// The folder's pooling, normalisation and text settings.
    pub fn layout(&self) -> &SentenceLayout {
        &self.layout
    }

    /// The forward's arithmetic.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Embeds in `precision` from now on, unchecked: bfloat16 on a CPU without bfloat16
    /// instructions runs (emulated, many times slower; warned at first use) — for checking its
    /// numbers on any machine. [`EncoderOptions::precision`] is the checked way.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// Embedding width.
    pub fn dim(&self) -> i64 {
        self.bert.config().hidden_size
    }

    /// Embeds `texts` → `[n, dim]` float tensor on the CPU, rows in input order (unit rows when
    /// the folder normalises, as all-MiniLM-L6-v2 does).
    ///
    /// Texts are grouped into batches of similar length (longest first, as sentence-transformers
    /// does) so little compute is spent on padding.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Tensor> {
        let _span = tracing::debug_span!("sentence_encoder.embed", texts = texts.len()).entered();
        let refs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        if refs.is_empty() {
            return Ok(Tensor::zeros([0, self.dim()], (Kind::Float, Device::Cpu)));
        }
        embed_length_sorted(&refs, self.batch_size, |batch| self.embed_batch(batch))
    }

    /// Embeds `texts` as one padded batch → `[n, dim]` on the CPU.
    pub fn embed_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Tensor> {
        let batch = if self.layout.do_lower_case {
            let lower: Vec<String> = texts.iter().map(|t| t.as_ref().to_lowercase()).collect();
            self.tokenizer.encode_batch(&lower)?
        } else {
            self.tokenizer.encode_batch(texts)?
        };
        let (ids, mask) = crate::batch_tensors(&batch, self.device);
        let _precision = self.precision.enter(self.device);
        tch::no_grad(|| {
            let out = self.bert.forward_t(&ids, &mask, false)?;
            let pooled = pool(&out.hidden, &mask, self.layout.pooling);
            let pooled = if self.layout.normalize {
                l2_normalize(&pooled)
            } else {
                pooled
            };
            Ok(pooled.to_kind(Kind::Float).to_device(Device::Cpu))
        })
    }

    /// As [`SentenceEncoder::embed`], as plain vectors.
    pub fn embed_vecs<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let t = self.embed(texts)?;
        let dim = self.dim() as usize;
        let flat = Vec::<f32>::try_from(t.flatten(0, -1))?;
        Ok(flat.chunks(dim.max(1)).map(<[f32]>::to_vec).collect())
    }
}

/// Runs `embed` over `texts` in batches of `batch_size` grouped by length (longest first, as
/// sentence-transformers does, so little compute goes to padding) and returns the rows in input
/// order. `embed` gets one batch and returns `[batch, dim]`.
pub fn embed_length_sorted(
    texts: &[&str],
    batch_size: usize,
    mut embed: impl FnMut(&[&str]) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].chars().count()));
    let mut parts = Vec::with_capacity(order.len().div_ceil(batch_size.max(1)));
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        parts.push(embed(&batch)?.to_kind(Kind::Float).to_device(Device::Cpu));
    }
    if parts.is_empty() {
        return Err(Error::Input("nothing to embed".into()));
    }
    let sorted = Tensor::cat(&parts, 0);
    let mut inverse = vec![0i64; order.len()];
    for (pos, &i) in order.iter().enumerate() {
        inverse[i] = pos as i64;
    }
    Ok(sorted.index_select(0, &Tensor::from_slice(&inverse)))
}
