//! The decoder that reads and copies the passage (`decoder.memory`, `decoder.copy`,
//! `decoder.decoding`) on a tiny random model: span decoding returns the document's own text at
//! the span it reports, the copy head survives a checkpoint, and its teacher-forced
//! probabilities are a distribution over the vocabulary.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use anyhow::Result;
use gear_data::Tokenizer;
use gear_model::{
    keep_mask, CopyMode, DecoderMemory, Decoding, GearConfig, GearModel, GenerationOptions,
    ReaderInputs, Search,
};
use tch::{Device, Kind, Tensor};

const WORDS: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "canal", "links", "two", "lakes", "and", "ships",
    "pass", "through", "locks", "each", "spring", "when", "ice", "melts", "which", "do", "what",
    "?", ".", "##es", "##s", "built", "in", "1850",
];

const DOCS: [&str; 2] = [
    "A canal links two lakes. Ships pass through locks each spring when ice melts.",
    "The canal was built in 1850 and ships pass through it.",
];
const QUERIES: [&str; 2] = ["what do ships pass through?", "when was the canal built?"];

fn copying(copy: CopyMode, memory: DecoderMemory, decoding: Decoding) -> GearConfig {
    let mut cfg = GearConfig::for_encoder(gear_model::BertConfig::tiny(WORDS.len() as i64));
    cfg.max_query_len = 10;
    cfg.max_document_len = 24;
    cfg.max_target_len = 8;
    cfg.decoder.copy = copy;
    cfg.decoder.memory = memory;
    cfg.decoder.decoding = decoding;
    cfg
}

fn model(config: GearConfig) -> GearModel {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(7);
    let tok = Tokenizer::from_vocab(WORDS, 32).unwrap();
    GearModel::new(config, tok, Device::Cpu).unwrap()
}

fn the_recipe() -> GearModel {
    model(copying(
        CopyMode::LocalAttention,
        DecoderMemory::FusionAndDocument,
        Decoding::Span,
    ))
}

#[test]
fn spans_are_the_documents_own_text_at_the_reported_place() -> Result<()> {
    let m = the_recipe();
    for search in [
        Search::Greedy,
        Search::Beam {
            width: 3,
            length_penalty: 1.0,
        },
    ] {
        let options = GenerationOptions {
            max_len: 6,
            search,
            ..GenerationOptions::default()
        };
        let out = m.generate_located(&QUERIES, &DOCS, &options)?;
        assert_eq!(out.len(), 2);
        for (g, doc) in out.iter().zip(DOCS) {
            let span = g.span.expect("a span for a document with words");
            assert_eq!(span.slice(doc), Some(g.text.as_str()), "{search:?}");
            assert!(!g.text.is_empty());
            // A span starts at a word, never inside one ("lock|s", "canal|es").
            let before = doc[..span.start].chars().next_back();
            assert!(
                before.is_none_or(|c| !c.is_alphanumeric()),
                "{:?} starts inside a word of {doc:?}",
                g.text
            );
            // It holds at most max_len word pieces.
            assert!(g.text.split_whitespace().count() <= 6, "{:?}", g.text);
        }
        // The plain generate call returns the same texts.
        let texts = m.generate(&QUERIES, &DOCS, &options)?;
        assert_eq!(
            texts,
            out.iter().map(|g| g.text.clone()).collect::<Vec<_>>()
        );
    }
    Ok(())
}

