//! The BERT encoder: embeddings and a stack of layers, keyed exactly as a Hugging Face
//! `BertModel` checkpoint (`embeddings.*`, `encoder.layer.{i}.*`). Built with cross-attention
//! blocks it is also GeAR's fusion encoder (BLIP's text encoder in "multimodal" mode).
//!
//! The same struct runs MPNet ([`crate::ModelType::Mpnet`], Hugging Face's `MPNetModel`): its
//! embeddings (see [`Embeddings`]) and a learned relative-position bias
//! (`encoder.relative_attention_bias`, `[buckets, heads]`) added to every layer's self-attention
//! logits; [`mpnet_checkpoint_key`] maps our (BERT) variable names to its checkpoint names.
//!
//! Mirrors [`BertEncoder`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L422) and MPNet's
//! [`compute_position_bias`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/mpnet/modeling_mpnet.py#L311); the fusion mode is BLIP's
//! [`BertModel.forward`](https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/med.py#L670) with `encoder_hidden_states`. The forward runs in a
//! `bert.encoder` span (trace level).

use tch::{nn, Kind, Tensor};

use crate::bert::attention::{additive_mask, CrossAttentionShape};
use crate::bert::embeddings::Embeddings;
use crate::bert::layer::{BertLayer, CrossInput};
use crate::{BertConfig, Error, Result};

/// A BERT (or MPNet) encoder over tch.
#[derive(Debug)]
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<BertLayer>,
    /// MPNet's relative-position bias, `[buckets, heads]`.
    relative_attention_bias: Option<nn::Embedding>,
    config: BertConfig,
}

/// The checkpoint key of variable `name` in an MPNet checkpoint: MPNet names its self-attention
/// `attention.attn.{q,k,v,o}` and the block's LayerNorm `attention.LayerNorm` where BERT has
/// `attention.self.{query,key,value}`, `attention.output.{dense,LayerNorm}`; everything else
/// (embeddings, feed-forward, `encoder.relative_attention_bias`) has the same name. Cross-attention
/// blocks (`crossattention.*`, GeAR's own) keep their names.
pub fn mpnet_checkpoint_key(name: &str) -> String {
    const RENAMES: [(&str, &str); 5] = [
        (".attention.self.query.", ".attention.attn.q."),
        (".attention.self.key.", ".attention.attn.k."),
        (".attention.self.value.", ".attention.attn.v."),
        (".attention.output.dense.", ".attention.attn.o."),
        (".attention.output.LayerNorm.", ".attention.LayerNorm."),
    ];
    for (ours, theirs) in RENAMES {
        if let Some(at) = name.find(ours) {
            return format!("{}{theirs}{}", &name[..at], &name[at + ours.len()..]);
        }
    }
    name.to_owned()
}

/// MPNet's (T5's) bidirectional relative-position buckets for a `len × len` attention, `[len,
/// len]` int64: half the buckets for each direction, exact below a quarter of them, logarithmic up
/// to a distance of 128 — computed with the same tensor operations as Hugging Face's
/// `MPNetEncoder.relative_position_bucket`, so the float rounding at bucket edges is the same.
fn relative_position_buckets(len: i64, num_buckets: i64, device: tch::Device) -> Tensor {
    const MAX_DISTANCE: f64 = 128.0;
    let positions = Tensor::arange(len, (Kind::Int64, device));
    // memory − context, then n = −(memory − context).
    let relative = positions.unsqueeze(0) - positions.unsqueeze(1);
    let n = -relative;
    let half = num_buckets / 2;
    let ret = n.lt(0).to_kind(Kind::Int64) * half;
    let n = n.abs();
    let max_exact = half / 2;
    let is_small = n.lt(max_exact);
    let large = (n.to_kind(Kind::Float) / max_exact as f64).log()
        / (MAX_DISTANCE / max_exact as f64).ln()
        * (half - max_exact) as f64;
    let large = (large.to_kind(Kind::Int64) + max_exact).clamp_max(half - 1);
    ret + n.where_self(&is_small, &large)
}

/// States another encoder produced, attended to by cross-attention.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Token states `[batch, ctx_len, width]`.
    pub states: &'a Tensor,
    /// 0/1 mask `[batch, ctx_len]`; padding gets no attention.
    pub mask: &'a Tensor,
}

/// Which layers' cross-attention probabilities a forward keeps. Keeping them means computing
/// those blocks' attention explicitly instead of with the fused kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrossProbs {
    /// None.
    #[default]
    None,
    /// Every layer's.
    All,
    /// One layer's, 1-based.
    Layer(usize),
}

