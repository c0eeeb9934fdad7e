//! `cargo xtask ablate`: variants of a training config, each trained on a pipeline's train split
//! and scored on its **dev** split (never the test split the pipelines report), one table. How
//! the settings of `configs/qar-squad.toml` and `configs/rir-wiki.toml` were chosen
//! (docs/training.md, "Generation on real text").
//!
//! Each row is the base config with a few fields changed; the rows' configs are written beside
//! their runs (`OUT/ROW/config.toml`), so any row can be rerun with `gear train` alone.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{
    gear, import_squad_files, s, shipped_squad, split_only, squad_eval_json, step, train_gear,
    PrecisionArg, RunOptions, SplitOptions,
};
use crate::cmd::{build_gear, write_atomically};
use crate::setup::Env;

use super::ablate_rows::{Row, DEFAULT_ROWS, REMOVE, ROWS};

/// Options of `cargo xtask ablate`.
#[derive(clap::Args, Debug)]
pub struct AblateArgs {
    /// Base training configuration.
    #[arg(long, default_value = "configs/qar-squad.toml")]
    config: PathBuf,
    /// A pipeline's output folder holding `train.jsonl` and `dev.jsonl` (for QAR it is created
    /// from the shipped SQuAD files, split by article as `train-qar` does, when missing; for RIR
    /// run `cargo xtask train-rir` first).
    #[arg(long, default_value = "out/train-qar")]
    data: PathBuf,
    /// Rows to run, comma-separated (default: the decoder rows). `--list` shows them all.
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
    /// Print the rows and exit.
    #[arg(long)]
    list: bool,
    /// Epochs per row (overrides the config's `run.epochs`: ablations are shorter than the final
    /// run).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    epochs: u64,
    /// Dev questions whose answers are generated and scored.
    #[arg(long, default_value_t = 300)]
    generation_examples: usize,
    /// Output folder (one sub-folder per row).
    #[arg(long, default_value = "out/ablate")]
    out: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Training arithmetic of every row (`gear train --precision`; default the config's, fp32):
    /// bf16 trains about twice as fast on a CPU with AVX-512 BF16 or AMX. Rows compare only
    /// with rows trained in the same precision; the evaluation runs in fp32.
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
}

pub fn ablate(env: &Env, args: &AblateArgs) -> Result<()> {
    if args.list {
        for r in ROWS {
            println!("{:<30} {}", r.name, r.what);
        }
        return Ok(());
    }
    let names: Vec<&str> = if args.rows.is_empty() {
        DEFAULT_ROWS.to_vec()
    } else {
        args.rows.iter().map(String::as_str).collect()
    };
    let rows: Vec<&Row> = names
        .iter()
        .map(|n| {
            ROWS.iter().find(|r| r.name == *n).with_context(|| {
                format!("no ablation row `{n}` (cargo xtask ablate --list shows them)")
            })
        })
        .collect::<Result<_>>()?;
    let base = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let bin = build_gear(env)?;
    ensure_split(env, &bin, &args.data)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    // Rows measured by earlier runs into the same folder stay in the table.
    let table = args.out.join("ablations.md");
    let mut measured: Vec<(String, String)> = std::fs::read_to_string(&table)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let name = l.strip_prefix("| `")?.split('`').next()?;
            Some((name.to_owned(), l.to_owned()))
        })
        .collect();
    let header = format!(
        "Base config {}, {} epoch(s) per row, trained on {}/train.jsonl, scored on {}/dev.jsonl (dev articles).\n\n\
         | row | what changes | global R@5 | local R@1 | EM or ROUGE-1 | F1 or ROUGE-L | training |\n\
         |---|---|---|---|---|---|---|",
        args.config.display(),
        args.epochs,
        args.data.display(),
        args.data.display()
    );
    let mut lines = Vec::new();
    for row in rows {
        step(&format!("ablation row `{}`: {}", row.name, row.what));
        let line = run_row(env, &bin, args, &base, row)?;
        println!("{line}");
        measured.retain(|(n, _)| n != row.name);
        measured.push((row.name.to_owned(), line.clone()));
        measured.sort_by_key(|(n, _)| ROWS.iter().position(|r| r.name == n).unwrap_or(usize::MAX));
        let body: Vec<&str> = measured.iter().map(|(_, l)| l.as_str()).collect();
        write_atomically(&table, &format!("{header}\n{}\n", body.join("\n")))?;
        lines.push(line);
    }
    println!("\n{header}\n{}", lines.join("\n"));
    println!(
        "written: {} (with the rows measured before)",
        table.display()
    );
    Ok(())
}

