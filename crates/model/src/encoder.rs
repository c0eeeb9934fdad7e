//! The BERT encoder: embeddings and a stack of layers, keyed exactly as a Hugging Face
//! `BertModel` checkpoint (`embeddings.*`, `encoder.layer.{i}.*`).

use tch::{nn, Tensor};

use crate::attention::additive_mask;
use crate::embeddings::Embeddings;
use crate::layer::BertLayer;
use crate::{BertConfig, Error, Result};

/// A BERT encoder over tch.
#[derive(Debug)]
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<BertLayer>,
    config: BertConfig,
}

/// Output of an encoder forward pass.
#[derive(Debug)]
pub struct EncoderOutput {
    /// Last-layer token states, `[batch, seq, hidden]`.
    pub hidden: Tensor,
}

impl Bert {
    /// Creates the variables under `p`: `p/embeddings/…` and `p/encoder/layer/{i}/…`.
    pub fn new(p: &nn::Path<'_>, cfg: &BertConfig) -> Result<Self> {
        cfg.validate().map_err(|message| Error::Config {
            path: crate::config::memory_path(),
            message,
        })?;
        let layers_path = p / "encoder" / "layer";
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(&(&layers_path / i), cfg))
            .collect();
        Ok(Self {
            embeddings: Embeddings::new(&(p / "embeddings"), cfg)?,
            layers,
            config: cfg.clone(),
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

    /// `input_ids`, `attention_mask`: `[batch, seq]` (mask 1 = token, 0 = padding).
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<EncoderOutput> {
        if input_ids.size() != attention_mask.size() || input_ids.dim() != 2 {
            return Err(Error::Input(format!(
                "input_ids {:?} and attention_mask {:?} must both be [batch, seq]",
                input_ids.size(),
                attention_mask.size()
            )));
        }
        let mut hidden = self.embeddings.forward_t(input_ids, train)?;
        let mask = additive_mask(attention_mask, hidden.kind());
        for layer in &self.layers {
            hidden = layer.forward_t(&hidden, &mask, train);
        }
        Ok(EncoderOutput { hidden })
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
}
