//! `gear eval beir`'s measures equal `pytrec_eval`'s (trec_eval's, which BEIR reports) to 1e-6,
//! per query and on average, on a small hand-made dataset and a generated one; the rankings come
//! from the real methods (bi-encoder of a tiny checkpoint, BM25, hybrid).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::tiny_gear;
use gear_data::read_beir;
use gear_eval::{beir_measures, eval_beir, MEASURES};
use gear_synth::generate_corpus;

fn python() -> PathBuf {
    let home = std::env::var_os("GEAR_HOME")
        .expect("GEAR_HOME is unset: run the tests through `cargo xtask test`");
    PathBuf::from(home).join("venv/bin/python")
}

fn write_dataset(
    dir: &Path,
    docs: &[(String, String, String)],
    queries: &[(String, String)],
    qrels: &[(String, String, i32)],
) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let line = |v: serde_json::Value| v.to_string() + "\n";
    std::fs::write(
        dir.join("corpus.jsonl"),
        docs.iter()
            .map(|(id, title, text)| {
                line(serde_json::json!({"_id": id, "title": title, "text": text, "metadata": {}}))
            })
            .collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        dir.join("queries.jsonl"),
        queries
            .iter()
            .map(|(id, text)| line(serde_json::json!({"_id": id, "text": text})))
            .collect::<String>(),
    )
    .unwrap();
    let mut tsv = String::from("query-id\tcorpus-id\tscore\n");
    for (q, d, s) in qrels {
        tsv.push_str(&format!("{q}\t{d}\t{s}\n"));
    }
    std::fs::write(dir.join("qrels/test.tsv"), tsv).unwrap();
}

/// pytrec_eval's per-query measures for `run` (ranked ids per query) against the qrels.
fn pytrec(
    run: &BTreeMap<String, Vec<String>>,
    qrels: &BTreeMap<String, BTreeMap<String, i32>>,
) -> BTreeMap<String, [f64; 4]> {
    // Scores strictly decreasing with rank, so trec_eval's order is ours; a query with nothing
    // retrieved gets one unjudged placeholder so that it is scored (0) rather than skipped.
    let as_scores = |ranked: &[String], k: usize| -> BTreeMap<String, f64> {
        if ranked.is_empty() {
            return BTreeMap::from([("__nothing__".to_owned(), 0.0)]);
        }
        ranked
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, d)| (d.clone(), (1000 - i) as f64))
            .collect()
    };
    let full: BTreeMap<_, _> = run
        .iter()
        .map(|(q, r)| (q.clone(), as_scores(r, 100)))
        .collect();
    let top10: BTreeMap<_, _> = run
        .iter()
        .map(|(q, r)| (q.clone(), as_scores(r, 10)))
        .collect();
    let script = r#"
