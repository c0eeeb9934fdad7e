//! `cargo xtask train-qar`: SQuAD's human questions split by article, GeAR trained on them, the
//! reranker and the fine-tuned bi-encoder trained beside it, every method on the held-out
//! articles.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::table::{qar_table, Reports, Scenario};
use super::{
    import_squad_files, s, shipped_squad, split_train, squad_eval_json, step, titles,
    train_bi_encoder, train_reranker, PrecisionArg, RunOptions, SplitOptions,
};
use crate::cmd::{build_gear, write_atomically};
use crate::setup::Env;

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
    /// Test questions whose answers the decoder generates (EM/F1; 0: none). The default covers
    /// every test question of the shipped split (2,001).
    #[arg(long, default_value_t = 5000)]
    generation_examples: usize,
    /// Epochs of the cross-encoder reranker baseline (trained on the same triples).
    #[arg(long, default_value_t = 1)]
    reranker_epochs: u64,
    /// Skip the trained baselines (the reranker and the fine-tuned bi-encoder, ≈ 50 min on 2
    /// cores): GeAR, its untrained start, the pretrained bi-encoder, BM25 and the hybrids only.
    #[arg(long)]
    no_trained_baselines: bool,
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
    /// bfloat16 mixed precision (a GPU, or a CPU with AVX-512 BF16 or AMX-BF16) for GeAR and
    /// both trained baselines; default: the config's (`fp32`).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
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
        precision: args.precision,
    };
    let split = SplitOptions {
        by_title: true,
        dev_fraction: args.dev_fraction,
        test_fraction: args.test_fraction,
    };
    split_train(env, &bin, &args.out, &triples, &run, &split)?;
    let test = args.out.join("test.jsonl");
    let reranker = args.out.join("reranker");
    let bi_encoder = if args.no_trained_baselines {
        None
    } else {
        train_reranker(env, &bin, &args.out, &reranker, args.reranker_epochs, &run)?;
        Some(train_bi_encoder(env, &bin, &args.out, &run)?)
    };
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
    let mut trained = vec!["--model", s(&ck)];
    if bi_encoder.is_some() {
        trained.extend(["--reranker", s(&reranker)]);
    }
    let reports = Reports {
        untrained: eval(&["--untrained", s(&args.config)], "0")?,
        trained: eval(&trained, &generation)?,
        finetuned: bi_encoder
            .map(|b| eval(&["--model", s(&b)], "0"))
            .transpose()?,
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