/// The QAR split of the shipped SQuAD files in `data` (as `train-qar` makes it) when missing.
fn ensure_split(env: &Env, bin: &Path, data: &Path) -> Result<()> {
    if data.join("train.jsonl").is_file() && data.join("dev.jsonl").is_file() {
        return Ok(());
    }
    if data.file_name().is_some_and(|n| n != "train-qar") {
        bail!(
            "{} has no train.jsonl and dev.jsonl: run the pipeline that makes them first",
            data.display()
        );
    }
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let triples = import_squad_files(env, bin, &shipped_squad()?, data, None)?;
    let split = SplitOptions {
        by_title: true,
        dev_fraction: 0.1,
        test_fraction: 0.2,
    };
    split_only(env, bin, data, &triples, &split)
}

/// Trains `row` (its config written to `dir/config.toml`) unless a finished run is there;
/// returns the training minutes.
fn train_row(
    env: &Env,
    bin: &Path,
    args: &AblateArgs,
    base: &str,
    row: &Row,
    dir: &Path,
) -> Result<f64> {
    let config = dir.join("config.toml");
    let text = format!(
        "# cargo xtask ablate row `{}`: {}\n{}",
        row.name,
        row.what,
        row_config(base, row, args.epochs)?
    );
    write_atomically(&config, &text)?;
    let run = RunOptions {
        config: &config,
        device: &args.device,
        nproc: None,
        precision: args.precision,
    };
    let run_dir = dir.join("run");
    // A finished row is not trained again (its time is remembered); an interrupted one resumes.
    let done = dir.join("trained-minutes.txt");
    if let Ok(m) = std::fs::read_to_string(&done) {
        return Ok(m.trim().parse::<f64>().unwrap_or(f64::NAN));
    }
    let data = if row.negatives > 0 {
        with_negatives(env, bin, &args.data, &dir.join("data"), row.negatives)?
    } else {
        args.data.clone()
    };
    let started = Instant::now();
    train_gear(env, bin, &data, &config, &run_dir, &run)?;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    write_atomically(&done, &format!("{minutes:.2}\n"))?;
    Ok(minutes)
}

/// `data`'s split in `into`, its training triples carrying `n` mined hard negatives each.
fn with_negatives(env: &Env, bin: &Path, data: &Path, into: &Path, n: u32) -> Result<PathBuf> {
    std::fs::create_dir_all(into).with_context(|| format!("cannot create {}", into.display()))?;
    let train = into.join("train.jsonl");
    if !train.is_file() {
        let n = n.to_string();
        gear(
            env,
            bin,
            &[
                "data",
                "negatives",
                "--input",
                s(&data.join("train.jsonl")),
                "--output",
                s(&train),
                "--negatives",
                &n,
            ],
        )?;
    }
    std::fs::copy(data.join("dev.jsonl"), into.join("dev.jsonl"))
        .with_context(|| format!("cannot copy {}", data.join("dev.jsonl").display()))?;
    Ok(into.to_owned())
}

/// The base config with `row`'s fields set and `run.epochs` replaced.
fn row_config(base: &str, row: &Row, epochs: u64) -> Result<String> {
    let mut doc: toml::Table = toml::from_str(base).context("the base config is not TOML")?;
    let epochs = epochs.to_string();
    for (key, value) in row
        .set
        .iter()
        .copied()
        .chain([("run.epochs", epochs.as_str())])
    {
        let (section, field) = key.split_once('.').context("row keys are section.field")?;
        if value == REMOVE {
            if let Some(t) = doc.get_mut(section).and_then(toml::Value::as_table_mut) {
                t.remove(field);
            }
            continue;
        }
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))?
            .remove("v")
            .context("row value")?;
        doc.entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("`{section}` is not a table"))?
            .insert(field.to_owned(), value);
    }
    Ok(toml::to_string_pretty(&doc)?)
}

