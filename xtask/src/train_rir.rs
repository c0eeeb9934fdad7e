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
    /// SQuAD-format files, split by article into train/dev/test (default: the two files in
    /// `../shared/data`).
    #[arg(long, num_args = 1..)]
    squad: Vec<PathBuf>,
    /// Share of articles held out for the test table.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Share of articles for the dev split (evaluated after each epoch; choose settings on it).
    #[arg(long, default_value_t = 0.1)]
    dev_fraction: f64,
    /// Test questions whose answers the decoder generates (EM/F1; 0: none).
    #[arg(long, default_value_t = 500)]
    generation_examples: usize,
    /// Epochs of the cross-encoder reranker baseline (trained on the same triples).
    #[arg(long, default_value_t = 1)]
    reranker_epochs: u64,
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
    let split = SplitOptions {
        by_title: false,
        dev_fraction: 0.1,
        test_fraction: 0.1,
    };
    split_train(env, &bin, out, &triples, &run, &split)?;
    evaluate_triples(env, &bin, out, &run)
}

pub fn qar(env: &Env, args: &QarArgs) -> Result<()> {
    let squad = if args.squad.is_empty() {
        let data = crate::workspace_root().join("../shared/data");
        let files = vec![
            data.join("squad-v1.1-dev-a.json"),
            data.join("squad-v2.0-train-first10.json"),
        ];
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            bail!(
                "{} not found: pass SQuAD-format files with --squad FILE…",
                missing.display()
            );
        }
        files
    } else {
        args.squad.clone()
    };
    let bin = build_gear(env)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let triples = args.out.join("qar.jsonl");
    if !triples.exists() {
        step("importing SQuAD");
        let mut all = String::new();
        for (i, f) in squad.iter().enumerate() {
            let part = args.out.join(format!("qar-{i}.jsonl"));
            gear(
                env,
                &bin,
                &["data", "squad", "--input", s(f), "--output", s(&part)],
            )?;
            all.push_str(&std::fs::read_to_string(&part)?);
        }
        let tmp = args.out.join("qar.jsonl.tmp");
        std::fs::write(&tmp, all)?;
        std::fs::rename(&tmp, &triples)?;
    }
    let run = RunOptions {
        config: &args.config,
        device: &args.device,
        nproc: args.nproc,
        precision: args.precision.as_deref(),
    };
    let split = SplitOptions {
        by_title: true,
        dev_fraction: args.dev_fraction,
        test_fraction: args.test_fraction,
    };
    split_train(env, &bin, &args.out, &triples, &run, &split)?;
    let test = args.out.join("test.jsonl");
    let reranker = args.out.join("reranker");
    if !reranker.join("model.safetensors").is_file() {
        step("training the cross-encoder reranker baseline on the same triples");
        let epochs = args.reranker_epochs.to_string();
        gear(
            env,
            &bin,
            &[
                "train-reranker",
                "--train",
                s(&args.out.join("train.jsonl")),
                "--out",
                s(&reranker),
                "--epochs",
                &epochs,
                "--device",
                &args.device,
            ],
        )?;
    }
    eprintln!(
        "[train] held-out test articles: {}",
        titles(&test)?.join(", ")
    );
    step("evaluating on the held-out articles (gear eval squad: every method, same sentences)");
    let ck = args.out.join("run").join("checkpoint").join("model");
    let generation = args.generation_examples.to_string();
    let squad_eval = |model: &[&str], generation: &str| -> Result<serde_json::Value> {
        let mut a = vec![
            "eval",
            "squad",
            "--json",
            "--no-cross-encoder",
            "--data",
            s(&test),
            "--device",
            &args.device,
            "--generation-examples",
            generation,
        ];
        a.extend(model);
        json_of(env, &bin, &a)
    };
    let untrained = squad_eval(&["--untrained", s(&args.config)], "0")?;
    let trained = squad_eval(
        &["--model", s(&ck), "--reranker", s(&reranker)],
        &generation,
    )?;
    let table = qar_table(&untrained, &trained);
    println!("\n{table}");
    let results = args.out.join("results.md");
    std::fs::write(
        &results,
        format!(
            "# Results on {} (held-out articles: {})\n\n{table}\n",
            test.display(),
            titles(&test)?.join(", ")
        ),
    )?;
    println!(
        "written: {} (checkpoint: {})",
        results.display(),
        ck.display()
    );
    Ok(())
}

