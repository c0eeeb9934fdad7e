//! `gear train`: GeAR training on triples with a TOML configuration, alone or data-parallel
//! (`--nproc`, or under a launcher's environment).

use std::path::PathBuf;

use anyhow::{Context, Result};
use gear_c10d::{Backend, DistEnv, ProcessGroup};
use gear_data::{Triple, TripleReader};
use gear_model::GearModel;
use gear_train::{Event, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{DeviceArg, PrecisionArg};

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
    #[command(flatten)]
    device: DeviceArg,
    /// Stop after this many optimiser steps (overrides `run.max_steps`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    max_steps: Option<u64>,
    /// `fp32` or `bf16` (autocast mixed precision: a GPU, or a CPU with AVX-512 BF16 or
    /// AMX-BF16; refused on other CPUs); overrides `run.precision`.
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
    /// Data-parallel training on this machine: start N processes (Gloo on CPU, NCCL on CUDA,
    /// one GPU per process), each with `data.batch_size` examples of every global batch.
    /// Without it, `gear train` joins the job the launcher variables (`RANK`, `WORLD_SIZE`,
    /// `MASTER_ADDR`, `MASTER_PORT`, `LOCAL_RANK`) describe, or trains alone when they are unset.
    #[arg(long, value_parser = crate::args::count(1..=256))]
    nproc: Option<usize>,
    /// Seconds a rank waits for its peers (rendezvous and every collective) before failing.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    dist_timeout: u64,
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
    let mut device = args.device.get();
    if let (Some(env), tch::Device::Cuda(_)) = (&dist_env, device) {
        // One GPU per process on each machine.
        device = tch::Device::Cuda(env.local_rank);
    }
    let main = dist_env.as_ref().is_none_or(|e| e.rank == 0);
    // Before reading the data: bf16 on a CPU without bf16 instructions is refused at once.
    config.run.precision.check(device)?;
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
    if let Some(precision) = args.precision {
        config.run.precision = precision.into();
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
    Ok(gear_train::initial_model(&config, device)?.0)
}
