//! `cargo xtask bench-serve --store URL`: `/search` throughput of one `gear serve --store`
//! replica against two over the same PostgreSQL store, with the same clients and requests
//! (clients spread over the replicas round-robin). On one machine the replicas, PostgreSQL and
//! the clients share the same cores, so the figure bounds what a second replica adds here, not
//! on a second machine.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::cmd::status;
use crate::serve::{drive, percentile, Server};
use crate::setup::Env;

/// Schema the bench pushes the index into.
const SCHEMA: &str = "gear_bench_serve";

pub fn bench(env: &Env, gear: &Path, index: &Path, url: &str, requests: usize) -> Result<()> {
    eprintln!("[xtask] pushing {} into the store", index.display());
    status(
        env.command(gear)
            .args(["index", "push", "--index"])
            .arg(index)
            .args(["--store", url, "--schema", SCHEMA]),
    )?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut report = format!(
        "# cargo xtask bench-serve --store\n\n`gear serve --store` over {} pushed to PostgreSQL (schema `{SCHEMA}`, exact search), `/search` k = 10, no locate; {requests} requests per cell; replicas, PostgreSQL and clients on the same {cores} cores.\n\n| clients | replicas | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|\n",
        index.display()
    );
    let limit = Duration::from_secs(600);
    for clients in [8, 32] {
        for replicas in [1, 2] {
            let servers = (0..replicas)
                .map(|_| Server::start_with(env, gear, &["--store", url, "--schema", SCHEMA]))
                .collect::<Result<Vec<_>>>()?;
            let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
            let _ = drive(&urls, clients, clients * 4, false, limit);
            let (lat, errors, wall) = drive(&urls, clients, requests, false, limit);
            if !errors.is_empty() {
                bail!("{} errors, first: {}", errors.len(), errors[0]);
            }
            let row = format!(
                "| {clients} | {replicas} | {:.1} | {:.1} | {:.1} |\n",
                lat.len() as f64 / wall.as_secs_f64(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            );
            eprint!("{row}");
            report.push_str(&row);
        }
    }
    let out = crate::workspace_root().join("out/serve/replicas.md");
    crate::cmd::write_atomically(&out, &report)?;
    println!("{report}\n(written to {})", out.display());
    Ok(())
}
