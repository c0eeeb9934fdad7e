//! GeAR on real text: the committed SQuAD recipe (`configs/qar-squad.toml`), trained briefly on
//! the paragraphs and questions of some Wikipedia articles, localises answer sentences of other
//! articles better than its untrained start, and generates their answers (its decoder reads and
//! copies the passage) — better than the paper's decoder (over the fusion states only, no copy,
//! free decoding) trained on the same data and steps.
//! Reads the real corpus the repository ships (`data/wiki-squad`, SQuAD's Wikipedia paragraphs
//! and questions; see its README).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::path::Path;

use gear_data::{Scenario, Triple};
use gear_eval::{evaluate, EvalOptions, EvalReport, EvalSet};
use gear_model::{CopyMode, DecoderMemory, Decoding, ReaderInput};
use gear_train::{CopyFrom, TrainConfig, Trainer};
use tch::Device;

/// Articles of `squad-v1.1-dev-a.json` held out (never trained on).
const HELD_OUT: [&str; 2] = ["Oxygen", "Immune_system"];
/// Articles trained on.
const TRAIN: [&str; 5] = [
    "Warsaw",
    "Teacher",
    "Genghis_Khan",
    "Apollo_program",
    "Force",
];

/// Trains `config` on `train` for its epochs; returns the trainer and its step count.
fn train_on(config: TrainConfig, train: &[Triple]) -> (Trainer, tempfile::TempDir, usize) {
    let out = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(config, out.path(), Device::Cpu).unwrap();
    let mut steps = 0;
    trainer
        .train(train, None, &mut |e| {
            if let gear_train::Event::Step(_) = e {
                steps += 1;
            }
        })
        .unwrap();
    (trainer, out, steps)
}

#[test]
fn the_squad_recipe_localises_and_generates_on_held_out_articles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = root.join("data/wiki-squad/squad-v1.1-dev-a.json");
    assert!(
        file.is_file(),
        "{} is missing: it ships with the repository",
        file.display()
    );
    let import = gear_data::import_squad(&file).unwrap();
    let titles: BTreeSet<&str> = import
        .triples
        .iter()
        .map(|t| t.document.title.as_str())
        .collect();
    for t in HELD_OUT.iter().chain(&TRAIN) {
        assert!(titles.contains(t), "no article {t} in {}", file.display());
    }
    let pick = |names: &[&str]| -> Vec<Triple> {
        import
            .triples
            .iter()
            .filter(|t| names.contains(&t.document.title.as_str()))
            .cloned()
            .collect()
    };
    let (train, test) = (pick(&TRAIN), pick(&HELD_OUT));

    let mut config = TrainConfig::from_toml_file(root.join("configs/qar-squad.toml")).unwrap();
    assert!(config.optim.freeze_document_encoder && config.loss.local_weight > 0.0);
    config.optim.warmup_steps = 10;
    config.run.epochs = 1;
    config.run.checkpoint_every = 0;
    config.run.eval_generation_examples = 0;

    let opts = EvalOptions {
        baselines: false,
        ..EvalOptions::for_scenario(Scenario::Qar, GENERATED)
    };
    let test = EvalSet::from_triples(test);
    let clock = std::time::Instant::now();
    let phase = |name: &str| eprintln!("[{:>6.1} s] {name}", clock.elapsed().as_secs_f64());
    let untrained = {
        let out = tempfile::tempdir().unwrap();
        let trainer = Trainer::new(config.clone(), out.path(), Device::Cpu).unwrap();
        evaluate(
            trainer.model(),
            &test,
            &EvalOptions {
                generation_examples: 0,
                ..opts.clone()
            },
        )
        .unwrap()
    };
    assert_eq!(
        (config.model.decoder_copy, config.model.decoding),
        (CopyMode::LocalAttention, Decoding::LocatedSpan),
        "the recipe copies from the passage, starting in the located sentence"
    );
    phase("untrained model evaluated");
    let (trainer, _dir, steps) = train_on(config.clone(), &train);
    phase("recipe trained");
    let trained = evaluate(trainer.model(), &test, &opts).unwrap();
    phase("recipe evaluated");
    drop(trainer);

    // The paper's decoder: the same config, data and steps, its decoder reading the fusion
    // states only and writing from the vocabulary.
    let mut paper = config.clone();
    paper.model.decoder_memory = DecoderMemory::Fusion;
    paper.model.decoder_copy = CopyMode::None;
    paper.model.decoding = Decoding::Free;
    paper.model.skip_question_echoes = false;
    paper.loss.copy_from = CopyFrom::Anywhere;
    paper.model.reader_layers = 0;
    paper.model.reader_input = ReaderInput::Top;
    paper.optim.reader_lr_scale = None;
    let (trainer, _paper_dir, _) = train_on(paper, &train);
    phase("paper decoder trained");
    let paper = evaluate(trainer.model(), &test, &opts).unwrap();
    phase("paper decoder evaluated");
    drop(trainer);

    let m = |r: &EvalReport, k: &str| r.metric("gear", k).unwrap();
    eprintln!(
        "{} train / {} held-out questions, {steps} steps: local R@1 {:.3} → {:.3}, MAP@1 {:.3} → {:.3}; \
         generation EM/F1 on {GENERATED}: {:.1}/{:.1} (the paper's decoder: {:.1}/{:.1})",
        train.len(),
        test.triples.len(),
        m(&untrained, "local.recall@1"),
        m(&trained, "local.recall@1"),
        m(&untrained, "local.map@1"),
        m(&trained, "local.map@1"),
        m(&trained, "generation.exact_match"),
        m(&trained, "generation.f1"),
        m(&paper, "generation.exact_match"),
        m(&paper, "generation.f1"),
    );
    assert!(
        m(&trained, "local.recall@1") > m(&untrained, "local.recall@1") + MARGIN,
        "{untrained:?} vs {trained:?}"
    );
    assert!(m(&trained, "local.map@1") > m(&untrained, "local.map@1"));
    let f1 = m(&trained, "generation.f1");
    assert!(f1 > MIN_F1, "generation F1 {f1:.1} ≤ {MIN_F1}");
    let paper_f1 = m(&paper, "generation.f1");
    assert!(
        f1 > paper_f1 + MIN_F1 / 2.0,
        "generation F1 {f1:.1} is not clearly above the paper decoder's {paper_f1:.1}"
    );
}

/// Held-out questions whose answers are generated and scored.
const GENERATED: usize = 200;

/// The generation F1 the recipe must pass after this short run (measured 25.7; the paper's
/// decoder, same data and steps, 0.0).
const MIN_F1: f64 = 20.0;

/// The gain the test requires: half of what the same run measured with `gear eval squad`
/// (local R@1 0.789 → 0.830 on these 485 questions, 38 steps; docs/training.md).
const MARGIN: f64 = 0.02;
