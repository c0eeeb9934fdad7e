// tidy: long file — one table of every bad input a user can give, each case beside the message it must produce; splitting it would scatter the table.
//! The bad-input sweep: every `gear` command that reads user files or text, fed input a user can
//! get wrong, plus closed pipes and a second writer. Each case runs the real binary under a time
//! limit and is classed as
//!
//! - **panic** — `panicked at` on stderr, or death by a signal (an abort);
//! - **hang** — still running after the limit (killed);
//! - **silent** — exit 0 where a refusal is due, or a wrong result;
//! - **unclear** — refused, but without naming what is wrong (the file, line, field or option);
//! - **ok** — otherwise.
//!
//! The table is printed (`cargo xtask sweep` shows it) and every class but `ok` must be empty.
//! Uses the tiny BERT of tests/common, trained for one step into a GeAR checkpoint.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a case may run: far above any case's real time, far below a CI timeout.
const LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Panic,
    Hang,
    Silent,
    Unclear,
}

/// A check of a successful run's (stdout, stderr).
type OutputCheck = Box<dyn Fn(&str, &str) -> bool>;

/// What a case must do.
enum Expect {
    /// Exit non-zero with every needle on stderr.
    Refused(Vec<String>),
    /// Exit 0 and pass the check on (stdout, stderr).
    Succeeds(OutputCheck),
    /// The reader closes stdout after the first line: exit 0, nothing on stderr about it.
    ReaderLeavesEarly,
}

struct Case {
    class: &'static str,
    name: String,
    args: Vec<String>,
    expect: Expect,
}