import json, sys, pytrec_eval
qrels, full, top10 = json.load(sys.stdin)
a = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map_cut.100"}).evaluate(full)
b = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
print(json.dumps({q: [a[q]["ndcg_cut_10"], a[q]["recall_100"], a[q]["map_cut_100"], b[q]["recip_rank"]] for q in a}))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), &(qrels, full, top10)).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pytrec_eval failed (installed into the venv by `cargo xtask test`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check(dir: &Path) -> usize {
    let data = read_beir(dir, "test").unwrap();
    let texts: Vec<String> = data
        .corpus
        .iter()
        .map(|d| format!("{} {}", d.title, d.text))
        .chain(data.queries.iter().map(|(_, q)| q.clone()))
        .collect();
    let model = tiny_gear(&texts, 256, 32);
    let report = eval_beir(Some(&model), &data, 8, &mut |_| {}).unwrap();
    assert_eq!(report.methods.len(), 3);
    let qrels: BTreeMap<String, BTreeMap<String, i32>> = data
        .qrels
        .iter()
        .map(|(q, j)| (q.clone(), j.iter().cloned().collect()))
        .collect();
    let mut compared = 0;
    for (method, run) in &report.runs {
        let theirs = pytrec(run, &qrels);
        assert_eq!(
            theirs.len(),
            data.queries.len(),
            "{method}: every judged query scored"
        );
        let mut means = [0.0; 4];
        for (q, ranked) in run {
            assert!(
                !ranked.contains(q),
                "{method}: a document with the query's id is dropped"
            );
            let ours = beir_measures(ranked, &data.qrels[q]);
            for i in 0..4 {
                assert!(
                    (ours[i] - theirs[q][i]).abs() <= 1e-6,
                    "{method} {q} {}: ours {} pytrec_eval {}",
                    MEASURES[i],
                    ours[i],
                    theirs[q][i]
                );
                means[i] += theirs[q][i] / run.len() as f64;
            }
            compared += 1;
        }
        for (i, name) in MEASURES.iter().enumerate() {
            let ours = report.methods[method][*name];
            assert!(
                (ours - means[i]).abs() <= 1e-6,
                "{method} {name}: ours {ours} pytrec_eval {}",
                means[i]
            );
        }
    }
    compared
}

#[test]
fn measures_equal_pytrec_eval_on_a_hand_made_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let s = |x: &str| x.to_owned();
    let docs = vec![
        (
            s("d1"),
            s("Rivers"),
            s("The river flows north past the old mill."),
        ),
        (
            s("d2"),
            s(""),
            s("A bridge of brick crosses the river at the mill."),
        ),
        (
            s("d3"),
            s("Towers"),
            s("The tower stands on the hill above the town."),
        ),
        (s("d4"), s(""), s("Bells ring in the tower every hour.")),
        (s("q3"), s(""), s("Which way does the river flow?")), // same id as a query
        (
            s("d6"),
            s("Unrelated"),
            s("Quantum chromodynamics describes the strong force."),
        ),
    ];
    let queries = vec![
        (s("q1"), s("which way does the river flow")),
        (s("q2"), s("brick bridge over the river")),
        (s("q3"), s("which way does the river flow past the mill")),
        (s("q4"), s("zebra xylophone")), // shares no word: BM25 retrieves nothing
        (s("q5"), s("unjudged question")),
    ];
    let qrels = vec![
        (s("q1"), s("d1"), 2),
        (s("q1"), s("d2"), 1),
        (s("q1"), s("d6"), 0),
        (s("q2"), s("d2"), 2),
        (s("q2"), s("d1"), 1),
        (s("q3"), s("d1"), 1),
        (s("q4"), s("d3"), 1),
        (s("q4"), s("d4"), 2),
    ];
    write_dataset(dir.path(), &docs, &queries, &qrels);
    assert_eq!(check(dir.path()), 3 * 4);
}

#[test]
fn measures_equal_pytrec_eval_on_a_generated_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = generate_corpus(150, 21);
    let docs: Vec<(String, String, String)> = corpus
        .iter()
        .map(|d| (d.id.clone(), d.title.clone(), d.text.clone()))
        .collect();
    // Queries: a few words of a document; judged: that document (2) and some others (1 or 0).
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut queries = Vec::new();
    let mut qrels = Vec::new();
    for i in 0..40 {
        let d = &corpus[next() % corpus.len()];
        let words: Vec<&str> = d.text.split_whitespace().collect();
        let at = next() % words.len().saturating_sub(6).max(1);
        let q = format!("q{i}");
        queries.push((q.clone(), words[at..(at + 6).min(words.len())].join(" ")));
        qrels.push((q.clone(), d.id.clone(), 2));
        for _ in 0..(next() % 4) {
            let other = &corpus[next() % corpus.len()];
            if other.id != d.id && !qrels.iter().any(|(a, b, _)| *a == q && *b == other.id) {
                qrels.push((q.clone(), other.id.clone(), (next() % 2) as i32));
            }
        }
    }
    write_dataset(dir.path(), &docs, &queries, &qrels);
    assert_eq!(check(dir.path()), 3 * 40);
}
