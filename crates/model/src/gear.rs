//! `GearModel`: the whole GeAR network — query encoder `E_q` (which, with its cross-attention
//! blocks, is also the fusion encoder), document encoder `E_d`, and decoder — with its tokenizer,
//! its three inference paths and its checkpoints.
//!
//! VarStore layout (= checkpoint keys): `query_encoder.{embeddings,encoder.layer.{i}}.*` with
//! `…crossattention.*` in every layer, `document_encoder.*` (absent when encoders are shared),
//! `decoder.bert.*`, `decoder.cls.predictions.*`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use gear_data::{Span, Tokenizer};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::checkpoint::{
    load_safetensors, load_safetensors_mapped, required_file, save_safetensors,
    write_folder_atomically, LoadMode,
};
use crate::decoder::Decoder;
use crate::encoder::{Bert, Context, CrossProbs, EncoderOutput, FusionOptions};
use crate::gear_config::{CrossAttentionInit, DecoderInit, GearConfig};
use crate::generate::{generate, GenerationOptions, GenerationTokens};
use crate::local::{rank_units, token_weights, top_tokens, LocalRanking, UnitAggregation};
use crate::pooling::{l2_normalize, mean_pool};
use crate::{BertConfig, Error, Result};

/// The special token that starts every decoder input.
pub const DECODE_TOKEN: &str = "[Decode]";
const CONFIG_FILE: &str = "gear.toml";
const WEIGHTS_FILE: &str = "model.safetensors";
const TOKENIZER_FILE: &str = "tokenizer.json";

/// A GeAR model.
#[derive(Debug)]
pub struct GearModel {
    vs: VarStore,
    query_encoder: Bert,
    document_encoder: Option<Bert>,
    decoder: Decoder,
    config: GearConfig,
    query_tokenizer: Tokenizer,
    document_tokenizer: Tokenizer,
    target_tokenizer: Tokenizer,
    tokens: GenerationTokens,
}

/// Whether the variable `name` (a [`GearModel`] VarStore key) is one GeAR adds to a BERT
/// encoder: a cross-attention block (fusion encoder or decoder) or any decoder weight. These are
/// the parameters [`GearModel::from_bert_checkpoint`] creates rather than loads (a decoder
/// initialised from the encoder still counts as new: it starts in a new role).
pub fn is_new_parameter(name: &str) -> bool {
    name.starts_with("decoder.") || name.contains(".crossattention.")
}

/// What initialising from a plain BERT checkpoint did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// Parameters filled from the checkpoint.
    pub loaded: BTreeSet<String>,
    /// Parameters newly created (cross-attention blocks and the decoder) — exactly the names GeAR
    /// adds to BERT.
    pub created: BTreeSet<String>,
    /// Checkpoint tensors not used (e.g. `pooler.*`).
    pub unused: BTreeSet<String>,
}

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

/// Tokenised texts as tensors on the model's device.
#[derive(Debug)]
pub struct Encoded {
    /// Ids `[batch, len]`.
    pub ids: Tensor,
    /// 0/1 mask `[batch, len]`.
    pub mask: Tensor,
    /// The tokenizer's batch (offsets, special-token flags).
    pub batch: gear_data::Batch,
}