fn refused(class: &'static str, name: &str, args: &[&str], needles: &[&str]) -> Case {
    Case {
        class,
        name: name.into(),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        expect: Expect::Refused(needles.iter().map(|s| (*s).to_owned()).collect()),
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gear"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits up to [`LIMIT`]; `None` when the child had to be killed.
fn wait(mut child: Child) -> Option<(std::process::ExitStatus, String, String)> {
    let stdout = child.stdout.take();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Some((status, out.join().unwrap(), err.join().unwrap()))
}

fn run(case: &Case) -> (Outcome, String) {
    let result = match case.expect {
        Expect::ReaderLeavesEarly => {
            let mut child = spawn(&case.args);
            let mut lines = BufReader::new(child.stdout.take().unwrap());
            let mut first = String::new();
            let _ = lines.read_line(&mut first);
            drop(lines);
            wait(child).map(|(s, _, e)| (s, first, e))
        }
        _ => wait(spawn(&case.args)),
    };
    let Some((status, stdout, stderr)) = result else {
        return (Outcome::Hang, format!("killed after {LIMIT:?}"));
    };
    let first_line = |s: &str| {
        s.lines()
            .find(|l| l.contains("error") || l.contains("WARN"))
            .or_else(|| s.lines().next())
            .unwrap_or("")
            .chars()
            .take(150)
            .collect::<String>()
    };
    if stderr.contains("panicked at") || status.code().is_none() {
        return (Outcome::Panic, format!("{status}: {}", first_line(&stderr)));
    }
    match &case.expect {
        Expect::Refused(needles) => {
            if status.success() {
                (Outcome::Silent, "exit 0".into())
            } else if needles.iter().all(|n| stderr.contains(n.as_str())) {
                (Outcome::Ok, first_line(&stderr))
            } else {
                (
                    Outcome::Unclear,
                    format!("wanted {needles:?} in: {}", first_line(&stderr)),
                )
            }
        }
        Expect::Succeeds(check) => {
            if status.success() && check(&stdout, &stderr) {
                (Outcome::Ok, first_line(&stderr))
            } else {
                (
                    Outcome::Silent,
                    format!("{status}: {}", first_line(&stderr)),
                )
            }
        }
        Expect::ReaderLeavesEarly => {
            if status.success() && stderr.trim().is_empty() && !stdout.is_empty() {
                (Outcome::Ok, "exit 0 after the reader left".into())
            } else {
                (
                    Outcome::Silent,
                    format!("{status}: {}", first_line(&stderr)),
                )
            }
        }
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A valid one-question SQuAD file in `dir` (answer `north`, id `q1`).
fn good_squad_file(dir: &Path) -> PathBuf {
    let json = serde_json::json!({"version": "1.1", "data": [{"title": "T", "paragraphs": [{
        "context": "The river is long. It flows north.",
        "qas": [{"id": "q1", "question": "Which way?",
                 "answers": [{"text": "north", "answer_start": 28}]}]}]}]});
    write(dir, "good-squad.json", json.to_string())
}

fn gear_ok(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_gear"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gear {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input_sweep() {
    let common::Setup { dir, bert, train } = common::setup(false);
    let d = dir.path();
    let config = common::config(d, &bert, 4, "train.toml");
    let run_dir = d.join("run");
    gear_ok(&[
        "train",
        "--config",
        &s(&config),
        "--train",
        &s(&train),
        "--out",
        &s(&run_dir),
        "--max-steps",
        "1",
    ]);
    let model = run_dir.join("checkpoint/model");
    let m = s(&model);

    // A corpus and its index.
    let docs = gear_synth::generate_corpus(8, 3);
    let corpus_text: String = docs
        .iter()
        .map(|doc| serde_json::to_string(doc).unwrap() + "\n")
        .collect();
    let corpus = write(d, "corpus.jsonl", &corpus_text);
    let index = d.join("index");
    gear_ok(&[
        "index",
        "build",
        "--corpus",
        &s(&corpus),
        "--out",
        &s(&index),
        "--model",
        &m,
    ]);
    let idx = s(&index);
    // Its HNSW graph, with the settings recorded as given.
    gear_ok(&[
        "index",
        "ann",
        "--index",
        &idx,
        "--hnsw-m",
        "8",
        "--ef-construction",
        "40",
        "--graph-vectors",
        "f16",
    ]);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(index.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        meta["ann"]["params"],
        serde_json::json!({"connectivity": 8, "ef_construction": 40, "vectors": "f16"})
    );
    let query = docs[0]
        .text
        .split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ");
    let doc_file = write(d, "doc.txt", &docs[1].text);

    // Damaged copies of the index.
    let copy_index = |name: &str, edit: &dyn Fn(&Path)| -> String {
        let to = d.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for f in ["index.json", "documents.jsonl", "embeddings.safetensors"] {
            std::fs::copy(index.join(f), to.join(f)).unwrap();
        }
        edit(&to);
        s(&to)
    };
    let edit_meta = |from: &'static str, to: &'static str| {
        move |p: &Path| {
            let meta = std::fs::read_to_string(p.join("index.json")).unwrap();
            assert!(meta.contains(from));
            std::fs::write(p.join("index.json"), meta.replace(from, to)).unwrap();
        }
    };
    let future = copy_index("future", &edit_meta("\"format\": 3", "\"format\": 4"));
    let banana = copy_index("banana", &edit_meta("\"exact\"", "\"banana\""));
    let reordered = copy_index("reordered", &|p: &Path| {
        let text = std::fs::read_to_string(p.join("documents.jsonl")).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.swap(2, 5);
        std::fs::write(p.join("documents.jsonl"), lines.join("\n") + "\n").unwrap();
    });
    let nan = copy_index("nan", &|p: &Path| {
        let t = gear_model::read_tensors(p.join("embeddings.safetensors")).unwrap();
        let (_, embeddings) = t.iter().find(|(n, _)| n == "embeddings").unwrap();
        let _ = embeddings.get(4).get(7).fill_(f64::NAN);
        gear_model::save_tensors(t, p.join("embeddings.safetensors")).unwrap();
    });

    // A model whose weights hold a NaN.
    let nan_model = d.join("nan-model");
    std::fs::create_dir_all(&nan_model).unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), nan_model.join(entry.file_name())).unwrap();
    }
    let weights = nan_model.join("model.safetensors");
    let mut tensors = gear_model::read_tensors(&weights).unwrap();
    let (poisoned, t) = tensors
        .iter_mut()
        .find(|(n, t)| n.ends_with("query.weight") && t.dim() == 2)
        .unwrap();
    let _ = t.get(1).get(2).fill_(f64::NAN);
    let poisoned = format!("tensor `{poisoned}`");
    gear_model::save_tensors(tensors, &weights).unwrap();

    // Bad data files.
    let dup = write(
        d,
        "dup.jsonl",
        format!(
            "{corpus_text}{}\n",
            serde_json::to_string(&docs[2]).unwrap()
        ),
    );
    let blank_doc = write(
        d,
        "blank.jsonl",
        format!("{corpus_text}{{\"id\":\"x\",\"title\":\"\",\"text\":\"   \"}}\n"),
    );
    let mut latin1 = corpus_text.clone().into_bytes();
    latin1.extend_from_slice(b"{\"id\":\"y\",\"title\":\"\",\"text\":\"caf\xe9\"}\n");
    let latin1 = write(d, "latin1.jsonl", latin1);
    let empty = write(d, "empty.jsonl", "");
    let empty_doc = write(d, "empty.txt", " \n");
    let one_long_sentence = write(
        d,
        "one-sentence.txt",
        docs.iter()
            .map(|x| x.text.replace(['.', '?', '!'], ","))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let long_doc = write(
        d,
        "long.txt",
        docs.iter()
            .map(|x| x.text.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    );
    let squad = |name: &str, question: &str, start: usize| {
        let json = serde_json::json!({"version": "1.1", "data": [{"title": "T", "paragraphs": [{
            "context": "The river is long. It flows north.",
            "qas": [{"id": "q1", "question": question,
                     "answers": [{"text": "north", "answer_start": start}]}]}]}]});
        s(&write(d, name, json.to_string()))
    };
    let squad_start = squad("start.json", "Which way?", 3);
    let squad_question = squad("question.json", " ", 28);
    let train_line = std::fs::read_to_string(&train).unwrap();
    let first = train_line.lines().next().unwrap();
    let empty_unit = first.replacen("\"end\":", "\"end_\":", 1);
    let empty_unit = {
        // Same start and end: an empty unit.
        let v: serde_json::Value = serde_json::from_str(first).unwrap();
        let start = v["units"][0]["start"].as_u64().unwrap();
        let mut v2 = v.clone();
        v2["units"][0]["end"] = start.into();
        v2["units"][0]["text"] = "".into();
        let _ = empty_unit;
        write(d, "empty-unit.jsonl", v2.to_string() + "\n")
    };
    let small_train = write(
        d,
        "small.jsonl",
        train_line.lines().take(2).collect::<Vec<_>>().join("\n") + "\n",
    );

    // Bad configs.
    let base_config = std::fs::read_to_string(&config).unwrap();
    let bad_config = |name: &str, from: &str, to: &str| {
        assert!(base_config.contains(from), "{from}");
        s(&write(d, name, base_config.replace(from, to)))
    };
    let cfg_beta = bad_config("beta.toml", "beta1 = 0.9", "beta1 = 1.5");
    let cfg_eps = bad_config("eps.toml", "eps = 1e-8", "eps = -1e-8");
    let cfg_clip = bad_config("clip.toml", "clip_norm = 1.0", "clip_norm = -1.0");
    let cfg_wd = bad_config("wd.toml", "weight_decay = 0.05", "weight_decay = -0.05");
    let cfg_ramp = bad_config(
        "ramp.toml",
        "distill_ramp_epochs = 1.0",
        "distill_ramp_epochs = -1.0",
    );
    let cfg_bucket = bad_config("bucket.toml", "bucket_batches = 2", "bucket_batches = 0");
    let cfg_warm = bad_config(
        "warm.toml",
        "warmup_steps = 2",
        "warmup_steps = 9223372036854775807",
    );
    let cfg_len = bad_config("len.toml", "max_document_len = 256", "max_document_len = 0");
    let cfg_init = bad_config(
        "init.toml",
        &format!("init = \"{}\"", bert.display()),
        "init = \"/no/such/model\"",
    );
    let cfg_lr = bad_config("lr.toml", "lr = 1e-3", "lr = 2e-3");
    let cfg_reader = bad_config(
        "reader.toml",
        "clip_norm = 1.0",
        "clip_norm = 1.0\nreader_lr_scale = 1.0",
    );
    let cfg_reader_input = bad_config(
        "readerinput.toml",
        "max_document_len = 256",
        "max_document_len = 256\nreader_input = \"below\"",
    );
    let cfg_echoes = bad_config(
        "echoes.toml",
        "max_document_len = 256",
        "max_document_len = 256\nskip_question_echoes = true",
    );
    let cfg_copy_from = bad_config(
        "copyfrom.toml",
        "local_weight = 0.5",
        "local_weight = 0.5\ncopy_from = \"answer_sentence\"",
    );
    let cfg_answer_span = s(&write(
        d,
        "answerspan.toml",
        base_config
            .replace(
                "max_document_len = 256",
                "max_document_len = 256\ndecoder_memory = \"fusion_and_document\"\ndecoder_copy = \"pointer\"",
            )
            .replace(
                "local_weight = 0.5",
                "local_weight = 0.5\ncopy_from = \"answer_span\"",
            ),
    ));
    let mut cfg_utf8 = base_config.clone().into_bytes();
    cfg_utf8.extend_from_slice(b"# caf\xe9\n");
    let cfg_utf8 = s(&write(d, "utf8.toml", cfg_utf8));

    let tr = |cfg: &str, data: &Path, out: &Path, resume: bool| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--config",
            cfg,
            "--train",
            &s(data),
            "--out",
            &s(out),
        ]
        .iter()
        .map(|x| (*x).to_owned())
        .collect();
        if resume {
            v.push("--resume".into());
        }
        v
    };
    let c = s(&config);
    let fresh = |n: &str| d.join(n);

    let mut cases: Vec<Case> = vec![
        // Panics, aborts and hangs.
        Case {
            class: "closed pipe",
            name: "search | head -1".into(),
            args: vec![
                "search".into(),
                "--index".into(),
                idx.clone(),
                "-k".into(),
                "8".into(),
                query.clone(),
            ],
            expect: Expect::ReaderLeavesEarly,
        },
        Case {
            class: "closed pipe",
            name: "locate --json | head -1".into(),
            args: vec![
                "locate".into(),
                "--model".into(),
                m.clone(),
                "--doc".into(),
                s(&doc_file),
                "--json".into(),
                query.clone(),
            ],
            expect: Expect::ReaderLeavesEarly,
        },
        refused(
            "size bound",
            "data corpus --count 2^64-1",
            &[
                "data",
                "corpus",
                "--output",
                &s(&d.join("c1.jsonl")),
                "--count",
                "18446744073709551615",
            ],
            &["--count"],
        ),
        refused(
            "size bound",
            "embed --max-len 2^64-1",
            &[
                "embed",
                "--model",
                &s(&bert),
                "--max-len",
                "18446744073709551615",
            ],
            &["--max-len", "18446744073709551615 is not in 1..=1000000"],
        ),
        refused(
            "size bound",
            "index build --batch-size 0",
            &[
                "index",
                "build",
                "--corpus",
                &s(&corpus),
                "--out",
                &s(&d.join("i-b0")),
                "--model",
                &m,
                "--batch-size",
                "0",
            ],
            &["--batch-size", "0 is not in 1..=65536"],
        ),
        refused(
            "size bound",
            "synth-rir --concurrency 2^64-1",
            &[
                "data",
                "synth-rir",
                "--input",
                &s(&corpus),
                "--output",
                &s(&d.join("r.jsonl")),
                "--model",
                &s(&bert),
                "--concurrency",
                "18446744073709551615",
            ],
            &["--concurrency"],
        ),
        refused(
            "size bound",
            "data corpus --count 10^12",
            &[
                "data",
                "corpus",
                "--output",
                &s(&d.join("c2.jsonl")),
                "--count",
                "1000000000000",
            ],
            &["--count"],
        ),
        Case {
            class: "resume identity",
            name: "train --resume on a smaller file".into(),
            args: tr(&c, &small_train, &run_dir, true),
            expect: Expect::Refused(vec!["other data".into()]),
        },
        // Resume and concurrency.
        Case {
            class: "resume identity",
            name: "train --resume with another lr".into(),
            args: tr(&cfg_lr, &train, &run_dir, true),
            expect: Expect::Refused(vec!["`optim.lr` was 0.001, now 0.002".into()]),
        },
        // Data that cannot be right.
        refused(
            "bad data",
            "squad: answer_start misses the answer",
            &[
                "data",
                "squad",
                "--input",
                &squad_start,
                "--output",
                &s(&d.join("sq1.jsonl")),
            ],
            &["start.json", "answers[0].answer_start", "not at the answer"],
        ),
        refused(
            "bad data",
            "squad: empty question",
            &[
                "data",
                "squad",
                "--input",
                &squad_question,
                "--output",
                &s(&d.join("sq2.jsonl")),
            ],
            &["question.json", "qas[0].question", "is empty"],
        ),
        refused(
            "bad data",
            "index build: duplicate id",
            &[
                "index",
                "build",
                "--corpus",
                &s(&dup),
                "--out",
                &s(&fresh("i-dup")),
                "--model",
                &m,
            ],
            &["dup.jsonl:9", "`id`", "repeats line 3"],
        ),
        refused(
            "bad data",
            "index build: blank document",
            &[
                "index",
                "build",
                "--corpus",
                &s(&blank_doc),
                "--out",
                &s(&fresh("i-blank")),
                "--model",
                &m,
            ],
            &["blank.jsonl:9", "`text`", "is empty"],
        ),
        refused(
            "bad data",
            "search: NaN embedding row",
            &["search", "--index", &nan, &query],
            &["embeddings", "non-finite", "the first at [4, 7]"],
        ),
        refused(
            "bad data",
            "locate with NaN model weights",
            &[
                "locate",
                "--model",
                &s(&nan_model),
                "--doc",
                &s(&doc_file),
                &query,
            ],
            &["model.safetensors", &poisoned, "[1, 2]"],
        ),
        refused(
            "bad data",
            "search: unknown format version",
            &["search", "--index", &future, &query],
            &["index.json", "format 4"],
        ),
        refused(
            "bad data",
            "search: unknown backend",
            &["search", "--index", &banana, &query],
            &["unknown backend `banana`"],
        ),
        refused(
            "bad data",
            "search: documents.jsonl reordered",
            &["search", "--index", &reordered, &query],
            &["documents.jsonl changed"],
        ),
        // Empty work.
        refused(
            "empty work",
            "eval triples on an empty file",
            &["eval", "triples", "--data", &s(&empty), "--model", &m],
            &["empty.jsonl", "no triples"],
        ),
        refused(
            "empty work",
            "search with an empty query",
            &["search", "--index", &idx, ""],
            &["query is empty"],
        ),
        refused(
            "empty work",
            "search with a blank query",
            &["search", "--index", &idx, "  \t "],
            &["query is empty"],
        ),
        refused(
            "empty work",
            "search -k 0",
            &["search", "--index", &idx, "-k", "0", &query],
            &["--k", "0 is not in 1..=100000"],
        ),
        refused(
            "empty work",
            "locate with an empty query",
            &["locate", "--model", &m, "--doc", &s(&doc_file), " "],
            &["query is empty"],
        ),
        refused(
            "config",
            "generate passing over question echoes with a model that decodes freely",
            &[
                "generate",
                "--model",
                &m,
                "--doc",
                &s(&doc_file),
                "--skip-question-echoes",
                "true",
                &query,
            ],
            &["echo the question", "span decoding"],
        ),
        refused(
            "config",
            "locate with a generation option",
            &[
                "locate",
                "--model",
                &m,
                "--doc",
                &s(&doc_file),
                "--skip-question-echoes",
                "false",
                &query,
            ],
            &["generates nothing", "--skip-question-echoes"],
        ),
        refused(
            "empty work",
            "locate in an empty document",
            &["locate", "--model", &m, "--doc", &s(&empty_doc), &query],
            &["empty.txt", "is empty"],
        ),
        refused(
            "empty work",
            "generate --beams 0",
            &[
                "generate",
                "--model",
                &m,
                "--doc",
                &s(&doc_file),
                "--beams",
                "0",
                &query,
            ],
            &["--beams", "0 is not in 1..=64"],
        ),
        // Long documents.
        Case {
            class: "long document",
            name: "locate in a document past max_document_len: every sentence read".into(),
            args: vec![
                "locate".into(),
                "--model".into(),
                m.clone(),
                "--doc".into(),
                s(&long_doc),
                "--json".into(),
                query.clone(),
            ],
            expect: Expect::Succeeds(Box::new(|out, err| {
                let Ok(e) = serde_json::from_str::<serde_json::Value>(out) else {
                    return false;
                };
                let t = &e["truncated"];
                t["windows"].as_u64().is_some_and(|w| w > 1)
                    && t["unreachable_sentences"] == 0
                    && e["sentences"]
                        .as_array()
                        .is_some_and(|s| s.iter().all(|x| x["score"].as_f64() > Some(0.0)))
                    && !err.contains('\x1b')
            })),
        },
        Case {
            class: "long document",
            name: "locate in one sentence past max_document_len: warned, counted".into(),
            args: vec![
                "locate".into(),
                "--model".into(),
                m.clone(),
                "--doc".into(),
                s(&one_long_sentence),
                query.clone(),
            ],
            expect: Expect::Succeeds(Box::new(|_, err| {
                err.contains("1 of its 1 sentences are longer") && !err.contains('\x1b')
            })),
        },
        // Nonsense configuration.
        refused(
            "config",
            "beta1 = 1.5",
            &[
                "train",
                "--config",
                &cfg_beta,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t1")),
            ],
            &["beta.toml", "`optim.beta1`"],
        ),
        refused(
            "config",
            "a reader learning rate without reader layers",
            &[
                "train",
                "--config",
                &cfg_reader,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t-reader")),
            ],
            &["reader.toml", "`optim.reader_lr_scale`", "reader_layers"],
        ),
        refused(
            "config",
            "reader layers reading below the top, without reader layers",
            &[
                "train",
                "--config",
                &cfg_reader_input,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t-reader-input")),
            ],
            &["readerinput.toml", "`model.reader_input", "reader_layers"],
        ),
        refused(
            "config",
            "passing over spans that echo the question, with free decoding",
            &[
                "train",
                "--config",
                &cfg_echoes,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t-echoes")),
            ],
            &["echoes.toml", "`model.skip_question_echoes`", "span"],
        ),
        refused(
            "config",
            "copying from the answer's tokens with RIR triples (no answers)",
            &[
                "train",
                "--config",
                &cfg_answer_span,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t-answer-span")),
            ],
            &["answer_span", "none of the", "training triples"],
        ),
        refused(
            "config",
            "copying from the answer's sentence without a copy head",
            &[
                "train",
                "--config",
                &cfg_copy_from,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t-copy-from")),
            ],
            &["copyfrom.toml", "loss.copy_from", "copy head"],
        ),
        refused(
            "config",
            "eps < 0",
            &[
                "train",
                "--config",
                &cfg_eps,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t2")),
            ],
            &["eps.toml", "`optim.eps`"],
        ),
        refused(
            "config",
            "clip_norm < 0",
            &[
                "train",
                "--config",
                &cfg_clip,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t3")),
            ],
            &["clip.toml", "`optim.clip_norm`"],
        ),
        refused(
            "config",
            "weight_decay < 0",
            &[
                "train",
                "--config",
                &cfg_wd,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t4")),
            ],
            &["wd.toml", "`optim.weight_decay`"],
        ),
        refused(
            "config",
            "distill_ramp_epochs < 0",
            &[
                "train",
                "--config",
                &cfg_ramp,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t5")),
            ],
            &["ramp.toml", "`loss.distill_ramp_epochs`"],
        ),
        refused(
            "config",
            "bucket_batches = 0",
            &[
                "train",
                "--config",
                &cfg_bucket,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t6")),
            ],
            &["bucket.toml", "`data.bucket_batches`"],
        ),
        refused(
            "config",
            "warmup_steps = i64::MAX",
            &[
                "train",
                "--config",
                &cfg_warm,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t7")),
            ],
            &["warm.toml", "`optim.warmup_steps`"],
        ),
        refused(
            "config",
            "max_document_len = 0",
            &[
                "train",
                "--config",
                &cfg_len,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t8")),
            ],
            &["len.toml", "`model.max_document_len`"],
        ),
        refused(
            "config",
            "model.init names no folder",
            &[
                "train",
                "--config",
                &cfg_init,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t9")),
            ],
            &["`model.init`", "/no/such/model"],
        ),
        refused(
            "options",
            "search --backend banana",
            &["search", "--index", &idx, "--backend", "banana", &query],
            &["--backend", "possible values"],
        ),
        refused(
            "options",
            "search --ef-search without --backend hnsw",
            &["search", "--index", &idx, "--ef-search", "32", &query],
            &["--ef-search", "--backend hnsw only"],
        ),
        refused(
            "options",
            "index build --hnsw-m without --ann hnsw",
            &[
                "index",
                "build",
                "--corpus",
                &s(&corpus),
                "--out",
                &s(&fresh("i2")),
                "--model",
                &m,
                "--hnsw-m",
                "8",
            ],
            &["--hnsw-m", "--ann hnsw or --store only"],
        ),
        // Unclear errors.
        refused(
            "clear errors",
            "invalid UTF-8 in a corpus",
            &[
                "index",
                "build",
                "--corpus",
                &s(&latin1),
                "--out",
                &s(&fresh("i-utf8")),
                "--model",
                &m,
            ],
            &["latin1.jsonl:9", "invalid UTF-8"],
        ),
        refused(
            "clear errors",
            "invalid UTF-8 in a config",
            &[
                "train",
                "--config",
                &cfg_utf8,
                "--train",
                &s(&train),
                "--out",
                &s(&fresh("t10")),
            ],
            &["utf8.toml:", "invalid UTF-8"],
        ),
        refused(
            "clear errors",
            "an empty unit",
            &["eval", "triples", "--data", &s(&empty_unit), "--model", &m],
            &["empty-unit.jsonl:1", "`units[0]`", "is empty"],
        ),
        Case {
            class: "options",
            name: "search --backend hnsw".into(),
            args: vec![
                "search".into(),
                "--index".into(),
                idx.clone(),
                "--backend".into(),
                "hnsw".into(),
                "-k".into(),
                "3".into(),
                "--json".into(),
                query.clone(),
            ],
            expect: Expect::Succeeds(Box::new(|out, _| out.lines().count() == 3)),
        },
    ];

    // Options do what they say.
    let explain_k = |k: &str| -> Vec<String> {
        [
            "explain",
            "--model",
            &m,
            "--doc",
            &s(&doc_file),
            "-k",
            k,
            &query,
        ]
        .iter()
        .map(|x| (*x).to_owned())
        .collect()
    };
    let ranked_lines = |out: &str| {
        out.split("sentences by cross-attention:\n")
            .nth(1)
            .map_or(0, |rest| rest.lines().take_while(|l| !l.is_empty()).count())
    };
    cases.push(Case {
        class: "options",
        name: "explain -k 2 shows two sentences".into(),
        args: explain_k("2"),
        expect: Expect::Succeeds(Box::new(move |out, _| ranked_lines(out) == 2)),
    });
    let locate_at = |layer: Option<&str>| -> Vec<u8> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gear"));
        cmd.args(["locate", "--model", &m, "--doc", &s(&doc_file), "--json"]);
        if let Some(l) = layer {
            cmd.args(["--layer", l]);
        }
        cmd.arg(&query).output().unwrap().stdout
    };
    let (default_layer, first_layer) = (locate_at(None), locate_at(Some("1")));
    assert!(!default_layer.is_empty() && !first_layer.is_empty());
    cases.push(Case {
        class: "options",
        name: "locate --layer 1 ranks by another layer than the default".into(),
        args: vec![
            "locate".into(),
            "--model".into(),
            m.clone(),
            "--doc".into(),
            s(&doc_file),
            "--layer".into(),
            "1".into(),
            "--json".into(),
            query.clone(),
        ],
        expect: Expect::Succeeds(Box::new(move |out, _| {
            out.as_bytes() == first_layer.as_slice() && first_layer != default_layer
        })),
    });
    cases.push(refused(
        "options",
        "locate --layer past the model's depth",
        &[
            "locate",
            "--model",
            &m,
            "--doc",
            &s(&doc_file),
            "--layer",
            "99",
            &query,
        ],
        &["local layer 99 is outside 1..="],
    ));
    cases.push(refused(
        "options",
        "locate --aggregation banana",
        &[
            "locate",
            "--model",
            &m,
            "--doc",
            &s(&doc_file),
            "--aggregation",
            "banana",
            &query,
        ],
        &["--aggregation", "possible values: sum, mean"],
    ));
    cases.push(refused(
        "options",
        "search --device cuda on a machine without one",
        &["search", "--index", &idx, "--device", "cuda", &query],
        &["device `cuda`"],
    ));

    // Batch search with located sentences.
    let queries_file = write(d, "queries.txt", format!("{query}\n\n{}\n", docs[3].title));
    let texts: std::collections::HashMap<String, String> = docs
        .iter()
        .map(|x| (x.id.clone(), x.text.clone()))
        .collect();
    cases.push(Case {
        class: "options",
        name: "search --queries FILE --locate 2: sentences with character spans".into(),
        args: vec![
            "search".into(),
            "--index".into(),
            idx.clone(),
            "--queries".into(),
            s(&queries_file),
            "-k".into(),
            "2".into(),
            "--locate".into(),
            "2".into(),
            "--json".into(),
        ],
        expect: Expect::Succeeds(Box::new(move |out, _| {
            let lines: Vec<serde_json::Value> = out
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            lines.len() == 4
                && lines.iter().all(|hit| {
                    let text = &texts[hit["id"].as_str().unwrap_or("")];
                    hit["query"].is_string()
                        && hit["sentences"].as_array().is_some_and(|ss| {
                            ss.len() == 2
                                && ss.iter().all(|x| {
                                    let (a, b) = (
                                        x["start"].as_u64().unwrap_or(0) as usize,
                                        x["end"].as_u64().unwrap_or(0) as usize,
                                    );
                                    let piece: String =
                                        text.chars().skip(a).take(b.saturating_sub(a)).collect();
                                    a < b && piece == x["text"].as_str().unwrap_or("-")
                                })
                        })
                })
        })),
    });

    // Export.
    let exported = d.join("exported");
    cases.push(Case {
        class: "options",
        name: "export writes a sentence-transformers folder".into(),
        args: vec![
            "export".into(),
            "--model".into(),
            m.clone(),
            "--out".into(),
            s(&exported),
        ],
        expect: Expect::Succeeds(Box::new(move |_, err| {
            err.contains("wrote") && exported.join("modules.json").is_file()
        })),
    });
    cases.push(refused(
        "options",
        "export into an existing folder",
        &["export", "--model", &m, "--out", &idx],
        &["exists already"],
    ));

    // Round two (docs/reliability.md): texts that tokenise to nothing, integer options past
    // their bounds, index files that do not belong together, a tokenizer that does not fit its
    // model, byte-order marks, judgements with nothing relevant, copies as negatives, predictions
    // for unknown questions and files of unanswerable questions.
    for (name, q) in [
        ("zero-width spaces", "\u{200b}\u{200b}\u{200b}"),
        ("control characters", "\u{7}\u{1b}\u{7f}"),
        (
            "a byte-order mark and a zero-width joiner",
            "\u{feff}\u{200d}",
        ),
    ] {
        cases.push(refused(
            "blank text",
            &format!("search with a query of {name}"),
            &["search", "--index", &idx, q],
            &["query is empty or holds only invisible characters"],
        ));
        cases.push(refused(
            "blank text",
            &format!("locate with a query of {name}"),
            &["locate", "--model", &m, "--doc", &s(&doc_file), q],
            &["the query holds only characters no model reads"],
        ));
    }
    let invisible_doc = write(d, "invisible.txt", "\u{200b}\u{200c}\u{2060}\n");
    cases.push(refused(
        "blank text",
        "locate in a document of zero-width characters",
        &["locate", "--model", &m, "--doc", &s(&invisible_doc), &query],
        &["document", "holds only characters no model reads"],
    ));
    let invisible_corpus = write(
        d,
        "invisible-corpus.jsonl",
        format!("{corpus_text}{{\"id\":\"z\",\"title\":\"\",\"text\":\"\\u200b\\u0000\"}}\n"),
    );
    cases.push(refused(
        "blank text",
        "index build over a document of a zero-width space and NUL",
        &[
            "index",
            "build",
            "--corpus",
            &s(&invisible_corpus),
            "--out",
            &s(&fresh("i-invisible")),
            "--model",
            &m,
        ],
        &["invisible-corpus.jsonl:9", "text", "no model reads"],
    ));
    let bert_dir = s(&bert);
    for (name, args, needles) in [
        (
            "search -k 2⁶⁴−1",
            vec![
                "search",
                "--index",
                &idx,
                "-k",
                "18446744073709551615",
                &query,
            ],
            vec!["-k", "18446744073709551615"],
        ),
        (
            "search --rerank 2⁶³",
            vec![
                "search",
                "--index",
                &idx,
                "--backend",
                "hnsw",
                "--rerank",
                "9223372036854775808",
                &query,
            ],
            vec!["--rerank", "1..=1000"],
        ),
        (
            "search --ef-search 10¹²",
            vec![
                "search",
                "--index",
                &idx,
                "--backend",
                "hnsw",
                "--ef-search",
                "1000000000000",
                &query,
            ],
            vec!["--ef-search", "1..=65536"],
        ),
        (
            "index ann --ef-construction 10¹²",
            vec![
                "index",
                "ann",
                "--index",
                &idx,
                "--ef-construction",
                "1000000000000",
            ],
            vec!["--ef-construction", "1..=65536"],
        ),
        (
            "serve --max-body-kib 2⁵⁴",
            vec![
                "serve",
                "--index",
                &idx,
                "--max-body-kib",
                "18014398509481984",
            ],
            vec!["--max-body-kib", "1..=1048576"],
        ),
        (
            "locate -k 10¹²",
            vec![
                "locate",
                "--model",
                &m,
                "--doc",
                "x",
                "-k",
                "1000000000000",
                "q",
            ],
            vec!["-k", "1..=10000"],
        ),
        (
            "embed --max-len 10¹²",
            vec!["embed", "--max-len", "1000000000000"],
            vec!["--max-len", "1..=1000000"],
        ),
        (
            "embed --max-len past the model's positions",
            vec!["embed", "--model", &bert_dir, "--max-len", "100000"],
            vec!["max length 100000 exceeds the model's 512 positions"],
        ),
    ] {
        cases.push(refused("integer bounds", name, &args, &needles));
    }

    // Vectors shuffled in place, and a graph from another build of the same size.
    let shuffled = copy_index("shuffled", &|p: &Path| {
        let t = gear_model::read_tensors(p.join("embeddings.safetensors")).unwrap();
        let t: Vec<(String, tch::Tensor)> = t
            .into_iter()
            .map(|(n, v)| {
                if n == "embeddings" {
                    let rows = v.size()[0];
                    let mut order: Vec<i64> = (0..rows).collect();
                    order.swap(0, 1);
                    (n, v.index_select(0, &tch::Tensor::from_slice(&order)))
                } else {
                    (n, v)
                }
            })
            .collect();
        gear_model::save_tensors(t, p.join("embeddings.safetensors")).unwrap();
    });
    cases.push(refused(
        "unverified files",
        "search an index whose vector rows were shuffled",
        &["search", "--index", &shuffled, &query],
        &["embeddings.safetensors changed since the index was built"],
    ));
    let other_docs = gear_synth::generate_corpus(8, 4);
    let other_corpus = write(
        d,
        "other-corpus.jsonl",
        other_docs
            .iter()
            .map(|doc| serde_json::to_string(doc).unwrap() + "\n")
            .collect::<String>(),
    );
    let other = d.join("other-index");
    gear_ok(&[
        "index",
        "build",
        "--corpus",
        &s(&other_corpus),
        "--out",
        &s(&other),
        "--model",
        &m,
    ]);
    gear_ok(&[
        "index",
        "ann",
        "--index",
        &s(&other),
        "--hnsw-m",
        "8",
        "--ef-construction",
        "40",
        "--graph-vectors",
        "f16",
    ]);
    let swapped = copy_index("swapped-graph", &|p: &Path| {
        std::fs::copy(other.join("hnsw-1.usearch"), p.join("hnsw-1.usearch")).unwrap();
    });
    cases.push(refused(
        "unverified files",
        "search --backend hnsw with a graph from another build of the same size",
        &["search", "--index", &swapped, "--backend", "hnsw", &query],
        &["hnsw-1.usearch changed since the index was built"],
    ));
    let copied = copy_index("copied-graph", &|p: &Path| {
        std::fs::copy(index.join("hnsw-1.usearch"), p.join("hnsw-1.usearch")).unwrap();
    });
    cases.push(Case {
        class: "unverified files",
        name: "a faithful copy of an index (new times, same contents) opens".into(),
        args: vec![
            "search".into(),
            "--index".into(),
            copied,
            "--backend".into(),
            "hnsw".into(),
            "-k".into(),
            "3".into(),
            query.clone(),
        ],
        expect: Expect::Succeeds(Box::new(|out, _| out.lines().count() >= 3)),
    });

    // A tokenizer with an id past the embedding table.
    let wide_tok = d.join("wide-tokenizer-model");
    std::fs::create_dir_all(&wide_tok).unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), wide_tok.join(entry.file_name())).unwrap();
    }
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(wide_tok.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let word = vocab
        .keys()
        .find(|k| k.chars().all(|c| c.is_ascii_lowercase()))
        .cloned()
        .unwrap();
    vocab.insert(word.clone(), 1_000_000.into());
    std::fs::write(wide_tok.join("tokenizer.json"), tok.to_string()).unwrap();
    cases.push(refused(
        "model files",
        "locate with a tokenizer whose ids run past the embedding table",
        &[
            "locate",
            "--model",
            &s(&wide_tok),
            "--doc",
            &s(&doc_file),
            &query,
        ],
        &[
            "tokenizer.json",
            &format!("`{word}` has id 1000000"),
            "embedding table",
        ],
    ));

    // Byte-order marks.
    let bom_corpus = write(d, "bom-corpus.jsonl", format!("\u{feff}{corpus_text}"));
    let bom_index = fresh("i-bom");
    let bom_check = bom_index.clone();
    cases.push(Case {
        class: "byte-order mark",
        name: "index build over a corpus starting with a BOM".into(),
        args: vec![
            "index".into(),
            "build".into(),
            "--corpus".into(),
            s(&bom_corpus),
            "--out".into(),
            s(&bom_index),
            "--model".into(),
            m.clone(),
        ],
        expect: Expect::Succeeds(Box::new(move |_, _| {
            let meta = std::fs::read_to_string(bom_check.join("index.json")).unwrap_or_default();
            meta.contains("\"documents\": 8")
        })),
    });
    let bom_squad = s(&write(
        d,
        "bom-squad.json",
        format!(
            "\u{feff}{}",
            std::fs::read_to_string(good_squad_file(d)).unwrap()
        ),
    ));
    let bom_squad_out = fresh("bom-squad.jsonl");
    let bom_squad_check = bom_squad_out.clone();
    cases.push(Case {
        class: "byte-order mark",
        name: "data squad on a file starting with a BOM".into(),
        args: vec![
            "data".into(),
            "squad".into(),
            "--input".into(),
            bom_squad,
            "--output".into(),
            s(&bom_squad_out),
        ],
        expect: Expect::Succeeds(Box::new(move |_, _| {
            std::fs::read_to_string(&bom_squad_check).is_ok_and(|t| t.lines().count() == 1)
        })),
    });
    let bom_config = s(&write(d, "bom.toml", format!("\u{feff}{base_config}")));
    cases.push(refused(
        "byte-order mark",
        "a config starting with a BOM is read (and its real error named)",
        &[
            "train",
            "--config",
            &bom_config,
            "--train",
            &s(&empty),
            "--out",
            &s(&fresh("bom-run")),
        ],
        &["empty.jsonl"],
    ));

    // A checkpoint whose gear.toml and tokenizer.json start with a BOM (an editor saved them).
    let bom_model = d.join("bom-model");
    std::fs::create_dir_all(&bom_model).unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), bom_model.join(entry.file_name())).unwrap();
    }
    for f in ["gear.toml", "tokenizer.json"] {
        let text = std::fs::read_to_string(bom_model.join(f)).unwrap();
        std::fs::write(bom_model.join(f), format!("\u{feff}{text}")).unwrap();
    }
    cases.push(Case {
        class: "byte-order mark",
        name: "locate with a checkpoint whose gear.toml and tokenizer.json start with a BOM".into(),
        args: vec![
            "locate".into(),
            "--model".into(),
            s(&bom_model),
            "--doc".into(),
            s(&doc_file),
            "-k".into(),
            "1".into(),
            query.clone(),
        ],
        expect: Expect::Succeeds(Box::new(|out, _| !out.trim().is_empty())),
    });

    // BEIR judgements: a BOM before the header, and none positive.
    let beir = |name: &str, qrels: &str| -> String {
        let dir = d.join(name);
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        std::fs::write(
            dir.join("corpus.jsonl"),
            docs.iter()
                .map(|x| {
                    serde_json::json!({"_id": x.id, "title": x.title, "text": x.text}).to_string()
                        + "\n"
                })
                .collect::<String>(),
        )
        .unwrap();
        std::fs::write(
            dir.join("queries.jsonl"),
            format!("{}\n", serde_json::json!({"_id": "q1", "text": query})),
        )
        .unwrap();
        std::fs::write(dir.join("qrels/test.tsv"), qrels).unwrap();
        s(&dir)
    };
    let header = "query-id\tcorpus-id\tscore\n";
    let bom_beir = beir(
        "beir-bom",
        &format!("\u{feff}{header}q1\t{}\t1\n", docs[0].id),
    );
    let zero_beir = beir(
        "beir-zero",
        &format!("{header}q1\t{}\t0\nq1\t{}\t0\n", docs[0].id, docs[1].id),
    );
    let bom_beir_out = fresh("beir-bom.jsonl");
    let bom_beir_check = bom_beir_out.clone();
    cases.push(Case {
        class: "byte-order mark",
        name: "data beir with a BOM before the qrels header".into(),
        args: vec![
            "data".into(),
            "beir".into(),
            "--data".into(),
            bom_beir,
            "--output".into(),
            s(&bom_beir_out),
            "--split".into(),
            "test".into(),
            "--negatives".into(),
            "0".into(),
        ],
        expect: Expect::Succeeds(Box::new(move |_, _| {
            std::fs::read_to_string(&bom_beir_check).is_ok_and(|t| t.lines().count() == 1)
        })),
    });
    cases.push(refused(
        "nothing relevant",
        "data beir with every judgement 0",
        &[
            "data",
            "beir",
            "--data",
            &zero_beir,
            "--split",
            "test",
            "--output",
            &s(&fresh("beir-zero.jsonl")),
        ],
        &["test.tsv", "2 judgement(s) and none is positive"],
    ));
    cases.push(refused(
        "nothing relevant",
        "eval beir with every judgement 0",
        &["eval", "beir", "--data", &zero_beir, "--model", &m],
        &["test.tsv", "none is positive"],
    ));

    // A negative whose text is the positive's, under another id.
    let copy_negative = {
        let mut v: serde_json::Value = serde_json::from_str(first).unwrap();
        let text = v["document"]["text"].clone();
        v["negatives"] = serde_json::json!([{"id": "a-copy", "title": "", "text": text}]);
        write(d, "copy-negative.jsonl", v.to_string() + "\n")
    };
    cases.push(refused(
        "copies as negatives",
        "train on a triple whose negative is a copy of its document",
        &tr(&c, &copy_negative, &fresh("copy-run"), false)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[
            "copy-negative.jsonl:1",
            "negatives[0].text",
            "text of the triple's own document",
        ],
    ));

    // Predictions for questions the data does not hold; a file of unanswerable questions.
    let good = good_squad_file(d);
    let some_unknown = write(d, "preds-some.json", r#"{"q1": "north", "q9": "south"}"#);
    cases.push(Case {
        class: "unknown ids",
        name: "score squad with a prediction for an unknown question".into(),
        args: vec![
            "score".into(),
            "squad".into(),
            "--data".into(),
            s(&good),
            "--predictions".into(),
            s(&some_unknown),
        ],
        expect: Expect::Succeeds(Box::new(|out, err| {
            out.contains("\"exact_match\": 100")
                && err.contains("1 of 2 prediction(s)")
                && err.contains("`q9`")
        })),
    });
    let all_unknown = write(d, "preds-none.json", r#"{"x1": "north"}"#);
    cases.push(refused(
        "unknown ids",
        "score squad where no prediction names a question",
        &[
            "score",
            "squad",
            "--data",
            &s(&good),
            "--predictions",
            &s(&all_unknown),
        ],
        &["preds-none.json", "none of its 1 prediction(s)", "`x1`"],
    ));
    let impossible = write(
        d,
        "impossible.json",
        serde_json::json!({"version": "v2.0", "data": [{"title": "T", "paragraphs": [{
            "context": "The river is long. It flows north.",
            "qas": [{"id": "q1", "question": "Which way is south?", "answers": [],
                     "is_impossible": true}]}]}]})
        .to_string(),
    );
    cases.push(refused(
        "unknown ids",
        "eval squad on a file whose questions are all unanswerable",
        &["eval", "squad", "--data", &s(&impossible), "--model", &m],
        &["impossible.json", "(1) is unanswerable", "is_impossible"],
    ));

    // A second writer while the first holds the output.
    let held_out = fresh("i-held");
    let held = gear_data::OutputLock::acquire(&held_out).unwrap();
    cases.push(refused(
        "concurrency",
        "index build while another build writes the output",
        &[
            "index",
            "build",
            "--corpus",
            &s(&corpus),
            "--out",
            &s(&held_out),
            "--model",
            &m,
        ],
        &[
            "another process is writing it",
            &format!("pid {}", std::process::id()),
        ],
    ));

    let held_run = gear_data::OutputLock::acquire(&run_dir).unwrap();
    cases.push(Case {
        class: "concurrency",
        name: "train while another run writes the output folder".into(),
        args: tr(&c, &train, &run_dir, true),
        expect: Expect::Refused(vec!["another process is writing it".into()]),
    });
    let squad_out = fresh("held.jsonl");
    let held_squad = gear_data::OutputLock::acquire(&squad_out).unwrap();
    let good_squad = squad("good.json", "Which way?", 28);
    cases.push(refused(
        "concurrency",
        "data squad into a file another process writes",
        &[
            "data",
            "squad",
            "--input",
            &good_squad,
            "--output",
            &s(&squad_out),
        ],
        &["held.jsonl", "another process is writing it"],
    ));

    // The PostgreSQL store: addresses that are wrong or unreachable, named without the password.
    let unreachable = "postgres://gear:s3cret@127.0.0.1:9/gear";
    let push = |extra: &[&'static str]| {
        let mut args = vec![
            "index",
            "push",
            "--index",
            idx.as_str(),
            "--store",
            unreachable,
        ];
        args.extend_from_slice(extra);
        args
    };
    let corpus_arg = s(&corpus);
    let never = s(&d.join("never-built"));
    let store_build = |extra: &[&'static str]| {
        let mut args = vec![
            "index",
            "build",
            "--pretrained",
            "--corpus",
            corpus_arg.as_str(),
            "--store",
            unreachable,
        ];
        args.extend_from_slice(extra);
        args
    };
    for (name, args, needles) in [
        (
            "index push to a database no one listens for",
            push(&[]),
            vec!["cannot connect to PostgreSQL at 127.0.0.1:9"],
        ),
        (
            "search a store no one listens for",
            vec!["search", "--store", unreachable, &query],
            vec!["cannot connect to PostgreSQL at 127.0.0.1:9"],
        ),
        (
            "search a store whose URL does not parse",
            vec!["search", "--store", "postgres://gear@[bad/gear", &query],
            vec!["the URL does not parse"],
        ),
        (
            "index push into a schema that is not a name",
            push(&["--schema", "x; DROP"]),
            vec!["schema `x; DROP`", "letters, digits and `_`"],
        ),
        (
            "index push with ef_construction below 2 × m",
            push(&["--hnsw-m", "32", "--ef-construction", "40"]),
            vec!["--ef-construction 40", "at least 2 × --hnsw-m (32)"],
        ),
        (
            "index build into a database no one listens for",
            store_build(&[]),
            vec!["cannot connect to PostgreSQL at 127.0.0.1:9"],
        ),
        (
            "index build --store with a local graph",
            store_build(&["--ann", "hnsw"]),
            vec!["--ann and --graph-vectors build a graph in an index folder"],
        ),
        (
            "index build --store with float16 vectors",
            store_build(&["--vectors", "f16"]),
            vec!["pgvector 0.6 stores float32 vectors only"],
        ),
        (
            "index build --store with a shard past the count",
            store_build(&["--shard", "2/2"]),
            vec!["`2/2`", "the shard must be 0 to count − 1"],
        ),
        (
            "index build --store --shard with HNSW settings",
            store_build(&["--shard", "0/2", "--hnsw-m", "8"]),
            vec!["built by `gear index finish`"],
        ),
        (
            "index build with --shard but no --store",
            vec![
                "index",
                "build",
                "--pretrained",
                "--corpus",
                corpus_arg.as_str(),
                "--out",
                never.as_str(),
                "--shard",
                "0/2",
            ],
            vec!["--schema, --shard and --commit-every apply with --store only"],
        ),
        (
            "index finish on a database no one listens for",
            vec!["index", "finish", "--store", unreachable],
            vec!["cannot connect to PostgreSQL at 127.0.0.1:9"],
        ),
    ] {
        cases.push(refused("store", name, &args, &needles));
    }

    let mut table = String::from("| class | case | outcome | message |\n|---|---|---|---|\n");
    let mut bad = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    for case in &cases {
        let (outcome, message) = run(case);
        *counts.entry(format!("{outcome:?}")).or_insert(0) += 1;
        table.push_str(&format!(
            "| {} | {} | {outcome:?} | {} |\n",
            case.class,
            case.name.replace('|', "\\|"),
            message.replace('|', "\\|")
        ));
        if outcome != Outcome::Ok {
            bad.push(format!("{} — {outcome:?}: {message}", case.name));
        }
    }
    drop((held, held_run, held_squad));
    // The refused build left nothing behind.
    assert!(
        !held_out.exists() && !d.join("c1.jsonl.tmp").exists() && !d.join("c2.jsonl.tmp").exists()
    );
    // (Captured by the test harness; `cargo xtask sweep` shows it.)
    println!("{table}\n{} cases: {counts:?}", cases.len());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(
        !table.contains("s3cret"),
        "a message showed a database password:\n{table}"
    );
}
