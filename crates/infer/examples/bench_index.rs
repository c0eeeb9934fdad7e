//! The Rust side of `cargo xtask bench-index` (run it through the xtask, which also runs FAISS
//! on the same vectors and prints the comparison).
//!
//! `generate`: N clustered unit vectors (and 1,000 queries drawn the same way), written as an
//! index (`gear_infer::index_vectors`) and as raw little-endian float32 files for FAISS.
//! `measure`: in a fresh process, opens the index (time, RSS), runs exact search at batch 1 and
//! 64, and builds, saves, reopens and queries the HNSW graph at two `ef` settings (recall@10
//! against exact). Prints JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};
use gear_data::Document;
use gear_infer::{Backend, DocumentIndex, GraphVectors, HnswConfig, HnswParams, VectorPrecision};
use tch::{Device, Kind, Tensor};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Generate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        n: i64,
        #[arg(long, default_value_t = 384)]
        dim: i64,
        /// Recorded as the index's model (its files are fingerprinted).
        #[arg(long)]
        model: PathBuf,
    },
    Measure {
        #[arg(long)]
        dir: PathBuf,
        /// Queries timed one at a time.
        #[arg(long, default_value_t = 200)]
        single: usize,
        /// Build and measure HNSW too.
        #[arg(long)]
        hnsw: bool,
        /// HNSW candidate list sizes while searching.
        #[arg(long, value_delimiter = ',', default_value = "64,128")]
        ef: Vec<usize>,
        /// HNSW candidates per result scored again exactly (default: `HnswConfig`'s).
        #[arg(long)]
        rerank: Option<usize>,
        /// The graph's copy of the vectors (default: `HnswParams`').
        #[arg(long, value_enum)]
        graph_vectors: Option<GraphVectorsArg>,
    },
}

/// `--graph-vectors`.
#[derive(clap::ValueEnum, Clone, Copy)]
enum GraphVectorsArg {
    I8,
    F16,
    F32,
}

impl From<GraphVectorsArg> for GraphVectors {
    fn from(v: GraphVectorsArg) -> Self {
        match v {
            GraphVectorsArg::I8 => Self::I8,
            GraphVectorsArg::F16 => Self::F16,
            GraphVectorsArg::F32 => Self::F32,
        }
    }
}

/// What `measure --hnsw` runs.
struct HnswRun {
    ef: Vec<usize>,
    rerank: Option<usize>,
    graph_vectors: Option<GraphVectorsArg>,
}

const QUERIES: i64 = 1000;
const K: usize = 10;

/// Unit vectors around `clusters` random centres (noise 0.6 of a unit: neighbours are
/// mostly, not only, in the query's own cluster).
fn clustered(n: i64, dim: i64, centres: &Tensor, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let c = centres.size()[0];
    let which = Tensor::randint(c, [n], (Kind::Int64, Device::Cpu));
    let noise = Tensor::randn([n, dim], (Kind::Float, Device::Cpu)) * (0.6 / (dim as f64).sqrt());
    let v = centres.index_select(0, &which) + noise;
    &v / v.norm_scalaropt_dim(2, [1].as_slice(), true)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Share of the exact top-k the other search also returns, averaged over queries.
fn recall(exact: &[Vec<(usize, f32)>], other: &[Vec<(usize, f32)>]) -> f64 {
    exact
        .iter()
        .zip(other)
        .map(|(e, a)| {
            e.iter()
                .filter(|(r, _)| a.iter().any(|(x, _)| x == r))
                .count() as f64
                / e.len() as f64
        })
        .sum::<f64>()
        / exact.len() as f64
}

fn write_raw(path: &Path, t: &Tensor) -> anyhow::Result<()> {
    let flat = Vec::<f32>::try_from(t.flatten(0, -1))?;
    let bytes: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate { dir, n, dim, model } => generate(&dir, n, dim, &model),
        Command::Measure {
            dir,
            single,
            hnsw,
            ef,
            rerank,
            graph_vectors,
        } => {
            let run = hnsw.then_some(HnswRun {
                ef,
                rerank,
                graph_vectors,
            });
            measure(&dir, single, run)
        }
    }
}

/// `generate`: the vectors, the queries, the float32 and float16 indexes and FAISS's raw files.
fn generate(dir: &Path, n: i64, dim: i64, model: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    tch::manual_seed(1);
    let centres = Tensor::randn([1000, dim], (Kind::Float, Device::Cpu));
    let centres = &centres / centres.norm_scalaropt_dim(2, [1].as_slice(), true);
    let vectors = clustered(n, dim, &centres, 2);
    let queries = clustered(QUERIES, dim, &centres, 3);
    let corpus: Vec<Document> = (0..n)
        .map(|i| Document {
            id: format!("d{i}"),
            title: String::new(),
            text: format!("synthetic passage {i}"),
        })
        .collect();
    let index = dir.join("index");
    let half = dir.join("index-f16");
    for old in [&index, &half] {
        if old.exists() {
            std::fs::remove_dir_all(old)?;
        }
    }
    let start = Instant::now();
    gear_infer::index_vectors(&vectors, None, &corpus, model, &index, VectorPrecision::F32)?;
    let write_s = start.elapsed().as_secs_f64();
    gear_infer::index_vectors(&vectors, None, &corpus, model, &half, VectorPrecision::F16)?;
    write_raw(&dir.join("vectors.f32"), &vectors)?;
    write_raw(&dir.join("queries.f32"), &queries)?;
    println!(
        "{}",
        serde_json::json!({"n": n, "dim": dim, "write_s": write_s})
    );
    Ok(())
}

