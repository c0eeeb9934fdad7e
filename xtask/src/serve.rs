//! `cargo xtask serve` (the search service over the shipped Wikipedia passages, with the main
//! job's trained model when it has run) and `cargo xtask bench-serve` (throughput with and
//! without dynamic batching, and a bounded load test), both over loopback only.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{build_gear, status};
use crate::setup::Env;

/// Options of `cargo xtask serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// GeAR checkpoint to serve (default: the main job's, `out/train-rir/run/checkpoint/model`,
    /// when it exists; otherwise the pretrained MiniLM).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
}

/// The checkpoint to serve and a name for its index.
fn chosen_model(model: Option<&Path>) -> (Option<PathBuf>, String) {
    let root = crate::workspace_root();
    let main_job = root.join("out/train-rir/run/checkpoint/model");
    match model {
        Some(m) => (Some(m.to_path_buf()), "given".into()),
        None if main_job.join("gear.toml").is_file() => (Some(main_job), "train-rir".into()),
        None => (None, "pretrained".into()),
    }
}

/// An index of the shipped Wikipedia passages (`data/wiki-squad`, 1,607 paragraphs) for
/// `model`, built on first use and rebuilt when the model's files changed.
fn ensure_index(env: &Env, gear: &Path, model: Option<&Path>, name: &str) -> Result<PathBuf> {
    let root = crate::workspace_root();
    let dir = root.join("out/serve");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let corpus = dir.join("passages.jsonl");
    if !corpus.is_file() {
        let mut all = String::new();
        for file in ["squad-v1.1-dev-a.json", "squad-v2.0-train-first10.json"] {
            let part = dir.join(format!("{file}.passages.jsonl"));
            status(
                env.command(gear)
                    .args(["data", "squad", "--input"])
                    .arg(root.join("data/wiki-squad").join(file))
                    .arg("--output")
                    .arg(dir.join(format!("{file}.triples.jsonl")))
                    .arg("--corpus")
                    .arg(&part)
                    .stdout(Stdio::null()),
            )?;
            all.push_str(&std::fs::read_to_string(&part)?);
        }
        crate::cmd::write_atomically(&corpus, &all)?;
    }
    let index = dir.join(format!("index-{name}"));
    let usable = index.join("index.json").is_file() && {
        // A search checks the model's fingerprint: a changed checkpoint means a rebuild.
        let mut probe = env.command(gear);
        probe.args(["search", "--index"]).arg(&index).arg("probe");
        if let Some(m) = model {
            probe.arg("--model").arg(m);
        }
        probe
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !usable {
        let _ = std::fs::remove_dir_all(&index);
        eprintln!("[xtask] indexing {} for the server", corpus.display());
        let mut build = env.command(gear);
        build
            .args(["index", "build", "--corpus"])
            .arg(&corpus)
            .arg("--out")
            .arg(&index);
        match model {
            Some(m) => build.arg("--model").arg(m),
            None => build.arg("--pretrained"),
        };
        status(&mut build)?;
    }
    Ok(index)
}

pub fn serve(env: &Env, args: &ServeArgs) -> Result<()> {
    let gear = build_gear(env)?;
    let (model, name) = chosen_model(args.model.as_deref());
    let index = ensure_index(env, &gear, model.as_deref(), &name)?;
    let mut cmd = env.command(&gear);
    cmd.args(["serve", "--index"])
        .arg(&index)
        .args(["--addr", &args.addr]);
    if let Some(m) = &model {
        cmd.arg("--model").arg(m);
    }
    eprintln!(
        "[xtask] serving {} with {} (Ctrl-C stops)",
        index.display(),
        model
            .as_ref()
            .map_or("the pretrained MiniLM".into(), |m| m.display().to_string())
    );
    status(&mut cmd)
}

/// Options of `cargo xtask bench-serve`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Requests per throughput cell.
    #[arg(long, default_value_t = 400)]
    requests: usize,
    /// Requests in the load test.
    #[arg(long, default_value_t = 10_000)]
    load_requests: usize,
    /// Concurrent clients in the load test.
    #[arg(long, default_value_t = 32)]
    load_clients: usize,
    /// The load test stops after this many seconds even if requests are left.
    #[arg(long, default_value_t = 900)]
    load_limit_s: u64,
    /// Benchmark this `gear` binary instead of building one from this checkout (to compare two
    /// builds on the same machine).
    #[arg(long)]
    gear: Option<std::path::PathBuf>,
    /// Instead of the tables above: push the index into this PostgreSQL database and measure
    /// `/search` throughput of 1 and of 2 `gear serve --store` replicas (clients spread over
    /// them), the same clients and requests.
    #[arg(long)]
    store: Option<String>,
}

