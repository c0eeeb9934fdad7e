//! `gear train` and `gear eval triples`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use gear_c10d::{Backend, DistEnv, ProcessGroup};
use gear_data::{Scenario, Triple, TripleReader};
use gear_infer::{EvalOptions, EvalSet};
use gear_model::{parse_device, GearModel};
use gear_train::{gear_config, Event, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

/// Options of `gear train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Training configuration (TOML), e.g. configs/rir-demo.toml.
    #[arg(long)]
    config: PathBuf,
    /// Training triples (JSON lines).
    #[arg(long)]
    train: PathBuf,
    /// Dev triples evaluated at the end of each epoch (or every `run.eval_every` steps).
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Output folder: checkpoint/, metrics.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the checkpoint in --out (a new run when there is none yet).
    #[arg(long)]
    resume: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Stop after this many optimiser steps (overrides `run.max_steps`).
    #[arg(long)]
    max_steps: Option<u64>,
    /// `fp32` or `bf16` (mixed precision, meant for `--device cuda`); overrides `run.precision`.
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
    /// Data-parallel training on this machine: start N processes (Gloo on CPU, NCCL on CUDA,
    /// one GPU per process), each with `data.batch_size` examples of every global batch.
    /// Without it, `gear train` joins the job the launcher variables (`RANK`, `WORLD_SIZE`,
    /// `MASTER_ADDR`, `MASTER_PORT`, `LOCAL_RANK`) describe, or trains alone when they are unset.
    #[arg(long)]
    nproc: Option<usize>,
    /// Seconds a rank waits for its peers (rendezvous and every collective) before failing.
    #[arg(long, default_value_t = 1800)]
    dist_timeout: u64,
}

/// `--precision`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecisionArg {
    /// Float32 throughout.
    Fp32,
    /// bfloat16 autocast for the forward pass.
    Bf16,
}

/// `--scenario`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioArg {
    /// Relevant-information retrieval (local R@3, ROUGE).
    Rir,
    /// Question-answer retrieval (local R@1, EM/F1).
    Qar,
}

/// Options of `gear eval triples`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Triples to evaluate on.
    #[arg(long)]
    data: PathBuf,
    /// A GeAR checkpoint folder (gear.toml, model.safetensors, tokenizer.json).
    #[arg(long, conflicts_with = "untrained")]
    model: Option<PathBuf>,
    /// Evaluate the untrained start of this training config instead (pretrained encoders, new
    /// cross-attention and decoder, seeded as training seeds them).
    #[arg(long)]
    untrained: Option<PathBuf>,
    /// `rir` (local R@3, ROUGE) or `qar` (local R@1, EM/F1); default: the triples' own.
    #[arg(long, value_enum)]
    scenario: Option<ScenarioArg>,
    /// Examples used for generation metrics.
    #[arg(long, default_value_t = 64)]
    generation_examples: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also run the baselines on the same queries and sentences: the plain bi-encoder, BM25
    /// and the BM25 + dense hybrid (as `gear eval squad` does).
    #[arg(long)]
    baselines: bool,
    /// Local retrieval: add token weights up per sentence (`sum`, the paper's attention mass) or
    /// average them (`mean`, no bias towards long sentences).
    #[arg(long, value_enum, default_value_t = crate::infer::Aggregation::Sum)]
    aggregation: crate::infer::Aggregation,
    /// Fusion layer whose cross-attention ranks sentences (1-based); default: the model's
    /// (10/12 of its depth).
    #[arg(long)]
    layer: Option<usize>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Reads a whole triples file (errors name file, line and field).
pub fn read_triples(path: &PathBuf) -> Result<Vec<Triple>> {
    // (Errors name the file, the line and the field.)
    let triples = TripleReader::open(path)?.collect::<Result<Vec<_>, _>>()?;
    if triples.is_empty() {
        anyhow::bail!("{}: holds no triples", path.display());
    }
    Ok(triples)
}

pub fn train(args: &TrainArgs) -> Result<()> {
    if let Some(nproc) = args.nproc {
        if nproc == 0 {
            anyhow::bail!("--nproc must be at least 1");
        }
        if std::env::var_os("WORLD_SIZE").is_some() {
            anyhow::bail!("--nproc starts its own processes: unset WORLD_SIZE/RANK, or drop --nproc to join the job they describe");
        }
        return crate::launch::run(nproc);
    }
    let config = config_of(args)?;
    let dist_env = DistEnv::from_env()?;
    let mut device = parse_device(&args.device)?;
    if let (Some(env), tch::Device::Cuda(_)) = (&dist_env, device) {
        // One GPU per process on each machine.
        device = tch::Device::Cuda(env.local_rank);
    }
    let main = dist_env.as_ref().is_none_or(|e| e.rank == 0);
    let train = read_triples(&args.train)?;
    let dev = args.dev.as_ref().map(read_triples).transpose()?;
    let trainer = start(args, &config, device, main)?;
    let (mut trainer, world) = match &dist_env {
        None => (trainer, 1),
        Some(env) => {
            let group = ProcessGroup::new(
                env,
                Backend::for_device(device),
                std::time::Duration::from_secs(args.dist_timeout),
            )?;
            (trainer.distribute(group)?, env.world_size)
        }
    };
    if !main {
        // Ranks other than 0 train silently; rank 0 reports, logs and checkpoints.
        trainer.train(&train, None, &mut |_| {})?;
        return Ok(());
    }
    train_reporting(&mut trainer, &train, dev.as_deref(), &config, world, args)
}

