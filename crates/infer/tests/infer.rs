//! Index, search, locate and explain on a tiny random model saved as a checkpoint.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use gear_data::{generate_corpus, Document, Tokenizer};
use gear_infer::{
    build_index, explain, load_model, render_html, render_terminal, BuildOptions, BuildOutcome,
    DocumentIndex, ModelSource,
};
use gear_model::{BertConfig, GearConfig, GearModel, GenerationOptions, LocateOptions};
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

/// A tiny GeAR checkpoint covering the corpus's words, saved under `dir/name`.
fn checkpoint(dir: &Path, name: &str, seed: i64) -> PathBuf {
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
    cfg.max_document_len = 400;
    cfg.max_query_len = 16;
    tch::manual_seed(seed);
    let model = GearModel::new(cfg, tok, Device::Cpu).unwrap();
    let path = dir.join(name);
    model.save(&path).unwrap();
    path
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

    let ck = checkpoint(dir.path(), "m", 2);
    let (model, model_dir) = load_model(&ModelSource::Checkpoint(ck), Device::Cpu).unwrap();
    let idx = dir.path().join("idx");
    build_index(
        &model,
        &model_dir,
        &corpus(),
        &idx,
        &BuildOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
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
        .locate(&long_query, &doc.text, &units, &locate)
        .unwrap();
    let order: Vec<usize> = direct.units.iter().map(|u| u.index).collect();
    assert_eq!(
        e.sentences.iter().map(|s| s.index).collect::<Vec<_>>(),
        order
    );
    assert!(e.tokens.len() <= 10 && !e.tokens.is_empty());
    assert!(e.generated.is_some());

    let html = render_html(&e);
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
    let term = render_terminal(&e, true);
    assert!(term.contains("\x1b[4m") && term.contains("most attended tokens"));
    assert!(!render_terminal(&e, false).contains('\x1b'));
}

#[test]
fn squad_evaluation_reports_every_method_and_layer() {
    let dir = tempfile::tempdir().unwrap();
    let squad = dir.path().join("tiny-squad.json");
    let docs = corpus();
    let d0 = &docs[0].text;
    let d1 = &docs[1].text;
    let start0 = d0.find("river").or_else(|| d0.find("the")).unwrap();
    let start1 = d1.chars().count() / 2;
    let json = serde_json::json!({"data": [{"title": "T", "paragraphs": [
        {"context": d0, "qas": [{"id": "a", "question": "where is the river bridge", "answers": [{"text": "x", "answer_start": d0[..start0].chars().count()}]}]},
        {"context": d1, "qas": [{"id": "b", "question": "the mill", "answers": [{"text": "y", "answer_start": start1}]}]}
    ]}]});
    std::fs::write(&squad, json.to_string()).unwrap();
    let ck = checkpoint(dir.path(), "m", 5);
    let (model, _) = load_model(&ModelSource::Checkpoint(ck), Device::Cpu).unwrap();
    let data = gear_data::import_squad(&squad).unwrap();
    let options = gear_infer::SquadEvalOptions {
        layers: vec![1, 2],
        generation_examples: 2,
        cross_attention: true,
        cross_encoder: true,
        batch_size: 4,
    };
    let r = gear_infer::eval_squad(&model, &data, &options).unwrap();
    assert_eq!((r.questions, r.passages), (2, 2));
    for (method, keys) in [
        (
            "gear",
            &[
                "global.recall@5",
                "global.map@5",
                "local.recall@1",
                "local.map@1",
                "generation.exact_match",
                "generation.f1",
            ][..],
        ),
        (
            "bi-encoder",
            &[
                "global.recall@5",
                "global.map@5",
                "local.recall@1",
                "local.map@1",
            ][..],
        ),
        ("cross-encoder", &["local.recall@1", "local.map@1"][..]),
    ] {
        for k in keys {
            let v = r.methods[method][*k];
            assert!((0.0..=100.0).contains(&v), "{method} {k} = {v}");
        }
    }
    assert_eq!(r.layers.keys().copied().collect::<Vec<_>>(), [1, 2]);
    // Global retrieval over two passages always finds the gold one in the top 5.
    assert_eq!(r.methods["bi-encoder"]["global.recall@5"], 1.0);
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
    build_index(
        &model,
        &dir,
        &docs,
        &idx,
        &BuildOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let queries: Vec<String> = docs
        .iter()
        .map(|d| {
            gear_data::extract_keywords(
                &d.text[..d.text.find('.').unwrap_or(d.text.len())],
                &Default::default(),
            )
            .join(", ")
        })
        .collect();
    let exact = DocumentIndex::open(&idx, Device::Cpu).unwrap();
    let hnsw = DocumentIndex::open_with(
        &idx,
        Device::Cpu,
        gear_infer::Backend::Hnsw(Default::default()),
    )
    .unwrap();
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
    }
    let recall = found as f64 / (10 * queries.len()) as f64;
    eprintln!(
        "HNSW recall@10 against exact search: {recall:.4} over {} queries, {} documents",
        queries.len(),
        docs.len()
    );
    assert!(recall >= 0.95, "{recall}");
}