/// Options of [`Bert::forward_fused_t`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FusionOptions {
    /// Run only the first `n` layers (local retrieval stops at its layer); `None`: all.
    pub layers: Option<usize>,
    /// Which cross-attention probabilities to return.
    pub cross_probs: CrossProbs,
    /// Also return the token states after this layer (1-based, at most the layers run).
    pub keep_hidden: Option<usize>,
}

/// Output of an encoder forward pass.
#[derive(Debug)]
pub struct EncoderOutput {
    /// Token states after the last layer run, `[batch, seq, hidden]`.
    pub hidden: Tensor,
    /// Per layer run (0-based index), the cross-attention probabilities
    /// `[batch, heads, q_len, ctx_len]` when kept.
    pub cross_attentions: Vec<Option<Tensor>>,
    /// The token states after [`FusionOptions::keep_hidden`]'s layer, when asked for.
    pub kept: Option<Tensor>,
}

impl EncoderOutput {
    /// Cross-attention probabilities of `layer` (1-based), if kept.
    pub fn cross_attention(&self, layer: usize) -> Option<&Tensor> {
        layer
            .checked_sub(1)
            .and_then(|i| self.cross_attentions.get(i))
            .and_then(Option::as_ref)
    }
}

impl Bert {
    /// A plain encoder under `p`: `p/embeddings/…` and `p/encoder/layer/{i}/…`.
    pub fn new(p: &nn::Path<'_>, cfg: &BertConfig) -> Result<Self> {
        Self::build(p, cfg, None)
    }

    /// An encoder whose every layer also has a cross-attention block of shape `cross`
    /// (`p/encoder/layer/{i}/crossattention/…`).
    pub fn with_cross_attention(
        p: &nn::Path<'_>,
        cfg: &BertConfig,
        cross: CrossAttentionShape,
    ) -> Result<Self> {
        if cross.heads <= 0 || cfg.hidden_size % cross.heads != 0 {
            return Err(Error::Config {
                path: crate::bert::config::memory_path(),
                message: format!(
                    "cross-attention heads ({}) must divide the hidden size ({})",
                    cross.heads, cfg.hidden_size
                ),
            });
        }
        Self::build(p, cfg, Some(cross))
    }

