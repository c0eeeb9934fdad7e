//! `cargo xtask train-rir` (the main job) and `cargo xtask train-qar`: data → triples → split →
//! train → evaluate the trained model and its untrained start on the held-out split → a table.
//! Every step's output stays in the output folder; rerunning reuses what is already there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::{build_gear, status};
use crate::setup::Env;

/// Options of `cargo xtask train-rir`.
#[derive(clap::Args, Debug)]
pub struct RirArgs {
    /// Output folder.
    #[arg(long, default_value = "out/train-rir")]
    out: PathBuf,
    /// Training configuration.
    #[arg(long, default_value = "configs/rir-demo.toml")]
    config: PathBuf,
    /// A corpus of `{id, title, text}` lines (or a SQuAD JSON file) instead of the embedded one.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Documents of the embedded corpus.
    #[arg(long, default_value_t = 400)]
    documents: usize,
    /// Query rewriter: `keywords` or `openai` (with --llm-url and --llm-model).
    #[arg(long, default_value = "keywords")]
    rewriter: String,
    /// OpenAI-compatible endpoint for `--rewriter openai`.
    #[arg(long)]
    llm_url: Option<String>,
    /// Model name for `--rewriter openai`.
    #[arg(long)]
    llm_model: Option<String>,
    /// Relevance threshold of the synthesis (the paper: 0.5; the generated corpus's invented
    /// names lower keyword–document cosine, so the demo uses 0.3).
    #[arg(long, default_value_t = 0.3)]
    min_similarity: f32,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data-parallel training with N processes on this machine (N GPUs with `--device cuda`,
    /// or N CPU processes); each takes the config's `data.batch_size` of every global batch.
    #[arg(long)]
    nproc: Option<usize>,
    /// `fp32` or `bf16` mixed precision (for `--device cuda`); default: the config's.
    #[arg(long)]
    precision: Option<String>,
}

/// Options of `cargo xtask train-qar`.
#[derive(clap::Args, Debug)]
pub struct QarArgs {
    /// SQuAD-format files (split by article into train/dev/test).
    #[arg(long, required = true, num_args = 1..)]
    squad: Vec<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "out/train-qar")]
    out: PathBuf,
    /// Training configuration.
    #[arg(long, default_value = "configs/qar-squad.toml")]
    config: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data-parallel training with N processes on this machine (N GPUs with `--device cuda`,
    /// or N CPU processes); each takes the config's `data.batch_size` of every global batch.
    #[arg(long)]
    nproc: Option<usize>,
    /// `fp32` or `bf16` mixed precision (for `--device cuda`); default: the config's.
    #[arg(long)]
    precision: Option<String>,
}

fn gear(env: &Env, bin: &Path, args: &[&str]) -> Result<()> {
    status(env.command(bin).args(args))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

pub fn rir(env: &Env, args: &RirArgs) -> Result<()> {
    let bin = build_gear(env)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let out = &args.out;
    let corpus = match &args.corpus {
        Some(c) => c.clone(),
        None => {
            let c = out.join("corpus.jsonl");
            if !c.exists() {
                step("generating the embedded corpus");
                gear(
                    env,
                    &bin,
                    &[
                        "data",
                        "corpus",
                        "--output",
                        s(&c),
                        "--count",
                        &args.documents.to_string(),
                    ],
                )?;
            }
            c
        }
    };
    let triples = out.join("rir.jsonl");
    if !triples.exists() {
        step("synthesising RIR triples (the paper's pipeline)");
        let mut a = vec![
            "data",
            "synth-rir",
            "--input",
            s(&corpus),
            "--output",
            s(&triples),
            "--rewriter",
            &args.rewriter,
        ];
        let sim = args.min_similarity.to_string();
        a.extend(["--min-similarity", &sim]);
        if let Some(u) = &args.llm_url {
            a.extend(["--llm-url", u]);
        }
        if let Some(m) = &args.llm_model {
            a.extend(["--llm-model", m]);
        }
        gear(env, &bin, &a)?;
    }
    let run = RunOptions {
        config: &args.config,
        device: &args.device,
        nproc: args.nproc,
        precision: args.precision.as_deref(),
    };
    split_train(env, &bin, out, &triples, &run, false)
}

pub fn qar(env: &Env, args: &QarArgs) -> Result<()> {
    let bin = build_gear(env)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let triples = args.out.join("qar.jsonl");
    if !triples.exists() {
        step("importing SQuAD");
        let mut all = String::new();
        for (i, f) in args.squad.iter().enumerate() {
            let part = args.out.join(format!("qar-{i}.jsonl"));
            gear(
                env,
                &bin,
                &["data", "squad", "--input", s(f), "--output", s(&part)],
            )?;
            all.push_str(&std::fs::read_to_string(&part)?);
        }
        std::fs::write(&triples, all)?;
    }
    let run = RunOptions {
        config: &args.config,
        device: &args.device,
        nproc: args.nproc,
        precision: args.precision.as_deref(),
    };
    split_train(env, &bin, &args.out, &triples, &run, true)
}

/// How to train: configuration, device, processes, precision.
struct RunOptions<'a> {
    config: &'a Path,
    device: &'a str,
    nproc: Option<usize>,
    precision: Option<&'a str>,
}

