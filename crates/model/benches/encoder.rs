//! Forward-pass cost of the BERT encoder (MiniLM shape: 6 layers, width 384) at the batch shapes
//! encoding uses. Weights are random: cost does not depend on their values.
//!
//! `cargo xtask bench -p gear-model` or, with the environment from `cargo xtask env`,
//! `cargo bench -p gear-model --bench encoder`.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gear_model::{pretrained, Bert, BertConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn minilm_config() -> BertConfig {
    pretrained::minilm_dir()
        .ok()
        .and_then(|dir| BertConfig::from_json_file(dir.join("config.json")).ok())
        .unwrap_or_else(BertConfig::minilm_l6)
}

fn forward(c: &mut Criterion) {
    let cfg = minilm_config();
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let bert = Bert::new(&vs.root(), &cfg).expect("valid config");
    let mut group = c.benchmark_group("encoder_forward_minilm");
    group.sample_size(10);
    for (batch, len) in [(1i64, 128i64), (32, 128), (32, 256)] {
        let ids = Tensor::randint_low(
            1000,
            cfg.vocab_size,
            [batch, len],
            (Kind::Int64, Device::Cpu),
        );
        let mask = ids.ones_like();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("batch_x_len", format!("{batch}x{len}")),
            &(),
            |b, ()| {
                b.iter(|| tch::no_grad(|| bert.forward_t(&ids, &mask, false).expect("forward")))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
