//! `gear index add` as a user runs it, killed with SIGKILL at several points: the index is
//! always either the previous one or the complete new one (its HNSW graph included), and an add
//! after the kills finishes.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn gear() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gear"))
}

fn ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Documents in the index (from `index.json`), after checking that exact and HNSW search work
/// and that the graph holds every row.
fn documents(index: &Path) -> u64 {
    for backend in ["exact", "hnsw"] {
        let mut search = gear();
        search
            .args(["search", "-k", "3", "--backend", backend, "--index"])
            .arg(index)
            .arg("brick bridge");
        ok(search);
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(index.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        meta["ann"]["rows"], meta["rows"],
        "the graph holds every row"
    );
    meta["documents"].as_u64().unwrap()
}

#[test]
fn a_killed_add_leaves_the_previous_index_and_a_later_add_completes() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let mut c = gear();
    c.args(["data", "corpus", "--count", "160", "--output"])
        .arg(&corpus);
    ok(c);
    let text = std::fs::read_to_string(&corpus).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, more) = (
        dir.path().join("first.jsonl"),
        dir.path().join("more.jsonl"),
    );
    std::fs::write(&first, lines[..40].join("\n") + "\n").unwrap();
    std::fs::write(&more, lines[40..].join("\n") + "\n").unwrap();
    let index = dir.path().join("index");
    let mut build = gear();
    build
        .args([
            "index",
            "build",
            "--pretrained",
            "--ann",
            "hnsw",
            "--corpus",
        ])
        .arg(&first)
        .arg("--out")
        .arg(&index);
    ok(build);
    assert_eq!(documents(&index), 40);

    let add = || {
        let mut cmd = gear();
        cmd.args(["index", "add", "--index"])
            .arg(&index)
            .arg("--corpus")
            .arg(&more);
        cmd
    };
    for delay_ms in [300, 1500, 4000] {
        let mut child = add()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let n = documents(&index);
        if finished {
            // It won the race: the complete new index, and nothing is left to test.
            assert_eq!(n, 160);
            return;
        }
        assert!(
            n == 40 || n == 160,
            "killed after {delay_ms} ms: {n} documents"
        );
        if n == 160 {
            return;
        }
    }
    let err = ok(add());
    assert!(err.contains("added 120 documents"), "{err}");
    assert_eq!(documents(&index), 160);
    // The same documents again: refused by id, index unchanged.
    let out = add().output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in"));
    assert_eq!(documents(&index), 160);
}
