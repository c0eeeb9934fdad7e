//! Cost of GeAR's local-retrieval path against one document-encoder forward (issue: fusion
//! forward up to `local_layer` relative to `E_d`), MiniLM shape, random weights, documents of 256
//! tokens, queries of 16.
//!
//! `cargo xtask bench -p gear-model --bench fusion`

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{criterion_group, criterion_main, Criterion};
use gear_data::Tokenizer;
use gear_model::{BertConfig, Context, CrossProbs, FusionOptions, GearConfig, GearModel};
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 8;
const DOC_LEN: i64 = 256;
const QUERY_LEN: i64 = 16;

fn fusion(c: &mut Criterion) {
    tch::manual_seed(0);
    let vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|s| (*s).to_string())
        .chain((4..1000).map(|i| format!("w{i}")))
        .collect();
    let vocab: Vec<&str> = vocab.iter().map(String::as_str).collect();
    let tokenizer = Tokenizer::from_vocab(&vocab, 256).expect("vocab");
    let cfg = GearConfig::for_encoder(BertConfig::minilm_l6());
    let layer = cfg.local_layer();
    let model = GearModel::new(cfg, tokenizer, Device::Cpu).expect("model");
    let d_ids = Tensor::randint_low(1000, 30000, [BATCH, DOC_LEN], (Kind::Int64, Device::Cpu));
    let d_mask = d_ids.ones_like();
    let q_ids = Tensor::randint_low(1000, 30000, [BATCH, QUERY_LEN], (Kind::Int64, Device::Cpu));
    let q_mask = q_ids.ones_like();
    let states = tch::no_grad(|| {
        model
            .document_states_t(&d_ids, &d_mask, false)
            .expect("forward")
    });
    let opts = FusionOptions {
        layers: Some(layer),
        cross_probs: CrossProbs::Layer(layer),
        keep_hidden: None,
    };

    let mut group = c.benchmark_group("local_retrieval_minilm_8x256");
    group.sample_size(10);
    group.bench_function("document_encoder", |b| {
        b.iter(|| {
            tch::no_grad(|| {
                model
                    .document_states_t(&d_ids, &d_mask, false)
                    .expect("forward")
            })
        })
    });
    group.bench_function("fusion_to_local_layer", |b| {
        b.iter(|| {
            tch::no_grad(|| {
                let ctx = Context {
                    states: &states,
                    mask: &d_mask,
                };
                model
                    .fuse_t(&q_ids, &q_mask, ctx, opts, false)
                    .expect("fusion")
            })
        })
    });
    group.bench_function("document_encoder_plus_fusion", |b| {
        b.iter(|| {
            tch::no_grad(|| {
                let s = model
                    .document_states_t(&d_ids, &d_mask, false)
                    .expect("forward");
                let ctx = Context {
                    states: &s,
                    mask: &d_mask,
                };
                model
                    .fuse_t(&q_ids, &q_mask, ctx, opts, false)
                    .expect("fusion")
            })
        })
    });
    group.finish();
}

criterion_group!(benches, fusion);
criterion_main!(benches);
