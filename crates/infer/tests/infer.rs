// tidy: long file — the index and inference integration tests share one tiny checkpoint and corpus fixtures; each test is short.
//! Index, search, locate and explain on a tiny random model saved as a checkpoint.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use gear_data::{Document, Tokenizer};
use gear_infer::{
    build_index, explain, load_model, render_html, render_terminal, BuildOptions, BuildOutcome,
    DocumentIndex, ModelSource,
};
use gear_model::{BertConfig, GearConfig, GearModel, GenerationOptions, LocateOptions};
use gear_synth::generate_corpus;
use tch::Device;

fn corpus() -> Vec<Document> {
    let mut docs = generate_corpus(7, 11);
    docs.push(Document {
        id: "html".into(),
        title: "Tags <b>".into(),
        text: "The page said <script>alert('x')</script> loudly. Then the river & the mill \"stood\" still.".into(),
    });
    docs
}

/// A tiny random GeAR over the corpus's words that reads `max_document_len` tokens at once.
fn tiny_gear(max_document_len: usize, seed: i64) -> GearModel {
    let docs = corpus();
    let texts: Vec<&str> = docs
        .iter()
        .map(|d| d.text.as_str())
        .chain(["where is the river bridge"])
        .collect();
    let tok = Tokenizer::word_level(&texts, 512).unwrap();
    let mut enc = BertConfig::tiny(tok.vocab_size() as i64);
    enc.max_position_embeddings = 512;
    let mut cfg = GearConfig::for_encoder(enc);
    cfg.max_document_len = max_document_len;
    cfg.max_query_len = 16;
    tch::manual_seed(seed);
    GearModel::new(cfg, tok, Device::Cpu).unwrap()
}

/// A tiny GeAR checkpoint covering the corpus's words, saved under `dir/name`.
fn checkpoint(dir: &Path, name: &str, seed: i64) -> PathBuf {
    let path = dir.join(name);
    tiny_gear(400, seed).save(&path).unwrap();
    path
}

/// A checkpoint `dir/m` (seeded) and an index `dir/idx` of the corpus built with it.
fn indexed(dir: &Path, seed: i64) -> (PathBuf, PathBuf) {
    let ck = checkpoint(dir, "m", seed);
    let (model, model_dir) = load_model(&ModelSource::Checkpoint(ck.clone()), Device::Cpu).unwrap();
    let idx = dir.join("idx");
    build_index(
        &model,
        &model_dir,
        &corpus(),
        &idx,
        &BuildOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    (ck, idx)
}

#[test]
fn resumed_build_equals_one_go_and_search_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), "m", 1);
    let (model, model_dir) = load_model(&ModelSource::Checkpoint(ck.clone()), Device::Cpu).unwrap();
    let docs = corpus();
    let opts = BuildOptions {
        batch_size: 2,
        shard_size: 3,
        max_shards: None,
        windows: true,
        ..BuildOptions::default()
    };

    let one = dir.path().join("one");
    assert_eq!(
        build_index(&model, &model_dir, &docs, &one, &opts, &mut |_, _| {}).unwrap(),
        BuildOutcome::Complete
    );

    let two = dir.path().join("two");
    let first = BuildOptions {
        max_shards: Some(1),
        ..opts
    };
    assert_eq!(
        build_index(&model, &model_dir, &docs, &two, &first, &mut |_, _| {}).unwrap(),
        BuildOutcome::Partial { done: 1, total: 3 }
    );
    assert!(!two.exists(), "no half index is visible");
    assert!(DocumentIndex::open(&two, Device::Cpu)
        .err()
        .unwrap()
        .to_string()
        .contains("partial build"));
    assert_eq!(
        build_index(&model, &model_dir, &docs, &two, &opts, &mut |_, _| {}).unwrap(),
        BuildOutcome::Complete
    );

    let read = |p: &Path| {
        gear_model::read_tensors(p.join("embeddings.safetensors"))
            .unwrap()
            .pop()
            .unwrap()
            .1
    };
    assert!(read(&one).equal(&read(&two)));
    assert_eq!(
        std::fs::read(one.join("documents.jsonl")).unwrap(),
        std::fs::read(two.join("documents.jsonl")).unwrap()
    );

    // The stored vectors are the document encoder's, and search ranks by their dot product.
    let index = DocumentIndex::open(&one, Device::Cpu).unwrap();
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let direct = model.embed_documents(&texts).unwrap();
    assert!((read(&one) - &direct).abs().max().double_value(&[]) < 1e-5);
    let q = "where is the river bridge";
    let hits = index.search(&model, &[q], 3).unwrap();
    let scores = model
        .embed_queries(&[q])
        .unwrap()
        .matmul(&direct.transpose(0, 1))
        .squeeze();
    let (_, best) = scores.topk(3, 0, true, true);
    let best: Vec<i64> = Vec::try_from(best).unwrap();
    let got: Vec<&str> = hits[0].iter().map(|(d, _)| d.id.as_str()).collect();
    let want: Vec<&str> = best.iter().map(|&i| docs[i as usize].id.as_str()).collect();
    assert_eq!(got, want);
    index.check_model(&model_dir).unwrap();
    assert!(
        build_index(&model, &model_dir, &docs, &one, &opts, &mut |_, _| {})
            .unwrap_err()
            .to_string()
            .contains("exists")
    );
}