/// The training config with the command line's overrides (`--max-steps`, `--precision`).
fn config_of(args: &TrainArgs) -> Result<TrainConfig> {
    let mut config = TrainConfig::from_toml_file(&args.config)?;
    if args.max_steps.is_some() {
        config.run.max_steps = args.max_steps;
    }
    match args.precision {
        None => {}
        Some(PrecisionArg::Fp32) => config.run.precision = gear_train::Precision::Fp32,
        Some(PrecisionArg::Bf16) => config.run.precision = gear_train::Precision::Bf16,
    }
    Ok(config)
}

/// A new run, or the checkpoint's with `--resume` (a new one, said so, when there is none); a
/// checkpoint already in `--out` without `--resume` is refused.
fn start(
    args: &TrainArgs,
    config: &TrainConfig,
    device: tch::Device,
    main: bool,
) -> Result<Trainer> {
    let trainer = if args.resume && gear_train::find_checkpoint(&args.out).is_some() {
        Trainer::resume(config.clone(), &args.out, device)?
    } else if args.resume {
        if main {
            eprintln!(
                "no checkpoint in {}: starting a new run",
                args.out.display()
            );
        }
        Trainer::new(config.clone(), &args.out, device)?
    } else {
        if gear_train::find_checkpoint(&args.out).is_some() {
            anyhow::bail!("{} already holds a checkpoint: pass --resume to continue it, or choose another --out", args.out.display());
        }
        Trainer::new(config.clone(), &args.out, device)?
    };
    Ok(trainer)
}

/// Rank 0's training: a progress bar over the run's steps (a line every 10 steps without a
/// terminal), evaluations printed, the checkpoint named at the end.
fn train_reporting(
    trainer: &mut Trainer,
    train: &[gear_data::Triple],
    dev: Option<&[gear_data::Triple]>,
    config: &TrainConfig,
    world: usize,
    args: &TrainArgs,
) -> Result<()> {
    let batches = train.len().div_ceil(config.data.batch_size * world);
    let total = (batches.div_ceil(config.optim.accumulation) as u64) * config.run.epochs;
    let total = config.run.max_steps.map_or(total, |m| m.min(total));
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} train [{bar:30}] {pos}/{len} steps {msg} ({elapsed}, eta {eta})",
        )
        .context("progress template")?
        .progress_chars("=> "),
    );
    bar.set_position(trainer.state().step);
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    eprintln!(
        "training on {} triples ({} steps{}), writing to {}",
        train.len(),
        total,
        if world > 1 {
            format!(
                ", {world} processes × {} examples per batch",
                config.data.batch_size
            )
        } else {
            String::new()
        },
        args.out.display()
    );
    trainer.train(train, dev, &mut |event| match event {
        Event::Step(s) => {
            let local = if config.loss.local_weight > 0.0 {
                format!(", local {:.3}", s.loss_local)
            } else {
                String::new()
            };
            let msg = format!(
                "loss {:.3} (cl {:.3}, lm {:.3}{local}) lr {:.1e} {:.1} ex/s",
                s.loss, s.loss_cl, s.loss_lm, s.lr, s.examples_per_second
            );
            // Without a terminal the bar is hidden: print a line every 10 steps instead.
            if !interactive && (s.step % 10 == 0 || s.step == s.total_steps) {
                eprintln!("step {}/{}: {msg}", s.step, s.total_steps);
            }
            // The trainer's count is exact (a data tail too small to share joins a batch).
            bar.set_length(
                config
                    .run
                    .max_steps
                    .map_or(s.total_steps, |m| m.min(s.total_steps)),
            );
            bar.set_position(s.step);
            bar.set_message(msg);
        }
        Event::Eval { step, report } => {
            let line = format!("step {step}: {}", report.gear_line());
            if interactive {
                bar.println(line);
            } else {
                eprintln!("{line}");
            }
        }
        Event::Checkpoint { step, path } => tracing::info!(step, "checkpoint {}", path.display()),
    })?;
    bar.finish();
    eprintln!("checkpoint: {}", args.out.join("checkpoint").display());
    Ok(())
}

/// The untrained start of a training config: GeAR from its `model.init`, seeded as training
/// seeds it.
pub fn untrained_model(config: &std::path::Path, device: tch::Device) -> Result<GearModel> {
    let config = TrainConfig::from_toml_file(config)?;
    let dir = config.init_dir()?;
    let encoder = gear_model::BertConfig::from_json_file(dir.join("config.json"))?;
    tch::manual_seed(config.run.seed as i64);
    Ok(GearModel::from_bert_checkpoint(&dir, Some(gear_config(&config, encoder)), device)?.0)
}

pub fn eval(args: &EvalArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let triples = read_triples(&args.data)?;
    let model = match (&args.model, &args.untrained) {
        (Some(dir), _) => GearModel::load(dir, device)?,
        (None, Some(config)) => untrained_model(config, device)?,
        (None, None) => anyhow::bail!("pass --model CHECKPOINT or --untrained CONFIG"),
    };
    let scenario = match args.scenario {
        Some(ScenarioArg::Rir) => Scenario::Rir,
        Some(ScenarioArg::Qar) => Scenario::Qar,
        None => triples.first().map_or(Scenario::Rir, |t| t.scenario),
    };
    let options = EvalOptions {
        aggregation: args.aggregation.into(),
        layer: args.layer,
        baselines: args.baselines,
        ..EvalOptions::for_scenario(scenario, args.generation_examples)
    };
    crate::infer::run_evaluation(
        &model,
        &EvalSet::from_triples(triples),
        &options,
        None,
        device,
        args.json,
    )
}
