//! `cargo xtask bench-train`: GeAR training throughput (examples/s) in float32 and in bfloat16
//! autocast, same config, data, seed and threads, one run each (issue 29's target: bf16 ≥ 1.7×
//! fp32 where the CPU has bfloat16 instructions). On a CPU without them `gear train` refuses
//! bf16 and the table says why.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::cmd::build_gear;
use crate::setup::Env;

/// Options of `cargo xtask bench-train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training config (its `[run] precision` is overridden per row).
    #[arg(long, default_value = "configs/qar-squad.toml")]
    config: PathBuf,
    /// SQuAD-format JSON whose questions are the training triples.
    #[arg(long, default_value = "../shared/data/squad-v1.1-dev-a.json")]
    data: PathBuf,
    /// Optimiser steps per precision.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    steps: u64,
    /// First steps left out of the median (allocation and caches warm up).
    #[arg(long, default_value_t = 4)]
    warmup: u64,
}

pub fn run(env: &Env, args: &Args) -> Result<()> {
    anyhow::ensure!(args.warmup < args.steps, "--warmup must be below --steps");
    let gear = build_gear(env)?;
    let tmp = tempfile::tempdir().context("temporary folder")?;
    let triples = tmp.path().join("triples.jsonl");
    let import = env
        .command(&gear)
        .args(["data", "squad", "--input"])
        .arg(&args.data)
        .arg("--output")
        .arg(&triples)
        .output()
        .context("cannot run gear data squad")?;
    if !import.status.success() {
        bail!(
            "gear data squad failed: {}",
            String::from_utf8_lossy(&import.stderr).trim()
        );
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "| precision ({}, {} steps, median of steps > {}, {threads} threads) | examples/s | speed-up |",
        args.config.display(),
        args.steps,
        args.warmup
    );
    println!("|---|---|---|");
    let fp32 = match train(env, &gear, args, &triples, tmp.path(), "fp32")? {
        Ok(rate) => rate,
        Err(e) => bail!("gear train --precision fp32 failed: {e}"),
    };
    println!("| fp32 | {fp32:.2} | 1.00× |");
    match train(env, &gear, args, &triples, tmp.path(), "bf16")? {
        Ok(rate) => println!("| bf16 | {rate:.2} | {:.2}× |", rate / fp32),
        Err(refusal) => println!("| bf16 | refused: {refusal} | |"),
    }
    Ok(())
}

/// The median examples/s of one short run, or `Err(message)` when `gear train` refused.
fn train(
    env: &Env,
    gear: &Path,
    args: &Args,
    triples: &Path,
    tmp: &Path,
    precision: &str,
) -> Result<Result<f64, String>> {
    let out = tmp.join(precision);
    eprintln!(
        "[bench] gear train --precision {precision}, {} steps",
        args.steps
    );
    let run = env
        .command(gear)
        .args(["train", "--config"])
        .arg(&args.config)
        .arg("--train")
        .arg(triples)
        .arg("--out")
        .arg(&out)
        .args([
            "--max-steps",
            &args.steps.to_string(),
            "--precision",
            precision,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run gear train")?;
    if !run.status.success() {
        return Ok(Err(crate::cmd::gear_error(&run.stderr)));
    }
    let metrics = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics)
        .with_context(|| format!("cannot read {}", metrics.display()))?;
    let mut rates: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["train"]["step"].as_u64().is_some_and(|s| s > args.warmup))
        .filter_map(|v| v["train"]["examples_per_second"].as_f64())
        .collect();
    if rates.is_empty() {
        bail!("{}: no step after the warm-up", metrics.display());
    }
    rates.sort_by(f64::total_cmp);
    Ok(Ok(rates[rates.len() / 2]))
}
