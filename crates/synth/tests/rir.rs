//! The RIR pipeline end to end on the embedded corpus, with a word-level tokenizer and a
//! bag-of-words embedder built here, so the test needs no model files.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::atomic::{AtomicUsize, Ordering};

use gear_data::{Document, Tokenizer, TripleReader};
use gear_synth::Result;
use gear_synth::{
    candidates, generate_corpus, preprocess, pronoun_led, synthesize_rir, Embedder,
    KeywordRewriter, Rewriter, RirConfig, RirStats,
};

fn word_tokenizer(docs: &[Document]) -> Tokenizer {
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    Tokenizer::word_level(&texts, 512).unwrap()
}

/// Hashed bag of words, L2-normalised.
struct BagOfWords;

impl Embedder for BagOfWords {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 256];
                for w in t
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    let h = w
                        .bytes()
                        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
                    v[(h % 256) as usize] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

/// Fails every call after the first `ok` ones (a dying LLM server).
struct Flaky {
    ok: usize,
    calls: AtomicUsize,
}

impl Rewriter for Flaky {
    fn name(&self) -> &str {
        // The keyword rewriter behind a connection that fails: the same job for a resume.
        "keywords"
    }
    fn rewrite(&self, sentence: &str) -> Result<String> {
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.ok {
            return Err(gear_synth::Error::Rewrite {
                rewriter: "flaky".into(),
                message: "server gone".into(),
            });
        }
        KeywordRewriter::default().rewrite(sentence)
    }
}

fn config() -> RirConfig {
    RirConfig {
        min_similarity: Some(0.2),
        seed: 3,
        ..RirConfig::default()
    }
}

#[test]
fn every_step_is_counted_and_every_triple_is_valid() {
    let mut docs = generate_corpus(40, 5);
    // A document too short to keep, and one made of pronoun-led sentences only.
    docs.push(Document {
        id: "short".into(),
        title: "Short".into(),
        text: "One line. Two lines. Three lines.".into(),
    });
    let tok = word_tokenizer(&docs);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rir.jsonl");
    let mut calls = 0;
    let stats = synthesize_rir(
        docs.iter().cloned().map(Ok),
        &out,
        &tok,
        &KeywordRewriter::default(),
        Some(&BagOfWords),
        &config(),
        &mut |_| calls += 1,
    )
    .unwrap();
    assert_eq!(calls, 41, "progress after every document");
    assert_eq!(stats.documents, 41);
    assert!(stats.dropped_few_tokens >= 1, "the short document at least");
    let kept_docs = stats.documents
        - stats.dropped_few_sentences
        - stats.dropped_few_tokens
        - stats.dropped_few_candidates;
    assert_eq!(stats.rewritten, 3 * kept_docs);
    assert_eq!(
        stats.triples,
        stats.rewritten - stats.dropped_empty_query - stats.dropped_low_similarity
    );
    assert!(
        stats.triples > 40 && stats.dropped_low_similarity > 0,
        "{stats:?}"
    );

    let triples: Vec<_> = TripleReader::open(&out)
        .unwrap()
        .collect::<gear_data::Result<_>>()
        .unwrap();
    assert_eq!(triples.len(), stats.triples);
    for t in &triples {
        let unit = &t.units[0].text;
        let n = tok.count_tokens(unit).unwrap() - 2;
        assert!((8..=20).contains(&n), "{unit:?} has {n} tokens");
        assert!(!pronoun_led(unit));
        assert!(tok.count_tokens(&t.document.text).unwrap() - 2 <= 500);
        assert!(!t.query.is_empty());
    }
    assert!(!triples.iter().any(|t| t.document.id == "short"));
    assert!(!gear_synth::partial_path(&out).exists());
}

