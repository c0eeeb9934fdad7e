//! `cargo xtask bench-encode`: passages/s of `gear embed` against sentence-transformers on the
//! same texts, machine, thread count, max length and batch size.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd::build_gear;
use crate::setup::{self, Env};

/// Options of `cargo xtask bench-encode`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// SQuAD-format JSON whose passages are embedded.
    #[arg(long, default_value = "../shared/data/squad-v1.1-dev-a.json")]
    data: PathBuf,
    /// Threads for both stacks (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Token limit per passage.
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Passages per forward pass, both stacks.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Timed runs per stack; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The model both stacks run: the default all-MiniLM-L6-v2, or an optional model (installed
    /// first if missing, as `cargo xtask setup --model` does).
    #[arg(long, value_enum)]
    model: Option<setup::OptionalModel>,
    /// Limit to the first N passages (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Also time `gear embed --precision bf16` against fp32 (speed, and every embedding's
    /// cosine to its fp32 embedding); on a CPU without bfloat16 instructions the table says why
    /// it was refused.
    #[arg(long)]
    bf16: bool,
}

pub fn run(env: &Env, args: &Args) -> Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let mut passages = squad_passages(&args.data)?;
    if args.limit > 0 {
        passages.truncate(args.limit);
    }
    let model_dir = match args.model {
        Some(m) => setup::ensure_model(env, m)?,
        None => env.minilm_dir(),
    };
    let model_name = args
        .model
        .map_or("all-MiniLM-L6-v2", setup::OptionalModel::name);
    let input = std::env::temp_dir().join(format!("gear-bench-encode-{}.txt", std::process::id()));
    std::fs::write(&input, passages.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", input.display()))?;
    setup::ensure_sentence_transformers(env)?;
    let gear = build_gear(env)?;

    eprintln!(
        "[bench] {model_name}: {} passages, {threads} threads, max length {}, batch {}",
        passages.len(),
        args.max_len,
        args.batch_size
    );
    let (mut gear_secs, fp32_rows) =
        time_gear(env, &gear, &model_dir, &input, threads, args, "fp32")?
            .map_err(|e| anyhow::anyhow!("gear embed failed: {e}"))?;
    let bf16 = if args.bf16 {
        Some(time_gear(
            env, &gear, &model_dir, &input, threads, args, "bf16",
        )?)
    } else {
        None
    };
    let st = time_sentence_transformers(env, &model_dir, &input, threads, args);
    let _ = std::fs::remove_file(&input);
    let mut st_secs = st?;

    let n = passages.len() as f64;
    let g = median(&mut gear_secs);
    let s = median(&mut st_secs);
    println!(
        "| stack | passages | threads | median seconds ({} runs) | passages/s |",
        args.runs
    );
    println!("|---|---|---|---|---|");
    println!(
        "| gear embed (Rust, tch 0.24, libtorch 2.11) | {} | {threads} | {g:.2} | {:.1} |",
        passages.len(),
        n / g
    );
    println!(
        "| sentence-transformers (Python, torch 2.11) | {} | {threads} | {s:.2} | {:.1} |",
        passages.len(),
        n / s
    );
    println!(
        "\nratio (gear / sentence-transformers, passages/s): {:.3}",
        s / g
    );
    match bf16 {
        None => {}
        Some(Err(refusal)) => println!("\ngear embed --precision bf16: refused: {refusal}"),
        Some(Ok((mut secs, rows))) => {
            let b = median(&mut secs);
            let worst = rows
                .iter()
                .zip(&fp32_rows)
                .map(|(x, y)| {
                    x.iter()
                        .zip(y)
                        .map(|(p, q)| f64::from(*p) * f64::from(*q))
                        .sum::<f64>()
                })
                .fold(1.0f64, f64::min);
            println!(
                "\n| gear embed | median seconds | passages/s | speed-up | min cosine to fp32 |"
            );
            println!("|---|---|---|---|---|");
            println!("| fp32 | {g:.2} | {:.1} | 1.00× | 1 |", n / g);
            println!(
                "| bf16 | {b:.2} | {:.1} | {:.2}× | {worst:.6} |",
                n / b,
                g / b
            );
        }
    }
    Ok(())
}

