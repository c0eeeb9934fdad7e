//! The pipelines `cargo xtask train-rir` (the main job) and `cargo xtask train-qar`: data →
//! triples → split → train → evaluate the trained model and its untrained start on the held-out
//! split → a table. Every step's output stays in the output folder; rerunning reuses what is
//! already there.
//!
//! `rir.rs` and `qar.rs` are the two pipelines, `table.rs` the results table; this module holds
//! the steps both run (each a `gear` command).

mod ablate;
mod ablate_rows;
mod qar;
mod rir;
mod table;

pub use ablate::{ablate, AblateArgs};
pub use qar::{qar, QarArgs};
pub use rir::{rir, RirArgs};

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::{status, write_atomically};
use crate::setup::Env;

/// Runs `gear ARGS`, failing on a non-zero exit.
pub(super) fn gear(env: &Env, bin: &Path, args: &[&str]) -> Result<()> {
    status(env.command(bin).args(args))
}

/// A path as a command-line argument.
pub(super) fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// The shipped real corpus (`data/wiki-squad`, see its README).
pub(super) fn shipped_squad() -> Result<Vec<PathBuf>> {
    let data = crate::workspace_root().join("data/wiki-squad");
    let files = vec![
        data.join("squad-v1.1-dev-a.json"),
        data.join("squad-v2.0-train-first10.json"),
    ];
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        bail!(
            "{} not found (it ships with the repository): pass SQuAD-format files with --squad FILE…",
            missing.display()
        );
    }
    Ok(files)
}

/// Imports SQuAD files into `out`: `qar.jsonl` (every answerable question) and, when `passages`
/// is given, every paragraph as a `{id, title, text}` corpus line.
pub(super) fn import_squad_files(
    env: &Env,
    bin: &Path,
    files: &[PathBuf],
    out: &Path,
    passages: Option<&Path>,
) -> Result<PathBuf> {
    let triples = out.join("qar.jsonl");
    if triples.exists() && passages.is_none_or(|p| p.exists()) {
        return Ok(triples);
    }
    step("importing SQuAD");
    let (mut all, mut corpus) = (String::new(), String::new());
    for (i, f) in files.iter().enumerate() {
        let part = out.join(format!("qar-{i}.jsonl"));
        let part_corpus = out.join(format!("passages-{i}.jsonl"));
        gear(
            env,
            bin,
            &[
                "data",
                "squad",
                "--input",
                s(f),
                "--output",
                s(&part),
                "--corpus",
                s(&part_corpus),
            ],
        )?;
        all.push_str(&std::fs::read_to_string(&part)?);
        corpus.push_str(&std::fs::read_to_string(&part_corpus)?);
    }
    if let Some(p) = passages {
        write_atomically(p, &corpus)?;
    }
    write_atomically(&triples, &all)?;
    Ok(triples)
}

/// Records `job` in `out/job.txt`, or checks that the folder holds the same job: a rerun reuses
/// the folder's triples, splits and checkpoint, which must not come from other data.
pub(super) fn same_job(out: &Path, job: &str) -> Result<()> {
    let path = out.join("job.txt");
    match std::fs::read_to_string(&path) {
        Ok(old) if old.trim() == job => Ok(()),
        Ok(old) => bail!(
            "{} holds a run on {} but this run is on {job}: pass another --out, or remove the folder",
            out.display(),
            old.trim()
        ),
        Err(_) => write_atomically(&path, &format!("{job}\n")),
    }
}

/// The fine-tuned bi-encoder baseline (GeAR's contrastive part alone, the paper's SBERT_RT row):
/// the GeAR config with `loss.alpha = 0` and `loss.local_weight = 0` — same model, data,
/// schedule and frozen document side, only `L_CL` trained — written to `out/bi-encoder.toml` and
/// trained into `out/bi-encoder`. Returns its checkpoint.
pub(super) fn train_bi_encoder(
    env: &Env,
    bin: &Path,
    out: &Path,
    run: &RunOptions<'_>,
) -> Result<PathBuf> {
    let text = std::fs::read_to_string(run.config)
        .with_context(|| format!("cannot read {}", run.config.display()))?;
    let mut config: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not TOML", run.config.display()))?;
    let loss = config
        .entry("loss")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .with_context(|| format!("{}: `loss` is not a table", run.config.display()))?;
    loss.insert("alpha".into(), toml::Value::Float(0.0));
    loss.insert("local_weight".into(), toml::Value::Float(0.0));
    let derived = out.join("bi-encoder.toml");
    write_atomically(
        &derived,
        &format!(
            "# {} with only the contrastive loss (written by cargo xtask: the fine-tuned bi-encoder baseline)\n{}",
            run.config.display(),
            toml::to_string(&config)?
        ),
    )?;
    let dir = out.join("bi-encoder");
    let ck = dir.join("checkpoint").join("model");
    step(
        "training the fine-tuned bi-encoder baseline (contrastive loss alone) on the same triples",
    );
    train_gear(env, bin, out, &derived, &dir, run)?;
    Ok(ck)
}

