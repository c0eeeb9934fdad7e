//! `cargo xtask bench-index`: the index at 10^5 and 10^6 clustered synthetic vectors, measured
//! beside FAISS (faiss-cpu in our venv) on the same vectors, machine and cores, in one run:
//! write and open time, RSS, file size, exact QPS at batch 1 and 64 (`IndexFlatIP`), and HNSW
//! build time, QPS (1,000 queries at once, and one at a time) and recall@10 at two `ef`
//! settings: ours is the persisted usearch graph (`gear_infer::build_ann`, int8 graph vectors,
//! candidates scored again exactly), FAISS's `IndexHNSWFlat`, both M = 32, ef_construction 200.
//! With `--pgvector`, also PostgreSQL + pgvector on the same vectors (started for the run from
//! the `pgserver` wheel): `COPY` load time, HNSW build (M = 32, ef_construction 200), recall@10
//! and QPS one query per statement and 64 per statement at each `ef` as `hnsw.ef_search`.

use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cmd::{cargo, status};
use crate::setup::{self, Env};

/// Options of `cargo xtask bench-index`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Index sizes (vectors).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    sizes: Vec<usize>,
    /// HNSW is built and measured for sizes up to this (over 10^6 vectors on 2 cores FAISS's
    /// build takes tens of minutes; pass 1000000 to include it).
    #[arg(long, default_value_t = 100_000)]
    hnsw_max: usize,
    /// Queries timed one at a time.
    #[arg(long, default_value_t = 200)]
    single: usize,
    /// HNSW `ef` (search candidate list) settings.
    #[arg(long, default_value = "64,128")]
    ef: String,
    /// Also measure PostgreSQL + pgvector on the same vectors (HNSW sizes only).
    #[arg(long)]
    pgvector: bool,
}

fn json_of(mut cmd: Command) -> Result<Value> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{shown} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("{shown} printed no JSON: {text}"))
}

pub fn run(env: &Env, args: &Args) -> Result<()> {
    build_examples(env, args.pgvector)?;
    let root = crate::workspace_root();
    let bench = root.join("target/release/examples/bench_index");
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut table = String::from(
        "| N | write s | open s | RSS after open / after searching MiB (vector file MiB) | exact QPS batch 1: ours / FAISS | exact QPS batch 64: ours / FAISS | float16: file MiB, QPS batch 64, recall@10 vs float32 |\n|---|---|---|---|---|---|---|\n",
    );
    let mut pg_table = String::from(
        "| N | ef | load s: ours / pgvector (COPY) | HNSW build s: ours / pgvector | QPS one query at a time: ours / pgvector | QPS batched: ours (1,000 in one call) / pgvector (64 per statement) | recall@10: ours / pgvector |\n|---|---|---|---|---|---|---|\n",
    );
    let mut hnsw_table = String::from(
        "| N | ef | build s: ours / FAISS | ours: open s, graph MiB | QPS 1,000 at once: ours / FAISS | QPS one at a time: ours / FAISS | recall@10: ours / FAISS |\n|---|---|---|---|---|---|---|\n",
    );
    for &n in &args.sizes {
        let dir = root.join(format!("out/bench-index/n{n}"));
        eprintln!("[xtask] {n} vectors: generating");
        let mut generate = env.command(&bench);
        generate
            .args(["generate", "--n", &n.to_string(), "--model"])
            .arg(env.minilm_dir())
            .arg("--dir")
            .arg(&dir);
        let generated = json_of(generate)?;
        let hnsw = n <= args.hnsw_max;
        eprintln!("[xtask] {n} vectors: measuring ours");
        let mut measure = env.command(&bench);
        measure
            .args([
                "measure",
                "--single",
                &args.single.to_string(),
                "--ef",
                &args.ef,
                "--dir",
            ])
            .arg(&dir);
        if hnsw {
            measure.arg("--hnsw");
        }
        let ours = json_of(measure)?;
        eprintln!("[xtask] {n} vectors: measuring FAISS");
        let theirs = faiss(env, &dir, n, args, hnsw)?;
        let row = exact_row(n, &generated, &ours, &theirs);
        eprint!("{row}");
        table.push_str(&row);
        if hnsw {
            let rows = hnsw_rows(n, &ours, &theirs);
            eprint!("{rows}");
            hnsw_table.push_str(&rows);
        }
        if hnsw && args.pgvector {
            eprintln!("[xtask] {n} vectors: measuring pgvector");
            let mut pg = env.command(root.join("target/release/examples/bench_pgvector"));
            pg.arg("--dir").arg(&dir).args(["--ef", &args.ef]);
            let rows = pgvector_rows(n, &generated, &ours, &json_of(pg)?);
            eprint!("{rows}");
            pg_table.push_str(&rows);
        }
    }
    let mut report = format!(
        "# cargo xtask bench-index\n\n{threads} cores; 384-dim clustered unit vectors (1,000 centres), 1,000 queries drawn the same way; k = 10.\n\n## Exact\n\n{table}\n## HNSW\n\n{hnsw_table}"
    );
    if args.pgvector {
        report.push_str(&format!("\n## pgvector\n\n{pg_table}"));
    }
    let out = root.join("out/bench-index/results.md");
    crate::cmd::write_atomically(&out, &report)?;
    println!("{report}\n(written to {})", out.display());
    Ok(())
}