fn run_row(env: &Env, bin: &Path, args: &AblateArgs, base: &str, row: &Row) -> Result<String> {
    let dir = args.out.join(row.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (model, minutes, options) = match row.decodes {
        Some((other, options)) => {
            let model = args
                .out
                .join(other)
                .join("run")
                .join("checkpoint")
                .join("model");
            if !model.join("gear.toml").is_file() {
                bail!(
                    "row `{}` reads row `{other}`'s checkpoint: run `{other}` first",
                    row.name
                );
            }
            (model, None, options)
        }
        None => {
            let minutes = train_row(env, bin, args, base, row, &dir)?;
            let model = dir.join("run").join("checkpoint").join("model");
            (model, Some(minutes), [].as_slice())
        }
    };
    let mut model_args = vec!["--model", s(&model)];
    model_args.extend(options);
    let generation = args.generation_examples.to_string();
    let r = squad_eval_json(
        env,
        bin,
        &args.data.join("dev.jsonl"),
        &model_args,
        &generation,
        &args.device,
    )?;
    write_atomically(&dir.join("dev.json"), &serde_json::to_string_pretty(&r)?)?;
    let m = |k: &str| r["methods"]["gear"][k].as_f64();
    let f3 = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.3}"));
    let f1 = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.1}"));
    let (a, b) = if m("generation.f1").is_some() {
        (m("generation.exact_match"), m("generation.f1"))
    } else {
        (m("generation.rouge1"), m("generation.rouge_l"))
    };
    let minutes = minutes.map_or("—".into(), |m| format!("{m:.1} min"));
    Ok(format!(
        "| `{}` | {} | {} | {} | {} | {} | {minutes} |",
        row.name,
        row.what,
        f3(m("global.recall@5")),
        f3(m("local.recall@1")),
        f1(a),
        f1(b),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row's config, made from the committed base, keeps the rules `gear train` checks
    /// between fields (a reader learning rate, or reader layers reading below the top, need
    /// reader layers; reader layers and copying from the answer need something that reads the
    /// passage), so no row fails
    /// minutes into an ablation run.
    #[test]
    fn every_row_config_is_consistent_with_the_committed_base() {
        let base = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/qar-squad.toml"),
        )
        .unwrap();
        for row in ROWS.iter().filter(|r| r.decodes.is_none()) {
            let doc: toml::Table = toml::from_str(&row_config(&base, row, 1).unwrap()).unwrap();
            let get = |section: &str, field: &str| doc[section].get(field).cloned();
            let reader = get("model", "reader_layers").map_or(0, |v| v.as_integer().unwrap());
            let copy = get("model", "decoder_copy").map(|v| v.as_str().unwrap().to_owned());
            let memory = get("model", "decoder_memory").map(|v| v.as_str().unwrap().to_owned());
            let reads_passage = copy.as_deref().is_some_and(|c| c != "none")
                || memory.as_deref() == Some("fusion_and_document");
            assert!(
                reader == 0 || reads_passage,
                "row `{}`: reader layers with nothing reading the passage",
                row.name
            );
            assert!(
                reader > 0 || get("optim", "reader_lr_scale").is_none(),
                "row `{}`: a reader learning rate without reader layers",
                row.name
            );
            let copies_somewhere =
                get("loss", "copy_from").is_some_and(|v| v.as_str() != Some("anywhere"));
            assert!(
                !copies_somewhere || copy.as_deref().is_some_and(|c| c != "none"),
                "row `{}`: copy_from without a copy head",
                row.name
            );
            let free = get("model", "decoding").is_none_or(|v| v.as_str() == Some("free"));
            assert!(
                !free || get("model", "skip_question_echoes").is_none(),
                "row `{}`: skip_question_echoes with free decoding",
                row.name
            );
            let below = get("model", "reader_input").is_some_and(|v| v.as_str() == Some("below"));
            assert!(
                !below || (1..6).contains(&reader),
                "row `{}`: reader_input = \"below\" needs 1..=5 reader layers (MiniLM has 6)",
                row.name
            );
            assert_eq!(doc["run"]["epochs"].as_integer(), Some(1));
        }
        // A removed field is gone, not set to "-".
        let paper = ROWS.iter().find(|r| r.name == "paper").unwrap();
        let doc: toml::Table = toml::from_str(&row_config(&base, paper, 1).unwrap()).unwrap();
        assert!(doc["optim"].get("reader_lr_scale").is_none());
        assert_eq!(doc["model"]["reader_layers"].as_integer(), Some(0));
    }
}
