//! Initialising a [`GearModel`] from a plain BERT (or MPNet) checkpoint, as the method does:
//! both encoders load the checkpoint, the cross-attention blocks and the decoder are new, and
//! the decoder (optionally) and the cross-attention blocks (by [`CrossAttentionInit`]) start from
//! weights derived from the encoder's. BLIP initialises its text encoder and decoder from BERT
//! the same way
//! (<https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/blip_retrieval.py#L11>).

use std::collections::BTreeSet;
use std::path::Path;

use gear_data::Tokenizer;
use tch::{Device, Kind, Tensor};

use super::{is_new_parameter, GearModel, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::checkpoint::{load_safetensors_mapped, required_file, LoadMode};
use crate::gear::config::{CrossAttentionInit, DecoderInit, GearConfig};
use crate::{BertConfig, Error, Result};

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

impl GearModel {
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
                        crate::bert::encoder::mpnet_checkpoint_key(rest)
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
        model.copy_reader_from_document_encoder()?;
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

    /// Copies the document encoder's last `reader_layers` layers into the reader layers
    /// (`decoder.reader.layer.{i}` ← layer `L − k + i`): they start as the pretrained encoder's
    /// own top, now reading the question's states beside the passage's.
    fn copy_reader_from_document_encoder(&mut self) -> Result<()> {
        let k = self.config.decoder.reader_layers;
        if k == 0 {
            return Ok(());
        }
        let encoder = if self.config.share_encoders {
            "query_encoder"
        } else {
            "document_encoder"
        };
        let first = self.config.encoder.num_hidden_layers - k;
        let vars = self.vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, dst) in &vars {
                let Some(rest) = name.strip_prefix("decoder.reader.layer.") else {
                    continue;
                };
                let (index, field) = rest
                    .split_once('.')
                    .ok_or_else(|| Error::Input(format!("unexpected reader variable `{name}`")))?;
                let index: i64 = index
                    .parse()
                    .map_err(|_| Error::Input(format!("unexpected reader variable `{name}`")))?;
                let source = format!("{encoder}.encoder.layer.{}.{field}", first + index);
                let src = vars.get(&source).ok_or_else(|| {
                    Error::Input(format!(
                        "no encoder variable `{source}` to copy into `{name}`"
                    ))
                })?;
                dst.shallow_clone().f_copy_(src)?;
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
}