/// Builds the Rust side of the bench (and of pgvector's, in the same cargo call so the two
/// share one build of their dependencies), after installing what the Python side needs.
fn build_examples(env: &Env, pgvector: bool) -> Result<()> {
    setup::ensure_python_module(env, "faiss", "faiss-cpu")?;
    let mut cmd = cargo(env);
    cmd.args([
        "build",
        "--release",
        "-p",
        "gear-infer",
        "--example",
        "bench_index",
    ]);
    if pgvector {
        setup::ensure_python_module(env, "pgserver", "pgserver")?;
        cmd.args(["-p", "gear-store", "--example", "bench_pgvector"]);
    }
    eprintln!("[xtask] building the index bench (release)");
    status(&mut cmd)
}

/// FAISS on the vectors in `dir` (`xtask/scripts/bench_faiss.py`), with as many OpenMP threads
/// as this machine has cores.
fn faiss(env: &Env, dir: &std::path::Path, n: usize, args: &Args, hnsw: bool) -> Result<Value> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut faiss = Command::new(&env.python);
    faiss
        .arg(crate::workspace_root().join("xtask/scripts/bench_faiss.py"))
        .arg(dir)
        .args([
            n.to_string(),
            "384".into(),
            args.single.to_string(),
            if hnsw { "1" } else { "0" }.into(),
            args.ef.clone(),
        ])
        .env("OMP_NUM_THREADS", threads.to_string());
    json_of(faiss)
}

/// The number at `key` of a bench's JSON (NaN when absent).
fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// `ours / theirs (ratio×)`.
fn ratio(ours: f64, theirs: f64) -> String {
    format!("{ours:.1} / {theirs:.1} ({:.2}×)", ours / theirs)
}

/// The per-`ef` runs a bench's JSON holds under `key` (none when absent).
fn runs<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map_or(&[], Vec::as_slice)
}

/// The exact table's row for one size.
fn exact_row(n: usize, generated: &Value, ours: &Value, theirs: &Value) -> String {
    format!(
        "| {n} | {:.1} | {:.3} | {:.0} / {:.0} ({:.0}) | {} | {} | {:.0}, {:.1}, {:.4} |\n",
        num(generated, "write_s"),
        num(ours, "open_s"),
        num(ours, "rss_open_mib"),
        num(ours, "rss_search_mib"),
        num(ours, "vector_file_mib"),
        ratio(num(ours, "exact_qps_1"), num(theirs, "flat_qps_1")),
        ratio(num(ours, "exact_qps_64"), num(theirs, "flat_qps_64")),
        num(ours, "f16_file_mib"),
        num(ours, "f16_qps_64"),
        num(ours, "f16_recall"),
    )
}

/// The HNSW table's rows for one size: ours beside FAISS at each `ef`.
fn hnsw_rows(n: usize, ours: &Value, theirs: &Value) -> String {
    let (a, b) = (runs(ours, "hnsw"), runs(theirs, "hnsw"));
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            format!(
                "| {n} | {} | {:.1} / {:.1} | {:.3}, {:.0} | {} | {} | {:.4} / {:.4} |\n",
                x["ef"],
                num(x, "build_s"),
                num(y, "build_s"),
                num(x, "open_s"),
                num(x, "graph_mib"),
                ratio(num(x, "qps"), num(y, "qps")),
                ratio(num(x, "qps_1"), num(y, "qps_1")),
                num(x, "recall"),
                num(y, "recall"),
            )
        })
        .collect()
}

/// The pgvector table's rows for one size: ours beside pgvector at each `ef`.
fn pgvector_rows(n: usize, generated: &Value, ours: &Value, pg: &Value) -> String {
    let (a, b) = (runs(ours, "hnsw"), runs(pg, "runs"));
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            format!(
                "| {n} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} / {:.0} | {:.0} / {:.0} | {:.4} / {:.4} |\n",
                x["ef"],
                num(generated, "write_s"),
                num(pg, "load_s"),
                num(x, "build_s"),
                num(pg, "build_s"),
                num(x, "qps_1"),
                num(y, "qps_1"),
                num(x, "qps"),
                num(y, "qps_64"),
                num(x, "recall"),
                num(y, "recall"),
            )
        })
        .collect()
}