fn split_train(
    env: &Env,
    bin: &Path,
    out: &Path,
    triples: &Path,
    run_options: &RunOptions<'_>,
    by_title: bool,
) -> Result<()> {
    let RunOptions {
        config,
        device,
        nproc,
        precision,
    } = *run_options;
    let (train, dev, test) = (
        out.join("train.jsonl"),
        out.join("dev.jsonl"),
        out.join("test.jsonl"),
    );
    if !test.exists() {
        step("splitting by document into train / dev / test");
        let mut a = vec![
            "data",
            "split",
            "--input",
            s(triples),
            "--train",
            s(&train),
            "--dev",
            s(&dev),
            "--test",
            s(&test),
        ];
        if by_title {
            a.push("--by-title");
        }
        gear(env, bin, &a)?;
    }
    let run = out.join("run");
    step("training");
    let mut a = vec![
        "train",
        "--config",
        s(config),
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--out",
        s(&run),
        "--device",
        device,
    ];
    if run.join("checkpoint").exists() {
        a.push("--resume");
    }
    let nproc = nproc.map(|n| n.to_string());
    if let Some(n) = &nproc {
        a.extend(["--nproc", n]);
    }
    if let Some(p) = precision {
        a.extend(["--precision", p]);
    }
    gear(env, bin, &a)?;
    step("evaluating the untrained start and the trained model on the held-out test split");
    let untrained = eval_json(env, bin, &["--untrained", s(config)], &test, device)?;
    let trained = eval_json(
        env,
        bin,
        &["--model", s(&run.join("checkpoint").join("model"))],
        &test,
        device,
    )?;
    let table = table(&untrained, &trained);
    println!("\n{table}");
    let results = out.join("results.md");
    std::fs::write(
        &results,
        format!("# Results on {}\n\n{table}\n", test.display()),
    )?;
    println!(
        "written: {} (checkpoint: {})",
        results.display(),
        run.join("checkpoint").display()
    );
    Ok(())
}

fn eval_json(
    env: &Env,
    bin: &Path,
    model: &[&str],
    test: &Path,
    device: &str,
) -> Result<serde_json::Value> {
    let out = env
        .command(bin)
        .args([
            "eval",
            "triples",
            "--json",
            "--data",
            s(test),
            "--device",
            device,
        ])
        .args(model)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run gear eval")?;
    if !out.status.success() {
        bail!("gear eval triples failed ({})", out.status);
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn table(untrained: &serde_json::Value, trained: &serde_json::Value) -> String {
    let row = |name: &str, r: &serde_json::Value| {
        let f = |a: &str, b: &str| r[a][b].as_f64().unwrap_or(f64::NAN);
        format!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            f("global", "recall"),
            f("global", "map"),
            f("local", "recall"),
            f("local", "map"),
            f("generation", "rouge1"),
            f("generation", "rouge_l"),
        )
    };
    let gk = trained["global"]["k"].as_u64().unwrap_or(5);
    let lk = trained["local"]["k"].as_u64().unwrap_or(3);
    format!(
        "| model | global R@{gk} | global MAP@{gk} | local R@{lk} | local MAP@{lk} | ROUGE-1 | ROUGE-L |\n|---|---|---|---|---|---|---|\n{}\n{}",
        row("untrained start (MiniLM + new cross-attention/decoder)", untrained),
        row("GeAR trained", trained)
    )
}

fn step(what: &str) {
    eprintln!("\n[train] {what}");
}
