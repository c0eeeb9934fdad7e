//! Data-parallel training with real processes on 127.0.0.1 (Gloo): `gear train --nproc 2` with
//! batch B per rank ends where one process with batch 2B ends, and a rank that dies makes its
//! peer fail with a clear error instead of hanging. Uses a tiny dropout-free BERT written here.

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
    // Dropout masks differ between one process and two; without dropout the runs must agree.
    cfg.hidden_dropout_prob = 0.0;
    cfg.attention_probs_dropout_prob = 0.0;
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

fn config(dir: &Path, init: &Path, batch_size: usize, name: &str) -> PathBuf {
    let text = format!(
        r#"
scenario = "rir"
[model]
init = "{}"
max_query_len = 16
max_document_len = 128
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

struct Setup {
    dir: tempfile::TempDir,
    bert: PathBuf,
    train: PathBuf,
}

fn setup() -> Setup {
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
    Setup { dir, bert, train }
}

fn gear_train(config: &Path, train: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gear"));
    cmd.args(["train", "--config"])
        .arg(config)
        .arg("--train")
        .arg(train)
        .arg("--out")
        .arg(out)
        .env_remove("WORLD_SIZE")
        .env_remove("RANK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "gear train failed:\n{text}");
    text
}

/// `(step, loss_cl, loss_lm)` per logged step.
fn logged_losses(out: &Path) -> Vec<(u64, f64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let t = v.get("train")?;
            Some((
                t["step"].as_u64()?,
                t["loss_cl"].as_f64()?,
                t["loss_lm"].as_f64()?,
            ))
        })
        .collect()
}

#[test]
fn two_processes_with_batch_b_equal_one_process_with_batch_2b() {
    let s = setup();
    let n = std::fs::read_to_string(&s.train).unwrap().lines().count();
    assert!(n >= 16, "{n} triples");

    let single = s.dir.path().join("single");
    run_ok(gear_train(
        &config(s.dir.path(), &s.bert, 8, "b8.toml"),
        &s.train,
        &single,
    ));
    let pair = s.dir.path().join("pair");
    let mut cmd = gear_train(
        &config(s.dir.path(), &s.bert, 4, "b4.toml"),
        &s.train,
        &pair,
    );
    cmd.args(["--nproc", "2", "--dist-timeout", "120"]);
    let text = run_ok(cmd);
    assert!(
        text.contains("2 processes × 4 examples per batch"),
        "{text}"
    );

    // Same steps, same losses: rank 0 logs the loss of the gathered global batch.
    let a = logged_losses(&single);
    let b = logged_losses(&pair);
    assert_eq!(a.len(), b.len(), "steps logged");
    assert!(a.len() >= 4, "{} steps", a.len());
    for ((sa, cla, lma), (sb, clb, lmb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!((cla - clb).abs() < 1e-4, "step {sa}: L_CL {cla} vs {clb}");
        assert!((lma - lmb).abs() < 1e-4, "step {sa}: L_LM {lma} vs {lmb}");
    }
    // Only rank 0 wrote: one log line per step, one checkpoint.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pair.join("checkpoint/train_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["state"]["examples"].as_u64(), Some(2 * n as u64));

    let pa = gear_model::read_tensors(single.join("checkpoint/model/model.safetensors")).unwrap();
    let pb = gear_model::read_tensors(pair.join("checkpoint/model/model.safetensors")).unwrap();
    assert_eq!(pa.len(), pb.len());
    let mut worst = (0.0f64, String::new());
    for ((na, ta), (nb, tb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        let diff = (ta - tb).abs().max().double_value(&[]);
        if diff > worst.0 {
            worst = (diff, na.clone());
        }
    }
    println!(
        "largest parameter difference: {:.3e} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 < 1e-4, "{} differs by {}", worst.1, worst.0);
    // The momentum queues (gathered momentum embeddings) agree too.
    let qa = gear_model::read_tensors(single.join("checkpoint/train_state.safetensors")).unwrap();
    let qb = gear_model::read_tensors(pair.join("checkpoint/train_state.safetensors")).unwrap();
    for ((na, ta), (_, tb)) in qa.iter().zip(&qb) {
        if na.starts_with("momentum.queue.") {
            let diff = (ta.to_kind(tch::Kind::Double) - tb.to_kind(tch::Kind::Double))
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < 1e-4, "{na} differs by {diff}");
        }
    }
}

#[test]
fn a_rank_killed_mid_run_fails_its_peer_with_a_clear_error() {
    let s = setup();
    let config = config(s.dir.path(), &s.bert, 4, "b4.toml");
    let out = s.dir.path().join("run");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rank = |r: usize| {
        let mut cmd = gear_train(&config, &s.train, &out);
        cmd.args(["--dist-timeout", "60"])
            .env("RANK", r.to_string())
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        cmd.spawn().unwrap()
    };
    let mut r0 = rank(0);
    let mut r1 = rank(1);
    let start = Instant::now();
    // Kill rank 1 once rank 0 has checkpointed step 1: both are mid-run then.
    while !out.join("checkpoint/train_state.json").is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            r0.try_wait().unwrap().is_none(),
            "rank 0 finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    r1.kill().unwrap(); // SIGKILL
    r1.wait().unwrap();
    let killed = Instant::now();
    loop {
        if r0.try_wait().unwrap().is_some() {
            break;
        }
        if killed.elapsed() > Duration::from_secs(90) {
            let _ = r0.kill();
            panic!("rank 0 still running 90 s after its peer died: it hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = r0.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "rank 0 must fail");
    assert!(
        text.contains("failed on rank 0 (a peer process may have exited or stalled)"),
        "{text}"
    );
    // The last good checkpoint is intact.
    assert!(gear_train::find_checkpoint(&out).is_some());
}
