//! `cargo xtask train-rir`, the main job: a corpus (SQuAD's Wikipedia paragraphs by default, a
//! user's corpus, or the embedded generated one) → RIR triples → split → GeAR trained → every
//! method on the held-out split (and, on SQuAD, on the held-out articles' human questions).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::table::{qar_table, Reports, Scenario};
use super::{
    gear, import_squad_files, s, same_job, shipped_squad, split_only, split_train, squad_eval_json,
    step, titles, train_bi_encoder, train_reranker, PrecisionArg, RunOptions, SplitOptions,
};
use crate::cmd::{build_gear, write_atomically};
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
    /// Held-out human SQuAD questions whose answers the decoder generates (zero-shot QAR
    /// EM/F1; 0: none).
    #[arg(long, default_value_t = 200)]
    human_generation_examples: usize,
    /// Query rewriter (`openai` with --llm-url and --llm-model).
    #[arg(long, value_enum, default_value_t = RewriterArg::Keywords)]
    rewriter: RewriterArg,
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
    /// bfloat16 mixed precision (a GPU, or a CPU with AVX-512 BF16 or AMX-BF16) for GeAR and
    /// both trained baselines; default: the config's (`fp32`).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
}

/// `--rewriter`, passed to `gear data synth-rir`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriterArg {
    /// The offline keyword extractor.
    Keywords,
    /// An OpenAI-compatible chat endpoint.
    Openai,
}

impl RewriterArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Keywords => "keywords",
            Self::Openai => "openai",
        }
    }
}

/// What the run is on, as `job.txt` records it.
fn job_of(args: &RirArgs) -> String {
    if args.generated {
        format!("generated corpus of {} documents", args.documents)
    } else if let Some(c) = &args.corpus {
        format!("corpus {}", c.display())
    } else if args.squad.is_empty() {
        "the shipped data/wiki-squad".to_string()
    } else {
        format!("SQuAD files {:?}", args.squad)
    }
}

/// The corpus to synthesise from, and — on SQuAD files — the imported human questions.
fn corpus_of(env: &Env, bin: &Path, args: &RirArgs) -> Result<(PathBuf, Option<PathBuf>)> {
    let out = &args.out;
    match (&args.corpus, args.generated) {
        (Some(c), _) => Ok((c.clone(), None)),
        (None, true) => {
            let c = out.join("corpus.jsonl");
            if !c.exists() {
                step("generating the embedded corpus of invented articles");
                let count = args.documents.to_string();
                gear(
                    env,
                    bin,
                    &["data", "corpus", "--output", s(&c), "--count", &count],
                )?;
            }
            Ok((c, None))
        }
        (None, false) => {
            let files = if args.squad.is_empty() {
                shipped_squad()?
            } else {
                args.squad.clone()
            };
            let passages = out.join("passages.jsonl");
            let human = import_squad_files(env, bin, &files, out, Some(&passages))?;
            Ok((passages, Some(human)))
        }
    }
}

/// `gear data synth-rir` over `corpus` into `triples` (skipped when they exist).
fn synthesise(
    env: &Env,
    bin: &Path,
    args: &RirArgs,
    corpus: &Path,
    triples: &Path,
    real: bool,
) -> Result<()> {
    if triples.exists() {
        return Ok(());
    }
    step("synthesising RIR triples (the paper's pipeline)");
    let mut a = vec![
        "data",
        "synth-rir",
        "--input",
        s(corpus),
        "--output",
        s(triples),
        "--rewriter",
        args.rewriter.as_str(),
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
    gear(env, bin, &a)
}

/// What the evaluation compares: the trained run, its config, and the trained baselines.
struct Trained<'a> {
    config: &'a Path,
    checkpoint: PathBuf,
    reranker: Option<PathBuf>,
    bi_encoder: Option<PathBuf>,
}

/// Every method on the held-out triples (and on the held-out articles' human questions, when
/// there are some): the results tables.
fn evaluate(
    env: &Env,
    bin: &Path,
    args: &RirArgs,
    trained: &Trained<'_>,
    test: &Path,
    human_test: Option<&Path>,
) -> Result<String> {
    step("evaluating every method on the held-out test split (gear eval squad: same sentences)");
    let reranker_arg: Vec<&str> = match &trained.reranker {
        Some(r) => vec!["--reranker", s(r)],
        None => Vec::new(),
    };
    let generation = args.generation_examples.to_string();
    let eval = |data: &Path, model: &[&str], generation: &str| {
        squad_eval_json(env, bin, data, model, generation, &args.device)
    };
    let reports = |data: &Path, generation: &str| -> Result<Reports> {
        Ok(Reports {
            untrained: eval(data, &["--untrained", s(trained.config)], "0")?,
            trained: eval(
                data,
                &[&["--model", s(&trained.checkpoint)][..], &reranker_arg].concat(),
                generation,
            )?,
            finetuned: match &trained.bi_encoder {
                Some(b) => Some(eval(data, &["--model", s(b)], "0")?),
                None => None,
            },
        })
    };
    let mut table = format!(
        "## Held-out RIR triples (keyword queries; local R@3 is the paper's RIR measure)\n\n{}",
        qar_table(&reports(test, &generation)?, Scenario::Rir)
    );
    if let Some(h) = human_test {
        step("evaluating on the held-out articles' human SQuAD questions (zero-shot transfer)");
        table.push_str(&format!(
            "\n\n## Human SQuAD questions of the same held-out articles (zero-shot: trained on keyword queries only)\n\n{}",
            qar_table(
                &reports(h, &args.human_generation_examples.to_string())?,
                Scenario::Qar
            )
        ));
    }
    if trained.reranker.is_none() {
        table.push_str("\n\n(Trained baselines skipped: rerun with --trained-baselines to train the cross-encoder reranker and the fine-tuned bi-encoder on the same triples.)");
    }
    Ok(table)
}

/// `cargo xtask train-rir`.
pub fn rir(env: &Env, args: &RirArgs) -> Result<()> {
    let bin = build_gear(env)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let out = &args.out;
    // Real text (the default): SQuAD paragraphs, split by article, with human questions.
    let real = !args.generated && args.corpus.is_none();
    // A rerun reuses what the folder holds, so it must be the same job's folder.
    same_job(out, &job_of(args))?;
    let (corpus, human) = corpus_of(env, &bin, args)?;
    let triples = out.join("rir.jsonl");
    synthesise(env, &bin, args, &corpus, &triples, real)?;
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
        precision: args.precision,
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
    let trained = Trained {
        config: &config,
        checkpoint: out.join("run").join("checkpoint").join("model"),
        reranker: args.trained_baselines.then(|| reranker.clone()),
        bi_encoder: if args.trained_baselines {
            train_reranker(env, &bin, out, &reranker, 1, &run)?;
            Some(train_bi_encoder(env, &bin, out, &run)?)
        } else {
            None
        },
    };
    let test = out.join("test.jsonl");
    if real {
        eprintln!(
            "[train] held-out test articles: {}",
            titles(&test)?.join(", ")
        );
    }
    let table = evaluate(env, &bin, args, &trained, &test, human_test.as_deref())?;
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
        trained.checkpoint.display()
    );
    Ok(())
}
