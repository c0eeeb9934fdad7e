//! `cargo xtask train-rir` (the main job) and `cargo xtask train-qar`: data → triples → split →
//! train → evaluate the trained model and its untrained start on the held-out split → a table.
//! Every step's output stays in the output folder; rerunning reuses what is already there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::{build_gear, status, write_atomically};
use crate::setup::Env;

/// Options of `cargo xtask train-rir`.
#[derive(clap::Args, Debug)]
pub struct RirArgs {
    /// Output folder.
    #[arg(long, default_value = "out/train-rir")]
    out: PathBuf,
    /// Training configuration (default: `configs/rir-wiki.toml` on real text,
    /// `configs/rir-demo.toml` with `--generated`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// SQuAD-format files whose Wikipedia paragraphs are the corpus (default: the shipped
    /// `data/wiki-squad/*.json`). Triples are split by article; the held-out articles' human
    /// questions are a second test set.
    #[arg(long, num_args = 1.., conflicts_with_all = ["corpus", "generated"])]
    squad: Vec<PathBuf>,
    /// A corpus of `{id, title, text}` lines instead (split by document; no human questions).
    #[arg(long, conflicts_with = "generated")]
    corpus: Option<PathBuf>,
    /// The generated corpus of invented articles instead (for tests and quick demos).
    #[arg(long)]
    generated: bool,
    /// Documents of the generated corpus.
    #[arg(long, default_value_t = 400)]
    documents: usize,
    /// Also train the baselines on the same training triples (the cross-encoder reranker,
    /// about 10 minutes on 2 CPU cores) and add them to the table.
    #[arg(long)]
    trained_baselines: bool,
    /// Held-out RIR triples whose unit sentence the decoder generates (ROUGE; 0: none).
    #[arg(long, default_value_t = 300)]
    generation_examples: usize,
    /// Query rewriter: `keywords` or `openai` (with --llm-url and --llm-model).
    #[arg(long, default_value = "keywords")]
    rewriter: String,
    /// OpenAI-compatible endpoint for `--rewriter openai`.
    #[arg(long)]
    llm_url: Option<String>,
    /// Model name for `--rewriter openai`.
    #[arg(long)]
    llm_model: Option<String>,
    /// Relevance threshold of the synthesis (default: the paper's 0.5 on real text; 0.3 on the
    /// generated corpus, whose invented names lower keyword–document cosine).
    #[arg(long)]
    min_similarity: Option<f32>,
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
    /// SQuAD-format files, split by article into train/dev/test (default: the shipped
    /// `data/wiki-squad/*.json`, the same files as `../shared/data`).
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

/// The shipped real corpus (`data/wiki-squad`, see its README).
fn shipped_squad() -> Result<Vec<PathBuf>> {
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
fn import_squad_files(
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
fn same_job(out: &Path, job: &str) -> Result<()> {
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

pub fn rir(env: &Env, args: &RirArgs) -> Result<()> {
    let bin = build_gear(env)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let out = &args.out;
    // Real text (the default): SQuAD paragraphs, split by article, with human questions.
    let real = !args.generated && args.corpus.is_none();
    // A rerun reuses what the folder holds, so it must be the same job's folder.
    let job = if args.generated {
        format!("generated corpus of {} documents", args.documents)
    } else if let Some(c) = &args.corpus {
        format!("corpus {}", c.display())
    } else if args.squad.is_empty() {
        "the shipped data/wiki-squad".to_string()
    } else {
        format!("SQuAD files {:?}", args.squad)
    };
    same_job(out, &job)?;
    let mut human = None;
    let corpus = match (&args.corpus, args.generated) {
        (Some(c), _) => c.clone(),
        (None, true) => {
            let c = out.join("corpus.jsonl");
            if !c.exists() {
                step("generating the embedded corpus of invented articles");
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
        (None, false) => {
            let files = if args.squad.is_empty() {
                shipped_squad()?
            } else {
                args.squad.clone()
            };
            let passages = out.join("passages.jsonl");
            human = Some(import_squad_files(env, &bin, &files, out, Some(&passages))?);
            passages
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
        let sim = args
            .min_similarity
            .unwrap_or(if args.generated { 0.3 } else { 0.5 })
            .to_string();
        a.extend(["--min-similarity", &sim]);
        if real {
            // Paragraphs, not whole articles: a Wikipedia paragraph has ~100–200 content tokens
            // (under the paper's 200-token floor), few sentences, and most of them longer than
            // the paper's 20-token units (with its limits 1,194 of 1,607 paragraphs had too
            // few candidates and 252 triples came out).
            a.extend([
                "--min-tokens",
                "60",
                "--unit-max-tokens",
                "40",
                "--min-candidates",
                "1",
            ]);
        }
        if let Some(u) = &args.llm_url {
            a.extend(["--llm-url", u]);
        }
        if let Some(m) = &args.llm_model {
            a.extend(["--llm-model", m]);
        }
        gear(env, &bin, &a)?;
    }
    let default_config = if args.generated {
        "configs/rir-demo.toml"
    } else {
        "configs/rir-wiki.toml"
    };
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| crate::workspace_root().join(default_config));
    let run = RunOptions {
        config: &config,
        device: &args.device,
        nproc: args.nproc,
        precision: args.precision.as_deref(),
    };
    let split = SplitOptions {
        by_title: real,
        dev_fraction: 0.1,
        test_fraction: if real { 0.2 } else { 0.1 },
    };
    split_train(env, &bin, out, &triples, &run, &split)?;
    // The human questions of the held-out articles: the same split rule (by article title,
    // same seed and fractions), applied to the imported SQuAD questions.
    let human_test = match &human {
        Some(qar) => {
            let dir = out.join("human");
            std::fs::create_dir_all(&dir)?;
            let test = dir.join("test.jsonl");
            if !test.exists() {
                split_only(env, &bin, &dir, qar, &split)?;
            }
            Some(test)
        }
        None => None,
    };
    let reranker = out.join("reranker");
    let bi_encoder = if args.trained_baselines {
        train_reranker(env, &bin, out, &reranker, 1, &args.device)?;
        Some(train_bi_encoder(env, &bin, out, &run)?)
    } else {
        None
    };
    let test = out.join("test.jsonl");
    if real {
        eprintln!(
            "[train] held-out test articles: {}",
            titles(&test)?.join(", ")
        );
    }
    step("evaluating every method on the held-out test split (gear eval squad: same sentences)");
    let ck = out.join("run").join("checkpoint").join("model");
    let reranker_arg: Vec<&str> = if args.trained_baselines {
        vec!["--reranker", s(&reranker)]
    } else {
        Vec::new()
    };
    let generation = args.generation_examples.to_string();
    let eval = |data: &Path, model: &[&str], generation: &str| {
        squad_eval_json(env, &bin, data, model, generation, &args.device)
    };
    let reports = |data: &Path, generation: &str| -> Result<Reports> {
        Ok(Reports {
            untrained: eval(data, &["--untrained", s(&config)], "0")?,
            trained: eval(
                data,
                &[&["--model", s(&ck)][..], &reranker_arg].concat(),
                generation,
            )?,
            finetuned: match &bi_encoder {
                Some(b) => Some(eval(data, &["--model", s(b)], "0")?),
                None => None,
            },
        })
    };
    let mut table = format!(
        "## Held-out RIR triples (keyword queries; local R@3 is the paper's RIR measure)\n\n{}",
        qar_table(&reports(&test, &generation)?, Scenario::Rir)
    );
    if let Some(h) = &human_test {
        step("evaluating on the held-out articles' human SQuAD questions (zero-shot transfer)");
        table.push_str(&format!(
            "\n\n## Human SQuAD questions of the same held-out articles (zero-shot: trained on keyword queries only)\n\n{}",
            qar_table(&reports(h, "0")?, Scenario::Qar)
        ));
    }
    if !args.trained_baselines {
        table.push_str("\n\n(Trained baselines skipped: rerun with --trained-baselines to train the cross-encoder reranker and the fine-tuned bi-encoder on the same triples.)");
    }
    println!("\n{table}");
    let results = out.join("results.md");
    let heading = if real {
        format!(
            "# Results on {} (held-out articles: {})",
            test.display(),
            titles(&test)?.join(", ")
        )
    } else {
        format!("# Results on {}", test.display())
    };
    write_atomically(&results, &format!("{heading}\n\n{table}\n"))?;
    println!(
        "written: {} (checkpoint: {})",
        results.display(),
        ck.display()
    );
    Ok(())
}

/// The fine-tuned bi-encoder baseline (GeAR's contrastive part alone, the paper's SBERT_RT row):
/// the GeAR config with `loss.alpha = 0` and `loss.local_weight = 0` — same model, data,
/// schedule and frozen document side, only `L_CL` trained — written to `out/bi-encoder.toml` and
/// trained into `out/bi-encoder`. Returns its checkpoint.
fn train_bi_encoder(env: &Env, bin: &Path, out: &Path, run: &RunOptions<'_>) -> Result<PathBuf> {
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
fn train_reranker(
    env: &Env,
    bin: &Path,
    out: &Path,
    reranker: &Path,
    epochs: u64,
    device: &str,
) -> Result<()> {
    if reranker.join("model.safetensors").is_file() {
        return Ok(());
    }
    step("training the cross-encoder reranker baseline on the same triples");
    let epochs = epochs.to_string();
    gear(
        env,
        bin,
        &[
            "train-reranker",
            "--train",
            s(&out.join("train.jsonl")),
            "--out",
            s(reranker),
            "--epochs",
            &epochs,
            "--device",
            device,
        ],
    )
}

/// `gear eval squad --json` on `data` with `model`'s arguments.
fn squad_eval_json(
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

pub fn qar(env: &Env, args: &QarArgs) -> Result<()> {
    let squad = if args.squad.is_empty() {
        shipped_squad()?
    } else {
        args.squad.clone()
    };
    let bin = build_gear(env)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let triples = import_squad_files(env, &bin, &squad, &args.out, None)?;
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
    train_reranker(
        env,
        &bin,
        &args.out,
        &reranker,
        args.reranker_epochs,
        &args.device,
    )?;
    let bi_encoder = train_bi_encoder(env, &bin, &args.out, &run)?;
    eprintln!(
        "[train] held-out test articles: {}",
        titles(&test)?.join(", ")
    );
    step("evaluating on the held-out articles (gear eval squad: every method, same sentences)");
    let ck = args.out.join("run").join("checkpoint").join("model");
    let generation = args.generation_examples.to_string();
    let eval = |model: &[&str], generation: &str| {
        squad_eval_json(env, &bin, &test, model, generation, &args.device)
    };
    let reports = Reports {
        untrained: eval(&["--untrained", s(&args.config)], "0")?,
        trained: eval(
            &["--model", s(&ck), "--reranker", s(&reranker)],
            &generation,
        )?,
        finetuned: Some(eval(&["--model", s(&bi_encoder)], "0")?),
    };
    let table = qar_table(&reports, Scenario::Qar);
    println!("\n{table}");
    let results = args.out.join("results.md");
    write_atomically(
        &results,
        &format!(
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

/// The `gear eval squad --json` reports one table is made of.
struct Reports {
    /// GeAR's untrained start (and the untrained baselines: pretrained bi-encoder, BM25, hybrid).
    untrained: serde_json::Value,
    /// GeAR trained (and the trained reranker when there is one).
    trained: serde_json::Value,
    /// The fine-tuned bi-encoder baseline's checkpoint, when trained.
    finetuned: Option<serde_json::Value>,
}

/// Which table [`qar_table`] prints.
#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    /// Local R@1/MAP@1, EM/F1.
    Qar,
    /// Local R@1/MAP@1 and R@3/MAP@3, ROUGE-1/L.
    Rir,
}

/// The table of every method on one test set (`gear eval squad --json` reports of the untrained
/// start and of the trained model, which also carries the trained baselines).
/// The local and generation columns of a scenario's table: local keys, generation keys, and
/// the header names of both.
fn table_columns(
    scenario: Scenario,
) -> (
    &'static [&'static str],
    [&'static str; 2],
    &'static str,
    &'static str,
) {
    match scenario {
        Scenario::Qar => (
            &["local.recall@1", "local.map@1"],
            ["generation.exact_match", "generation.f1"],
            "EM | F1",
            "local R@1 | local MAP@1",
        ),
        Scenario::Rir => (
            &[
                "local.recall@1",
                "local.map@1",
                "local.recall@3",
                "local.map@3",
            ],
            ["generation.rouge1", "generation.rouge_l"],
            "ROUGE-1 | ROUGE-L",
            "local R@1 | local MAP@1 | local R@3 | local MAP@3",
        ),
    }
}

/// A retrieval metric of one method in a report, or "—".
fn cell(r: &serde_json::Value, method: &str, key: &str) -> String {
    r["methods"][method][key]
        .as_f64()
        .map_or("—".to_string(), |v| format!("{v:.3}"))
}

/// A generation score of GeAR in a report, or "—".
fn gen(r: &serde_json::Value, key: &str) -> String {
    r["methods"]["gear"][key]
        .as_f64()
        .map_or("—".to_string(), |v| format!("{v:.1}"))
}

/// A method's local-retrieval time relative to the bi-encoder's, or "—".
fn time(r: &serde_json::Value, method: &str) -> String {
    let t = r["local_seconds"][method].as_f64();
    let base = r["local_seconds"]["bi-encoder"].as_f64();
    match (t, base) {
        (Some(t), Some(b)) if b > 0.0 && t / b < 0.01 => "< 0.01×".into(),
        (Some(t), Some(b)) if b > 0.0 => format!("{:.2}×", t / b),
        _ => "—".into(),
    }
}

fn qar_table(reports: &Reports, scenario: Scenario) -> String {
    let Reports {
        untrained,
        trained,
        finetuned,
    } = reports;
    let (local_keys, gen_keys, gen_names, local_names) = table_columns(scenario);
    let row = |name: &str, r: &serde_json::Value, method: &str, generation: bool| {
        let mut cells = vec![
            cell(r, method, "global.recall@5"),
            cell(r, method, "global.map@5"),
        ];
        cells.extend(local_keys.iter().map(|k| cell(r, method, k)));
        for k in gen_keys {
            cells.push(if generation { gen(r, k) } else { "—".into() });
        }
        cells.push(time(r, method));
        format!("| {name} | {} |", cells.join(" | "))
    };
    let columns = 5 + local_keys.len();
    let questions = trained["questions"].as_u64().unwrap_or(0);
    let passages = trained["passages"].as_u64().unwrap_or(0);
    let unlocatable = trained["unlocatable"].as_u64().unwrap_or(0);
    let generated = trained["generated"].as_u64().unwrap_or(0);
    let generation_note = if generated > 0 {
        format!("generation scored on the first {generated}")
    } else {
        "no generation scored".to_string()
    };
    let mut rows = vec![
        format!("{questions} queries over {passages} documents ({unlocatable} have no sentence holding the gold start: a miss for every local method); {generation_note}."),
        String::new(),
        format!("| system | global R@5 | global MAP@5 | {local_names} | {gen_names} | local time vs bi-encoder |"),
        format!("|---|{}", "---|".repeat(columns)),
        row("GeAR trained (cross-attention local retrieval, decoder)", trained, "gear", true),
        row("GeAR untrained (MiniLM + new cross-attention/decoder)", untrained, "gear", false),
        row("pretrained bi-encoder (all-MiniLM-L6-v2; sentences embedded)", untrained, "bi-encoder", false),
        row("GeAR trained's own bi-encoder (E_q fine-tuned, E_d frozen)", trained, "bi-encoder", false),
    ];
    if let Some(f) = finetuned {
        rows.push(row(
            "fine-tuned bi-encoder (GeAR's contrastive part alone, same data and steps)",
            f,
            "bi-encoder",
            false,
        ));
    }
    if trained["methods"]["reranker"].is_object() {
        rows.push(row(
            "cross-encoder reranker trained on the same triples (MiniLM, query [SEP] sentence)",
            trained,
            "reranker",
            false,
        ));
    }
    rows.extend([
        row(
            "BM25 (Okapi; documents / sentences)",
            untrained,
            "bm25",
            false,
        ),
        row(
            "hybrid: BM25 + pretrained bi-encoder (RRF)",
            untrained,
            "hybrid",
            false,
        ),
        row(
            "hybrid: BM25 + GeAR trained's bi-encoder (RRF)",
            trained,
            "hybrid",
            false,
        ),
    ]);
    rows.join("\n")
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

/// `gear data split` of `triples` into `out/{train,dev,test}.jsonl`.
fn split_only(
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

fn split_train(
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
fn train_gear(
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
        a.extend(["--precision", p]);
    }
    gear(env, bin, &a)
}

fn step(what: &str) {
    eprintln!("\n[train] {what}");
}
