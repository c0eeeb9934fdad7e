//! `GearModel`: the whole GeAR network — query encoder `E_q` (which, with its cross-attention
//! blocks, is also the fusion encoder), document encoder `E_d`, and decoder — with its tokenizer
//! and the forward passes the trainer and the pipelines build on. Around it: its configuration
//! (`config.rs`), initialisation from BERT (`init.rs`), checkpoint folders (`io.rs`) and the
//! local-retrieval and generation pipelines (`pipeline.rs`).
//!
//! The network is BLIP's text side used for retrieval: `E_q` with cross-attention in every layer
//! is BLIP's text encoder in its image-grounded mode, the decoder its causal text decoder
//! (<https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/blip_retrieval.py#L72>
//! for how the retrieval model wires them).
//!
//! VarStore layout (= checkpoint keys): `query_encoder.{embeddings,encoder.layer.{i}}.*` with
//! `…crossattention.*` in every layer, `document_encoder.*` (absent when encoders are shared),
//! `decoder.bert.*`, `decoder.cls.predictions.*`.

mod config;
mod init;
mod io;
mod pipeline;
mod reader;

use std::path::PathBuf;

use gear_data::{Tokenizer, TripleTokenizer};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::bert::encoder::{Bert, Context, EncoderOutput, FusionOptions};
use crate::bert::layer::BertLayer;
use crate::decoder::Decoder;
use crate::generate::GenerationTokens;
use crate::pointer::Pointer;
use crate::pooling::{l2_normalize, mean_pool};
use crate::{Error, Precision, Result};

pub use config::{
    default_local_layer, CopyMode, CrossAttentionInit, DecoderConfig, DecoderInit, DecoderMemory,
    Decoding, GearConfig, ReaderInput,
};
pub use init::InitReport;
pub use pipeline::{LocateDocument, LocateOptions, LocateQueries};
pub use reader::{keep_mask, Generated, ReaderInputs};

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
    /// Layers that read the passage with the question (`decoder.reader_layers`), under
    /// `decoder.reader.layer.{i}`.
    reader: Vec<BertLayer>,
    /// The decoder's copy head ([`CopyMode`] other than `none`).
    pointer: Option<Pointer>,
    /// Per vocabulary id, whether the token continues a word (`##…`), `[vocab]` bool.
    continuation: Tensor,
    config: GearConfig,
    /// The tokenizer (with `[Decode]`) at the query, document and target lengths.
    texts: TripleTokenizer,
    tokens: GenerationTokens,
    /// The arithmetic of inference forwards ([`GearModel::set_precision`]).
    precision: Precision,
}

/// Whether the variable `name` (a [`GearModel`] VarStore key) is one GeAR adds to a BERT
/// encoder: a cross-attention block (fusion encoder or decoder) or any decoder weight. These are
/// the parameters [`GearModel::from_bert_checkpoint`] creates rather than loads (a decoder
/// initialised from the encoder still counts as new: it starts in a new role).
pub fn is_new_parameter(name: &str) -> bool {
    name.starts_with("decoder.") || name.contains(".crossattention.")
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
        // `[Decode]` is read by the decoder only, whose table grows by it.
        crate::checkpoint::check_tokenizer_fits(
            &tokenizer,
            config.encoder.vocab_size,
            "encoder.vocab_size",
            &[DECODE_TOKEN],
        )?;
        let decode = tokenizer.add_special_token(DECODE_TOKEN);
        if tokenizer.id_bound() > tokenizer.vocab_size() {
            return Err(Error::Config {
                path: tokenizer.path().to_owned(),
                message: format!(
                    "ids up to {} for {} tokens: a tokenizer whose ids have gaps cannot size the \
                     decoder's vocabulary",
                    tokenizer.id_bound() - 1,
                    tokenizer.vocab_size()
                ),
            });
        }
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
        let reader = (0..config.decoder.reader_layers)
            .map(|i| {
                BertLayer::new(
                    &(&root / "decoder" / "reader" / "layer" / i),
                    &config.encoder,
                )
            })
            .collect();
        let pointer = (config.decoder.copy != CopyMode::None).then(|| {
            Pointer::new(
                &(&root / "decoder" / "pointer"),
                &decoder_cfg,
                config.decoder.copy == CopyMode::LocalAttention,
            )
        });
        let continuation: Vec<bool> = (0..tokenizer.vocab_size() as u32)
            .map(|id| {
                tokenizer
                    .id_to_token(id)
                    .is_some_and(|t| t.starts_with("##"))
            })
            .collect();
        Ok(Self {
            texts: TripleTokenizer::new(
                &tokenizer,
                config.max_query_len,
                config.max_document_len,
                config.max_target_len,
            )?,
            vs,
            query_encoder,
            document_encoder,
            decoder,
            reader,
            pointer,
            continuation: Tensor::from_slice(&continuation),
            config,
            tokens: GenerationTokens {
                start: i64::from(decode),
                end: i64::from(end),
            },
            precision: Precision::Fp32,
        })
    }

    /// The arithmetic of inference (embedding, locating, generating): float32 by default.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Runs inference in `precision` from now on. Training is not affected: the trainer enters
    /// its own `run.precision` around each step. Unchecked: bfloat16 on a CPU without bfloat16
    /// instructions runs, emulated and many times slower (warned at first use); call
    /// [`Precision::check`] first to refuse it, as the command line does.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// `f` without gradients, in the model's precision, on this thread.
    pub(crate) fn inference<T>(&self, f: impl FnOnce() -> T) -> T {
        let _precision = self.precision.enter(self.device());
        tch::no_grad(f)
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
        self.texts.document()
    }

    /// The tokenizer for queries (truncating to `max_query_len`).
    pub fn query_tokenizer(&self) -> &Tokenizer {
        self.texts.query()
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
        let (ids, mask) = crate::batch_tensors(&batch, self.device());
        Ok(Encoded { ids, mask, batch })
    }

    /// Tokenises queries (truncated to `max_query_len`).
    pub fn encode_query_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Encoded> {
        self.encode_with(self.texts.query(), texts)
    }

    /// Tokenises documents (truncated to `max_document_len`).
    pub fn encode_document_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Encoded> {
        self.encode_with(self.texts.document(), texts)
    }

    /// Decoder inputs for generation targets: `[Decode] t_1 … t_n [SEP]`, truncated to
    /// `max_target_len`. Labels are the same ids shifted left by one.
    pub fn encode_target_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Encoded> {
        let enc = self.encode_with(self.texts.target(), texts)?;
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
        self.inference(|| {
            Ok(self
                .encode_queries_t(&enc.ids, &enc.mask, false)?
                .to_kind(Kind::Float)
                .to_device(Device::Cpu))
        })
    }

    /// Document embeddings for texts (evaluation mode) → `[n, hidden]` on the CPU.
    pub fn embed_documents<S: AsRef<str>>(&self, texts: &[S]) -> Result<Tensor> {
        let enc = self.encode_document_texts(texts)?;
        self.inference(|| {
            Ok(self
                .encode_documents_t(&enc.ids, &enc.mask, false)?
                .to_kind(Kind::Float)
                .to_device(Device::Cpu))
        })
    }
}