    fn build(
        p: &nn::Path<'_>,
        cfg: &BertConfig,
        cross: Option<CrossAttentionShape>,
    ) -> Result<Self> {
        cfg.validate().map_err(|message| Error::Config {
            path: crate::bert::config::memory_path(),
            message,
        })?;
        let layers_path = p / "encoder" / "layer";
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let lp = &layers_path / i;
                match cross {
                    Some(c) => BertLayer::with_cross_attention(&lp, cfg, c),
                    None => BertLayer::new(&lp, cfg),
                }
            })
            .collect();
        let relative_attention_bias = (cfg.model_type == crate::ModelType::Mpnet).then(|| {
            crate::bert::init::embedding_of_width(
                &(p / "encoder" / "relative_attention_bias"),
                cfg.relative_attention_num_buckets,
                cfg.num_attention_heads,
                cfg,
            )
        });
        Ok(Self {
            embeddings: Embeddings::new(&(p / "embeddings"), cfg)?,
            layers,
            relative_attention_bias,
            config: cfg.clone(),
        })
    }

    /// MPNet's relative-position bias for a `len`-token input, `[1, heads, len, len]`; `None`
    /// for BERT.
    fn position_bias(&self, len: i64, device: tch::Device) -> Option<Tensor> {
        self.relative_attention_bias.as_ref().map(|bias| {
            relative_position_buckets(len, self.config.relative_attention_num_buckets, device)
                .apply(bias)
                .permute([2, 0, 1])
                .unsqueeze(0)
        })
    }

    /// The configuration this encoder was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The transformer layers, in order.
    pub fn layers(&self) -> &[BertLayer] {
        &self.layers
    }

    /// The input embeddings.
    pub fn embeddings(&self) -> &Embeddings {
        &self.embeddings
    }

    /// Plain encoding — cross-attention blocks, if any, are skipped.
    /// `input_ids`, `attention_mask`: `[batch, seq]` (mask 1 = token, 0 = padding).
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<EncoderOutput> {
        self.forward_fused_t(
            input_ids,
            attention_mask,
            None,
            FusionOptions::default(),
            train,
        )
    }

    /// Encoding with cross-attention to `context` in every layer that has the block (the fusion
    /// encoder). With `context = None` this is exactly [`Bert::forward_t`].
    pub fn forward_fused_t(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        context: Option<Context<'_>>,
        options: FusionOptions,
        train: bool,
    ) -> Result<EncoderOutput> {
        let _span = tracing::trace_span!("bert.encoder").entered();
        if input_ids.size() != attention_mask.size() || input_ids.dim() != 2 {
            return Err(Error::Input(format!(
                "input_ids {:?} and attention_mask {:?} must both be [batch, seq]",
                input_ids.size(),
                attention_mask.size()
            )));
        }
        let n_layers = options.layers.unwrap_or(self.layers.len());
        if n_layers == 0 || n_layers > self.layers.len() {
            return Err(Error::Input(format!(
                "cannot run {n_layers} layers of a {}-layer encoder",
                self.layers.len()
            )));
        }
        if options.keep_hidden.is_some_and(|k| k == 0 || k > n_layers) {
            return Err(Error::Input(format!(
                "cannot keep the states of layer {:?} when running {n_layers} layers",
                options.keep_hidden
            )));
        }
        if let Some(ctx) = &context {
            let (s, m) = (ctx.states.size(), ctx.mask.size());
            if s.len() != 3
                || m.len() != 2
                || s[0] != m[0]
                || s[1] != m[1]
                || s[0] != input_ids.size()[0]
            {
                return Err(Error::Input(format!(
                    "context states {s:?} / mask {m:?} must be [batch, ctx_len, width] / [batch, ctx_len] with the inputs' batch"
                )));
            }
        }
        let mut hidden = self.embeddings.forward_t(input_ids, train)?;
        let padding = additive_mask(attention_mask, hidden.kind());
        // MPNet: [batch, 1, 1, len] + [1, heads, len, len] — the bias joins the padding mask (a
        // new tensor: an in-place add cannot broadcast `padding` up to the bias's shape).
        let mask = match self.position_bias(input_ids.size()[1], hidden.device()) {
            Some(bias) => &padding + bias.to_kind(hidden.kind()),
            None => padding,
        };
        let ctx_mask = context.map(|c| additive_mask(c.mask, hidden.kind()));
        let mut cross_attentions = Vec::with_capacity(n_layers);
        let mut kept = None;
        for (i, layer) in self.layers.iter().take(n_layers).enumerate() {
            let kv = match &context {
                Some(c) => layer.cross_keys_values(c.states),
                None => None,
            };
            let keep_probs = match options.cross_probs {
                CrossProbs::None => false,
                CrossProbs::All => true,
                CrossProbs::Layer(l) => l == i + 1,
            };
            let cross = match (&kv, &ctx_mask) {
                (Some(kv), Some(mask)) => Some(CrossInput {
                    kv,
                    mask,
                    keep_probs,
                }),
                _ => None,
            };
            let out = layer.forward_t(&hidden, &mask, cross, train);
            hidden = out.hidden;
            cross_attentions.push(out.cross_probs);
            if options.keep_hidden == Some(i + 1) {
                kept = Some(hidden.shallow_clone());
            }
        }
        Ok(EncoderOutput {
            hidden,
            cross_attentions,
            kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    fn tiny() -> (VarStore, Bert) {
        tch::manual_seed(7);
        let vs = VarStore::new(Device::Cpu);
        let bert = Bert::new(&vs.root(), &BertConfig::tiny(50)).unwrap();
        (vs, bert)
    }

    #[test]
    fn var_store_keys_follow_hugging_face_names() {
        let (vs, _) = tiny();
        let keys = vs.variables();
        for key in [
            "embeddings.word_embeddings.weight",
            "embeddings.LayerNorm.weight",
            "encoder.layer.1.attention.self.query.weight",
            "encoder.layer.1.attention.output.LayerNorm.bias",
            "encoder.layer.0.intermediate.dense.weight",
            "encoder.layer.0.output.dense.bias",
        ] {
            assert!(keys.contains_key(key), "missing {key}");
        }
        // 5 embedding tensors + 16 per layer.
        assert_eq!(keys.len(), 5 + 16 * 2);
    }

    #[test]
    fn padding_does_not_change_real_token_states() {
        let (_vs, bert) = tiny();
        let ids = Tensor::from_slice(&[2i64, 7, 9, 3]).view([1, 4]);
        let mask = Tensor::ones([1, 4], (Kind::Int64, Device::Cpu));
        let alone = bert.forward_t(&ids, &mask, false).unwrap().hidden;
        let padded_ids = Tensor::from_slice(&[2i64, 7, 9, 3, 0, 0, 2, 5, 6, 8, 11, 3]).view([2, 6]);
        let padded_mask = Tensor::from_slice(&[1i64, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]).view([2, 6]);
        let padded = bert
            .forward_t(&padded_ids, &padded_mask, false)
            .unwrap()
            .hidden;
        let diff = (alone.get(0) - padded.get(0).narrow(0, 0, 4))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn eval_is_deterministic_and_train_applies_dropout() {
        let (_vs, bert) = tiny();
        let ids = Tensor::from_slice(&[2i64, 7, 9, 3]).view([1, 4]);
        let mask = ids.ones_like();
        let a = bert.forward_t(&ids, &mask, false).unwrap().hidden;
        let b = bert.forward_t(&ids, &mask, false).unwrap().hidden;
        assert!(a.equal(&b));
        let t = bert.forward_t(&ids, &mask, true).unwrap().hidden;
        assert!(!a.equal(&t), "dropout should act in training mode");
    }

    #[test]
    fn too_long_and_misshaped_inputs_are_errors() {
        let (_vs, bert) = tiny();
        let ids = Tensor::zeros([1, 65], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            bert.forward_t(&ids, &ids.ones_like(), false),
            Err(Error::Input(_))
        ));
        let mask = Tensor::ones([1, 3], (Kind::Int64, Device::Cpu));
        let ids = Tensor::zeros([1, 4], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            bert.forward_t(&ids, &mask, false),
            Err(Error::Input(_))
        ));
    }

    fn fused() -> (VarStore, Bert) {
        tch::manual_seed(11);
        let vs = VarStore::new(Device::Cpu);
        let bert = Bert::with_cross_attention(
            &vs.root(),
            &BertConfig::tiny(50),
            crate::CrossAttentionShape::plain(&BertConfig::tiny(50), 32),
        )
        .unwrap();
        (vs, bert)
    }

    #[test]
    fn cross_attention_blocks_use_blip_key_names() {
        let (vs, _) = fused();
        let keys = vs.variables();
        assert!(keys.contains_key("encoder.layer.0.crossattention.self.query.weight"));
        assert!(keys.contains_key("encoder.layer.1.crossattention.output.LayerNorm.weight"));
        assert_eq!(keys.len(), 5 + 16 * 2 + 10 * 2);
    }

    #[test]
    fn fused_without_context_equals_plain_forward_bit_for_bit() {
        let (_vs, fused) = fused();
        let ids = Tensor::from_slice(&[2i64, 7, 9, 3, 2, 5, 3, 0]).view([2, 4]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 0]).view([2, 4]);
        let a = fused.forward_t(&ids, &mask, false).unwrap().hidden;
        let b = fused
            .forward_fused_t(&ids, &mask, None, FusionOptions::default(), false)
            .unwrap()
            .hidden;
        assert!(a.equal(&b));
    }

    #[test]
    fn cross_attention_rows_sum_to_one_and_skip_context_padding() {
        let (_vs, fused) = fused();
        let ids = Tensor::from_slice(&[2i64, 7, 9, 3]).view([1, 4]);
        let mask = ids.ones_like();
        let states = Tensor::randn([1, 6, 32], (Kind::Float, Device::Cpu));
        let ctx_mask = Tensor::from_slice(&[1i64, 1, 1, 1, 0, 0]).view([1, 6]);
        let ctx = Context {
            states: &states,
            mask: &ctx_mask,
        };
        let opts = FusionOptions {
            layers: None,
            cross_probs: CrossProbs::All,
            keep_hidden: None,
        };
        let out = fused
            .forward_fused_t(&ids, &mask, Some(ctx), opts, false)
            .unwrap();
        for layer in 1..=2 {
            let p = out.cross_attention(layer).unwrap();
            assert_eq!(p.size(), [1, 4, 4, 6]);
            let sums = p.sum_dim_intlist(-1, false, Kind::Float);
            assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
            assert_eq!(p.narrow(3, 4, 2).abs().max().double_value(&[]), 0.0);
        }
    }

    #[test]
    fn stopping_early_keeps_the_asked_layer_only() {
        let (_vs, fused) = fused();
        let ids = Tensor::from_slice(&[2i64, 7, 3]).view([1, 3]);
        let states = Tensor::randn([1, 5, 32], (Kind::Float, Device::Cpu));
        let ctx_mask = Tensor::ones([1, 5], (Kind::Int64, Device::Cpu));
        let ctx = Context {
            states: &states,
            mask: &ctx_mask,
        };
        let opts = FusionOptions {
            layers: Some(1),
            cross_probs: CrossProbs::Layer(1),
            keep_hidden: None,
        };
        let out = fused
            .forward_fused_t(&ids, &ids.ones_like(), Some(ctx), opts, false)
            .unwrap();
        assert_eq!(out.cross_attentions.len(), 1);
        assert!(out.cross_attention(1).is_some());
        let bad = FusionOptions {
            layers: Some(3),
            cross_probs: CrossProbs::None,
            keep_hidden: None,
        };
        assert!(fused
            .forward_fused_t(&ids, &ids.ones_like(), Some(ctx), bad, false)
            .is_err());
    }
}
