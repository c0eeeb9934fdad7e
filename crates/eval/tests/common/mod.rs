//! What the evaluation tests share: a tiny random GeAR over a word-level vocabulary.

use gear_data::Tokenizer;
use gear_model::{BertConfig, GearConfig, GearModel};
use tch::Device;

/// A tiny random GeAR (seed 5) whose vocabulary covers the words of `texts`, reading
/// `max_document_len` document and `max_query_len` query tokens.
pub fn tiny_gear<S: AsRef<str>>(
    texts: &[S],
    max_document_len: usize,
    max_query_len: usize,
) -> GearModel {
    let tok = Tokenizer::word_level(texts, 512).unwrap();
    let mut enc = BertConfig::tiny(tok.vocab_size() as i64);
    enc.max_position_embeddings = 512;
    let mut cfg = GearConfig::for_encoder(enc);
    cfg.max_document_len = max_document_len;
    cfg.max_query_len = max_query_len;
    tch::manual_seed(5);
    GearModel::new(cfg, tok, Device::Cpu).unwrap()
}
