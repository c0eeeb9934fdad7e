//! Data-parallel training with real processes on 127.0.0.1 (Gloo): `gear train --nproc 2` with
//! batch B per rank ends where one process with batch 2B ends (hard negatives gathered too), and a rank that dies makes its
//! peer fail with a clear error instead of hanging. Uses the tiny BERT of tests/common, without dropout.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{config, setup};

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

/// `(step, loss_cl, loss_lm, loss_local)` per logged step.
fn logged_losses(out: &Path) -> Vec<(u64, f64, f64, f64)> {
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
                t["loss_local"].as_f64()?,
            ))
        })
        .collect()
}

/// Gives every third triple of `path` a hard negative (another triple's document), so that
/// ranks gather negatives and some shards hold none.
fn with_some_hard_negatives(path: &Path) {
    let mut triples: Vec<gear_data::Triple> = gear_data::TripleReader::open(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let documents: Vec<gear_data::Document> = triples.iter().map(|t| t.document.clone()).collect();
    for (i, t) in triples.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
        let other = (1..documents.len())
            .map(|k| &documents[(i + k) % documents.len()])
            .find(|d| d.id != t.document.id)
            .unwrap();
        t.negatives = vec![other.clone()];
    }
    let mut w = gear_data::JsonlWriter::create(path).unwrap();
    for t in &triples {
        w.write(t).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn two_processes_with_batch_b_equal_one_process_with_batch_2b() {
    // Dropout masks differ between one process and two; without dropout the runs must agree.
    let s = setup(false);
    let n = std::fs::read_to_string(&s.train).unwrap().lines().count();
    assert!(n >= 16, "{n} triples");
    with_some_hard_negatives(&s.train);

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
    for ((sa, cla, lma, loa), (sb, clb, lmb, lob)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!((cla - clb).abs() < 1e-4, "step {sa}: L_CL {cla} vs {clb}");
        assert!((lma - lmb).abs() < 1e-4, "step {sa}: L_LM {lma} vs {lmb}");
        assert!(*loa > 0.0, "step {sa}: the local-retrieval loss is on");
        assert!((loa - lob).abs() < 1e-4, "step {sa}: L_LOC {loa} vs {lob}");
    }
    // Only rank 0 wrote: one log line per step, one checkpoint.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pair.join("checkpoint/train_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["state"]["examples"].as_u64(), Some(2 * n as u64));

    let worst = common::max_parameter_difference(&single, &pair);
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
    let s = setup(false);
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