#[test]
fn a_resume_is_the_same_build_and_a_damaged_shard_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), "m", 1);
    let (model, model_dir) = load_model(&ModelSource::Checkpoint(ck), Device::Cpu).unwrap();
    let docs = corpus();
    let opts = BuildOptions {
        batch_size: 2,
        shard_size: 3,
        max_shards: Some(1),
        windows: true,
        ..BuildOptions::default()
    };
    let out = dir.path().join("idx");
    build_index(&model, &model_dir, &docs, &out, &opts, &mut |_, _| {}).unwrap();

    // Another corpus of the same size is refused (it used to keep the old embeddings).
    let mut other = docs.clone();
    other[1].text.push_str(" One more sentence.");
    let err = build_index(&model, &model_dir, &other, &out, &opts, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("another corpus"), "{err}");

    // A second writer is refused while the first holds the lock.
    let held = gear_data::OutputLock::acquire(&out).unwrap();
    let err = build_index(&model, &model_dir, &docs, &out, &opts, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("another process is writing it"), "{err}");
    drop(held);

    // A truncated shard (a crash mid-copy, a full disk) is embedded again, not fatal forever.
    let shard = dir.path().join("idx.partial/shard-000000.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let full = BuildOptions {
        max_shards: None,
        ..opts
    };
    build_index(&model, &model_dir, &docs, &out, &full, &mut |_, _| {}).unwrap();
    let one = dir.path().join("one");
    build_index(&model, &model_dir, &docs, &one, &full, &mut |_, _| {}).unwrap();
    let read = |p: &Path| gear_model::read_tensors(p.join("embeddings.safetensors")).unwrap();
    assert!(read(&out)[0].1.equal(&read(&one)[0].1));

    // Duplicate ids and empty texts never reach an index.
    let refused = |corpus: &[Document], out: &str| {
        build_index(
            &model,
            &model_dir,
            corpus,
            &dir.path().join(out),
            &full,
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string()
    };
    let mut dup = docs.clone();
    dup[2].id = dup[0].id.clone();
    let err = refused(&dup, "d");
    assert!(err.contains("documents 1 and 3 share the id"), "{err}");
    let mut empty = docs.clone();
    empty[4].text = " \n".into();
    let err = refused(&empty, "e");
    assert!(
        err.contains("document 5") && err.contains("empty text"),
        "{err}"
    );
}

#[test]
fn opening_refuses_unknown_layouts_edited_documents_and_non_finite_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), "m", 2);
    let (model, model_dir) = load_model(&ModelSource::Checkpoint(ck), Device::Cpu).unwrap();
    let fresh = |name: &str| {
        let idx = dir.path().join(name);
        build_index(
            &model,
            &model_dir,
            &corpus(),
            &idx,
            &BuildOptions::default(),
            &mut |_, _| {},
        )
        .unwrap();
        idx
    };
    let open_err = |idx: &Path| {
        DocumentIndex::open(idx, Device::Cpu)
            .err()
            .unwrap()
            .to_string()
    };
    let edit_meta = |idx: &Path, from: &str, to: &str| {
        let meta = std::fs::read_to_string(idx.join("index.json")).unwrap();
        assert!(meta.contains(from), "{meta}");
        std::fs::write(idx.join("index.json"), meta.replace(from, to)).unwrap();
    };

    let idx = fresh("version");
    edit_meta(&idx, "\"format\": 3", "\"format\": 7");
    assert!(open_err(&idx).contains("format 7"), "{}", open_err(&idx));

    let idx = fresh("backend");
    edit_meta(&idx, "\"backend\": \"exact\"", "\"backend\": \"banana\"");
    assert!(open_err(&idx).contains("unknown backend `banana`"));

    // Two lines swapped: every row still parses, but rows and vectors no longer match.
    let idx = fresh("order");
    let docs = std::fs::read_to_string(idx.join("documents.jsonl")).unwrap();
    let mut lines: Vec<&str> = docs.lines().collect();
    lines.swap(0, 1);
    std::fs::write(idx.join("documents.jsonl"), lines.join("\n") + "\n").unwrap();
    assert!(open_err(&idx).contains("changed since the index was built"));

    let idx = fresh("nan");
    let vectors = gear_model::read_tensors(idx.join("embeddings.safetensors")).unwrap();
    let (_, embeddings) = vectors.iter().find(|(n, _)| n == "embeddings").unwrap();
    let _ = embeddings.get(3).get(0).fill_(f64::NAN);
    gear_model::save_tensors(vectors, idx.join("embeddings.safetensors")).unwrap();
    let err = open_err(&idx);
    assert!(
        err.contains("non-finite value") && err.contains("embeddings"),
        "{err}"
    );
}