#[test]
fn an_interrupted_run_resumes_to_the_same_output() {
    let docs = generate_corpus(20, 9);
    let tok = word_tokenizer(&docs);
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight.jsonl");
    synthesize_rir(
        docs.iter().cloned().map(Ok),
        &straight,
        &tok,
        &KeywordRewriter::default(),
        Some(&BagOfWords),
        &config(),
        &mut |_| {},
    )
    .unwrap();

    // Documents go through in chunks of 16: let the first chunk finish and the second fail, then
    // check the rerun redoes only what is missing.
    let resumed = dir.path().join("resumed.jsonl");
    let flaky = Flaky {
        ok: 50,
        calls: AtomicUsize::new(0),
    };
    let err = synthesize_rir(
        docs.iter().cloned().map(Ok),
        &resumed,
        &tok,
        &flaky,
        Some(&BagOfWords),
        &config(),
        &mut |_| {},
    );
    assert!(err.unwrap_err().to_string().contains("server gone"));
    assert!(!resumed.exists());

    // A resume must be the same job: other settings, or a finished document that changed or
    // disappeared from the input, are refused (and leave the partial file usable).
    let resume_with = |docs: &[Document], cfg: &RirConfig| {
        synthesize_rir(
            docs.iter().cloned().map(Ok),
            &resumed,
            &tok,
            &KeywordRewriter::default(),
            Some(&BagOfWords),
            cfg,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string()
    };
    let other_seed = RirConfig {
        seed: config().seed + 1,
        ..config()
    };
    let held = gear_data::OutputLock::acquire(&resumed).unwrap();
    let err = resume_with(&docs, &config());
    assert!(err.contains("another process is writing it"), "{err}");
    drop(held);
    let err = resume_with(&docs, &other_seed);
    assert!(err.contains("other settings"), "{err}");
    let mut edited = docs.clone();
    edited[3].text.push_str(" An extra sentence.");
    let err = resume_with(&edited, &config());
    assert!(err.contains(&format!("`{}` differs", docs[3].id)), "{err}");
    let err = resume_with(&docs[..5], &config());
    assert!(err.contains("11 document(s) this input lacks"), "{err}");

    let mut seen: Option<RirStats> = None;
    let stats = synthesize_rir(
        docs.iter().cloned().map(Ok),
        &resumed,
        &tok,
        &KeywordRewriter::default(),
        Some(&BagOfWords),
        &config(),
        &mut |s| seen = Some(s.clone()),
    )
    .unwrap();
    assert_eq!((stats.resumed, stats.documents), (16, 4));
    assert_eq!(
        std::fs::read_to_string(&straight).unwrap(),
        std::fs::read_to_string(&resumed).unwrap()
    );

    // A finished output is never overwritten.
    let again = synthesize_rir(
        docs.iter().cloned().map(Ok),
        &resumed,
        &tok,
        &KeywordRewriter::default(),
        Some(&BagOfWords),
        &config(),
        &mut |_| {},
    );
    assert!(again.unwrap_err().to_string().contains("exists already"));
    assert!(seen.is_some());
}

#[test]
fn candidate_rules_follow_the_paper() {
    let doc = Document {
        id: "d".into(),
        title: "T".into(),
        text: "The old mill on the river was rebuilt in stone after the fire. It was rebuilt again in brick later on. \
               Mill. The town council paid for a new roof over the great hall of the old mill. \
               In 1901, they sold the building to a private owner from the city."
            .into(),
    };
    let tok = word_tokenizer(std::slice::from_ref(&doc));
    let cfg = RirConfig {
        min_tokens: 10,
        ..RirConfig::default()
    };
    let mut stats = RirStats::default();
    let pre = preprocess(&doc, &tok, &cfg, &mut stats).unwrap().unwrap();
    let c = candidates(&pre, &cfg);
    let texts: Vec<&str> = c
        .iter()
        .map(|&i| &pre.document.text[pre.sentences[i].start..pre.sentences[i].end])
        .collect();
    assert_eq!(
        texts,
        [
            "The old mill on the river was rebuilt in stone after the fire.",
            "The town council paid for a new roof over the great hall of the old mill."
        ]
    );
}
