//! `gear train` killed with SIGKILL and resumed ends with the same parameters as an uninterrupted
//! run, at the same step. Uses the tiny BERT of tests/common.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let common::Setup { dir, bert, train } = common::setup(true);
    let config = common::config(dir.path(), &bert, 4, "tiny.toml");

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

    let (diff, name) = common::max_parameter_difference(&straight, &killed);
    assert!(diff < 1e-5, "{name} differs by {diff}");
}
