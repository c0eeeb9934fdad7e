//! `gear train-reranker`: the cross-encoder baseline trained on the same triples as GeAR.

use std::path::PathBuf;

use anyhow::{Context, Result};
use gear_model::{pretrained, CrossEncoder};
use gear_train::{train_cross_encoder, RerankConfig};
use indicatif::{ProgressBar, ProgressStyle};

use super::train::read_triples;
use crate::args::{DeviceArg, PrecisionArg};

/// Options of `gear train-reranker`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training triples (JSON lines): each question against its document's sentences.
    #[arg(long)]
    train: PathBuf,
    /// Output folder (config.json, model.safetensors, tokenizer.json; Hugging Face's
    /// BertForSequenceClassification layout with one label).
    #[arg(long)]
    out: PathBuf,
    /// BERT folder to start from (default: the pretrained all-MiniLM-L6-v2).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Passes over the triples.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    epochs: u64,
    /// Questions per optimiser step (each with all its document's sentences).
    #[arg(long, default_value_t = 16, value_parser = crate::args::count(1..=crate::args::MAX_BATCH))]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Token limit of `question [SEP] sentence`.
    #[arg(long, default_value_t = 128, value_parser = crate::args::count(3..=8192))]
    max_len: usize,
    /// Seed of the head's initialisation and the data order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    device: DeviceArg,
    /// Arithmetic of the forward pass: `bf16` autocast needs a GPU or a CPU with AVX-512 BF16 or
    /// AMX-BF16 (refused elsewhere).
    #[arg(long, value_enum, default_value = "fp32")]
    precision: PrecisionArg,
}

pub fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(args.epochs > 0, "--epochs must be at least 1");
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(
        args.lr > 0.0 && args.lr.is_finite(),
        "--lr must be positive"
    );
    anyhow::ensure!(args.max_len >= 8, "--max-len must be at least 8");
    let device = args.device.get();
    let init = match &args.init {
        Some(dir) => dir.clone(),
        None => pretrained::minilm_dir()?,
    };
    let train = read_triples(&args.train)?;
    tch::manual_seed(args.seed as i64);
    let model = CrossEncoder::from_bert_checkpoint(&init, args.max_len, device)
        .with_context(|| format!("initialising the reranker from {}", init.display()))?;
    let config = RerankConfig {
        epochs: args.epochs,
        batch_questions: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        precision: args.precision.into(),
        ..RerankConfig::default()
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} reranker [{bar:30}] {pos}/{len} steps {msg} ({elapsed}, eta {eta})",
        )
        .context("progress template")?
        .progress_chars("=> "),
    );
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let skipped = train_cross_encoder(&model, &train, &config, &mut |s| {
        let msg = format!(
            "loss {:.3} lr {:.1e} {:.1} q/s",
            s.loss, s.lr, s.questions_per_second
        );
        if !interactive && (s.step % 20 == 0 || s.step == s.total_steps) {
            eprintln!("reranker step {}/{}: {msg}", s.step, s.total_steps);
        }
        bar.set_length(s.total_steps);
        bar.set_position(s.step);
        bar.set_message(msg);
    })?;
    bar.finish();
    if skipped > 0 {
        eprintln!(
            "{skipped} of {} questions taught nothing (no answer-holding sentence, or a one-sentence document)",
            train.len()
        );
    }
    model.save(&args.out)?;
    eprintln!("reranker: {}", args.out.display());
    Ok(())
}
