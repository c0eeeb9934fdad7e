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
    let text = gear_data::read_text(predictions)?;
    let preds: HashMap<String, String> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected a JSON object of question id → answer text",
            predictions.display()
        )
    })?;
    // Predictions for questions the data does not hold would be dropped without a word (the
    // official script drops them too): say how many, and refuse a file none of whose ids fit.
    let known: std::collections::HashSet<&str> = gold.iter().map(|(id, _)| id.as_str()).collect();
    let mut unknown: Vec<&str> = preds
        .keys()
        .map(String::as_str)
        .filter(|id| !known.contains(id))
        .collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        let examples = unknown
            .iter()
            .take(3)
            .map(|id| format!("`{id}`"))
            .collect::<Vec<_>>();
        if unknown.len() == preds.len() {
            anyhow::bail!(
                "{}: none of its {} prediction(s) names a question of {} (e.g. {}): are these \
                 the predictions for another file?",
                predictions.display(),
                preds.len(),
                data.display(),
                examples.join(", ")
            );
        }
        eprintln!(
            "warning: {} of {} prediction(s) name question ids not in {} (e.g. {}); they are \
             not scored",
            unknown.len(),
            preds.len(),
            data.display(),
            examples.join(", ")
        );
    }
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