#[test]
fn decoding_can_be_chosen_per_call_and_a_copy_head_refuses_free_decoding() -> Result<()> {
    // The paper's decoder decodes spans too, scored by its vocabulary alone.
    let paper = model(copying(
        CopyMode::None,
        DecoderMemory::Fusion,
        Decoding::Free,
    ));
    let spans = GenerationOptions {
        max_len: 5,
        decoding: Some(Decoding::Span),
        ..GenerationOptions::default()
    };
    for (g, doc) in paper
        .generate_located(&QUERIES, &DOCS, &spans)?
        .iter()
        .zip(DOCS)
    {
        assert_eq!(g.span.and_then(|s| s.slice(doc)), Some(g.text.as_str()));
    }
    let free = paper.generate_located(&QUERIES, &DOCS, &GenerationOptions::default())?;
    assert!(free.iter().all(|g| g.span.is_none()));

    let recipe = the_recipe();
    let err = recipe
        .generate(
            &QUERIES,
            &DOCS,
            &GenerationOptions {
                decoding: Some(Decoding::Free),
                ..GenerationOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("span decoding"), "{err}");
    Ok(())
}

#[test]
fn located_spans_start_in_the_sentence_local_retrieval_ranks_first() -> Result<()> {
    let m = the_recipe();
    let options = GenerationOptions {
        max_len: 4,
        decoding: Some(Decoding::LocatedSpan),
        ..GenerationOptions::default()
    };
    // The copy head's prior turned against the attended tokens: unconstrained spans now start
    // away from where the fusion encoder attends, so the constraint has something to change.
    tch::no_grad(|| {
        let _ = m.var_store().variables()["decoder.pointer.prior_scale"]
            .shallow_clone()
            .fill_(-20.0);
    });
    let doc = DOCS[0];
    let units = gear_data::split_sentences(doc);
    assert_eq!(units.len(), 2);
    let queries = [
        "what do ships pass through?",
        "what links two lakes?",
        "when does ice melt?",
        "which canal?",
        "what do locks do each spring?",
        "a canal and ships?",
        "what melts?",
        "two lakes and a canal",
    ];
    let mut elsewhere = 0;
    for query in queries {
        let ranking = m.locate(
            &gear_model::LocateQueries::pair(query, doc, &units),
            &gear_model::LocateOptions::default(),
        )?;
        let top = ranking[0].units[0].span;
        let g = m.generate_located(&[query], &[doc], &options)?.remove(0);
        let span = g.span.expect("a span");
        assert!(
            top.contains(span.start),
            "{:?} starts outside the located sentence {:?}",
            g.text,
            top.slice(doc)
        );
        let unconstrained = GenerationOptions {
            decoding: Some(Decoding::Span),
            ..options
        };
        let free = m
            .generate_located(&[query], &[doc], &unconstrained)?
            .remove(0);
        elsewhere += usize::from(free.span.is_some_and(|s| !top.contains(s.start)));
    }
    assert!(
        elsewhere > 0,
        "every unconstrained span started in the located sentence: the test shows nothing"
    );

    // Any decoder decodes located spans, the paper's too.
    let paper = model(copying(
        CopyMode::None,
        DecoderMemory::Fusion,
        Decoding::Free,
    ));
    for g in paper.generate_located(&QUERIES, &DOCS, &options)? {
        assert!(g.span.is_some());
    }
    Ok(())
}

/// Teacher-forced log-probabilities `[2, t − 1]` of target ids `targets [2, t]` (starting with
/// `[Decode]`) for the two pairs.
fn target_log_probs(m: &GearModel, targets: &Tensor) -> Result<Tensor> {
    let q = m.encode_query_texts(&QUERIES)?;
    let d = m.encode_document_texts(&DOCS)?;
    let states = m.document_states_t(&d.ids, &d.mask, false)?;
    let fused = m.fuse_t(
        &q.ids,
        &q.mask,
        gear_model::Context {
            states: &states,
            mask: &d.mask,
        },
        m.fusion_options_for_reading(false),
        false,
    )?;
    let query_keep = keep_mask(&q.batch, Device::Cpu);
    let copyable = keep_mask(&d.batch, Device::Cpu);
    let x = ReaderInputs {
        fused: &fused,
        query_mask: &q.mask,
        query_keep: &query_keep,
        document_ids: &d.ids,
        document_mask: &d.mask,
        document_copyable: &copyable,
        document_states: &states,
        document_below: None,
        copy_region: None,
    };
    Ok(m.target_log_probs_t(targets, &targets.ones_like(), &x, false)?)
}

/// `[Decode] id` for both rows.
fn first_token(m: &GearModel, id: i64) -> Tensor {
    let start = m.generation_tokens().start;
    Tensor::from_slice(&[start, id, start, id]).view([2, 2])
}

#[test]
fn copy_probabilities_form_a_distribution_over_the_vocabulary() -> Result<()> {
    for copy in [CopyMode::Pointer, CopyMode::LocalAttention] {
        let m = model(copying(
            copy,
            DecoderMemory::FusionAndDocument,
            Decoding::Span,
        ));
        let vocab = m.tokenizer().vocab_size() as i64;
        let (total, copied) = tch::no_grad(|| -> Result<(Tensor, f64)> {
            let mut total = Tensor::zeros([2], (Kind::Float, Device::Cpu));
            for id in 0..vocab {
                total += target_log_probs(&m, &first_token(&m, id))?
                    .select(1, 0)
                    .exp();
            }
            // "locks" is in row 0's document only, "1850" in row 1's only: each gets more
            // probability where it can be copied.
            let id = |w: &str| m.tokenizer().token_to_id(w).unwrap() as i64;
            let locks = target_log_probs(&m, &first_token(&m, id("locks")))?.select(1, 0);
            let year = target_log_probs(&m, &first_token(&m, id("1850")))?.select(1, 0);
            let gain = (locks.get(0) - locks.get(1)) - (year.get(0) - year.get(1));
            Ok((total, gain.double_value(&[])))
        })?;
        for row in 0..2 {
            let t = total.double_value(&[row]);
            assert!((t - 1.0).abs() < 1e-4, "{copy:?} row {row}: {t}");
        }
        assert!(copied > 0.0, "{copy:?}: {copied}");
    }
    Ok(())
}

#[test]
fn the_copy_head_survives_a_checkpoint() -> Result<()> {
    let m = the_recipe();
    let dir = tempfile::tempdir()?;
    m.save(dir.path())?;
    let back = GearModel::load(dir.path(), Device::Cpu)?;
    assert_eq!(back.config(), m.config());
    let names = |m: &GearModel| {
        let mut v: Vec<String> = m.var_store().variables().into_keys().collect();
        v.sort();
        v
    };
    assert!(names(&m).iter().any(|n| n == "decoder.pointer.prior_scale"));
    assert_eq!(names(&back), names(&m));
    let targets = m.encode_target_texts(&["ships pass", "in 1850"])?.ids;
    let a = tch::no_grad(|| target_log_probs(&m, &targets))?;
    let b = tch::no_grad(|| target_log_probs(&back, &targets))?;
    assert!((a - b).abs().max().double_value(&[]) < 1e-6);
    let options = GenerationOptions::default();
    assert_eq!(
        m.generate_located(&QUERIES, &DOCS, &options)?,
        back.generate_located(&QUERIES, &DOCS, &options)?
    );
    Ok(())
}

/// Lower-cased words and punctuation marks: the tiny vocabulary's tokens for these texts.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace('.', " . ")
        .replace('?', " ? ")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn spans_made_only_of_the_questions_words_are_passed_over() -> Result<()> {
    let mut m = the_recipe();
    // Documents and questions of vocabulary words only (no `[UNK]`), the questions made of the
    // documents' words so that spans can echo them.
    let docs = [
        "A canal links two lakes. Ships pass through locks each spring when ice melts.",
        "Ice melts when ships pass through a canal.",
    ];
    let queries = [
        "through locks each spring?",
        "melts when ships pass?",
        "ships pass through locks each spring?",
        "ice melts when ships pass through?",
        "what do ships pass through?",
        "which canal?",
    ];
    let docs: Vec<&str> = (0..queries.len()).map(|i| docs[i % 2]).collect();
    let echoes = |answer: &str, query: &str| {
        let (a, q) = (words(answer), words(query));
        !a.is_empty() && a.iter().all(|w| q.contains(w))
    };
    let options = GenerationOptions {
        max_len: 4,
        ..GenerationOptions::default()
    };
    let kept = m.generate(&queries, &docs, &options)?;
    let echoed = kept
        .iter()
        .zip(queries)
        .filter(|(a, q)| echoes(a, q))
        .count();
    assert!(
        echoed > 0,
        "no span echoed its question without the rule: the test shows nothing ({kept:?})"
    );
    m.set_skip_question_echoes(true)?;
    // One batch, rows with different questions and documents.
    let skipped = m.generate(&queries, &docs, &options)?;
    for ((answer, query), before) in skipped.iter().zip(queries).zip(&kept) {
        assert!(
            !echoes(answer, query),
            "{answer:?} echoes {query:?} with the rule on"
        );
        if !echoes(before, query) {
            assert_eq!(answer, before, "a span that did not echo was changed");
        }
    }
    // Saved and reloaded with the model.
    let dir = tempfile::tempdir()?;
    m.save(dir.path())?;
    let loaded = GearModel::load(dir.path(), Device::Cpu)?;
    assert!(loaded.config().decoder.skip_question_echoes);
    assert_eq!(loaded.generate(&queries, &docs, &options)?, skipped);

    // Refused where there are no spans to pass over.
    let mut paper = model(copying(
        CopyMode::None,
        DecoderMemory::Fusion,
        Decoding::Free,
    ));
    let err = paper
        .set_skip_question_echoes(true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("span decoding"), "{err}");
    Ok(())
}
