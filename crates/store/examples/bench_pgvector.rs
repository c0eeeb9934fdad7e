//! The pgvector side of `cargo xtask bench-index --pgvector` (run it through the xtask, which
//! measures our usearch index and FAISS on the same vectors in the same run and prints the
//! comparison). Reads the raw vectors and queries `bench_index generate` wrote, loads them into
//! a PostgreSQL table with `COPY … (FORMAT BINARY)`, builds pgvector's HNSW index (inner
//! product, the given `m` and `ef_construction`), then at each `ef_search` runs every query one
//! at a time and in batches of 64 (one statement each: `unnest` + `LATERAL`), with recall@10
//! against exact top-10 computed here. Without `--url` it starts a PostgreSQL of its own (the
//! `pgserver` wheel, as the tests do). Prints JSON.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a bench binary: fails loudly

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use pgvector::Vector;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{Kind as PgKind, Type};
use postgres::{Client, NoTls};
use tch::{Device, Kind, Tensor};

#[path = "../tests/pg/mod.rs"]
mod pg;

const K: i64 = 10;

#[derive(Parser)]
struct Args {
    /// Folder `bench_index generate` wrote (`vectors.f32`, `queries.f32`).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// A running PostgreSQL with pgvector; without it one is started for the run.
    #[arg(long)]
    url: Option<String>,
    #[arg(long, default_value_t = 32)]
    m: u32,
    #[arg(long, default_value_t = 200)]
    ef_construction: u32,
    #[arg(long, value_delimiter = ',', default_value = "40,100,200")]
    ef: Vec<u32>,
    /// Parallel workers for the index build (PostgreSQL's `max_parallel_maintenance_workers`).
    #[arg(long, default_value_t = 1)]
    workers: u32,
}

fn read_f32(path: &Path, dim: usize) -> Vec<Vec<f32>> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    raw.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect::<Vec<_>>()
        .chunks_exact(dim)
        .map(<[f32]>::to_vec)
        .collect()
}

fn main() {
    let args = Args::parse();
    let vectors = read_f32(&args.dir.join("vectors.f32"), args.dim);
    let queries = read_f32(&args.dir.join("queries.f32"), args.dim);
    let own = args.url.is_none().then(pg::Postgres::start);
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| own.as_ref().unwrap().url());
    let mut client = Client::connect(&url, NoTls).unwrap();
    client
        .batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS vector; DROP TABLE IF EXISTS bench_vectors;
             CREATE TABLE bench_vectors (id bigint PRIMARY KEY, embedding vector({}) NOT NULL);",
            args.dim
        ))
        .unwrap();
    let load_s = copy_in(&mut client, &vectors);
    client
        .batch_execute(&format!(
            "SET maintenance_work_mem = '4GB'; SET max_parallel_maintenance_workers = {};",
            args.workers
        ))
        .unwrap();
    let start = Instant::now();
    client
        .batch_execute(&format!(
            "CREATE INDEX bench_hnsw ON bench_vectors USING hnsw (embedding vector_ip_ops) WITH (m = {}, ef_construction = {})",
            args.m, args.ef_construction
        ))
        .unwrap();
    let build_s = start.elapsed().as_secs_f64();
    let index_mib: i64 = client
        .query_one("SELECT pg_relation_size('bench_hnsw')", &[])
        .unwrap()
        .get(0);
    let exact = exact_top(&vectors, &queries);
    let runs: Vec<serde_json::Value> = args
        .ef
        .iter()
        .map(|&ef| at_ef(&mut client, &queries, &exact, ef))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "n": vectors.len(), "load_s": load_s, "build_s": build_s,
            "index_mib": index_mib as f64 / (1 << 20) as f64,
            "m": args.m, "ef_construction": args.ef_construction, "workers": args.workers,
            "runs": runs,
        })
    );
    drop(client);
    drop(own);
}

/// `COPY bench_vectors FROM STDIN (FORMAT BINARY)`; seconds.
fn copy_in(client: &mut Client, vectors: &[Vec<f32>]) -> f64 {
    let oid: u32 = client
        .query_one("SELECT 'vector'::regtype::oid", &[])
        .unwrap()
        .get(0);
    let vector = Type::new("vector".into(), oid, PgKind::Simple, "public".into());
    let start = Instant::now();
    let sink = client
        .copy_in("COPY bench_vectors (id, embedding) FROM STDIN (FORMAT BINARY)")
        .unwrap();
    let mut writer = BinaryCopyInWriter::new(sink, &[Type::INT8, vector]);
    for (i, v) in vectors.iter().enumerate() {
        writer
            .write(&[&(i as i64), &Vector::from(v.clone())])
            .unwrap();
    }
    writer.finish().unwrap();
    start.elapsed().as_secs_f64()
}

/// The exact top-10 ids of every query (inner product), with libtorch.
fn exact_top(vectors: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<i64>> {
    let dim = vectors[0].len() as i64;
    let flat =
        |rows: &[Vec<f32>]| Tensor::from_slice(&rows.concat()).view([rows.len() as i64, dim]);
    let (v, q) = (flat(vectors), flat(queries));
    let (_, top) = q.matmul(&v.transpose(0, 1)).topk(K, 1, true, true);
    Vec::<Vec<i64>>::try_from(top.to_kind(Kind::Int64).to_device(Device::Cpu)).unwrap()
}

/// Recall@10 and queries per second at `ef_search = ef`, one query per statement and 64 per
/// statement.
fn at_ef(
    client: &mut Client,
    queries: &[Vec<f32>],
    exact: &[Vec<i64>],
    ef: u32,
) -> serde_json::Value {
    client
        .batch_execute(&format!("SET hnsw.ef_search = {ef}"))
        .unwrap();
    let one = client
        .prepare("SELECT id FROM bench_vectors ORDER BY embedding <#> $1 LIMIT 10")
        .unwrap();
    let many = client
        .prepare(
            "SELECT q.i, b.id FROM unnest($1::vector[]) WITH ORDINALITY AS q(v, i), LATERAL (SELECT id FROM bench_vectors ORDER BY embedding <#> q.v LIMIT 10) AS b",
        )
        .unwrap();
    let as_vectors: Vec<Vector> = queries.iter().map(|q| Vector::from(q.clone())).collect();
    // Warm-up: the index's pages into the buffer cache.
    for q in as_vectors.iter().take(50) {
        client.query(&one, &[q]).unwrap();
    }
    let start = Instant::now();
    let mut found: Vec<Vec<i64>> = Vec::with_capacity(queries.len());
    for q in &as_vectors {
        found.push(
            client
                .query(&one, &[q])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
        );
    }
    let qps_1 = queries.len() as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut batched = vec![Vec::new(); queries.len()];
    for (b, chunk) in as_vectors.chunks(64).enumerate() {
        for r in client.query(&many, &[&chunk.to_vec()]).unwrap() {
            let i: i64 = r.get(0);
            batched[b * 64 + i as usize - 1].push(r.get::<_, i64>(1));
        }
    }
    let qps_64 = queries.len() as f64 / start.elapsed().as_secs_f64();
    let recall = |got: &[Vec<i64>]| {
        exact
            .iter()
            .zip(got)
            .map(|(e, g)| e.iter().filter(|id| g.contains(id)).count() as f64 / e.len() as f64)
            .sum::<f64>()
            / exact.len() as f64
    };
    serde_json::json!({
        "ef": ef, "qps_1": qps_1, "qps_64": qps_64,
        "recall": recall(&found), "recall_batched": recall(&batched),
    })
}
