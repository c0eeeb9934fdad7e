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

/// `cross_attention_init = "similarity"` with one normalised head: every fusion block starts
/// as token-similarity attention that adds nothing (zero output projection), so the local
/// layer's probabilities are `softmax(3·√384·cos(q_i, d_j))` over the document tokens, and a
/// query ranks the sentence that repeats its words first.
#[test]
fn similarity_cross_attention_starts_as_cosine_attention() -> Result<()> {
    let (dir, mut cfg) = minilm_with_two_decoder_layers_from_the_encoder()?;
    cfg.cross_attention_init = CrossAttentionInit::Similarity;
    cfg.cross_attention_heads = Some(1);
    cfg.cross_attention_normalize = true;
    cfg.local_layer = Some(6);
    let (model, _) = GearModel::from_bert_checkpoint(&dir, Some(cfg), Device::Cpu)?;
    let vars = model.var_store().variables();
    let eye = tch::Tensor::eye(384, (tch::Kind::Float, Device::Cpu));
    for i in 0..6 {
        let block = format!("query_encoder.encoder.layer.{i}.crossattention");
        let w = |n: &str| vars[&format!("{block}.{n}")].shallow_clone();
        assert!(w("self.query.weight").equal(&(&eye * 3.0)));
        assert!(w("self.key.weight").equal(&eye) && w("self.value.weight").equal(&eye));
        assert_eq!(
            w("self.query.bias")
                .abs()
                .sum(tch::Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert_eq!(
            w("output.dense.weight")
                .abs()
                .sum(tch::Kind::Float)
                .double_value(&[]),
            0.0
        );
        // One gain and one bias for the whole LayerNorm.
        let gain = w("output.LayerNorm.weight");
        assert!(gain.equal(&gain.get(0).expand([384], false)));
        assert!(gain.double_value(&[0]) > 0.1);
    }
    // The decoder's blocks stay random.
    assert!(!vars["decoder.bert.encoder.layer.0.crossattention.self.key.weight"].equal(&eye));

    let document = "The bridge was designed by a Scottish engineer in 1890. \
                    Bread and cheese are sold at the weekly market. \
                    The river floods every spring.";
    let units = gear_data::split_sentences(document);
    assert_eq!(units.len(), 3);
    for (query, want) in [
        ("cheese market", 1),
        ("who designed the bridge", 0),
        ("river floods", 2),
    ] {
        let ranking = model
            .locate(
                &gear_model::LocateQueries::pair(query, document, &units),
                &gear_model::LocateOptions::default(),
            )?
            .remove(0);
        assert_eq!(ranking.units[0].index, want, "{query}: {:?}", ranking.units);
    }
    Ok(())
}

/// MiniLM with two reader layers reading `input`, feeding a decoder that reads and copies the
/// passage and decodes spans.
fn minilm_with_two_reader_layers(
    input: gear_model::ReaderInput,
) -> Result<(std::path::PathBuf, GearConfig)> {
    let (dir, mut cfg) = minilm_with_two_decoder_layers_from_the_encoder()?;
    cfg.decoder.reader_layers = 2;
    cfg.decoder.reader_input = input;
    cfg.decoder.memory = gear_model::DecoderMemory::FusionAndDocument;
    cfg.decoder.copy = gear_model::CopyMode::LocalAttention;
    cfg.decoder.decoding = gear_model::Decoding::Span;
    Ok((dir, cfg))
}

/// `reader_layers = 2`: the reader layers start as the document encoder's last two layers, and a
/// saved model keeps them (and answers the same after loading).
#[test]
fn reader_layers_start_as_the_document_encoders_top_and_are_saved() -> Result<()> {
    let (dir, cfg) = minilm_with_two_reader_layers(gear_model::ReaderInput::Top)?;
    let (model, report) = GearModel::from_bert_checkpoint(&dir, Some(cfg), Device::Cpu)?;
    let vars = model.var_store().variables();
    let mut copied = 0;
    for (name, value) in &vars {
        let Some(rest) = name.strip_prefix("decoder.reader.layer.") else {
            continue;
        };
        let (i, field) = rest.split_once('.').unwrap();
        let source = format!(
            "document_encoder.encoder.layer.{}.{field}",
            4 + i.parse::<usize>()?
        );
        assert!(value.equal(&vars[&source]), "{name} is not {source}");
        assert!(report.created.contains(name), "{name} counts as new");
        copied += 1;
    }
    // 16 tensors per plain BERT layer (attention 10, feed-forward 6).
    assert_eq!(copied, 2 * 16);

    let question = ["where is the eiffel tower"];
    let passage = ["The Eiffel Tower is a lattice tower in Paris, France. It was built in 1889."];
    let options = gear_model::GenerationOptions::default();
    let before = model.generate_located(&question, &passage, &options)?;
    let tmp = tempfile::tempdir()?;
    model.save(tmp.path().join("m"))?;
    let loaded = GearModel::load(tmp.path().join("m"), Device::Cpu)?;
    assert_eq!(loaded.config().decoder.reader_layers, 2);
    assert!(before[0].span.is_some(), "span decoding returns a place");
    assert_eq!(
        loaded.generate_located(&question, &passage, &options)?,
        before
    );
    Ok(())
}

/// `reader_input = "below"`: the reader layers continue the document encoder from layer
/// `L − N`. With the question masked out they are exactly the encoder's top, so the passage
/// states they return are the document encoder's output; with the question they differ (every
/// passage token reads it). Reading the top instead runs the top layers twice.
#[test]
fn reader_layers_below_continue_the_document_encoder() -> Result<()> {
    let (dir, mut cfg) = minilm_with_two_reader_layers(gear_model::ReaderInput::Below)?;
    let (model, _) = GearModel::from_bert_checkpoint(&dir, Some(cfg.clone()), Device::Cpu)?;
    let q = model.encode_query_texts(&["where is the eiffel tower"])?;
    let d = model.encode_document_texts(&[
        "The Eiffel Tower is a lattice tower in Paris, France. It was built in 1889.",
    ])?;
    let passage_states = |model: &GearModel, question_mask: &tch::Tensor| {
        tch::no_grad(|| -> Result<tch::Tensor> {
            let (states, below) = model.document_reading_states_t(&d.ids, &d.mask, false)?;
            let fused = model.fuse_t(
                &q.ids,
                &q.mask,
                gear_model::Context {
                    states: &states,
                    mask: &d.mask,
                },
                model.fusion_options_for_reading(false),
                false,
            )?;
            let keep = gear_model::keep_mask(&q.batch, Device::Cpu);
            let copyable = gear_model::keep_mask(&d.batch, Device::Cpu);
            let x = gear_model::ReaderInputs {
                fused: &fused,
                query_mask: question_mask,
                query_keep: &keep,
                document_ids: &d.ids,
                document_mask: &d.mask,
                document_copyable: &copyable,
                document_states: &states,
                document_below: below.as_ref(),
                copy_region: None,
            };
            let read = model.read_passage_t(&x, false)?;
            Ok((read - states).abs().max())
        })
    };
    let alone = passage_states(&model, &q.mask.zeros_like())?.double_value(&[]);
    assert!(alone < 1e-4, "the passage alone differs by {alone}");
    let with_question = passage_states(&model, &q.mask)?.double_value(&[]);
    assert!(
        with_question > 1e-2,
        "the question changed nothing ({with_question})"
    );
    let tmp = tempfile::tempdir()?;
    model.save(tmp.path().join("m"))?;
    let loaded = GearModel::load(tmp.path().join("m"), Device::Cpu)?;
    assert_eq!(
        loaded.config().decoder.reader_input,
        gear_model::ReaderInput::Below
    );

    cfg.decoder.reader_input = gear_model::ReaderInput::Top;
    let (top, _) = GearModel::from_bert_checkpoint(&dir, Some(cfg), Device::Cpu)?;
    let twice = passage_states(&top, &q.mask.zeros_like())?.double_value(&[]);
    assert!(
        twice > 1e-2,
        "reading the top runs the top layers again ({twice})"
    );
    Ok(())
}
