//! `gear eval triples|squad|beir`: the one evaluation protocol (`gear_eval::evaluate`) on
//! triples or SQuAD files, with the baselines beside GeAR, and BEIR's measures.

use std::path::PathBuf;

use anyhow::{Context, Result};
use gear_data::{Scenario, TripleReader};
use gear_eval::{EvalOptions, EvalSet};

use crate::args::{
    count, Aggregation, EvalModelArgs, GearModelArgs, LayersArg, ScenarioArg, MAX_BATCH,
};

/// Options of `gear eval triples`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Triples to evaluate on.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    model: EvalModelArgs,
    /// `rir` (local R@3, ROUGE) or `qar` (local R@1, EM/F1); default: the triples' own.
    #[arg(long, value_enum)]
    scenario: Option<ScenarioArg>,
    /// Examples used for generation metrics.
    #[arg(long, default_value_t = 64, value_parser = count(0..=10_000_000))]
    generation_examples: usize,
    /// Write the generated answers: `FILE.json` as the official SQuAD predictions
    /// (`{question_id: answer}`, for `gear score squad` or the official script), `FILE.jsonl`
    /// one line per question with its query, answer and gold texts.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also run the baselines on the same queries and sentences: the plain bi-encoder, BM25
    /// and the BM25 + dense hybrid (as `gear eval squad` does).
    #[arg(long)]
    baselines: bool,
    /// Local retrieval: add token weights up per sentence (`sum`, the paper's attention mass) or
    /// average them (`mean`, no bias towards long sentences).
    #[arg(long, value_enum, default_value_t = Aggregation::Sum)]
    aggregation: Aggregation,
    /// Fusion layer whose cross-attention ranks sentences (1-based); default: the model's
    /// (10/12 of its depth).
    #[arg(long, value_parser = count(0..=1000))]
    layer: Option<usize>,
}

pub fn eval_triples(args: &EvalArgs) -> Result<()> {
    let device = args.model.device();
    let triples = super::train::read_triples(&args.data)?;
    let model = args.model.load()?;
    let scenario = args.scenario.map_or_else(
        || triples.first().map_or(Scenario::Rir, |t| t.scenario),
        Into::into,
    );
    let options = EvalOptions {
        aggregation: args.aggregation.into(),
        layer: args.layer,
        baselines: args.baselines,
        ..EvalOptions::for_scenario(scenario, args.generation_examples)
    };
    run_evaluation(
        &model,
        &EvalSet::from_triples(triples),
        &options,
        None,
        device,
        Output {
            json: args.json,
            predictions: args.predictions.as_deref(),
        },
    )
}

/// Options of `gear eval beir`.
#[derive(clap::Args, Debug)]
pub struct BeirArgs {
    /// A BEIR dataset folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`).
    #[arg(long)]
    data: PathBuf,
    /// The qrels split.
    #[arg(long, default_value = "test")]
    split: String,
    #[command(flatten)]
    model: GearModelArgs,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32, value_parser = count(1..=MAX_BATCH))]
    batch_size: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn eval_beir(args: &BeirArgs) -> Result<()> {
    let data = gear_data::read_beir(&args.data, &args.split)?;
    let (model, _) = args.model.load()?;
    let bar = crate::spinner("beir".into());
    let report = gear_eval::eval_beir(Some(&model), &data, args.batch_size, &mut |step| {
        bar.set_message(format!("beir: {step}"));
    })?;
    bar.finish_and_clear();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    outln!(
        "{} judged queries, {} documents ({})",
        report.queries,
        report.documents,
        args.data.display()
    )?;
    outln!(
        "{:>10}  {}",
        "method",
        gear_eval::MEASURES.map(|m| format!("{m:>10}")).join("  ")
    )?;
    for (method, m) in &report.methods {
        let cells: Vec<String> = gear_eval::MEASURES
            .iter()
            .map(|k| format!("{:>10.4}", m[*k]))
            .collect();
        outln!("{method:>10}  {}", cells.join("  "))?;
    }
    Ok(())
}