/// `measure`: open, exact search at batch 1 and 64, float16, and (with `hnsw`) the graph.
fn measure(dir: &Path, single: usize, hnsw: Option<HnswRun>) -> anyhow::Result<()> {
    let index_dir = dir.join("index");
    let rss_before = rss_mib();
    let start = Instant::now();
    let index = DocumentIndex::open(&index_dir, Device::Cpu)?;
    let open_s = start.elapsed().as_secs_f64();
    let rss_open = rss_mib();
    let dim = index.meta().dim as i64;
    let raw = std::fs::read(dir.join("queries.f32"))?;
    let q: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let queries = Tensor::from_slice(&q).view([QUERIES, dim]);
    // Warm-up (first touch of the mapped pages), then timed.
    let exact = index.search_embedded(&queries, K)?;
    let start = Instant::now();
    for i in 0..single as i64 {
        index.search_embedded(&queries.narrow(0, i % QUERIES, 1), K)?;
    }
    let qps_1 = single as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for b in 0..QUERIES / 64 {
        index.search_embedded(&queries.narrow(0, b * 64, 64), K)?;
    }
    let qps_64 = (QUERIES / 64 * 64) as f64 / start.elapsed().as_secs_f64();
    let rss_search = rss_mib();
    let file_bytes = std::fs::metadata(index_dir.join("embeddings.safetensors"))?.len();
    let mut out = serde_json::json!({
        "open_s": open_s, "rss_before_mib": rss_before, "rss_open_mib": rss_open,
        "rss_search_mib": rss_search, "vector_file_mib": file_bytes as f64 / (1 << 20) as f64,
        "exact_qps_1": qps_1, "exact_qps_64": qps_64,
    });
    drop(index);
    // float16: the same search over half the bytes, recall@10 against float32 exact.
    let half_dir = dir.join("index-f16");
    let half = DocumentIndex::open(&half_dir, Device::Cpu)?;
    let half_hits = half.search_embedded(&queries, K)?;
    let start = Instant::now();
    for b in 0..QUERIES / 64 {
        half.search_embedded(&queries.narrow(0, b * 64, 64), K)?;
    }
    out["f16_qps_64"] = ((QUERIES / 64 * 64) as f64 / start.elapsed().as_secs_f64()).into();
    out["f16_recall"] = recall(&exact, &half_hits).into();
    out["f16_file_mib"] = (std::fs::metadata(half_dir.join("embeddings.safetensors"))?.len()
        as f64
        / (1 << 20) as f64)
        .into();
    drop(half);
    if let Some(run) = hnsw {
        out["hnsw"] = measure_hnsw(&index_dir, &queries, &exact, single, &run)?.into();
    }
    println!("{out}");
    Ok(())
}

/// Builds and saves the graph once, then reopens and queries it at each `ef`.
fn measure_hnsw(
    index_dir: &Path,
    queries: &Tensor,
    exact: &[Vec<(usize, f32)>],
    single: usize,
    run: &HnswRun,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let start = Instant::now();
    let params = HnswParams {
        vectors: run
            .graph_vectors
            .map_or(HnswParams::default().vectors, Into::into),
        ..HnswParams::default()
    };
    let ann = gear_infer::build_ann(index_dir, &params, &mut |_, _| {})?;
    let build_s = start.elapsed().as_secs_f64();
    let graph_mib = std::fs::metadata(index_dir.join(&ann.file))?.len() as f64 / (1 << 20) as f64;
    let mut runs = Vec::new();
    for &e in &run.ef {
        let config = HnswConfig {
            ef_search: e,
            rerank: run.rerank.unwrap_or(HnswConfig::default().rerank),
        };
        let start = Instant::now();
        let index = DocumentIndex::open_with(index_dir, Device::Cpu, Backend::Hnsw(config))?;
        let open_s = start.elapsed().as_secs_f64();
        // Warm-up: the first pass touches the mapped graph.
        index.search_embedded(queries, K)?;
        let start = Instant::now();
        let approx = index.search_embedded(queries, K)?;
        let qps = QUERIES as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        for i in 0..single as i64 {
            index.search_embedded(&queries.narrow(0, i % QUERIES, 1), K)?;
        }
        let qps_1 = single as f64 / start.elapsed().as_secs_f64();
        let recall = recall(exact, &approx);
        runs.push(
            serde_json::json!({"ef": e, "build_s": build_s, "open_s": open_s,
            "graph_mib": graph_mib, "qps": qps, "qps_1": qps_1, "recall": recall}),
        );
    }
    Ok(runs)
}