/// The distinct article titles of a triples file, in order of appearance.
fn titles(path: &Path) -> Result<Vec<String>> {
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
fn json_of(env: &Env, bin: &Path, args: &[&str]) -> Result<serde_json::Value> {
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

/// The QAR table: every method on the held-out articles' questions.
fn qar_table(untrained: &serde_json::Value, trained: &serde_json::Value) -> String {
    let cell = |r: &serde_json::Value, method: &str, key: &str, scale: f64| {
        r["methods"][method][key]
            .as_f64()
            .map_or("—".to_string(), |v| format!("{:.3}", v * scale))
    };
    let gen = |r: &serde_json::Value, key: &str| {
        r["methods"]["gear"][key]
            .as_f64()
            .map_or("—".to_string(), |v| format!("{v:.1}"))
    };
    let time = |r: &serde_json::Value, method: &str| {
        let t = r["local_seconds"][method].as_f64();
        let base = r["local_seconds"]["bi-encoder"].as_f64();
        match (t, base) {
            (Some(t), Some(b)) if b > 0.0 && t / b < 0.01 => "< 0.01×".into(),
            (Some(t), Some(b)) if b > 0.0 => format!("{:.2}×", t / b),
            _ => "—".into(),
        }
    };
    let row = |name: &str, r: &serde_json::Value, method: &str, generation: bool| {
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            cell(r, method, "global.recall@5", 1.0),
            cell(r, method, "global.map@5", 1.0),
            cell(r, method, "local.recall@1", 1.0),
            cell(r, method, "local.map@1", 1.0),
            if generation {
                gen(r, "generation.exact_match")
            } else {
                "—".into()
            },
            if generation {
                gen(r, "generation.f1")
            } else {
                "—".into()
            },
            time(r, method),
        )
    };
    let questions = trained["questions"].as_u64().unwrap_or(0);
    let passages = trained["passages"].as_u64().unwrap_or(0);
    let unlocatable = trained["unlocatable"].as_u64().unwrap_or(0);
    [
        format!("{questions} questions over {passages} passages ({unlocatable} questions have no sentence holding an answer start: a miss for every local method)."),
        String::new(),
        "| system | global R@5 | global MAP@5 | local R@1 | local MAP@1 | EM | F1 | local time vs bi-encoder |".into(),
        "|---|---|---|---|---|---|---|---|".into(),
        row("GeAR trained (cross-attention local retrieval, decoder)", trained, "gear", true),
        row("GeAR untrained (MiniLM + new cross-attention/decoder)", untrained, "gear", false),
        row("pretrained bi-encoder (all-MiniLM-L6-v2; sentences embedded)", untrained, "bi-encoder", false),
        row("GeAR trained's own bi-encoder (E_q fine-tuned, E_d frozen)", trained, "bi-encoder", false),
        row("cross-encoder reranker trained on the same triples (MiniLM, question [SEP] sentence)", trained, "reranker", false),
        row("BM25 (Okapi; passages / sentences)", untrained, "bm25", false),
        row("hybrid: BM25 + pretrained bi-encoder (RRF)", untrained, "hybrid", false),
        row("hybrid: BM25 + GeAR trained's bi-encoder (RRF)", trained, "hybrid", false),
    ]
    .join("\n")
}

/// How to split triples into train / dev / test.
struct SplitOptions {
    /// By the document title (the SQuAD article) instead of the document id.
    by_title: bool,
    dev_fraction: f64,
    test_fraction: f64,
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
    split: &SplitOptions,
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
    gear(env, bin, &a)
}

/// The RIR table: the trained model and its untrained start on the held-out triples.
fn evaluate_triples(env: &Env, bin: &Path, out: &Path, run_options: &RunOptions<'_>) -> Result<()> {
    let RunOptions { config, device, .. } = *run_options;
    let run = out.join("run");
    let test = out.join("test.jsonl");
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