#[test]
fn a_changed_model_file_is_detected_and_an_untouched_or_copied_one_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, idx) = indexed(dir.path(), 2);
    let index = DocumentIndex::open(&idx, Device::Cpu).unwrap();
    index.check_model(&ck).unwrap();
    // A copy has other modification times: the stamps differ, the SHA-256 agrees.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&ck).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    index.check_model(&copy).unwrap();
    // One byte of the weights changed in place (same size): refused.
    let weights = copy.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    let err = index.check_model(&copy).unwrap_err().to_string();
    assert!(err.contains("another model"), "{err}");
}

#[test]
fn clear_errors_for_missing_index_unknown_id_and_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let err = DocumentIndex::open(dir.path().join("nope"), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("nope") && err.contains("no such index"),
        "{err}"
    );

    let (_, idx) = indexed(dir.path(), 2);
    let index = DocumentIndex::open(&idx, Device::Cpu).unwrap();
    let err = index.document("missing-id").unwrap_err().to_string();
    assert!(err.contains("missing-id"), "{err}");
    let other = checkpoint(dir.path(), "other", 3);
    let err = index.check_model(&other).unwrap_err().to_string();
    assert!(err.contains("another model"), "{err}");
}

#[test]
fn explanations_rank_by_the_scorer_and_escape_html() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), "m", 4);
    let (model, _) = load_model(&ModelSource::Checkpoint(ck), Device::Cpu).unwrap();
    let doc = corpus().pop().unwrap();
    let locate = LocateOptions {
        top_tokens: 10,
        ..LocateOptions::default()
    };
    let long_query = "river ".repeat(50);
    let e = explain(
        &model,
        &long_query,
        &doc,
        &locate,
        Some(&GenerationOptions {
            max_len: 5,
            ..GenerationOptions::default()
        }),
    )
    .unwrap();
    assert_eq!(e.sentences.len(), 2);
    let units = gear_data::split_sentences(&doc.text);
    let direct = model
        .locate(
            &gear_model::LocateQueries::pair(&long_query, &doc.text, &units),
            &locate,
        )
        .unwrap()
        .remove(0);
    let order: Vec<usize> = direct.units.iter().map(|u| u.index).collect();
    assert_eq!(
        e.sentences.iter().map(|s| s.index).collect::<Vec<_>>(),
        order
    );
    assert!(e.tokens.len() <= 10 && !e.tokens.is_empty());
    assert!(e.generated.is_some());

    let html = render_html(&e, 5);
    assert!(
        !html.contains("<script>") && html.contains("&lt;script&gt;"),
        "{html}"
    );
    assert!(html.contains("Tags &lt;b&gt;"));
    for tag in [
        "mark", "span", "p", "ol", "li", "h1", "h2", "html", "body", "head", "style", "title",
    ] {
        let opened =
            html.matches(&format!("<{tag}>")).count() + html.matches(&format!("<{tag} ")).count();
        assert_eq!(
            opened,
            html.matches(&format!("</{tag}>")).count(),
            "<{tag}> unbalanced"
        );
        assert!(opened > 0 || tag == "li", "<{tag}> missing");
    }
    let term = render_terminal(&e, true, 5);
    assert!(term.contains("\x1b[4m") && term.contains("most attended tokens"));
    assert!(!render_terminal(&e, false, 5).contains('\x1b'));
    // The number of ranked sentences shown is the caller's.
    let shown = |k| {
        render_terminal(&e, false, k)
            .split("sentences by cross-attention:\n")
            .nth(1)
            .unwrap()
            .lines()
            .take_while(|l| !l.is_empty())
            .count()
    };
    assert_eq!((shown(1), shown(2)), (1, 2.min(e.sentences.len())));
    assert_eq!(render_html(&e, 1).matches("<li>").count(), 1);
}

/// A build killed while writing the finished index leaves its temporary folder (`.idx.tmp-PID`,
/// the atomic folder writer's) beside the index; the next build removes it, under the lock.
#[test]
fn an_interrupted_write_leaves_nothing_behind_after_the_next_build() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join(".idx.tmp-4000000");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("embeddings.safetensors"), vec![0u8; 4096]).unwrap();
    let (_, idx) = indexed(dir.path(), 3);
    assert!(!stale.exists(), "the interrupted write's folder is left");
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        DocumentIndex::open(&idx, Device::Cpu).unwrap().len(),
        corpus().len()
    );
}

