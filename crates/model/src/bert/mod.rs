//! The transformer encoder stack, keyed as Hugging Face checkpoints so that pretrained weights
//! load by name: configuration, initialisation, embeddings, attention (self and cross), the
//! layer and the encoder. One implementation runs BERT and MPNet checkpoints, and — built with
//! cross-attention blocks — GeAR's fusion encoder and the decoder's layers.
//!
//! What each module mirrors (Hugging Face transformers v5.24.0, the version our parity tests
//! run against, and BLIP's `med.py`, which adds cross-attention to BERT's layer):
//!
//! | module | reference |
//! |---|---|
//! | `config` | `BertConfig` / `MPNetConfig` (`config.json` fields) |
//! | `embeddings` | [`BertEmbeddings`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L54), [`MPNetEmbeddings`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/mpnet/modeling_mpnet.py#L57) |
//! | `attention` | [`BertSelfAttention`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L140) + [`BertSelfOutput`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L283); cross-attention as BLIP's [`BertSelfAttention(is_cross_attention)`](https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/med.py#L97) |
//! | `layer` | [`BertLayer`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L356); with cross-attention, BLIP's [`BertLayer`](https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/med.py#L320) |
//! | `encoder` | [`BertEncoder`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L422); MPNet's relative-position bias [`MPNetEncoder.compute_position_bias`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/mpnet/modeling_mpnet.py#L311); BLIP's [`BertModel` in "multimodal" mode](https://github.com/salesforce/BLIP/blob/056a169437371659074aa2732649d5de3bffb4a8/models/med.py#L571) for the fusion encoder |
//! | `init` | [`BertPreTrainedModel._init_weights`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/bert/modeling_bert.py#L536) (normal(0, initializer_range), zero bias, unit LayerNorm) |
//!
//! Every forward runs inside a `tracing` span (`bert.embeddings`, `bert.attention`,
//! `bert.layer`, `bert.encoder`), at trace level, so `RUST_LOG=gear_model=trace` with a
//! span-timing subscriber shows where a forward spends its time.

pub(crate) mod attention;
pub(crate) mod config;
pub(crate) mod embeddings;
pub(crate) mod encoder;
pub(crate) mod init;
pub(crate) mod layer;