/// Options of `gear eval squad`.
#[derive(clap::Args, Debug)]
pub struct SquadArgs {
    /// SQuAD-format files (`.json`), or QAR triples files (`.jsonl`, e.g. a held-out split
    /// written by `gear data split`); all their passages form the retrieval corpus.
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Skip the cross-encoder-style local baseline (one joint forward per question–sentence
    /// pair: the slowest method).
    #[arg(long)]
    no_cross_encoder: bool,
    /// A trained cross-encoder reranker (`gear train-reranker`) to rank the same sentences
    /// (method `reranker`).
    #[arg(long)]
    reranker: Option<PathBuf>,
    #[command(flatten)]
    model: EvalModelArgs,
    /// Local-retrieval layers to sweep: `all` or a comma list (default: the model's).
    #[arg(long)]
    layers: Option<LayersArg>,
    /// Questions used for generation metrics.
    #[arg(long, default_value_t = 0, value_parser = count(0..=10_000_000))]
    generation_examples: usize,
    /// Write the generated answers: `FILE.json` as the official SQuAD predictions
    /// (`{question_id: answer}`, for `gear score squad` or the official script), `FILE.jsonl`
    /// one line per question with its query, answer and gold texts.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Write every question's sentence spans and relevant indices (JSON lines) for an
    /// independent cross-check (xtask/scripts/squad_baseline.py).
    #[arg(long)]
    export_sentences: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn eval_squad(args: &SquadArgs) -> Result<()> {
    let device = args.model.device();
    let model = args.model.load()?;
    let mut data = gear_eval::EvalSet::default();
    // Questions SQuAD marks unanswerable (v2.0 `is_impossible`, or no gold answer).
    let mut unanswerable = 0;
    for path in &args.data {
        if path.extension().is_some_and(|e| e == "jsonl") {
            let triples = TripleReader::open(path)?.collect::<Result<Vec<_>, _>>()?;
            data.extend(gear_eval::EvalSet::from_triples(triples));
        } else {
            let import = gear_data::import_squad(path)?;
            unanswerable += import.stats.unanswerable;
            data.extend(gear_eval::EvalSet::from_squad(import));
        }
    }
    if data.triples.is_empty() {
        if unanswerable > 0 {
            anyhow::bail!(
                "every question in {:?} ({unanswerable}) is unanswerable (SQuAD 2.0 \
                 `is_impossible`, or no gold answer): GeAR is evaluated on answerable questions, \
                 whose answer sentence it must find",
                args.data
            );
        }
        anyhow::bail!("no questions in {:?}", args.data);
    }
    if unanswerable > 0 {
        tracing::warn!(
            unanswerable,
            "unanswerable questions (SQuAD 2.0 `is_impossible`) are left out of the evaluation"
        );
    }
    let n_layers = model.config().encoder.num_hidden_layers as usize;
    let layers = match &args.layers {
        None => Vec::new(),
        Some(layers) => layers.resolve(n_layers)?,
    };
    if let Some(path) = &args.export_sentences {
        let mut w = gear_data::JsonlWriter::create(path)?;
        for t in gear_eval::local_targets(&data)? {
            w.write(&t)?;
        }
        w.finish()?;
    }
    let scenario = data.triples[0].scenario;
    let options = gear_eval::EvalOptions {
        layers,
        cross_encoder: !args.no_cross_encoder,
        ..gear_eval::EvalOptions::for_scenario(scenario, args.generation_examples)
    };
    run_evaluation(
        &model,
        &data,
        &options,
        args.reranker.as_deref(),
        device,
        Output {
            json: args.json,
            predictions: args.predictions.as_deref(),
        },
    )
}

/// Where an evaluation's results go.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    /// Print the report as JSON instead of a table.
    pub json: bool,
    /// Write the generated answers here (`.json`: official predictions; otherwise JSON lines).
    pub predictions: Option<&'a std::path::Path>,
}

/// Writes `report`'s generated answers to `path`: `{id: answer}` for a `.json` file (questions
/// without an id are refused), one detailed line per question otherwise.
fn write_predictions(report: &gear_eval::EvalReport, path: &std::path::Path) -> Result<()> {
    if report.predictions.is_empty() {
        anyhow::bail!(
            "no answers were generated to write to {}: pass --generation-examples N",
            path.display()
        );
    }
    let mut w = gear_data::JsonlWriter::create(path)?;
    if path.extension().is_some_and(|e| e == "json") {
        let mut official = serde_json::Map::new();
        for (i, p) in report.predictions.iter().enumerate() {
            let id = p.id.clone().with_context(|| {
                format!(
                    "question {} has no id for {}: write .jsonl instead",
                    i + 1,
                    path.display()
                )
            })?;
            official.insert(id, serde_json::Value::String(p.generated.clone()));
        }
        w.write(&official)?;
    } else {
        for p in &report.predictions {
            w.write(p)?;
        }
    }
    w.finish()?;
    eprintln!(
        "wrote {} answers to {}",
        report.predictions.len(),
        path.display()
    );
    Ok(())
}

/// Runs [`gear_eval::evaluate`] (and the trained reranker when given) under a spinner and
/// prints the report: `gear eval squad` and `gear eval triples` alike.
pub fn run_evaluation(
    model: &gear_model::GearModel,
    data: &gear_eval::EvalSet,
    options: &gear_eval::EvalOptions,
    reranker: Option<&std::path::Path>,
    device: tch::Device,
    output: Output<'_>,
) -> Result<()> {
    if let (Some(path), 0) = (output.predictions, options.generation_examples) {
        anyhow::bail!(
            "--predictions {} needs answers to write: pass --generation-examples N",
            path.display()
        );
    }
    let bar = crate::spinner(format!(
        "eval: {} queries over {} documents",
        data.triples.len(),
        data.corpus.len()
    ));
    let mut report = gear_eval::evaluate(model, data, options)?;
    if let Some(dir) = reranker {
        let reranker = gear_model::CrossEncoder::load(dir, device)
            .with_context(|| format!("loading the reranker in {}", dir.display()))?;
        let (metrics, seconds) = gear_eval::eval_reranker(&reranker, data, 64)?;
        report.methods.insert("reranker".into(), metrics);
        report.local_seconds.insert("reranker".into(), seconds);
    }
    bar.finish_and_clear();
    if let Some(path) = output.predictions {
        write_predictions(&report, path)?;
    }
    if output.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    outln!(
        "{} queries ({} with no sentence holding a gold start), {} documents",
        report.questions,
        report.unlocatable,
        report.passages
    )?;
    outln!("gear: {}", report.gear_line())?;
    for (method, m) in report.methods.iter().filter(|(k, _)| *k != "gear") {
        let cells: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
        outln!("{method:>13}: {}", cells.join("  "))?;
    }
    for (layer, m) in &report.layers {
        let cells: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
        outln!("  layer {layer:>2}: {}", cells.join("  "))?;
    }
    Ok(())
}
