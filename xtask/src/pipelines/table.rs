//! The results table of a pipeline: every method's global, local and generation figures on one
//! test set, from `gear eval squad --json` reports.

/// The `gear eval squad --json` reports one table is made of.
pub(super) struct Reports {
    /// GeAR's untrained start (and the untrained baselines: pretrained bi-encoder, BM25, hybrid).
    pub untrained: serde_json::Value,
    /// GeAR trained (and the trained reranker when there is one).
    pub trained: serde_json::Value,
    /// The fine-tuned bi-encoder baseline's checkpoint, when trained.
    pub finetuned: Option<serde_json::Value>,
}

/// Which table [`qar_table`] prints.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Scenario {
    /// Local R@1/MAP@1, EM/F1.
    Qar,
    /// Local R@1/MAP@1 and R@3/MAP@3, ROUGE-1/L.
    Rir,
}

/// The local and generation columns of a scenario's table: local keys, generation keys, and
/// the header names of both.
fn table_columns(
    scenario: Scenario,
) -> (
    &'static [&'static str],
    [&'static str; 2],
    &'static str,
    &'static str,
) {
    match scenario {
        Scenario::Qar => (
            &["local.recall@1", "local.map@1"],
            ["generation.exact_match", "generation.f1"],
            "EM | F1",
            "local R@1 | local MAP@1",
        ),
        Scenario::Rir => (
            &[
                "local.recall@1",
                "local.map@1",
                "local.recall@3",
                "local.map@3",
            ],
            ["generation.rouge1", "generation.rouge_l"],
            "ROUGE-1 | ROUGE-L",
            "local R@1 | local MAP@1 | local R@3 | local MAP@3",
        ),
    }
}

/// A retrieval metric of one method in a report, or "—".
fn cell(r: &serde_json::Value, method: &str, key: &str) -> String {
    r["methods"][method][key]
        .as_f64()
        .map_or("—".to_string(), |v| format!("{v:.3}"))
}

/// A generation score of GeAR in a report, or "—".
fn gen(r: &serde_json::Value, key: &str) -> String {
    r["methods"]["gear"][key]
        .as_f64()
        .map_or("—".to_string(), |v| format!("{v:.1}"))
}

/// A method's local-retrieval time relative to the bi-encoder's, or "—".
fn time(r: &serde_json::Value, method: &str) -> String {
    let t = r["local_seconds"][method].as_f64();
    let base = r["local_seconds"]["bi-encoder"].as_f64();
    match (t, base) {
        (Some(t), Some(b)) if b > 0.0 && t / b < 0.01 => "< 0.01×".into(),
        (Some(t), Some(b)) if b > 0.0 => format!("{:.2}×", t / b),
        _ => "—".into(),
    }
}

/// The table of every method on one test set (`gear eval squad --json` reports of the untrained
/// start and of the trained model, which also carries the trained baselines).
pub(super) fn qar_table(reports: &Reports, scenario: Scenario) -> String {
    let Reports {
        untrained,
        trained,
        finetuned,
    } = reports;
    let (local_keys, gen_keys, gen_names, local_names) = table_columns(scenario);
    let row = |name: &str, r: &serde_json::Value, method: &str, generation: bool| {
        let mut cells = vec![
            cell(r, method, "global.recall@5"),
            cell(r, method, "global.map@5"),
        ];
        cells.extend(local_keys.iter().map(|k| cell(r, method, k)));
        for k in gen_keys {
            cells.push(if generation { gen(r, k) } else { "—".into() });
        }
        cells.push(time(r, method));
        format!("| {name} | {} |", cells.join(" | "))
    };
    let columns = 5 + local_keys.len();
    let questions = trained["questions"].as_u64().unwrap_or(0);
    let passages = trained["passages"].as_u64().unwrap_or(0);
    let unlocatable = trained["unlocatable"].as_u64().unwrap_or(0);
    let generated = trained["generated"].as_u64().unwrap_or(0);
    let generation_note = if generated > 0 {
        let ms = trained["methods"]["gear"]["generation.ms_per_answer"].as_f64();
        let bi = trained["local_seconds"]["bi-encoder"].as_f64();
        let per_question = |s: f64| 1000.0 * s / questions.max(1) as f64;
        format!(
            "generation scored on the first {generated}, {} ms per generated answer (passage encoded, fused and decoded; the bi-encoder's local retrieval: {} ms per question)",
            ms.map_or("—".into(), |v| format!("{v:.0}")),
            bi.map_or("—".into(), |s| format!("{:.1}", per_question(s)))
        )
    } else {
        "no generation scored".to_string()
    };
    let mut rows = vec![
        format!("{questions} queries over {passages} documents ({unlocatable} have no sentence holding the gold start: a miss for every local method); {generation_note}."),
        String::new(),
        format!("| system | global R@5 | global MAP@5 | {local_names} | {gen_names} | local time vs bi-encoder |"),
        format!("|---|{}", "---|".repeat(columns)),
        row("GeAR trained (cross-attention local retrieval, decoder)", trained, "gear", true),
        row("GeAR untrained (MiniLM + new cross-attention/decoder)", untrained, "gear", false),
        row("pretrained bi-encoder (all-MiniLM-L6-v2; sentences embedded)", untrained, "bi-encoder", false),
        row("GeAR trained's own bi-encoder (E_q fine-tuned, E_d frozen)", trained, "bi-encoder", false),
    ];
    if let Some(f) = finetuned {
        rows.push(row(
            "fine-tuned bi-encoder (GeAR's contrastive part alone, same data and steps)",
            f,
            "bi-encoder",
            false,
        ));
    }
    if trained["methods"]["reranker"].is_object() {
        rows.push(row(
            "cross-encoder reranker trained on the same triples (MiniLM, query [SEP] sentence)",
            trained,
            "reranker",
            false,
        ));
    }
    rows.extend([
        row(
            "BM25 (Okapi; documents / sentences)",
            untrained,
            "bm25",
            false,
        ),
        row(
            "hybrid: BM25 + pretrained bi-encoder (RRF)",
            untrained,
            "hybrid",
            false,
        ),
        row(
            "hybrid: BM25 + GeAR trained's bi-encoder (RRF)",
            trained,
            "hybrid",
            false,
        ),
    ]);
    rows.join("\n")
}