#[test]
fn hnsw_backend_agrees_with_exact_search_on_real_embeddings() {
    // Pretrained MiniLM embeddings of the embedded corpus, queried with keyword queries.
    let Ok((model, dir)) = load_model(&ModelSource::Pretrained, Device::Cpu) else {
        panic!("the pretrained model is needed: run `cargo xtask setup`");
    };
    let tmp = tempfile::tempdir().unwrap();
    let docs = generate_corpus(300, 2);
    let idx = tmp.path().join("idx");
    // One vector per document: a document's score is then its one row's, which the graph's
    // rescoring must reproduce exactly. (With windows, the graph may reach a document through a
    // window other than its best and report that window's exact, lower, score.)
    build_index(
        &model,
        &dir,
        &docs,
        &idx,
        &BuildOptions {
            windows: false,
            ..BuildOptions::default()
        },
        &mut |_, _| {},
    )
    .unwrap();
    let queries: Vec<String> = docs
        .iter()
        .map(|d| {
            gear_synth::extract_keywords(
                &d.text[..d.text.find('.').unwrap_or(d.text.len())],
                &Default::default(),
            )
            .join(", ")
        })
        .collect();
    let hnsw_backend = gear_infer::Backend::Hnsw(Default::default());
    // No graph yet: refused, naming the command that builds one.
    let err = DocumentIndex::open_with(&idx, Device::Cpu, hnsw_backend)
        .err()
        .expect("an index without a graph")
        .to_string();
    assert!(err.contains("gear index ann"), "{err}");
    let mut reported = 0;
    let ann =
        gear_infer::build_ann(&idx, &Default::default(), &mut |done, _| reported = done).unwrap();
    let exact = DocumentIndex::open(&idx, Device::Cpu).unwrap();
    let rows = exact.meta().rows.unwrap();
    assert_eq!((ann.rows, reported, ann.generation), (rows, rows, 1));
    let hnsw = DocumentIndex::open_with(&idx, Device::Cpu, hnsw_backend).unwrap();
    let (a, b) = (
        exact.search(&model, &queries, 10).unwrap(),
        hnsw.search(&model, &queries, 10).unwrap(),
    );
    let mut found = 0usize;
    for (x, y) in a.iter().zip(&b) {
        found += x
            .iter()
            .filter(|(d, _)| y.iter().any(|(e, _)| e.id == d.id))
            .count();
        // Candidates are scored again exactly: a document both return has the same score.
        for (d, s) in y {
            if let Some((_, t)) = x.iter().find(|(e, _)| e.id == d.id) {
                assert!((s - t).abs() < 1e-5, "{}: {s} vs exact {t}", d.id);
            }
        }
    }
    // A second open of the saved graph answers identically.
    let again = DocumentIndex::open_with(&idx, Device::Cpu, hnsw_backend).unwrap();
    assert_eq!(again.search(&model, &queries, 10).unwrap(), b);
    // Rebuilding replaces the graph under a new name and removes the old file.
    let ann2 = gear_infer::build_ann(&idx, &Default::default(), &mut |_, _| {}).unwrap();
    assert_eq!(ann2.generation, 2);
    assert!(idx.join(&ann2.file).is_file() && !idx.join(&ann.file).exists());
    let recall = found as f64 / (10 * queries.len()) as f64;
    eprintln!(
        "HNSW recall@10 against exact search: {recall:.4} over {} queries, {} documents",
        queries.len(),
        docs.len()
    );
    assert!(recall >= 0.95, "{recall}");
}

mod generated {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 120,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// `index.json` with any one edit: opening never panics, and refuses with the index's
        /// path in the message — or opens an index that still searches.
        #[test]
        fn generated_index_metadata(
            cut in (0usize..400, 0usize..400),
            insert in proptest::collection::vec(any::<u8>(), 0..6),
        ) {
            // A fixed folder in the target's scratch space, not a `TempDir`: a static is never
            // dropped, so a `TempDir` here was left in the system's temporary folder every run.
            static INDEX: std::sync::OnceLock<(PathBuf, Vec<u8>)> = std::sync::OnceLock::new();
            let (idx, meta) = INDEX.get_or_init(|| {
                let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generated-index-metadata");
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                let ck = checkpoint(&dir, "m", 4);
                let (model, model_dir) =
                    load_model(&ModelSource::Checkpoint(ck), Device::Cpu).unwrap();
                let idx = dir.join("idx");
                build_index(&model, &model_dir, &corpus(), &idx, &BuildOptions::default(), &mut |_, _| {})
                    .unwrap();
                let meta = std::fs::read(idx.join("index.json")).unwrap();
                (idx, meta)
            });
            let mut bytes = meta.clone();
            let (a, b) = (cut.0.min(bytes.len()), cut.1.min(bytes.len()));
            bytes.drain(a.min(b)..a.max(b));
            let at = a.min(bytes.len());
            bytes.splice(at..at, insert);
            std::fs::write(idx.join("index.json"), &bytes).unwrap();
            match DocumentIndex::open(idx, Device::Cpu) {
                Ok(index) => prop_assert_eq!(index.len(), corpus().len()),
                Err(e) => {
                    let e = e.to_string();
                    prop_assert!(e.contains(&idx.display().to_string()), "{}", e);
                }
            }
        }
    }
}

