//! The encoder's kept intermediate states (`FusionOptions::keep_hidden`), which the reader
//! layers read when they start below the top.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use gear_model::{Bert, BertConfig, FusionOptions};
use tch::{nn::VarStore, Device, Tensor};

#[test]
fn kept_states_are_those_of_running_that_many_layers() {
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let bert = Bert::new(&vs.root(), &BertConfig::tiny(50)).unwrap();
    let ids = Tensor::from_slice(&[2i64, 7, 9, 3]).view([1, 4]);
    let run = |layers, keep_hidden| {
        let opts = FusionOptions {
            layers,
            keep_hidden,
            ..FusionOptions::default()
        };
        bert.forward_fused_t(&ids, &ids.ones_like(), None, opts, false)
    };
    let (full, first) = (run(None, Some(1)).unwrap(), run(Some(1), None).unwrap());
    assert!(full.kept.unwrap().equal(&first.hidden));
    assert!(first.kept.is_none());
    assert!(
        !full.hidden.equal(&first.hidden),
        "the tiny encoder has 2 layers"
    );
    assert!(run(None, Some(0)).is_err());
    assert!(run(Some(1), Some(2)).is_err());
}