impl GearModel {
    /// A randomly initialised model. `tokenizer` gets `[Decode]` added; the encoder vocabulary
    /// must cover the tokenizer's vocabulary without it.
    pub fn new(config: GearConfig, tokenizer: Tokenizer, device: Device) -> Result<Self> {
        config.validate().map_err(|message| Error::Config {
            path: PathBuf::from("<config>"),
            message,
        })?;
        let mut tokenizer = tokenizer;
        if tokenizer.token_to_id(DECODE_TOKEN).is_none()
            && tokenizer.vocab_size() as i64 > config.encoder.vocab_size
        {
            return Err(Error::Config {
                path: PathBuf::from("<config>"),
                message: format!(
                    "field `encoder.vocab_size` ({}) is smaller than the tokenizer's vocabulary ({})",
                    config.encoder.vocab_size,
                    tokenizer.vocab_size()
                ),
            });
        }
        let decode = tokenizer.add_special_token(DECODE_TOKEN);
        let end = tokenizer.token_to_id("[SEP]").ok_or_else(|| {
            Error::Input("the tokenizer has no `[SEP]` token to end generation".into())
        })?;
        let vs = VarStore::new(device);
        let root = vs.root();
        let width = config.encoder.hidden_size;
        let query_encoder = Bert::with_cross_attention(
            &(&root / "query_encoder"),
            &config.encoder,
            config.fusion_cross_attention(),
        )?;
        let document_encoder = if config.share_encoders {
            None
        } else {
            Some(Bert::new(&(&root / "document_encoder"), &config.encoder)?)
        };
        let decoder_cfg = config.decoder_bert(tokenizer.vocab_size() as i64);
        let decoder = Decoder::new(&(&root / "decoder"), &decoder_cfg, width)?;
        Ok(Self {
            query_tokenizer: tokenizer.with_max_len(config.max_query_len)?,
            document_tokenizer: tokenizer.with_max_len(config.max_document_len)?,
            target_tokenizer: tokenizer.with_max_len(config.max_target_len)?,
            vs,
            query_encoder,
            document_encoder,
            decoder,
            config,
            tokens: GenerationTokens {
                start: i64::from(decode),
                end: i64::from(end),
            },
        })
    }

    /// Initialises `E_q` and `E_d` from a plain BERT checkpoint folder (`config.json`,
    /// `model.safetensors`, `tokenizer.json`); cross-attention and decoder are new. `config`
    /// overrides the defaults of [`GearConfig::for_encoder`]; its encoder must match the folder's.
    pub fn from_bert_checkpoint(
        dir: impl AsRef<Path>,
        config: Option<GearConfig>,
        device: Device,
    ) -> Result<(Self, InitReport)> {
        let dir = dir.as_ref();
        let bert = BertConfig::from_json_file(required_file(dir, "config.json")?)?;
        let config = match config {
            Some(c) if c.encoder != bert => {
                return Err(Error::Config {
                    path: dir.join("config.json"),
                    message:
                        "the GeAR config's [encoder] differs from the checkpoint's config.json"
                            .into(),
                })
            }
            Some(c) => c,
            None => GearConfig::for_encoder(bert),
        };
        let tokenizer =
            Tokenizer::from_file(required_file(dir, TOKENIZER_FILE)?, config.max_document_len)?;
        let weights = required_file(dir, WEIGHTS_FILE)?;
        let mut model = Self::new(config, tokenizer, device)?;
        let is_new = is_new_parameter;
        let mpnet = model.config.encoder.model_type == crate::ModelType::Mpnet;
        let report = load_safetensors_mapped(&mut model.vs, &weights, LoadMode::Partial, |name| {
            if is_new(name) {
                return None;
            }
            name.strip_prefix("query_encoder.")
                .or_else(|| name.strip_prefix("document_encoder."))
                .map(|rest| {
                    if mpnet {
                        crate::encoder::mpnet_checkpoint_key(rest)
                    } else {
                        rest.to_owned()
                    }
                })
        })?;
        let variables = model.vs.variables();
        if let Some(name) = report.missing.iter().find(|n| !is_new(n)) {
            return Err(Error::MissingTensor {
                path: weights,
                name: name.clone(),
                expected: variables.get(name).map(Tensor::size).unwrap_or_default(),
            });
        }
        if model.config.decoder.init == DecoderInit::FromEncoder {
            model.copy_decoder_from_encoder()?;
        }
        match model.config.cross_attention_init {
            CrossAttentionInit::Random => {}
            CrossAttentionInit::SelfAttention => {
                model.copy_cross_attention_from_self_attention()?
            }
            CrossAttentionInit::Similarity => model.init_similarity_cross_attention()?,
        }
        Ok((
            model,
            InitReport {
                loaded: report.loaded,
                created: report.missing,
                unused: report.unused,
            },
        ))
    }

