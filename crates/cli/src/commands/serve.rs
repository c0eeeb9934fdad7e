//! `gear serve`: the index and its model behind HTTP (the `gear-serve` crate).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use gear_serve::ServeOptions;

use super::search::SourceArgs;
use crate::args::{count, BackendArgs, DeviceArg, InferencePrecision};

/// Options of `gear serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    // The index folder (`gear index build`, opened read-only) or `--store URL` (an index
    // pushed into PostgreSQL; replicas over one store answer alike).
    #[command(flatten)]
    source: SourceArgs,
    /// Override the model recorded in the index (must be the same files).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    precision: InferencePrecision,
    #[command(flatten)]
    backend: BackendArgs,
    /// Most texts in one batched encoder forward (1: every request alone).
    #[arg(long, default_value_t = 32, value_parser = count(1..=4096))]
    max_batch: usize,
    /// Longest wait for more requests after the first of a batch, in milliseconds. 0 (the
    /// default): no waiting — a forward takes every request queued while the previous one ran
    /// (so batches form under load, and a lone client pays nothing).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    max_wait_ms: u64,
    /// Requests that may wait for the model; more get 503.
    #[arg(long, default_value_t = 1024, value_parser = count(1..=1_000_000))]
    queue: usize,
    /// Per-request time limit in seconds (waiting included); beyond it, 504.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout_s: u64,
    /// Largest request body in KiB (at most 1 GiB); beyond it, 413.
    #[arg(long, default_value_t = 1024, value_parser = count(1..=1_048_576))]
    max_body_kib: usize,
    /// Longest query in characters; beyond it, 413.
    #[arg(long, default_value_t = 2000, value_parser = count(1..=1_000_000))]
    max_query_chars: usize,
    /// Longest `document` sent to `/locate`, in characters; beyond it, 413. Locating reads all
    /// of a document, window by window, so this bounds one request's work before it starts
    /// (≈ 5 s on 2 CPU cores at the default).
    #[arg(long, default_value_t = 50_000, value_parser = count(1..=10_000_000))]
    max_document_chars: usize,
    /// After SIGTERM or Ctrl-C, seconds in-flight requests may take before the connections
    /// still open are closed and the server exits.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_grace_s: u64,
}

pub fn run(args: &Args) -> Result<()> {
    let bar = crate::spinner(format!("opening {}", args.source.describe()));
    let retriever = args.source.open(
        args.model.as_deref(),
        args.device.get(),
        args.precision,
        &args.backend,
    )?;
    bar.finish_and_clear();
    let documents = retriever.corpus()?.len();
    let options = ServeOptions {
        addr: args.addr,
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
        queue: args.queue,
        timeout: Duration::from_secs(args.timeout_s),
        max_body_bytes: args
            .max_body_kib
            .checked_mul(1024)
            .context("--max-body-kib overflows a byte count")?,
        max_query_chars: args.max_query_chars,
        max_document_chars: args.max_document_chars,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_s),
        ..ServeOptions::default()
    };
    let stopped = gear_serve::serve(retriever, &options, |addr| {
        // The first line on stdout: scripts and tests read the address from it.
        println!("listening on http://{addr} ({documents} documents; the search page is at /)");
    })?;
    match stopped {
        gear_serve::Stopped::Drained => eprintln!("stopped: every in-flight request answered"),
        gear_serve::Stopped::GraceEnded => eprintln!(
            "stopped: connections still open after --shutdown-grace-s {} were closed",
            args.shutdown_grace_s
        ),
    }
    Ok(())
}