#[test]
fn a_long_document_is_read_in_sentence_windows_and_every_sentence_is_located() {
    let docs = corpus();
    let long_text = docs[..4]
        .iter()
        .map(|d| d.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let model = tiny_gear(48, 8);
    let doc = Document {
        id: "long".into(),
        title: "Long".into(),
        text: long_text.clone(),
    };
    let query = "where is the river bridge";
    let options = LocateOptions {
        top_tokens: 10,
        ..LocateOptions::default()
    };
    let e = explain(&model, query, &doc, &options, None).unwrap();
    let t = e.truncated.unwrap();
    let units = gear_data::split_sentences(&long_text);
    assert!(t.tokens > 48 && t.windows > 2, "{t:?}");
    assert_eq!((t.unreachable_sentences, t.sentences), (0, units.len()));
    assert_eq!(e.sentences.len(), units.len());
    assert!(
        e.sentences.iter().all(|s| s.score > 0.0),
        "every sentence is read"
    );
    assert_eq!(e.tokens.len(), 10);

    // Each sentence's score is its best over the windows holding it, each window located on
    // its own.
    let counts: Vec<usize> = units
        .iter()
        .map(|u| {
            model
                .tokenizer()
                .count_tokens(u.slice(&long_text).unwrap())
                .unwrap()
                - 2
        })
        .collect();
    let windows = gear_infer::sentence_windows(&counts, 44);
    assert_eq!(windows.len(), t.windows);
    let mut best = vec![0.0f32; units.len()];
    for w in &windows {
        let base = units[w.start].start;
        let text = &long_text[base..units[w.end - 1].end];
        let spans: Vec<gear_data::Span> = units[w.clone()]
            .iter()
            .map(|u| gear_data::Span::new(u.start - base, u.end - base))
            .collect();
        let request = gear_model::LocateQueries::pair(query, text, &spans);
        for u in model.locate(&request, &options).unwrap().remove(0).units {
            let i = w.start + u.index;
            best[i] = best[i].max(u.score);
        }
    }
    for s in &e.sentences {
        assert!(
            (s.score - best[s.index]).abs() < 1e-5,
            "sentence {}: {} vs {}",
            s.index,
            s.score,
            best[s.index]
        );
    }

    // A document that fits is read whole, as before.
    let short = Document {
        id: "s".into(),
        title: String::new(),
        text: units[0].slice(&long_text).unwrap().to_owned(),
    };
    assert!(explain(&model, query, &short, &options, None)
        .unwrap()
        .truncated
        .is_none());
}

#[test]
fn sentence_windows_cover_everything_with_one_sentence_of_overlap() {
    use gear_infer::sentence_windows;
    assert_eq!(sentence_windows(&[3, 3, 3, 3], 6), vec![0..2, 1..3, 2..4]);
    assert_eq!(sentence_windows(&[10, 2, 2], 6), vec![0..1, 1..3]);
    assert_eq!(sentence_windows(&[2, 2], 6), vec![0..2]);
    // The last window reaches back to be as long as the others.
    assert_eq!(sentence_windows(&[3, 3, 3, 1], 6), vec![0..2, 1..3, 2..4]);
    assert_eq!(sentence_windows(&[2, 2, 2, 2, 1], 6), vec![0..3, 2..5]);
    assert_eq!(sentence_windows(&[4, 1, 1, 4, 1], 6), vec![0..3, 2..5]);
    assert_eq!(
        sentence_windows(&[], 6),
        Vec::<std::ops::Range<usize>>::new()
    );
}

#[test]
fn long_documents_are_indexed_in_windows_and_scored_by_their_best() {
    let dir = tempfile::tempdir().unwrap();
    let docs = corpus();
    let model_path = dir.path().join("m");
    tiny_gear(48, 9).save(&model_path).unwrap();
    let (model, model_dir) = load_model(&ModelSource::Checkpoint(model_path), Device::Cpu).unwrap();
    let opts = BuildOptions {
        shard_size: 3,
        ..BuildOptions::default()
    };
    let windowed = dir.path().join("windowed");
    build_index(&model, &model_dir, &docs, &windowed, &opts, &mut |_, _| {}).unwrap();
    let index = DocumentIndex::open(&windowed, Device::Cpu).unwrap();
    let rows = index.meta().rows.unwrap();
    assert!(
        rows > docs.len(),
        "{rows} vectors for {} documents",
        docs.len()
    );

    // Brute force: every window of every document embedded alone, a document scored by its best.
    let q = "where is the river bridge";
    let qv = model.embed_queries(&[q]).unwrap().get(0);
    let mut scored: Vec<(f64, &str)> = docs
        .iter()
        .map(|d| {
            let units = gear_data::split_sentences(&d.text);
            let fits = model.tokenizer().count_tokens(&d.text).unwrap() <= 48;
            let windows: Vec<String> = if fits || units.len() < 2 {
                vec![d.text.clone()]
            } else {
                let counts: Vec<usize> = units
                    .iter()
                    .map(|u| {
                        model
                            .tokenizer()
                            .count_tokens(u.slice(&d.text).unwrap())
                            .unwrap()
                            - 2
                    })
                    .collect();
                gear_infer::sentence_windows(&counts, 44)
                    .into_iter()
                    .map(|w| d.text[units[w.start].start..units[w.end - 1].end].to_owned())
                    .collect()
            };
            let v = model.embed_documents(&windows).unwrap();
            (v.matmul(&qv).max().double_value(&[]), d.id.as_str())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let hits = index.search(&model, &[q], 3).unwrap().remove(0);
    assert_eq!(hits.len(), 3);
    for ((doc, score), (want, id)) in hits.iter().zip(&scored) {
        assert_eq!(doc.id, *id);
        assert!((f64::from(*score) - want).abs() < 1e-5, "{score} vs {want}");
    }

    // Windows off: one vector per document, as before; and a format-1 index still opens.
    let plain = dir.path().join("plain");
    let no_windows = BuildOptions {
        windows: false,
        ..opts
    };
    build_index(
        &model,
        &model_dir,
        &docs,
        &plain,
        &no_windows,
        &mut |_, _| {},
    )
    .unwrap();
    let plain_hits: Vec<String> = DocumentIndex::open(&plain, Device::Cpu)
        .unwrap()
        .search(&model, &[q], 3)
        .unwrap()
        .remove(0)
        .into_iter()
        .map(|(d, _)| d.id.clone())
        .collect();
    assert_eq!(
        DocumentIndex::open(&plain, Device::Cpu)
            .unwrap()
            .meta()
            .rows,
        Some(docs.len())
    );
    let tensors = gear_model::read_tensors(plain.join("embeddings.safetensors")).unwrap();
    let only: Vec<_> = tensors
        .into_iter()
        .filter(|(n, _)| n == "embeddings")
        .collect();
    gear_model::save_tensors(only, plain.join("embeddings.safetensors")).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plain.join("index.json")).unwrap()).unwrap();
    meta["format"] = 1.into();
    // Format 1 recorded neither the row count nor the files' stamps.
    meta.as_object_mut().unwrap().remove("rows");
    meta.as_object_mut().unwrap().remove("files");
    std::fs::write(plain.join("index.json"), meta.to_string()).unwrap();
    let old: Vec<String> = DocumentIndex::open(&plain, Device::Cpu)
        .unwrap()
        .search(&model, &[q], 3)
        .unwrap()
        .remove(0)
        .into_iter()
        .map(|(d, _)| d.id.clone())
        .collect();
    assert_eq!(old, plain_hits);
}

#[test]
fn an_index_of_own_vectors_opens_mapped_reads_documents_on_demand_and_searches_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), "m", 4);
    tch::manual_seed(9);
    let docs = corpus();
    let n = docs.len() as i64;
    let v = tch::Tensor::randn([n, 16], (tch::Kind::Float, Device::Cpu));
    let v = &v / v.norm_scalaropt_dim(2, [1].as_slice(), true);
    let idx = dir.path().join("own");
    gear_infer::index_vectors(&v, None, &docs, &ck, &idx, gear_infer::VectorPrecision::F32)
        .unwrap();
    let index = DocumentIndex::open(&idx, Device::Cpu).unwrap();
    assert_eq!(index.len(), docs.len());
    assert!(
        index.vectors().equal(&v),
        "the mapped matrix is the one written"
    );
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(&index.document_at(i).unwrap(), d);
        assert_eq!(&index.document(&d.id).unwrap(), d);
    }
    assert!(index.document_at(docs.len()).is_err());
    // Each vector's own nearest neighbour is itself (unit rows, exact inner product).
    let hits = index.search_embedded(&v, 3).unwrap();
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(h[0].0, i);
        assert!((h[0].1 - 1.0).abs() < 1e-5);
        assert!(h.windows(2).all(|w| w[0].1 >= w[1].1));
    }
    let err = index
        .search_embedded(
            &tch::Tensor::zeros([1, 8], (tch::Kind::Float, Device::Cpu)),
            3,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("want [n, 16]"), "{err}");
    // Vectors that do not cover the corpus are refused by count.
    let err = gear_infer::index_vectors(
        &v.narrow(0, 0, 3),
        None,
        &docs,
        &ck,
        &dir.path().join("bad"),
        gear_infer::VectorPrecision::F32,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("3 vectors"), "{err}");
    // float16: half the file and the same nearest neighbours here.
    let half = dir.path().join("half");
    gear_infer::index_vectors(
        &v,
        None,
        &docs,
        &ck,
        &half,
        gear_infer::VectorPrecision::F16,
    )
    .unwrap();
    let size = |d: &Path| {
        std::fs::metadata(d.join("embeddings.safetensors"))
            .unwrap()
            .len()
    };
    // (Headers dominate at this size: the vector bytes alone halve.)
    assert_eq!(size(&idx) - size(&half), 8 * 16 * 2);
    let h = DocumentIndex::open(&half, Device::Cpu).unwrap();
    assert_eq!(h.vectors().kind(), tch::Kind::Half);
    let half_hits = h.search_embedded(&v, 3).unwrap();
    for (a, b) in hits.iter().zip(&half_hits) {
        assert_eq!(a[0].0, b[0].0);
        assert!((a[0].1 - b[0].1).abs() < 2e-3);
    }
}