    /// Copies embeddings, self-attention and feed-forward weights of `E_q`'s first layers into
    /// the decoder (its extra `[Decode]` embedding row stays random).
    fn copy_decoder_from_encoder(&mut self) -> Result<()> {
        let vars = self.vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, dst) in &vars {
                let Some(rest) = name.strip_prefix("decoder.bert.") else {
                    continue;
                };
                if rest.contains(".crossattention.") {
                    continue;
                }
                let Some(src) = vars.get(&format!("query_encoder.{rest}")) else {
                    continue;
                };
                let mut dst = dst.shallow_clone();
                if src.size() == dst.size() {
                    dst.f_copy_(src)?;
                } else if rest == "embeddings.word_embeddings.weight" {
                    dst.narrow(0, 0, src.size()[0]).f_copy_(src)?;
                }
            }
            Ok(())
        })
    }

    /// [`CrossAttentionInit::Similarity`] for every fusion-encoder block.
    fn init_similarity_cross_attention(&mut self) -> Result<()> {
        let vars = self.vs.variables();
        let heads = self.config.fusion_cross_attention().heads;
        let scale = 3.0 * (heads as f64).sqrt();
        let get = |name: &str| {
            vars.get(name)
                .map(Tensor::shallow_clone)
                .ok_or_else(|| Error::Input(format!("no variable `{name}` to initialise")))
        };
        tch::no_grad(|| -> Result<()> {
            for i in 0..self.config.encoder.num_hidden_layers {
                let layer = format!("query_encoder.encoder.layer.{i}");
                let block = format!("{layer}.crossattention");
                for (proj, s) in [("query", scale), ("key", 1.0), ("value", 1.0)] {
                    let mut w = get(&format!("{block}.self.{proj}.weight"))?;
                    let n = w.size()[0];
                    w.f_copy_(&(Tensor::eye(n, (w.kind(), w.device())) * s))?;
                    let _ = get(&format!("{block}.self.{proj}.bias"))?.zero_();
                }
                let _ = get(&format!("{block}.output.dense.weight"))?.zero_();
                let _ = get(&format!("{block}.output.dense.bias"))?.zero_();
                // The input is the self-attention LayerNorm's output `γ⊙n + β`; re-normalising it
                // with gain rms(γ, β) and bias mean(β) nearly returns it.
                let gamma = get(&format!("{layer}.attention.output.LayerNorm.weight"))?;
                let beta = get(&format!("{layer}.attention.output.LayerNorm.bias"))?;
                let gain = (gamma.square().mean(Kind::Float) + beta.var(false))
                    .sqrt()
                    .double_value(&[]);
                let bias = beta.mean(Kind::Float).double_value(&[]);
                let _ = get(&format!("{block}.output.LayerNorm.weight"))?.fill_(gain);
                let _ = get(&format!("{block}.output.LayerNorm.bias"))?.fill_(bias);
            }
            Ok(())
        })
    }

    /// Copies every layer's self-attention block (`….attention.*`) into the same layer's
    /// cross-attention block (`….crossattention.*`), in the fusion encoder and the decoder.
    fn copy_cross_attention_from_self_attention(&mut self) -> Result<()> {
        let vars = self.vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, dst) in &vars {
                if !name.contains(".crossattention.") {
                    continue;
                }
                let source = name.replacen(".crossattention.", ".attention.", 1);
                let src = vars.get(&source).ok_or_else(|| {
                    Error::Input(format!(
                        "no self-attention `{source}` to copy into `{name}`"
                    ))
                })?;
                if src.size() != dst.size() {
                    return Err(Error::Input(format!(
                        "`{source}` has shape {:?} but `{name}` {:?}",
                        src.size(),
                        dst.size()
                    )));
                }
                dst.shallow_clone().f_copy_(src)?;
            }
            Ok(())
        })
    }

    /// Loads a checkpoint folder written by [`GearModel::save`], strictly.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = GearConfig::from_toml_file(required_file(dir, CONFIG_FILE)?)?;
        let tokenizer_path = required_file(dir, TOKENIZER_FILE)?;
        let tokenizer = Tokenizer::from_file(&tokenizer_path, config.max_document_len)?;
        if tokenizer.token_to_id(DECODE_TOKEN).is_none() {
            return Err(Error::Config {
                path: tokenizer_path,
                message: format!("no `{DECODE_TOKEN}` token: not a GeAR checkpoint's tokenizer"),
            });
        }
        let weights = required_file(dir, WEIGHTS_FILE)?;
        let mut model = Self::new(config, tokenizer, device)?;
        load_safetensors(&mut model.vs, &weights, LoadMode::Strict)?;
        Ok(model)
    }

    /// Writes `dir/{gear.toml, model.safetensors, tokenizer.json}` atomically: everything goes to
    /// a temporary folder beside `dir` that replaces `dir` only once complete.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        write_folder_atomically(dir.as_ref(), "checkpoint", |tmp| {
            save_safetensors(&self.vs, tmp.join(WEIGHTS_FILE))?;
            std::fs::write(tmp.join(CONFIG_FILE), self.config.to_toml_string()?).map_err(
                |source| Error::Io {
                    path: tmp.to_owned(),
                    source,
                },
            )?;
            Ok(self.document_tokenizer.save(tmp.join(TOKENIZER_FILE))?)
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GearConfig {
        &self.config
    }

    /// The variables (for optimisers and momentum copies).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The variables, mutably (loading, freezing, moving).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The tokenizer for documents (with `[Decode]`).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.document_tokenizer
    }

    /// The tokenizer for queries (truncating to `max_query_len`).
    pub fn query_tokenizer(&self) -> &Tokenizer {
        &self.query_tokenizer
    }

    /// `[Decode]` and end token ids.
    pub fn generation_tokens(&self) -> GenerationTokens {
        self.tokens
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    fn encode_with<S: AsRef<str>>(&self, tokenizer: &Tokenizer, texts: &[S]) -> Result<Encoded> {
        let batch = tokenizer.encode_batch(texts)?;
        let shape = [batch.len() as i64, batch.seq_len() as i64];
        let ids = Tensor::from_slice(batch.ids())
            .view(shape)
            .to_device(self.device());
        let mask = Tensor::from_slice(batch.attention_mask())
            .view(shape)
            .to_device(self.device());
        Ok(Encoded { ids, mask, batch })
    }

    /// Tokenises queries (truncated to `max_query_len`).
    pub fn encode_query_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Encoded> {
        self.encode_with(&self.query_tokenizer, texts)
    }

    /// Tokenises documents (truncated to `max_document_len`).
    pub fn encode_document_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Encoded> {
        self.encode_with(&self.document_tokenizer, texts)
    }

    /// Decoder inputs for generation targets: `[Decode] t_1 … t_n [SEP]`, truncated to
    /// `max_target_len`. Labels are the same ids shifted left by one.
    pub fn encode_target_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Encoded> {
        let enc = self.encode_with(&self.target_tokenizer, texts)?;
        if enc.ids.numel() > 0 {
            let _ = enc.ids.select(1, 0).fill_(self.tokens.start);
        }
        Ok(enc)
    }

    fn document_bert(&self) -> &Bert {
        self.document_encoder
            .as_ref()
            .unwrap_or(&self.query_encoder)
    }

    /// `E_q` sentence embeddings `[batch, hidden]`, unit-norm (no cross-attention).
    pub fn encode_queries_t(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let out = self.query_encoder.forward_t(ids, mask, train)?;
        Ok(l2_normalize(&mean_pool(&out.hidden, mask)))
    }

    /// `E_d` token states `[batch, len, hidden]` (what the fusion encoder attends to).
    pub fn document_states_t(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.document_bert().forward_t(ids, mask, train)?.hidden)
    }

    /// `E_d` sentence embeddings `[batch, hidden]`, unit-norm.
    pub fn encode_documents_t(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let states = self.document_states_t(ids, mask, train)?;
        Ok(l2_normalize(&mean_pool(&states, mask)))
    }

    /// The fusion encoder: `E_q` over the query with cross-attention to the document's states.
    pub fn fuse_t(
        &self,
        query_ids: &Tensor,
        query_mask: &Tensor,
        document: Context<'_>,
        options: FusionOptions,
        train: bool,
    ) -> Result<EncoderOutput> {
        self.query_encoder
            .forward_fused_t(query_ids, query_mask, Some(document), options, train)
    }

    /// Teacher-forced decoder logits `[batch, t, vocab]` over `fused` states.
    pub fn decoder_logits_t(
        &self,
        target_ids: &Tensor,
        target_mask: &Tensor,
        fused: Context<'_>,
        train: bool,
    ) -> Result<Tensor> {
        self.decoder
            .forward_t(target_ids, target_mask, fused, train)
    }

    /// Query embeddings for texts (evaluation mode) → `[n, hidden]` on the CPU.
    pub fn embed_queries<S: AsRef<str>>(&self, texts: &[S]) -> Result<Tensor> {
        let enc = self.encode_query_texts(texts)?;
        tch::no_grad(|| {
            Ok(self
                .encode_queries_t(&enc.ids, &enc.mask, false)?
                .to_device(Device::Cpu))
        })
    }

    /// Document embeddings for texts (evaluation mode) → `[n, hidden]` on the CPU.
    pub fn embed_documents<S: AsRef<str>>(&self, texts: &[S]) -> Result<Tensor> {
        let enc = self.encode_document_texts(texts)?;
        tch::no_grad(|| {
            Ok(self
                .encode_documents_t(&enc.ids, &enc.mask, false)?
                .to_device(Device::Cpu))
        })
    }

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
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let layer = self.checked_local_layer(options)?;
        let queries: Vec<&str> = inputs.iter().map(|i| i.query).collect();
        let documents: Vec<&str> = inputs.iter().map(|i| i.document).collect();
        let q = self.encode_query_texts(&queries)?;
        let d = self.encode_document_texts(&documents)?;
        let probs = tch::no_grad(|| -> Result<Tensor> {
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
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let layer = self.checked_local_layer(options)?;
        let n = queries.len() as i64;
        let q = self.encode_query_texts(queries)?;
        let d = self.encode_document_texts(&[document])?;
        let probs = tch::no_grad(|| -> Result<Tensor> {
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
        let probs = tch::no_grad(|| -> Result<Tensor> {
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

    /// Generates text for each (query, document) pair from fusion(q, d).
    pub fn generate<S: AsRef<str>>(
        &self,
        queries: &[S],
        documents: &[S],
        options: &GenerationOptions,
    ) -> Result<Vec<String>> {
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
        let sequences = tch::no_grad(|| -> Result<Vec<Vec<i64>>> {
            let states = self.document_states_t(&d.ids, &d.mask, false)?;
            let fused = self.fuse_t(
                &q.ids,
                &q.mask,
                Context {
                    states: &states,
                    mask: &d.mask,
                },
                FusionOptions::default(),
                false,
            )?;
            generate(
                &self.decoder,
                Context {
                    states: &fused.hidden,
                    mask: &q.mask,
                },
                self.tokens,
                options,
            )
        })?;
        sequences
            .iter()
            .map(|ids| {
                let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
                Ok(self.target_tokenizer.decode(&ids)?)
            })
            .collect()
    }
}
