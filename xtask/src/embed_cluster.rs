//! `cargo xtask embed-cluster`: a corpus embedded into a PostgreSQL store over a Ray cluster —
//! one Ray task per shard, each running our `gear index build --store URL --shard I/N`
//! (`xtask/scripts/embed_cluster.py` submits them; Ray retries a task whose worker dies, and the
//! shard writes only what is missing) — then `gear index finish` checks the store whole and builds
//! pgvector's HNSW index. Without `--address`, a local Ray head is started on loopback for the run
//! and stopped by its PID.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cmd::{build_gear, status};
use crate::setup::{self, Env};

/// Options of `cargo xtask embed-cluster`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Corpus file (`{id, title, text}` lines), at this path on every node.
    #[arg(long)]
    corpus: PathBuf,
    /// The database: `postgres://user@host:port/db`.
    #[arg(long)]
    store: String,
    /// Schema to write.
    #[arg(long, default_value = "gear")]
    schema: String,
    /// Shards (Ray tasks); default: `--cpus` (this machine's cores unless given). More shards
    /// than CPUs balance better and lose less to a killed worker.
    #[arg(long)]
    shards: Option<usize>,
    /// A running Ray cluster (`HOST:PORT` of its head); without it a local head is started.
    #[arg(long)]
    address: Option<String>,
    /// CPUs of the local head started without `--address` (default: this machine's).
    #[arg(long)]
    cpus: Option<usize>,
    /// GeAR checkpoint folder (default: the pretrained all-MiniLM-L6-v2).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Documents per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Documents per transaction (what a killed task loses at most).
    #[arg(long, default_value_t = 256)]
    commit_every: usize,
    /// Retries of a failed shard.
    #[arg(long, default_value_t = 3)]
    retries: usize,
    /// pgvector HNSW links per node (`m`), for `gear index finish`.
    #[arg(long, default_value_t = 16)]
    hnsw_m: u32,
    /// pgvector HNSW candidate list while building.
    #[arg(long, default_value_t = 64)]
    ef_construction: u32,
}

pub fn run(env: &Env, args: &Args) -> Result<()> {
    setup::ensure_python_module(env, "ray", "ray")?;
    let gear = build_gear(env)?;
    let cpus = args
        .cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let shards = args.shards.unwrap_or(cpus).max(1);
    let corpus =
        std::path::absolute(&args.corpus).with_context(|| format!("{}", args.corpus.display()))?;
    let mut driver = env.command(&env.python);
    driver
        .arg(crate::workspace_root().join("xtask/scripts/embed_cluster.py"))
        .arg("--gear")
        .arg(&gear)
        .arg("--corpus")
        .arg(&corpus)
        .args(["--store", &args.store, "--schema", &args.schema])
        .args(["--shards", &shards.to_string()])
        .args(["--retries", &args.retries.to_string()]);
    match &args.address {
        Some(address) => driver.args(["--address", address]),
        None => driver.args(["--start-local", &cpus.to_string()]),
    };
    match &args.model {
        Some(dir) => driver.arg("--model").arg(std::path::absolute(dir)?),
        None => driver.arg("--pretrained"),
    };
    driver.args([
        "--batch-size",
        &args.batch_size.to_string(),
        "--commit-every",
        &args.commit_every.to_string(),
    ]);
    eprintln!(
        "[xtask] embedding {} in {shards} shards over Ray ({})",
        corpus.display(),
        args.address.as_deref().unwrap_or("a local head")
    );
    let out = driver
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start the Ray driver")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "the Ray driver failed ({}): {text}",
        out.status
    );
    let report: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or(""))
        .with_context(|| format!("the Ray driver printed no report: {text}"))?;
    println!("| shard | documents | written | already in | attempts |\n|---|---|---|---|---|");
    for s in report["shards"].as_array().into_iter().flatten() {
        println!(
            "| {}/{} | {}..{} | {} | {} | {} |",
            s["shard"],
            s["shards"],
            s["first"],
            s["end"],
            s["written"],
            s["present"],
            s["attempts"]
        );
    }
    println!(
        "Ray: {:.1} s for every shard",
        report["seconds"].as_f64().unwrap_or(f64::NAN)
    );
    status(env.command(&gear).args([
        "index",
        "finish",
        "--store",
        &args.store,
        "--schema",
        &args.schema,
        "--hnsw-m",
        &args.hnsw_m.to_string(),
        "--ef-construction",
        &args.ef_construction.to_string(),
    ]))
}
