//! `gear export`: a trained GeAR bi-encoder as a sentence-transformers folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use gear_model::{EncoderSide, GearModel};

/// Options of `gear export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// GeAR checkpoint folder (e.g. out/train-rir/run/checkpoint/model).
    #[arg(long)]
    model: PathBuf,
    /// Folder to write (must not exist yet).
    #[arg(long)]
    out: PathBuf,
    /// Which encoder: the document encoder `E_d` or the query encoder `E_q` (identical when the
    /// encoders are shared).
    #[arg(long, value_enum, default_value_t = Side::Document)]
    side: Side,
}

/// `--side`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The query encoder (without its cross-attention blocks).
    Query,
    /// The document encoder.
    Document,
}

pub fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(
        !args.out.exists(),
        "{} exists already; remove it or choose another --out",
        args.out.display()
    );
    let model = GearModel::load(&args.model, tch::Device::Cpu)
        .with_context(|| format!("loading the checkpoint {}", args.model.display()))?;
    let side = match args.side {
        Side::Query => EncoderSide::Query,
        Side::Document => EncoderSide::Document,
    };
    model.export_sentence_transformers(&args.out, side)?;
    eprintln!(
        "wrote {} (sentence-transformers folder: mean pooling, normalised)",
        args.out.display()
    );
    Ok(())
}
