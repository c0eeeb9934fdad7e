//! The harness every `gear serve` test binary shares: the real binary over an index of the first
//! 40 shipped Wikipedia passages (pretrained MiniLM), built once per test binary, a server
//! process killed when dropped, JSON over loopback HTTP, and one server at a time.

#![allow(clippy::unwrap_used, dead_code)] // tests fail loudly; not every binary uses every helper

use std::io::BufRead;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

pub fn gear() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gear"))
}

pub fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An index of the first 40 passages of the shipped SQuAD file, built once per test binary.
pub fn index() -> &'static Path {
    static INDEX: OnceLock<PathBuf> = OnceLock::new();
    INDEX.get_or_init(|| {
        // One folder per test binary: binaries may run one after another over the same target.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("serve-{}", env!("CARGO_CRATE_NAME")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let squad = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/wiki-squad/squad-v1.1-dev-a.json");
        let all = dir.join("passages-all.jsonl");
        let mut cmd = gear();
        cmd.args(["data", "squad", "--input"]).arg(&squad);
        cmd.arg("--output").arg(dir.join("qar.jsonl"));
        cmd.arg("--corpus").arg(&all);
        run_ok(cmd);
        let text = std::fs::read_to_string(&all).unwrap();
        let some: String = text.lines().take(40).map(|l| format!("{l}\n")).collect();
        let corpus = dir.join("passages.jsonl");
        std::fs::write(&corpus, some).unwrap();
        let index = dir.join("index");
        let mut cmd = gear();
        cmd.args(["index", "build", "--pretrained", "--corpus"])
            .arg(&corpus);
        cmd.arg("--out").arg(&index);
        run_ok(cmd);
        index
    })
}

/// A running `gear serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_on(index(), extra)
    }

    pub fn start_on(index: &Path, extra: &[&str]) -> Self {
        let index = index.to_str().unwrap();
        Self::start_with(&[&["--index", index], extra].concat())
    }

    /// `gear serve --addr 127.0.0.1:0 ARGS`.
    pub fn start_with(args: &[&str]) -> Self {
        let mut child = gear()
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("gear serve printed no address within 120 s");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { child, url }
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let response = ureq::post(&format!("{}{path}", self.url))
            .set("content-type", "application/json")
            .timeout(Duration::from_secs(120))
            .send_string(body);
        read(response)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("{}{path}", self.url)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// The value of one series of `/metrics` (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read(response: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let (code, r) = match response {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(code, r)) => (code, r),
        Err(e) => panic!("transport error: {e}"),
    };
    let text = r.into_string().unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{code}: not JSON ({e}): {text}"));
    (code, value)
}

/// One server at a time: they share 2 cores, and some tests read counters.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub const QUERY: &str = "Which team won Super Bowl 50?";
