//! Initialising GeAR from the pretrained MiniLM checkpoint (installed by `cargo xtask setup`).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use anyhow::Result;
use gear_model::{
    pretrained, CrossAttentionInit, DecoderInit, EncoderOptions, GearConfig, GearModel,
    SentenceEncoder,
};
use tch::Device;

#[test]
fn init_from_bert_creates_exactly_the_new_parameters() -> Result<()> {
    let dir = pretrained::minilm_dir()?;
    let (model, report) = GearModel::from_bert_checkpoint(&dir, None, Device::Cpu)?;
    assert!(!report.created.is_empty());
    for name in &report.created {
        assert!(
            name.starts_with("decoder.") || name.contains(".crossattention."),
            "unexpected new parameter {name}"
        );
    }
    let vars = model.var_store().variables();
    let expected_new = vars
        .keys()
        .filter(|k| k.starts_with("decoder.") || k.contains(".crossattention."))
        .count();
    assert_eq!(report.created.len(), expected_new);
    assert_eq!(report.loaded.len() + report.created.len(), vars.len());
    assert_eq!(
        report.unused.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "embeddings.position_ids",
            "pooler.dense.bias",
            "pooler.dense.weight"
        ]
    );
    assert_eq!(model.config().local_layer(), 5, "layer 5 of 6 for MiniLM");

    // Both encoders start as the pretrained sentence encoder.
    let texts = ["where is the eiffel tower", "The Eiffel Tower is in Paris."];
    let reference = SentenceEncoder::load(&dir, &EncoderOptions::default())?.embed(&texts)?;
    let q = model.embed_queries(&texts)?;
    let d = model.embed_documents(&texts)?;
    assert!((q - &reference).abs().max().double_value(&[]) < 1e-5);
    assert!((d - &reference).abs().max().double_value(&[]) < 1e-5);
    Ok(())
}

/// The MiniLM folder and a GeAR config over it whose 2-layer decoder starts from the encoder.
fn minilm_with_two_decoder_layers_from_the_encoder() -> Result<(std::path::PathBuf, GearConfig)> {
    let dir = pretrained::minilm_dir()?;
    let mut cfg = GearConfig::for_encoder(gear_model::BertConfig::from_json_file(
        dir.join("config.json"),
    )?);
    cfg.decoder.num_hidden_layers = 2;
    cfg.decoder.init = DecoderInit::FromEncoder;
    Ok((dir, cfg))
}

#[test]
fn decoder_can_start_from_the_encoder() -> Result<()> {
    let (dir, cfg) = minilm_with_two_decoder_layers_from_the_encoder()?;
    let (model, _) = GearModel::from_bert_checkpoint(&dir, Some(cfg), Device::Cpu)?;
    let vars = model.var_store().variables();
    let same = |a: &str, b: &str| vars[a].equal(&vars[b]);
    assert!(same(
        "decoder.bert.encoder.layer.1.attention.self.query.weight",
        "query_encoder.encoder.layer.1.attention.self.query.weight"
    ));
    let dec = &vars["decoder.bert.embeddings.word_embeddings.weight"];
    let enc = &vars["query_encoder.embeddings.word_embeddings.weight"];
    assert_eq!(dec.size()[0], enc.size()[0] + 1);
    assert!(dec.narrow(0, 0, enc.size()[0]).equal(enc));
    assert!(!same(
        "decoder.bert.encoder.layer.0.crossattention.self.query.weight",
        "query_encoder.encoder.layer.0.crossattention.self.query.weight"
    ));
    Ok(())
}

#[test]
fn cross_attention_can_start_as_a_copy_of_self_attention() -> Result<()> {
    let (dir, mut cfg) = minilm_with_two_decoder_layers_from_the_encoder()?;
    cfg.cross_attention_init = CrossAttentionInit::SelfAttention;
    let (model, _) = GearModel::from_bert_checkpoint(&dir, Some(cfg.clone()), Device::Cpu)?;
    let vars = model.var_store().variables();
    let mut copied = 0;
    for (name, value) in &vars {
        if let Some((prefix, rest)) = name.split_once(".crossattention.") {
            let source = &vars[&format!("{prefix}.attention.{rest}")];
            assert!(
                value.equal(source),
                "{name} is not its layer's self-attention"
            );
            copied += 1;
        }
    }
    // 6 fusion layers + 2 decoder layers, 10 tensors per block (query, key, value and output
    // projections and the LayerNorm, weight and bias each).
    assert_eq!(copied, (6 + 2) * 10);
    // The pretrained (not the random) self-attention of the fusion encoder was copied.
    let raw = gear_model::read_tensors(dir.join("model.safetensors"))?;
    let pretrained_q = raw
        .iter()
        .find(|(n, _)| n == "encoder.layer.3.attention.self.query.weight")
        .map(|(_, t)| t)
        .expect("MiniLM has layer 3");
    assert!(
        vars["query_encoder.encoder.layer.3.crossattention.self.query.weight"].equal(pretrained_q)
    );

    // Saved and reloaded, the model keeps its (trained) weights whatever the init says.
    let tmp = tempfile::tempdir()?;
    model.save(tmp.path().join("m"))?;
    let loaded = GearModel::load(tmp.path().join("m"), Device::Cpu)?;
    assert_eq!(
        loaded.config().cross_attention_init,
        CrossAttentionInit::SelfAttention
    );
    Ok(())
}

#[test]
fn a_config_whose_encoder_differs_from_the_checkpoint_is_refused() -> Result<()> {
    let dir = pretrained::minilm_dir()?;
    let mut cfg = GearConfig::for_encoder(gear_model::BertConfig::from_json_file(
        dir.join("config.json"),
    )?);
    cfg.encoder.num_hidden_layers = 4;
    let err = GearModel::from_bert_checkpoint(&dir, Some(cfg), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    Ok(())
}