#[test]
fn adding_equals_a_full_build_over_the_union_and_refuses_known_ids() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), "m", 5);
    let (model, model_dir) = load_model(&ModelSource::Checkpoint(ck), Device::Cpu).unwrap();
    let docs = corpus();
    let opts = BuildOptions::default();
    let full = dir.path().join("full");
    build_index(&model, &model_dir, &docs, &full, &opts, &mut |_, _| {}).unwrap();
    let grown = dir.path().join("grown");
    build_index(
        &model,
        &model_dir,
        &docs[..4],
        &grown,
        &opts,
        &mut |_, _| {},
    )
    .unwrap();
    // The grown index carries an HNSW graph, which every add extends.
    gear_infer::build_ann(&grown, &Default::default(), &mut |_, _| {}).unwrap();
    let inserted = std::cell::Cell::new((0, 0));
    let add = |part: &[Document]| {
        gear_infer::add_to_index(
            &model,
            &model_dir,
            part,
            &grown,
            &opts,
            &mut |_, _| {},
            &mut |done, total| inserted.set((done, total)),
        )
    };
    assert_eq!(add(&docs[4..6]).unwrap(), 2);
    assert_eq!(add(&docs[6..]).unwrap(), docs.len() - 6);
    let full = DocumentIndex::open(&full, Device::Cpu).unwrap();
    let index = DocumentIndex::open(&grown, Device::Cpu).unwrap();
    assert_eq!(index.len(), docs.len());
    assert_eq!(index.meta().rows, full.meta().rows);
    let queries = [
        "river mill",
        "the page said",
        "engineer bridge brick",
        "crowd",
    ];
    let a = full.search(&model, &queries, docs.len()).unwrap();
    let b = index.search(&model, &queries, docs.len()).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let ids =
            |h: &Vec<(Document, f32)>| h.iter().map(|(d, _)| d.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(x), ids(y));
        for ((_, s), (_, t)) in x.iter().zip(y) {
            assert!((s - t).abs() < 1e-5, "{s} vs {t}");
        }
    }
    assert_eq!(index.document(&docs[7].id).unwrap(), docs[7]);
    // The graph holds every row after the adds, and finds what exact search finds.
    let ann = index.meta().ann.clone().expect("the graph survives adds");
    assert_eq!((ann.rows, ann.generation), (index.meta().rows.unwrap(), 3));
    let (done, total) = inserted.get();
    assert!(done == total && total >= docs.len() - 6, "{done}/{total}");
    let hnsw = DocumentIndex::open_with(
        &grown,
        Device::Cpu,
        gear_infer::Backend::Hnsw(Default::default()),
    )
    .unwrap();
    let c = hnsw.search(&model, &queries, 5).unwrap();
    for (x, y) in a.iter().zip(&c) {
        let ids = |h: &[(Document, f32)]| h.iter().map(|(d, _)| d.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&x[..5]), ids(y));
    }
    let graphs = std::fs::read_dir(&grown)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("hnsw-")
        })
        .count();
    assert_eq!(graphs, 1, "old graph files are removed after each commit");
    // A known id (or a duplicate within the addition) is refused, and the index stays as it was.
    let err = add(&docs[2..3]).unwrap_err().to_string();
    assert!(
        err.contains("already in") && err.contains(&docs[2].id),
        "{err}"
    );
    let mut twice = docs[..1].to_vec();
    twice[0].id = "new".into();
    twice.push(twice[0].clone());
    assert!(add(&twice)
        .unwrap_err()
        .to_string()
        .contains("share the id"));
    assert_eq!(
        DocumentIndex::open(&grown, Device::Cpu).unwrap().len(),
        docs.len()
    );
    // Files of an add that never committed are ignored.
    std::fs::write(grown.join("documents-3.jsonl"), "not json\n").unwrap();
    assert_eq!(
        DocumentIndex::open(&grown, Device::Cpu).unwrap().len(),
        docs.len()
    );
}

