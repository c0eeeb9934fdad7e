//! `gear score squad`: the official SQuAD v1.1 evaluation of a predictions file.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use gear_data::squad_gold_answers;
use gear_metrics::squad_scores;

/// `gear score` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// EM and F1 (0–100) of `{question_id: answer}` predictions, as the official v1.1 script.
    Squad {
        /// SQuAD JSON with the gold answers.
        #[arg(long)]
        data: PathBuf,
        /// JSON object mapping question ids to predicted answer text.
        #[arg(long)]
        predictions: PathBuf,
    },
}

pub fn run(cmd: &Command) -> Result<()> {
    let Command::Squad { data, predictions } = cmd;
    let gold = squad_gold_answers(data)?;
    let text = std::fs::read_to_string(predictions)
        .with_context(|| format!("reading {}", predictions.display()))?;
    let preds: HashMap<String, String> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected a JSON object of question id → answer text",
            predictions.display()
        )
    })?;
    let mut unanswered = 0;
    let scores = squad_scores(gold.iter().map(|(id, answers)| {
        let p = preds.get(id).map(String::as_str);
        if p.is_none() {
            unanswered += 1;
        }
        (p, answers.as_slice())
    }));
    if unanswered > 0 {
        eprintln!("{unanswered} question(s) unanswered: they score 0");
    }
    // Python's `json.dumps` layout (", " and ": "), as the official script prints it.
    outln!(
        "{{\"exact_match\": {}, \"f1\": {}}}",
        serde_json::to_string(&scores.exact_match)?,
        serde_json::to_string(&scores.f1)?
    )?;
    Ok(())
}
