//! The GeAR network on a tiny random configuration: every inference path's invariants.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use anyhow::Result;
use gear_data::{Span, Tokenizer};
use gear_model::{
    Context, CrossProbs, FusionOptions, GearConfig, GearModel, GenerationOptions, LocateOptions,
    LocateQueries, Search, UnitAggregation,
};
use tch::{Device, Kind, Tensor};

const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "river", "flows", "north", "into", "sea", "a",
    "bridge", "crosses", "it", "near", "town", "old", "mill", "stands", "by", "water", "where",
    "does", "go", "what", "is", ".", ",", "?", "##s", "boats", "sail", "on", "summer", "in",
];

fn tokenizer() -> Tokenizer {
    Tokenizer::from_vocab(VOCAB, 32).expect("valid vocabulary")
}

fn config() -> GearConfig {
    let mut cfg = GearConfig::for_encoder(gear_model::BertConfig::tiny(VOCAB.len() as i64));
    cfg.max_query_len = 12;
    cfg.max_document_len = 40;
    cfg.max_target_len = 12;
    cfg
}

/// A seeded random model. libtorch's generator is global and tests run on parallel threads, so
/// seeding and initialising happen under one lock: the same seed always gives the same weights.
fn model(seed: i64) -> GearModel {
    seeded(seed, config())
}

fn seeded(seed: i64, config: GearConfig) -> GearModel {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed);
    GearModel::new(config, tokenizer(), Device::Cpu).expect("valid model")
}

const DOC: &str = "The river flows north into the sea. A bridge crosses it near the town. \
                   The old mill stands by the water.";
const DOC_UNITS: [Span; 3] = [
    Span { start: 0, end: 35 },
    Span { start: 36, end: 71 },
    Span {
        start: 72,
        end: 105,
    },
];

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn var_store_keys_follow_bert_and_blip_names() {
    let m = model(1);
    let vars = m.var_store().variables();
    for key in [
        "query_encoder.embeddings.word_embeddings.weight",
        "query_encoder.encoder.layer.1.crossattention.self.key.weight",
        "query_encoder.encoder.layer.0.crossattention.output.LayerNorm.bias",
        "document_encoder.encoder.layer.1.output.dense.weight",
        "decoder.bert.embeddings.word_embeddings.weight",
        "decoder.bert.encoder.layer.0.crossattention.self.query.weight",
        "decoder.cls.predictions.transform.dense.weight",
        "decoder.cls.predictions.transform.LayerNorm.weight",
        "decoder.cls.predictions.bias",
    ] {
        assert!(vars.contains_key(key), "missing {key}");
    }
    assert!(!vars
        .keys()
        .any(|k| k.starts_with("document_encoder.") && k.contains("crossattention")));
    // The decoder's vocabulary has one more token: [Decode].
    assert_eq!(
        vars["decoder.cls.predictions.bias"].size(),
        [VOCAB.len() as i64 + 1]
    );
}

