//! Every model module forwards inside its `tracing` span. Its own test binary, with one test:
//! tracing caches per call site whether anyone listens, so spans first hit on another test's
//! thread (with no subscriber) could be missed here.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use anyhow::Result;
use gear_data::{Span, Tokenizer};
use gear_model::{Context, FusionOptions, GearConfig, GearModel, GenerationOptions, LocateOptions};
use tch::Device;

const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "river", "flows", "north", "into", "sea", "old",
    "mill", "stands", "by", "water", ".",
];
const DOC: &str = "The river flows north into the sea. The old mill stands by the water.";
const DOC_UNITS: [Span; 2] = [Span { start: 0, end: 35 }, Span { start: 36, end: 69 }];

fn model() -> GearModel {
    let mut cfg = GearConfig::for_encoder(gear_model::BertConfig::tiny(VOCAB.len() as i64));
    cfg.max_query_len = 12;
    cfg.max_document_len = 40;
    cfg.max_target_len = 12;
    let tokenizer = Tokenizer::from_vocab(VOCAB, 32).unwrap();
    GearModel::new(cfg, tokenizer, Device::Cpu).unwrap()
}

/// Records the name of every span opened while it is the thread's subscriber.
struct SpanNames(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanNames {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(attrs.metadata().name().to_owned());
    }
}

#[test]
fn every_model_module_forwards_inside_its_span() -> Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    let m = model();
    let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(SpanNames(names.clone()));
    tracing::subscriber::with_default(subscriber, || -> Result<()> {
        m.locate(
            &gear_model::LocateQueries::pair("the old mill", DOC, &DOC_UNITS),
            &LocateOptions::default(),
        )?;
        m.generate(&["the old mill"], &[DOC], &GenerationOptions::default())?;
        let q = m.encode_query_texts(&["the old mill"])?;
        let d = m.encode_document_texts(&[DOC])?;
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
        let t = m.encode_target_texts(&["the mill"])?;
        let _logits = m.decoder_logits_t(
            &t.ids,
            &t.mask,
            Context {
                states: &fused.hidden,
                mask: &q.mask,
            },
            false,
        )?;
        Ok(())
    })?;
    let seen: std::collections::BTreeSet<String> = names.lock().unwrap().iter().cloned().collect();
    for span in [
        "gear.locate",
        "gear.generate",
        "generate",
        "decoder",
        "bert.encoder",
        "bert.layer",
        "bert.attention",
        "bert.embeddings",
    ] {
        assert!(seen.contains(span), "no `{span}` span; saw {seen:?}");
    }
    Ok(())
}
