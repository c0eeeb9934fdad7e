//! Shared set-up of the `gear train` process tests: a tiny word-level BERT checkpoint, a tiny
//! training config around it, RIR triples from the embedded corpus, and parameter comparison.

#![allow(clippy::unwrap_used, dead_code)] // tests fail loudly; not every test uses every helper

use std::path::{Path, PathBuf};

use gear_data::Tokenizer;
use gear_model::{save_safetensors, Bert, BertConfig};
use gear_synth::{generate_corpus, synthesize_rir, KeywordRewriter, RirConfig};
use tch::{nn::VarStore, Device};

/// A temporary folder holding `bert/` (the tiny checkpoint) and `train.jsonl`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub bert: PathBuf,
    pub train: PathBuf,
}

/// Eight embedded-corpus documents, a tokenizer over them, a seeded tiny BERT (with or without
/// dropout) and the RIR triples synthesised from them.
pub fn setup(dropout: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let docs = generate_corpus(8, 3);
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let tok = Tokenizer::word_level(&texts, 512).unwrap();
    let bert = dir.path().join("bert");
    tiny_bert(&bert, &tok, dropout);
    let train = dir.path().join("train.jsonl");
    let cfg = RirConfig {
        min_similarity: None,
        min_tokens: 100,
        ..RirConfig::default()
    };
    synthesize_rir(
        docs.into_iter().map(Ok),
        &train,
        &tok,
        &KeywordRewriter::default(),
        None,
        &cfg,
        &mut |_| {},
    )
    .unwrap();
    Setup { dir, bert, train }
}

fn tiny_bert(dir: &Path, tok: &Tokenizer, dropout: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = BertConfig::tiny(tok.vocab_size() as i64);
    cfg.max_position_embeddings = 512;
    if !dropout {
        cfg.hidden_dropout_prob = 0.0;
        cfg.attention_probs_dropout_prob = 0.0;
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let _bert = Bert::new(&vs.root(), &cfg).unwrap();
    save_safetensors(&vs, dir.join("model.safetensors")).unwrap();
    tok.save(dir.join("tokenizer.json")).unwrap();
}

/// Writes `dir/name`: a 2-epoch RIR config over the checkpoint `init`, checkpointing every step,
/// with every loss term on (the local-retrieval loss included).
pub fn config(dir: &Path, init: &Path, batch_size: usize, name: &str) -> PathBuf {
    let text = format!(
        r#"
scenario = "rir"
[model]
init = "{}"
max_query_len = 16
max_document_len = 256
max_target_len = 24
decoder_layers = 1
[data]
batch_size = {batch_size}
bucket_batches = 2
[optim]
lr = 1e-3
start_lr = 1e-4
min_lr = 1e-5
warmup_steps = 2
beta1 = 0.9
beta2 = 0.999
eps = 1e-8
weight_decay = 0.05
clip_norm = 1.0
[loss]
alpha = 0.25
temperature = 0.07
momentum = 0.9
queue_size = 8
distill_weight = 0.4
distill_ramp_epochs = 1.0
local_weight = 0.5
[run]
epochs = 2
seed = 5
checkpoint_every = 1
eval_generation_examples = 0
"#,
        init.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The largest absolute difference between two checkpoints' model parameters, and the name of
/// the tensor where it occurs; both must hold the same tensor names.
pub fn max_parameter_difference(a: &Path, b: &Path) -> (f64, String) {
    let pa = gear_model::read_tensors(a.join("checkpoint/model/model.safetensors")).unwrap();
    let pb = gear_model::read_tensors(b.join("checkpoint/model/model.safetensors")).unwrap();
    assert_eq!(pa.len(), pb.len());
    let mut worst = (0.0f64, String::new());
    for ((na, ta), (nb, tb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        let diff = (ta - tb).abs().max().double_value(&[]);
        if diff > worst.0 || worst.1.is_empty() {
            worst = (diff, na.clone());
        }
    }
    worst
}