#[test]
fn every_path_is_padding_invariant() -> Result<()> {
    let m = model(2);
    let queries = ["where does the river go ?", "old mill"];
    let docs = [DOC, "boats sail on the sea in summer ."];
    let targets = ["the river flows north", "a bridge"];
    tch::no_grad(|| -> Result<()> {
        let q = m.encode_query_texts(&queries)?;
        let d = m.encode_document_texts(&docs)?;
        let t = m.encode_target_texts(&targets)?;
        let q_batch = m.encode_queries_t(&q.ids, &q.mask, false)?;
        let d_states = m.document_states_t(&d.ids, &d.mask, false)?;
        let d_batch = m.encode_documents_t(&d.ids, &d.mask, false)?;
        let opts = FusionOptions {
            cross_probs: CrossProbs::All,
            ..FusionOptions::default()
        };
        let fused = m.fuse_t(
            &q.ids,
            &q.mask,
            Context {
                states: &d_states,
                mask: &d.mask,
            },
            opts,
            false,
        )?;
        let logits = m.decoder_logits_t(
            &t.ids,
            &t.mask,
            Context {
                states: &fused.hidden,
                mask: &q.mask,
            },
            false,
        )?;

        // Row 1 alone: its real tokens must see the same values.
        let q1 = m.encode_query_texts(&queries[1..])?;
        let d1 = m.encode_document_texts(&docs[1..])?;
        let t1 = m.encode_target_texts(&targets[1..])?;
        let (ql, dl, tl) = (q1.ids.size()[1], d1.ids.size()[1], t1.ids.size()[1]);
        assert!(
            ql < q.ids.size()[1] && dl < d.ids.size()[1] && tl < t.ids.size()[1],
            "row 1 must be padded"
        );
        let q_alone = m.encode_queries_t(&q1.ids, &q1.mask, false)?;
        let d_states1 = m.document_states_t(&d1.ids, &d1.mask, false)?;
        let d_alone = m.encode_documents_t(&d1.ids, &d1.mask, false)?;
        let fused1 = m.fuse_t(
            &q1.ids,
            &q1.mask,
            Context {
                states: &d_states1,
                mask: &d1.mask,
            },
            opts,
            false,
        )?;
        let logits1 = m.decoder_logits_t(
            &t1.ids,
            &t1.mask,
            Context {
                states: &fused1.hidden,
                mask: &q1.mask,
            },
            false,
        )?;

        assert!(max_diff(&q_batch.get(1), &q_alone.get(0)) < 1e-5);
        assert!(max_diff(&d_batch.get(1), &d_alone.get(0)) < 1e-5);
        assert!(max_diff(&fused.hidden.get(1).narrow(0, 0, ql), &fused1.hidden.get(0)) < 1e-5);
        for layer in 1..=2 {
            let p = fused.cross_attention(layer).expect("kept");
            let p1 = fused1.cross_attention(layer).expect("kept");
            let padded = p.get(1).narrow(1, 0, ql).narrow(2, 0, dl);
            assert!(max_diff(&padded, &p1.get(0)) < 1e-5);
        }
        assert!(max_diff(&logits.get(1).narrow(0, 0, tl), &logits1.get(0)) < 1e-4);
        Ok(())
    })?;

    let opts = LocateOptions {
        top_tokens: 5,
        ..LocateOptions::default()
    };
    let other_units = [Span::new(0, 33)];
    let mut pairs = LocateQueries::default();
    pairs
        .push_pair(queries[0], docs[0], &DOC_UNITS)
        .push_pair(queries[1], docs[1], &other_units);
    let both = m.locate(&pairs, &opts)?;
    let alone = locate_one(&m, queries[1], docs[1], &other_units, &opts)?;
    assert_eq!(both[1].units.len(), 1);
    assert!((both[1].units[0].score - alone.units[0].score).abs() < 1e-5);
    assert_eq!(
        both[1]
            .top_tokens
            .iter()
            .map(|t| t.position)
            .collect::<Vec<_>>(),
        alone
            .top_tokens
            .iter()
            .map(|t| t.position)
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn decoder_is_causal() -> Result<()> {
    let m = model(3);
    let q = m.encode_query_texts(&["where does the river go"])?;
    let d = m.encode_document_texts(&[DOC])?;
    tch::no_grad(|| -> Result<()> {
        let states = m.document_states_t(&d.ids, &d.mask, false)?;
        let fused = m.fuse_t(
            &q.ids,
            &q.mask,
            Context {
                states: &states,
                mask: &d.mask,
            },
            FusionOptions::default(),
            false,
        )?;
        let memory = Context {
            states: &fused.hidden,
            mask: &q.mask,
        };
        let a = m.encode_target_texts(&["the river flows north into the sea"])?;
        let b = a.ids.copy();
        let _ = b.get(0).get(5).fill_(20); // change a later target token
        let la = m.decoder_logits_t(&a.ids, &a.mask, memory, false)?;
        let lb = m.decoder_logits_t(&b, &a.mask, memory, false)?;
        assert!(
            max_diff(&la.narrow(1, 0, 5), &lb.narrow(1, 0, 5)) == 0.0,
            "earlier positions changed"
        );
        assert!(
            max_diff(&la.narrow(1, 5, 1), &lb.narrow(1, 5, 1)) > 0.0,
            "the changed position must differ"
        );
        Ok(())
    })
}

#[test]
fn kv_cache_generation_matches_full_recomputation() -> Result<()> {
    let m = model(4);
    let queries = ["where does the river go", "old mill"];
    let docs = [DOC, DOC];
    for search in [
        Search::Greedy,
        Search::Beam {
            width: 3,
            length_penalty: 1.0,
        },
    ] {
        let with = GenerationOptions {
            max_len: 8,
            search,
            use_cache: true,
            decoding: None,
        };
        let without = GenerationOptions {
            use_cache: false,
            ..with
        };
        let a = m.generate(&queries, &docs, &with)?;
        let b = m.generate(&queries, &docs, &without)?;
        assert_eq!(a, b, "{search:?}");
        assert!(
            a.iter().any(|s| !s.is_empty()),
            "an untrained decoder still emits tokens"
        );
    }
    Ok(())
}

#[test]
fn evaluation_forwards_are_deterministic() -> Result<()> {
    let m = model(5);
    let a = m.embed_queries(&["river", "the old mill"])?;
    let b = m.embed_queries(&["river", "the old mill"])?;
    assert!(a.equal(&b));
    let opts = LocateOptions::default();
    assert_eq!(
        locate_one(&m, "old mill", DOC, &DOC_UNITS, &opts)?,
        locate_one(&m, "old mill", DOC, &DOC_UNITS, &opts)?
    );
    Ok(())
}

#[test]
fn locate_ranks_every_unit_by_the_scorers_scores() -> Result<()> {
    let m = model(6);
    for aggregation in [UnitAggregation::Sum, UnitAggregation::Mean] {
        let opts = LocateOptions {
            layer: Some(1),
            aggregation,
            top_tokens: 10,
        };
        let r = locate_one(&m, "the old mill", DOC, &DOC_UNITS, &opts)?;
        assert_eq!(r.units.len(), 3);
        assert!(r.units.windows(2).all(|w| w[0].score >= w[1].score));
        let mut seen: Vec<usize> = r.units.iter().map(|u| u.index).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
        assert!(r.units.iter().all(|u| u.tokens > 0));
        assert_eq!(r.top_tokens.len(), 10);
        if aggregation == UnitAggregation::Sum {
            // All non-special document tokens are in some unit, so the mass sums to ≤ 1.
            let total: f32 = r.units.iter().map(|u| u.score).sum();
            assert!(total > 0.0 && total <= 1.0 + 1e-5, "{total}");
        }
    }
    assert!(locate_one(
        &m,
        "x",
        DOC,
        &DOC_UNITS,
        &LocateOptions {
            layer: Some(3),
            ..LocateOptions::default()
        }
    )
    .is_err());
    Ok(())
}

#[test]
fn save_then_load_gives_identical_outputs() -> Result<()> {
    let m = model(7);
    let dir = tempfile::tempdir()?;
    let ckpt = dir.path().join("ckpt");
    m.save(&ckpt)?;
    m.save(&ckpt)?; // overwriting an existing checkpoint is atomic too
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, ["ckpt"]);
    let back = GearModel::load(&ckpt, Device::Cpu)?;
    assert_eq!(back.config(), m.config());
    assert!(m
        .embed_documents(&[DOC])?
        .equal(&back.embed_documents(&[DOC])?));
    let opts = LocateOptions {
        top_tokens: 3,
        ..LocateOptions::default()
    };
    assert_eq!(
        locate_one(&m, "mill", DOC, &DOC_UNITS, &opts)?,
        locate_one(&back, "mill", DOC, &DOC_UNITS, &opts)?
    );
    let g = GenerationOptions::default();
    assert_eq!(
        m.generate(&["mill"], &[DOC], &g)?,
        back.generate(&["mill"], &[DOC], &g)?
    );
    Ok(())
}

#[test]
fn loading_a_damaged_checkpoint_names_the_tensor() -> Result<()> {
    let m = model(8);
    let dir = tempfile::tempdir()?;
    let ckpt = dir.path().join("ckpt");
    m.save(&ckpt)?;
    // Drop one tensor and reshape another by rewriting the weights through a smaller model.
    let mut cfg = config();
    cfg.decoder.num_hidden_layers = 1;
    let smaller = seeded(0, cfg);
    gear_model::save_safetensors(smaller.var_store(), ckpt.join("model.safetensors"))?;
    let err = GearModel::load(&ckpt, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("decoder.bert.encoder.layer.1."), "{err}");

    let mut cfg = config();
    cfg.encoder.intermediate_size = 48;
    cfg.decoder.intermediate_size = 48;
    let other = GearModel::new(cfg, tokenizer(), Device::Cpu)?;
    gear_model::save_safetensors(other.var_store(), ckpt.join("model.safetensors"))?;
    let err = GearModel::load(&ckpt, Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("intermediate.dense") && err.contains("48") && err.contains("64"),
        "{err}"
    );
    Ok(())
}

#[test]
fn shared_encoders_have_no_document_encoder() -> Result<()> {
    let mut cfg = config();
    cfg.share_encoders = true;
    let m = GearModel::new(cfg, tokenizer(), Device::Cpu)?;
    assert!(!m
        .var_store()
        .variables()
        .keys()
        .any(|k| k.starts_with("document_encoder.")));
    let q = m.embed_queries(&["the river"])?;
    let d = m.embed_documents(&["the river"])?;
    assert!(max_diff(&q, &d) < 1e-6);
    assert_eq!(q.kind(), Kind::Float);
    Ok(())
}

/// Many queries against one document (its states computed once, shared as a view) rank
/// exactly as the same queries do pair by pair, scores included.
#[test]
fn locate_against_one_document_equals_pair_by_pair() -> Result<()> {
    let m = model(8);
    let queries = ["the old mill", "where does the river go ?", "bridge"];
    let opts = LocateOptions {
        layer: Some(2),
        top_tokens: 5,
        ..LocateOptions::default()
    };
    let many = m.locate(&LocateQueries::against(&queries, DOC, &DOC_UNITS), &opts)?;
    let mut pairs = LocateQueries::default();
    for q in queries {
        pairs.push_pair(q, DOC, &DOC_UNITS);
    }
    let batch = m.locate(&pairs, &opts)?;
    assert_eq!(many.len(), 3);
    for (a, b) in many.iter().zip(&batch) {
        assert_eq!(
            a.units.iter().map(|u| u.index).collect::<Vec<_>>(),
            b.units.iter().map(|u| u.index).collect::<Vec<_>>()
        );
        for (x, y) in a.units.iter().zip(&b.units) {
            assert!((x.score - y.score).abs() < 1e-5, "{x:?} vs {y:?}");
        }
        assert_eq!(
            a.top_tokens.iter().map(|t| t.position).collect::<Vec<_>>(),
            b.top_tokens.iter().map(|t| t.position).collect::<Vec<_>>()
        );
    }
    assert!(m
        .locate(&LocateQueries::against(&[], DOC, &DOC_UNITS), &opts)?
        .is_empty());
    Ok(())
}

/// Documents of different lengths in one padded batch, shared by several queries, rank exactly
/// as each pair alone does, scores included; a query pointing past the documents is an error.
#[test]
fn locate_shared_documents_equals_each_pair_alone() -> Result<()> {
    let m = model(8);
    let short = "The mill stands by the river. It is old.";
    let short_units = gear_data::split_sentences(short);
    let docs = [DOC, short];
    let units: [&[Span]; 2] = [&DOC_UNITS, &short_units];
    let queries = [
        "the old mill",
        "where does the river go ?",
        "bridge",
        "old river mill",
    ];
    let document_of = [0, 1, 0, 1];
    let opts = LocateOptions {
        layer: Some(2),
        top_tokens: 5,
        ..LocateOptions::default()
    };
    let mut request = LocateQueries::default();
    let rows = [
        request.document(docs[0], units[0]),
        request.document(docs[1], units[1]),
    ];
    for (q, &r) in queries.iter().zip(&document_of) {
        request.query(q, rows[r]);
    }
    let grouped = m.locate(&request, &opts)?;
    assert_eq!(grouped.len(), 4);
    for (i, g) in grouped.iter().enumerate() {
        let r = document_of[i];
        let a = &locate_one(&m, queries[i], docs[r], units[r], &opts)?;
        assert_eq!(
            g.units.iter().map(|u| u.index).collect::<Vec<_>>(),
            a.units.iter().map(|u| u.index).collect::<Vec<_>>(),
            "query {i}"
        );
        for (x, y) in g.units.iter().zip(&a.units) {
            assert!(
                (x.score - y.score).abs() < 1e-5,
                "query {i}: {x:?} vs {y:?}"
            );
        }
        assert_eq!(
            g.top_tokens.iter().map(|t| t.position).collect::<Vec<_>>(),
            a.top_tokens.iter().map(|t| t.position).collect::<Vec<_>>()
        );
    }
    request.query("bridge", 2);
    let err = m.locate(&request, &opts).unwrap_err().to_string();
    assert!(err.contains("document row 2"), "{err}");
    Ok(())
}

/// One (query, document) pair through [`GearModel::locate`].
fn locate_one(
    m: &GearModel,
    query: &str,
    doc: &str,
    units: &[Span],
    opts: &LocateOptions,
) -> gear_model::Result<gear_model::LocalRanking> {
    Ok(m.locate(&LocateQueries::pair(query, doc, units), opts)?
        .remove(0))
}