/// Locating many pairs at once — documents shared by several queries, documents that fit and
/// documents read in windows, in grouped passes — gives each pair the explanation it gets alone.
#[test]
fn grouped_locating_equals_each_pair_alone() {
    let docs = corpus();
    let long = Document {
        id: "long".into(),
        title: "Long".into(),
        text: docs
            .iter()
            .map(|d| d.text.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    };
    // A model that reads the short documents whole and the long one in windows.
    let probe = tiny_gear(400, 8);
    let fit = docs[..6]
        .iter()
        .map(|d| probe.tokenizer().count_tokens(&d.text).unwrap())
        .max()
        .unwrap();
    let model = tiny_gear(fit, 8);
    assert!(model.tokenizer().count_tokens(&long.text).unwrap() > fit);
    let options = LocateOptions {
        top_tokens: 4,
        ..LocateOptions::default()
    };
    let queries = ["where is the river bridge", "the old mill", "river"];
    let mut pairs: Vec<(&str, &Document)> = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        pairs.push((q, &docs[i]));
        pairs.push((q, &docs[5])); // shared by every query
        pairs.push((q, &long)); // read in windows
    }
    let grouped = gear_infer::locate_pairs(&model, &pairs, &options, None).unwrap();
    assert_eq!(grouped.len(), pairs.len());
    let mut windowed = 0;
    for (g, (q, d)) in grouped.iter().zip(&pairs) {
        let alone = explain(&model, q, d, &options, None).unwrap();
        assert_eq!(
            (&g.query, &g.document.id),
            (&alone.query, &alone.document.id)
        );
        assert_eq!(g.truncated, alone.truncated, "{q} / {}", d.id);
        windowed += usize::from(g.truncated.is_some());
        let ours = g.located_sentences(usize::MAX);
        let theirs = alone.located_sentences(usize::MAX);
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(
                (a.index, a.start, a.end),
                (b.index, b.start, b.end),
                "{q} / {}",
                d.id
            );
            assert!((a.score - b.score).abs() < 1e-5, "{a:?} vs {b:?}");
        }
        assert_eq!(
            g.located_tokens()
                .iter()
                .map(|t| t.start)
                .collect::<Vec<_>>(),
            alone
                .located_tokens()
                .iter()
                .map(|t| t.start)
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(
        windowed,
        queries.len(),
        "the long document is read in windows"
    );
    // A deadline already past stops before the first pass.
    let past = std::time::Instant::now() - std::time::Duration::from_secs(1);
    let err = gear_infer::locate_pairs(&model, &pairs, &options, Some(past)).unwrap_err();
    assert!(
        matches!(err, gear_infer::Error::Deadline { done: 0, .. }),
        "{err}"
    );
}

/// A `Retriever` searches and locates every hit in one go, with the sentences and character
/// offsets each (query, hit) pair gets alone; without an index it says so.
#[test]
fn the_retriever_locates_search_hits_as_each_pair_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, idx) = indexed(dir.path(), 3);
    let retriever =
        gear_infer::Retriever::open(&idx, &gear_infer::RetrieverOptions::default()).unwrap();
    let queries = ["where is the river bridge", "the old mill", "river mill"];
    let answers = retriever.search(&queries, 4, 2, None).unwrap();
    let plain = retriever.search(&queries, 4, 0, None).unwrap();
    assert_eq!(answers.len(), 3);
    for ((answer, plain), q) in answers.iter().zip(&plain).zip(queries) {
        assert_eq!(answer.query, q);
        assert_eq!(answer.results.len(), 4);
        for (rank, (hit, bare)) in answer.results.iter().zip(&plain.results).enumerate() {
            assert_eq!((hit.rank, &hit.id), (rank + 1, &bare.id));
            assert!(bare.sentences.is_none());
            let doc = retriever.document(&hit.id).unwrap();
            let alone = explain(retriever.model(), q, &doc, &LocateOptions::default(), None)
                .unwrap()
                .located_sentences(2);
            let got = hit.sentences.as_ref().unwrap();
            assert_eq!(got.len(), alone.len().min(2));
            for (a, b) in got.iter().zip(&alone) {
                assert_eq!(
                    (a.index, a.start, a.end, &a.text),
                    (b.index, b.start, b.end, &b.text)
                );
                assert!((a.score - b.score).abs() < 1e-5);
            }
        }
    }
    let json = serde_json::to_value(&answers[0]).unwrap();
    assert!(
        json["results"][0]["sentences"][0]["start"].is_u64(),
        "{json}"
    );
    let (model, _) = load_model(&ModelSource::Checkpoint(ck), Device::Cpu).unwrap();
    let bare = gear_infer::Retriever::from_model(model);
    let err = bare.search(&["river"], 1, 0, None).unwrap_err().to_string();
    assert!(err.contains("no index is open"), "{err}");
}
