//! `gear train --nproc N`: one machine, N training processes (N GPUs, or N CPU processes).
//!
//! The launcher re-runs this very command N times without `--nproc`, each child with the
//! variables torch.distributed's launchers set (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
//! `MASTER_ADDR=127.0.0.1`, `MASTER_PORT` = a free port, and `OMP_NUM_THREADS` = cores / N
//! unless set), and waits for all of them. When one
//! fails the others fail too (their next collective sees the closed connection, or times out);
//! stragglers still running after a grace period are killed. Across machines, run `gear train`
//! on every node with those variables set by hand or by a scheduler instead (docs/training.md).

use std::ffi::OsString;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long the others may take to notice a failed rank before they are killed.
const GRACE: Duration = Duration::from_secs(60);

/// The current command line without its `--nproc` option.
fn child_args() -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let s = a.to_string_lossy();
        if s == "--nproc" {
            args.next();
        } else if !s.starts_with("--nproc=") {
            out.push(a);
        }
    }
    out
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("finding a free port for MASTER_PORT")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `nproc` ranks of the current command and waits for all of them.
pub fn run(nproc: usize) -> Result<()> {
    let exe = std::env::current_exe().context("locating the gear binary")?;
    let port = std::env::var("MASTER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .map_or_else(free_port, Ok)?;
    let args = child_args();
    // Like torchrun: ranks on one machine share its cores instead of each taking all of them.
    let threads = std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        (cores / nproc).max(1).to_string()
    });
    eprintln!("launching {nproc} training processes (rendezvous 127.0.0.1:{port})");
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let child = Command::new(&exe)
            .args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("OMP_NUM_THREADS", &threads)
            .spawn()
            .with_context(|| format!("starting rank {rank}"));
        match child {
            Ok(c) => children.push((rank, c)),
            Err(e) => {
                for (_, c) in &mut children {
                    let _ = c.kill();
                }
                return Err(e);
            }
        }
    }
    let mut failures: Vec<(usize, ExitStatus)> = Vec::new();
    let mut first_failure: Option<Instant> = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            if let Some(status) = children[i].1.try_wait()? {
                let (rank, _) = children.remove(i);
                if !status.success() {
                    failures.push((rank, status));
                    first_failure.get_or_insert_with(Instant::now);
                }
            } else {
                i += 1;
            }
        }
        if first_failure.is_some_and(|t| t.elapsed() > GRACE) {
            for (rank, c) in &mut children {
                eprintln!("rank {rank} still running {GRACE:?} after a peer failed: killing it");
                let _ = c.kill();
                let _ = c.wait();
            }
            children.clear();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if failures.is_empty() {
        return Ok(());
    }
    failures.sort_by_key(|f| f.0);
    let list: Vec<String> = failures
        .iter()
        .map(|(rank, status)| format!("rank {rank}: {status}"))
        .collect();
    bail!("distributed training failed ({})", list.join(", "))
}