/// Unit embeddings, one per passage, as `gear embed` printed them.
type Rows = Vec<Vec<f32>>;

/// `gear embed --precision P`'s seconds for each run over the passages in `input`, with the
/// embeddings of the first run; `Err(message)` when gear refused the precision.
fn time_gear(
    env: &Env,
    gear: &std::path::Path,
    model_dir: &std::path::Path,
    input: &std::path::Path,
    threads: usize,
    args: &Args,
    precision: &str,
) -> Result<Result<(Vec<f64>, Rows), String>> {
    let mut gear_secs = Vec::new();
    let mut rows = Vec::new();
    for run in 1..=args.runs {
        let stdin = std::fs::File::open(input)?;
        let out = env
            .command(gear)
            .args(["embed", "--stats", "--threads", &threads.to_string()])
            .arg("--model")
            .arg(model_dir)
            .args([
                "--max-len",
                &args.max_len.to_string(),
                "--batch-size",
                &args.batch_size.to_string(),
                "--precision",
                precision,
            ])
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .context("cannot run gear")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Ok(Err(crate::cmd::gear_error(&out.stderr)));
        }
        let stats: serde_json::Value = stderr
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .context("gear embed printed no stats line")?;
        let secs = stats["seconds"]
            .as_f64()
            .context("stats without `seconds`")?;
        eprintln!("[bench] gear {precision} run {run}: {secs:.2} s");
        gear_secs.push(secs);
        if run == 1 {
            rows = embeddings(&out.stdout)?;
        }
    }
    Ok(Ok((gear_secs, rows)))
}

/// The `embedding` of every JSON line `gear embed` printed.
fn embeddings(stdout: &[u8]) -> Result<Rows> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).context("gear embed output")?;
            Ok(serde_json::from_value(v["embedding"].clone())?)
        })
        .collect()
}

/// sentence-transformers' seconds for each run (`xtask/scripts/bench_encode.py`, same inputs).
fn time_sentence_transformers(
    env: &Env,
    model_dir: &std::path::Path,
    input: &std::path::Path,
    threads: usize,
    args: &Args,
) -> Result<Vec<f64>> {
    let out = Command::new(&env.python)
        .arg(crate::workspace_root().join("xtask/scripts/bench_encode.py"))
        .arg("--model")
        .arg(model_dir)
        .arg("--input")
        .arg(input)
        .args([
            "--threads",
            &threads.to_string(),
            "--max-len",
            &args.max_len.to_string(),
        ])
        .args([
            "--batch-size",
            &args.batch_size.to_string(),
            "--runs",
            &args.runs.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the sentence-transformers benchmark")?;
    if !out.status.success() {
        bail!("sentence-transformers benchmark failed");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let py: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("the Python benchmark printed no result")?;
    let st_secs: Vec<f64> = py["seconds"]
        .as_array()
        .context("result without `seconds`")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();

    Ok(st_secs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Every `context` of a SQuAD-format file, newlines folded to spaces (one passage per line).
fn squad_passages(path: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {} (pass --data with a SQuAD-format JSON file)",
            path.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let mut out = Vec::new();
    for (a, article) in json["data"]
        .as_array()
        .context("no `data` array")?
        .iter()
        .enumerate()
    {
        let paragraphs = article["paragraphs"]
            .as_array()
            .with_context(|| format!("{}: data[{a}] has no `paragraphs`", path.display()))?;
        for (p, para) in paragraphs.iter().enumerate() {
            let context = para["context"].as_str().with_context(|| {
                format!(
                    "{}: data[{a}].paragraphs[{p}] has no `context`",
                    path.display()
                )
            })?;
            out.push(context.replace(['\n', '\r'], " "));
        }
    }
    Ok(out)
}