/// A `gear serve` child on a free loopback port.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
}

impl Server {
    fn start(env: &Env, gear: &Path, index: &Path, extra: &[&str]) -> Result<Self> {
        let index = index.to_string_lossy();
        Self::start_with(env, gear, &[&["--index", index.as_ref()], extra].concat())
    }

    /// `gear serve --addr 127.0.0.1:0 <args>`.
    pub(crate) fn start_with(env: &Env, gear: &Path, args: &[&str]) -> Result<Self> {
        let mut child = env
            .command(gear)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start gear serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            let _ = child.kill();
            bail!("gear serve printed no address: {line:?}");
        };
        let url = url.to_owned();
        Ok(Self { child, url })
    }

    /// Resident memory of the server process, in MiB.
    fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request of the mix: path and body.
fn request(i: usize, mixed: bool) -> (&'static str, String) {
    const QUERIES: [&str; 6] = [
        "Which team won Super Bowl 50?",
        "where did the Normans come from",
        "university of chicago founded",
        "what causes the force of gravity",
        "Warsaw old town, reconstruction",
        "who designed the steam engine",
    ];
    let q = QUERIES[i % QUERIES.len()];
    if !mixed {
        return ("/search", format!(r#"{{"query": "{q} {i}", "k": 10}}"#));
    }
    match kind(i) {
        "/search" => ("/search", format!(r#"{{"query": "{q} {i}", "k": 10}}"#)),
        "/embed" => ("/embed", format!(r#"{{"inputs": ["{q}", "request {i}"]}}"#)),
        "/search with locate" => (
            "/search",
            format!(r#"{{"query": "{q}", "k": 3, "locate": 1}}"#),
        ),
        _ => ("/health", String::new()),
    }
}

/// Each answered request's latency and number.
type Latencies = Vec<(Duration, usize)>;

/// What request `i` of the load test's mix is (for latencies per kind).
fn kind(i: usize) -> &'static str {
    match i % 100 {
        0..=69 => "/search",
        70..=89 => "/embed",
        90..=97 => "/search with locate",
        _ => "/health",
    }
}

/// Sends `total` requests from `clients` threads (each with its own keep-alive connection, to
/// `urls[client % urls.len()]`); returns the latencies (sorted, each with its request's number),
/// the errors and the wall time.
pub(crate) fn drive(
    urls: &[&str],
    clients: usize,
    total: usize,
    mixed: bool,
    limit: Duration,
) -> (Latencies, Vec<String>, Duration) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    let results: Vec<(Latencies, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let next = &next;
                let url = urls[c % urls.len()];
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(60))
                        .build();
                    let mut latencies = Vec::new();
                    let mut errors = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= total || start.elapsed() > limit {
                            break;
                        }
                        let (path, body) = request(i, mixed);
                        let t = Instant::now();
                        let response = if body.is_empty() {
                            agent.get(&format!("{url}{path}")).call()
                        } else {
                            agent
                                .post(&format!("{url}{path}"))
                                .set("content-type", "application/json")
                                .send_string(&body)
                        };
                        match response.map(ureq::Response::into_string) {
                            Ok(Ok(_)) => latencies.push((t.elapsed(), i)),
                            Ok(Err(e)) => errors.push(format!("{path}: reading: {e}")),
                            Err(e) => errors.push(format!("{path}: {e}")),
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = start.elapsed();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for (l, e) in results {
        latencies.extend(l);
        errors.extend(e);
    }
    latencies.sort();
    (latencies, errors, wall)
}

pub(crate) fn percentile(sorted: &[(Duration, usize)], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].0.as_secs_f64() * 1000.0
}

pub fn bench(env: &Env, args: &BenchArgs) -> Result<()> {
    let gear = match &args.gear {
        Some(path) => path.clone(),
        None => build_gear(env)?,
    };
    let index = ensure_index(env, &gear, None, "pretrained")?;
    if let Some(url) = &args.store {
        return crate::replicas::bench(env, &gear, &index, url, args.requests);
    }
    let mut report = format!(
        "# cargo xtask bench-serve\n\n`gear serve` over {} (pretrained MiniLM), loopback, {} cores.\n\n",
        index.display(),
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    report.push_str("## /search throughput (k = 10, no locate)\n\n| clients | batched (max 32, no wait) req/s | one at a time (max-batch 1) req/s | ratio | batched p50 / p99 ms |\n|---|---|---|---|---|\n");
    let limit = Duration::from_secs(600);
    for clients in [1, 8, 32] {
        let mut cells = Vec::new();
        for extra in [&[][..], &["--max-batch", "1"][..]] {
            let server = Server::start(env, &gear, &index, extra)?;
            // Warm-up: first forwards allocate.
            let _ = drive(&[server.url.as_str()], clients, clients * 4, false, limit);
            let (lat, errors, wall) =
                drive(&[server.url.as_str()], clients, args.requests, false, limit);
            if !errors.is_empty() {
                bail!("{} errors, first: {}", errors.len(), errors[0]);
            }
            cells.push((
                lat.len() as f64 / wall.as_secs_f64(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
            ));
        }
        let line = format!(
            "| {clients} | {:.1} | {:.1} | {:.2}× | {:.1} / {:.1} |\n",
            cells[0].0,
            cells[1].0,
            cells[0].0 / cells[1].0,
            cells[0].1,
            cells[0].2
        );
        eprint!("{line}");
        report.push_str(&line);
    }

    let server = Server::start(env, &gear, &index, &[])?;
    let _ = drive(&[server.url.as_str()], 4, 40, true, limit);
    let rss_before = server.rss_mib();
    let (lat, errors, wall) = drive(
        &[server.url.as_str()],
        args.load_clients,
        args.load_requests,
        true,
        Duration::from_secs(args.load_limit_s),
    );
    let rss_after = server.rss_mib();
    let line = format!(
        "\n## Load test\n\n{} clients, {} mixed requests sent (70 % /search k = 10, 20 % /embed of 2 texts, 8 % /search with locate = 1, 2 % /health) of {} asked, in {:.1} s: **{} errors**, {:.1} req/s, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server RSS {:.0} MiB after warm-up, {:.0} MiB after the run.\n",
        args.load_clients,
        lat.len() + errors.len(),
        args.load_requests,
        wall.as_secs_f64(),
        errors.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        rss_before,
        rss_after
    );
    eprint!("{line}");
    report.push_str(&line);
    report.push_str("\n| request | count | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n");
    for k in ["/search", "/embed", "/search with locate", "/health"] {
        let mine: Vec<(Duration, usize)> =
            lat.iter().copied().filter(|&(_, i)| kind(i) == k).collect();
        let row = format!(
            "| {k} | {} | {:.1} | {:.1} | {:.1} |\n",
            mine.len(),
            percentile(&mine, 0.5),
            percentile(&mine, 0.99),
            percentile(&mine, 1.0)
        );
        eprint!("{row}");
        report.push_str(&row);
    }
    for e in errors.iter().take(5) {
        report.push_str(&format!("- error: {e}\n"));
    }
    let out = crate::workspace_root().join("out/serve/bench.md");
    crate::cmd::write_atomically(&out, &report)?;
    println!("{report}\n(written to {})", out.display());
    if !errors.is_empty() {
        bail!("the load test had {} errors", errors.len());
    }
    Ok(())
}