/// Trains the cross-encoder reranker baseline on `out/train.jsonl` unless it exists.
pub(super) fn train_reranker(
    env: &Env,
    bin: &Path,
    out: &Path,
    reranker: &Path,
    epochs: u64,
    run: &RunOptions<'_>,
) -> Result<()> {
    if reranker.join("model.safetensors").is_file() {
        return Ok(());
    }
    step("training the cross-encoder reranker baseline on the same triples");
    let epochs = epochs.to_string();
    let train = out.join("train.jsonl");
    let mut args = vec![
        "train-reranker",
        "--train",
        s(&train),
        "--out",
        s(reranker),
        "--epochs",
        &epochs,
        "--device",
        run.device,
    ];
    if let Some(p) = run.precision {
        args.extend(["--precision", p.as_str()]);
    }
    gear(env, bin, &args)
}

/// `gear eval squad --json` on `data` with `model`'s arguments.
pub(super) fn squad_eval_json(
    env: &Env,
    bin: &Path,
    data: &Path,
    model: &[&str],
    generation: &str,
    device: &str,
) -> Result<serde_json::Value> {
    let mut a = vec![
        "eval",
        "squad",
        "--json",
        "--no-cross-encoder",
        "--data",
        s(data),
        "--device",
        device,
        "--generation-examples",
        generation,
    ];
    a.extend(model);
    json_of(env, bin, &a)
}

/// The distinct article titles of a triples file, in order of appearance.
pub(super) fn titles(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let title = v["document"]["title"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !out.contains(&title) {
            out.push(title);
        }
    }
    Ok(out)
}

/// Runs `gear ARGS` and parses its standard output as JSON.
pub(super) fn json_of(env: &Env, bin: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let out = env
        .command(bin)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run gear {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("gear {} failed ({})", args.join(" "), out.status);
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("gear {}: output is not JSON", args.join(" ")))
}

/// How to split triples into train / dev / test.
pub(super) struct SplitOptions {
    /// By the document title (the SQuAD article) instead of the document id.
    pub by_title: bool,
    /// Share for the dev split.
    pub dev_fraction: f64,
    /// Share for the test split.
    pub test_fraction: f64,
}

/// How to train: configuration, device, processes, precision.
pub(super) struct RunOptions<'a> {
    /// The training config.
    pub config: &'a Path,
    /// `--device` of `gear train`.
    pub device: &'a str,
    /// `--nproc` of `gear train`.
    pub nproc: Option<usize>,
    /// `--precision` of `gear train`.
    pub precision: Option<PrecisionArg>,
}

/// `gear data split` of `triples` into `out/{train,dev,test}.jsonl`.
pub(super) fn split_only(
    env: &Env,
    bin: &Path,
    out: &Path,
    triples: &Path,
    split: &SplitOptions,
) -> Result<()> {
    let (train, dev, test) = (
        out.join("train.jsonl"),
        out.join("dev.jsonl"),
        out.join("test.jsonl"),
    );
    step(if split.by_title {
        "splitting by article into train / dev / test"
    } else {
        "splitting by document into train / dev / test"
    });
    let (dev_fraction, test_fraction) = (
        split.dev_fraction.to_string(),
        split.test_fraction.to_string(),
    );
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
        "--dev-fraction",
        &dev_fraction,
        "--test-fraction",
        &test_fraction,
    ];
    if split.by_title {
        a.push("--by-title");
    }
    gear(env, bin, &a)
}

/// Splits `triples` (unless `out` holds the split already) and trains on it into `out/run`.
pub(super) fn split_train(
    env: &Env,
    bin: &Path,
    out: &Path,
    triples: &Path,
    run_options: &RunOptions<'_>,
    split: &SplitOptions,
) -> Result<()> {
    if !out.join("test.jsonl").exists() {
        split_only(env, bin, out, triples, split)?;
    }
    step("training");
    train_gear(
        env,
        bin,
        out,
        run_options.config,
        &out.join("run"),
        run_options,
    )
}

/// `gear train --config CONFIG` on `out/{train,dev}.jsonl` into `run_dir` (resumed when it holds
/// a checkpoint), with the run's device, processes and precision.
pub(super) fn train_gear(
    env: &Env,
    bin: &Path,
    out: &Path,
    config: &Path,
    run_dir: &Path,
    run: &RunOptions<'_>,
) -> Result<()> {
    let (train, dev) = (out.join("train.jsonl"), out.join("dev.jsonl"));
    let mut a = vec![
        "train",
        "--config",
        s(config),
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--out",
        s(run_dir),
        "--device",
        run.device,
    ];
    if run_dir.join("checkpoint").exists() {
        a.push("--resume");
    }
    let nproc = run.nproc.map(|n| n.to_string());
    if let Some(n) = &nproc {
        a.extend(["--nproc", n]);
    }
    if let Some(p) = run.precision {
        a.extend(["--precision", p.as_str()]);
    }
    gear(env, bin, &a)
}

/// Announces a pipeline step on stderr.
pub(super) fn step(what: &str) {
    eprintln!("\n[train] {what}");
}

/// `--precision` of the pipelines, passed to `gear train` and `gear train-reranker`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecisionArg {
    /// Float32 throughout.
    Fp32,
    /// bfloat16 mixed precision (a GPU, or a CPU with AVX-512 BF16 or AMX-BF16).
    Bf16,
}

impl PrecisionArg {
    /// The value `gear train --precision` takes.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        }
    }
}
