//! `gear data beir`: BEIR judgements become triples that `gear train` reads, with hard
//! negatives that are never judged relevant, mined by BM25 or by the pretrained bi-encoder.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use gear_data::{Triple, TripleReader};

fn write_dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let docs = [
        (
            "d1",
            "Paris",
            "Paris is the capital of France. It lies on the Seine.",
        ),
        (
            "d2",
            "Lyon",
            "Lyon is a city in France. It lies on the Rhône and the Saône.",
        ),
        (
            "d3",
            "Berlin",
            "Berlin is the capital of Germany. It lies on the Spree.",
        ),
        (
            "d4",
            "Madrid",
            "Madrid is the capital of Spain. It has a royal palace.",
        ),
        (
            "d5",
            "Rome",
            "Rome is the capital of Italy. The Tiber flows through it.",
        ),
        (
            "d6",
            "Seine",
            "The Seine is a river in northern France. It reaches the sea at Le Havre.",
        ),
    ];
    let corpus: String = docs
        .iter()
        .map(|(id, title, text)| {
            serde_json::json!({"_id": id, "title": title, "text": text, "metadata": {"x": 1}})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    let queries = [
        ("q1", "capital of France"),
        ("q2", "the Tiber river"),
        ("q3", "capital city of Germany"),
    ];
    let queries: String = queries
        .iter()
        .map(|(id, text)| serde_json::json!({"_id": id, "text": text}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
    std::fs::write(
        dir.join("qrels/train.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td6\t1\nq2\td5\t1\nq3\td3\t1\nq3\td4\t0\n",
    )
    .unwrap();
}

fn gear(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gear"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `gear data beir --data DATA --output OUTPUT EXTRA…`, which must succeed; its stderr.
fn mine(data: &str, output: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "data",
        "beir",
        "--data",
        data,
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = gear(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn read(path: &Path) -> Vec<Triple> {
    TripleReader::open(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every relevant judgement once, at most `negatives` negatives, never relevant to their query.
fn check(triples: &[Triple], negatives: usize) {
    let relevant: BTreeSet<(&str, &str)> = [("q1", "d1"), ("q1", "d6"), ("q2", "d5"), ("q3", "d3")]
        .into_iter()
        .collect();
    let ids: BTreeSet<(&str, &str)> = triples
        .iter()
        .map(|t| {
            let (q, d) = t.id.as_deref().unwrap().split_once(':').unwrap();
            assert_eq!(d, t.document.id);
            (q, d)
        })
        .collect();
    assert_eq!(ids, relevant);
    for t in triples {
        let q = t.id.as_deref().unwrap().split_once(':').unwrap().0;
        assert!(t.negatives.len() <= negatives, "{:?}", t.id);
        for n in &t.negatives {
            assert!(!relevant.contains(&(q, n.id.as_str())), "{q}: {}", n.id);
        }
        assert_eq!(t.validate(), Ok(()));
    }
}

#[test]
fn bm25_and_bi_encoder_mining_write_trainable_triples() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("beir");
    write_dataset(&data);
    let data = data.to_str().unwrap();

    let bm25 = dir.path().join("bm25.jsonl");
    let text = mine(data, &bm25, &["--negatives", "2"]);
    assert!(text.contains("wrote 4 triples (3 queries"), "{text}");
    // BM25 drops stop words: only d6 shares a word ("river") with q2 besides its answer.
    assert!(
        text.contains("1 triples got fewer than 2 negatives"),
        "{text}"
    );
    let bm25 = read(&bm25);
    check(&bm25, 2);
    let counts: Vec<usize> = bm25.iter().map(|t| t.negatives.len()).collect();
    assert_eq!(counts, [2, 2, 1, 2], "q1:d1, q1:d6, q2:d5, q3:d3");
    // The unit is the sentence that matches the query.
    let q2 = bm25.iter().find(|t| t.document.id == "d5").unwrap();
    assert_eq!(q2.units[0].text, "The Tiber flows through it.");
    let dense = dir.path().join("dense.jsonl");
    mine(
        data,
        &dense,
        &["--negatives", "3", "--miner", "bi-encoder", "--pretrained"],
    );
    let dense = read(&dense);
    check(&dense, 3);
    assert!(
        dense.iter().all(|t| t.negatives.len() == 3),
        "a dense ranking ranks all"
    );
    // The dense miner reaches documents that share no word with the query (BM25 cannot).
    let q2 = dense.iter().find(|t| t.document.id == "d5").unwrap();
    assert!(
        q2.negatives.iter().any(|n| n.id == "d6" || n.id == "d2"),
        "{:?}",
        q2.negatives.iter().map(|n| &n.id).collect::<Vec<_>>()
    );

    // A model with the BM25 miner would be ignored: refused instead.
    let out = gear(&[
        "data",
        "beir",
        "--data",
        data,
        "--output",
        "x.jsonl",
        "--pretrained",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--miner bi-encoder"));
    // A split without a qrels file is named.
    let out = gear(&[
        "data", "beir", "--data", data, "--split", "dev", "--output", "x.jsonl",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dev.tsv"));
}
