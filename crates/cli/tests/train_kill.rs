//! `gear train` killed with SIGKILL and resumed ends with the same parameters as an uninterrupted
//! run, at the same step. Uses a tiny BERT checkpoint written here.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gear_data::{generate_corpus, synthesize_rir, KeywordRewriter, RirConfig, Tokenizer};
use gear_model::{save_safetensors, Bert, BertConfig};
use tch::{nn::VarStore, Device};

fn tiny_bert(dir: &Path, tok: &Tokenizer) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = BertConfig::tiny(tok.vocab_size() as i64);
    cfg.max_position_embeddings = 512;
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

fn config(dir: &Path, init: &Path) -> PathBuf {
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
batch_size = 4
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
[run]
epochs = 2
seed = 5
checkpoint_every = 1
eval_generation_examples = 0
"#,
        init.display()
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn gear_train(config: &Path, train: &Path, out: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gear"));
    cmd.args(["train", "--config"])
        .arg(config)
        .arg("--train")
        .arg(train)
        .arg("--out")
        .arg(out);
    if resume {
        cmd.arg("--resume");
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

fn state_step(out: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(out.join("checkpoint/train_state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["state"]["step"].as_u64()
}

#[test]
fn sigkill_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let docs = generate_corpus(8, 3);
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let tok = Tokenizer::word_level(&texts, 512).unwrap();
    let bert = dir.path().join("bert");
    tiny_bert(&bert, &tok);
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
    let config = config(dir.path(), &bert);

    let straight = dir.path().join("straight");
    assert!(gear_train(&config, &train, &straight, false)
        .status()
        .unwrap()
        .success());
    let final_step = state_step(&straight).unwrap();
    assert!(final_step >= 8, "{final_step} steps");

    // Kill the second run once a checkpoint past step 2 exists.
    let killed = dir.path().join("killed");
    let mut child = gear_train(&config, &train, &killed, false).spawn().unwrap();
    let start = Instant::now();
    loop {
        if state_step(&killed).is_some_and(|s| s >= 3) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = gear_train::find_checkpoint(&killed).unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(at_kill.join("train_state.json")).unwrap())
            .unwrap();
    let killed_at = saved["state"]["step"].as_u64().unwrap();
    assert!(
        (3..final_step).contains(&killed_at),
        "killed at step {killed_at} of {final_step}"
    );
    assert!(gear_train(&config, &train, &killed, true)
        .status()
        .unwrap()
        .success());
    assert_eq!(state_step(&killed), Some(final_step));

    let a = gear_model::read_tensors(straight.join("checkpoint/model/model.safetensors")).unwrap();
    let b = gear_model::read_tensors(killed.join("checkpoint/model/model.safetensors")).unwrap();
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{na} differs by {diff}");
    }
}
