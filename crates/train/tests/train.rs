//! Training on a tiny random model over synthesised RIR triples from the embedded corpus: the
//! momentum update, learning, kill-and-resume equivalence and the local-retrieval gain.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::path::Path;

use gear_data::{Tokenizer, Triple, TripleReader};
use gear_eval::{evaluate, EvalOptions, EvalSet};
use gear_model::{BertConfig, GearConfig, GearModel};
use gear_synth::{generate_corpus, synthesize_rir, KeywordRewriter, RirConfig};
use gear_train::{sorted_variables, Momentum, TrainConfig, Trainer};
use tch::Device;

/// libtorch's random generator is global: tests that seed it and then draw from it (model
/// initialisation, dropout) must not interleave.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn word_tokenizer(texts: &[String]) -> Tokenizer {
    Tokenizer::word_level(texts, 512).unwrap()
}

/// RIR triples over `docs` generated documents, and a tokenizer covering them.
fn data(docs: usize, seed: u64) -> (Vec<Triple>, Tokenizer) {
    let corpus = generate_corpus(docs, seed);
    let tok = word_tokenizer(&corpus.iter().map(|d| d.text.clone()).collect::<Vec<_>>());
    let cfg = RirConfig {
        min_similarity: None,
        min_tokens: 100,
        seed,
        ..RirConfig::default()
    };
    (synthesize(corpus, &tok, &cfg), tok)
}

/// The keyword-rewriter RIR triples of `corpus` (no similarity filter unless `cfg` asks).
fn synthesize(corpus: Vec<gear_data::Document>, tok: &Tokenizer, cfg: &RirConfig) -> Vec<Triple> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rir.jsonl");
    synthesize_rir(
        corpus.into_iter().map(Ok),
        &out,
        tok,
        &KeywordRewriter::default(),
        None,
        cfg,
        &mut |_| {},
    )
    .unwrap();
    TripleReader::open(&out)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn tiny_model(tok: &Tokenizer, seed: i64) -> GearModel {
    let mut enc = BertConfig::tiny(tok.vocab_size() as i64);
    enc.hidden_size = 64;
    enc.intermediate_size = 128;
    enc.max_position_embeddings = 512;
    enc.hidden_dropout_prob = 0.0;
    enc.attention_probs_dropout_prob = 0.0;
    let mut cfg = GearConfig::for_encoder(enc);
    cfg.max_query_len = 24;
    cfg.max_document_len = 320;
    cfg.max_target_len = 32;
    cfg.decoder.num_hidden_layers = 1;
    tch::manual_seed(seed);
    GearModel::new(cfg, tok.clone(), Device::Cpu).unwrap()
}

fn config(epochs: u64, lr: f64) -> TrainConfig {
    let text = format!(
        r#"
scenario = "rir"
[model]
init = "unused"
max_query_len = 24
max_document_len = 320
max_target_len = 32
[data]
batch_size = 8
bucket_batches = 4
[optim]
lr = {lr}
start_lr = {lr}
min_lr = 0.0
warmup_steps = 0
beta1 = 0.9
beta2 = 0.999
eps = 1e-8
weight_decay = 0.01
clip_norm = 5.0
[loss]
alpha = 1.0
temperature = 0.07
momentum = 0.9
queue_size = 16
distill_weight = 0.4
distill_ramp_epochs = 1.0
[run]
epochs = {epochs}
seed = 7
eval_generation_examples = 0
"#
    );
    TrainConfig::from_toml_str(&text, Path::new("test.toml")).unwrap()
}

#[test]
fn momentum_update_is_an_exact_moving_average() {
    let _serial = serial();
    let (_, tok) = data(3, 1);
    let model = tiny_model(&tok, 1);
    let mut momentum = Momentum::new(&model, 0).unwrap();
    let name = "query_encoder.encoder.layer.0.output.dense.weight";
    let before = momentum.var_store().variables()[name].copy();
    assert!(before.equal(&model.var_store().variables()[name]));
    tch::no_grad(|| {
        let mut w = model.var_store().variables()[name].shallow_clone();
        let _ = w.g_add_scalar_(1.0);
    });
    momentum.copy_from(&model, 0.9).unwrap();
    let after = &momentum.var_store().variables()[name];
    let want = &before * 0.9 + (&before + 1.0) * 0.1;
    assert!((after - want).abs().max().double_value(&[]) < 1e-6);
    assert!(momentum
        .var_store()
        .variables()
        .keys()
        .all(|k| !k.contains("crossattention")));
}

#[test]
fn a_few_dozen_steps_overfit_one_batch() {
    let _serial = serial();
    let (triples, tok) = data(3, 2);
    let batch: Vec<Triple> = triples.into_iter().take(8).collect();
    let model = tiny_model(&tok, 2);
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::with_model(model, config(40, 3e-3), dir.path()).unwrap();
    let mut losses = Vec::new();
    trainer
        .train(&batch, None, &mut |e| {
            if let gear_train::Event::Step(s) = e {
                losses.push((s.loss_cl, s.loss_lm));
            }
        })
        .unwrap();
    assert_eq!(losses.len(), 40);
    let (cl0, lm0) = losses[0];
    let (cl1, lm1) = *losses.last().unwrap();
    assert!(lm1 < 0.5 * lm0, "LM loss {lm0} → {lm1}");
    assert!(cl1 < cl0, "contrastive loss {cl0} → {cl1}");
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 40);
    assert!(dir
        .path()
        .join("checkpoint/model/model.safetensors")
        .is_file());
}

#[test]
fn bf16_mixed_precision_learns_like_fp32_and_keeps_float32_weights() {
    let _serial = serial();
    let (triples, tok) = data(3, 2);
    let batch: Vec<Triple> = triples.into_iter().take(8).collect();
    let run = |precision| {
        let mut config = config(20, 3e-3);
        config.run.precision = precision;
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = Trainer::with_model(tiny_model(&tok, 2), config, dir.path()).unwrap();
        let mut lm = Vec::new();
        trainer
            .train(&batch, None, &mut |e| {
                if let gear_train::Event::Step(s) = e {
                    lm.push(s.loss_lm);
                }
            })
            .unwrap();
        for (name, t) in trainer.model().var_store().variables() {
            assert_eq!(t.kind(), tch::Kind::Float, "{name}");
        }
        lm
    };
    let fp32 = run(gear_train::Precision::Fp32);
    let bf16 = run(gear_train::Precision::Bf16);
    eprintln!("LM loss fp32 {fp32:?}\nLM loss bf16 {bf16:?}");
    assert!(bf16.iter().all(|l| l.is_finite()));
    let (first, last) = (bf16[0], bf16[bf16.len() - 1]);
    assert!(last < 0.7 * first, "bf16 LM loss {first} → {last}");
    // bf16 products really ran (the losses differ from fp32's by rounding) ...
    assert_ne!(bf16[0], fp32[0], "no bf16 arithmetic happened");
    // ... with the same start up to that rounding and the same end within 10 %.
    assert!(
        (bf16[0] - fp32[0]).abs() < 0.05 * fp32[0],
        "{bf16:?} vs {fp32:?}"
    );
    let end = fp32[fp32.len() - 1];
    assert!((last - end).abs() < 0.1 * end, "{bf16:?} vs {fp32:?}");
}

#[test]
fn stopping_and_resuming_equals_an_uninterrupted_run() {
    let _serial = serial();
    let (triples, tok) = data(6, 3);
    let train: Vec<Triple> = triples.into_iter().take(40).collect();
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight =
        Trainer::with_model(tiny_model(&tok, 3), config(2, 1e-3), straight_dir.path()).unwrap();
    straight.train(&train, None, &mut |_| {}).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut first_cfg = config(2, 1e-3);
    first_cfg.run.max_steps = Some(4); // 5 batches per epoch: stop inside epoch 0
    let mut first = Trainer::with_model(tiny_model(&tok, 3), first_cfg, dir.path()).unwrap();
    first.train(&train, None, &mut |_| {}).unwrap();
    assert_eq!(first.state().step, 4);
    drop(first);
    let mut resumed = Trainer::resume(config(2, 1e-3), dir.path(), Device::Cpu).unwrap();
    assert_eq!(resumed.state().step, 4);
    resumed.train(&train, None, &mut |_| {}).unwrap();
    assert_eq!(resumed.state(), straight.state());
    assert!((resumed.temperature() - straight.temperature()).abs() < 1e-7);
    let a = sorted_variables(straight.model().var_store());
    let b = sorted_variables(resumed.model().var_store());
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{na} differs by {diff}");
    }

    let mut other = config(2, 1e-3);
    other.loss.alpha = 0.5;
    let err = Trainer::resume(other, dir.path(), Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("configuration differs"), "{err}");
    assert!(
        err.to_string().contains("`loss.alpha` was 1.0, now 0.5"),
        "{err}"
    );

    // Resuming on other data is refused — a smaller file used to spin forever, a same-sized one
    // to mix the two runs.
    let dir = tempfile::tempdir().unwrap();
    let mut first_cfg = config(2, 1e-3);
    first_cfg.run.max_steps = Some(4);
    Trainer::with_model(tiny_model(&tok, 3), first_cfg, dir.path())
        .unwrap()
        .train(&train, None, &mut |_| {})
        .unwrap();
    for other in [&train[..10], &train[1..]] {
        let mut resumed = Trainer::resume(config(2, 1e-3), dir.path(), Device::Cpu).unwrap();
        let err = resumed
            .train(other, None, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("trained on other data"), "{err}");
    }
    // A checkpoint from before the data was recorded still cannot loop forever.
    let state = dir.path().join("checkpoint/train_state.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    json["state"]
        .as_object_mut()
        .unwrap()
        .remove("data")
        .unwrap();
    std::fs::write(&state, json.to_string()).unwrap();
    let mut resumed = Trainer::resume(config(2, 1e-3), dir.path(), Device::Cpu).unwrap();
    assert_eq!((resumed.state().epoch, resumed.state().next_batch), (1, 1));
    let err = resumed
        .train(&train[..4], None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is at batch 1 of epoch 1, which has 1 batches"),
        "{err}"
    );
}

/// The claim `cargo xtask train-rir` prints, on a reduced run: `configs/rir-demo.toml` as
/// committed (MiniLM, its optimiser, learning-rate scale and loss weights) with a shorter
/// warm-up, trained for two epochs on 48 generated documents, beats its untrained start on the
/// local R@3 of 12 held-out documents.
#[test]
fn the_demo_config_beats_its_untrained_start_on_held_out_local_retrieval() {
    let _serial = serial();
    let minilm = gear_model::pretrained::minilm_dir().unwrap();
    let tok = Tokenizer::from_file(minilm.join("tokenizer.json"), 512).unwrap();
    let rir = RirConfig {
        min_similarity: None,
        seed: 11,
        ..RirConfig::default()
    };
    let triples = synthesize(generate_corpus(60, 11), &tok, &rir);
    let ids: BTreeSet<&str> = triples.iter().map(|t| t.document.id.as_str()).collect();
    let held: BTreeSet<&str> = ids.iter().rev().take(12).copied().collect();
    let (test, train): (Vec<Triple>, Vec<Triple>) = triples
        .iter()
        .cloned()
        .partition(|t| held.contains(t.document.id.as_str()));

    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/rir-demo.toml");
    let mut config = TrainConfig::from_toml_file(&demo).unwrap();
    assert!(config.loss.local_weight > 0.0 && config.optim.new_lr_scale > 1.0);
    config.data.batch_size = 8;
    config.optim.warmup_steps = 5;
    config.run.epochs = 2;
    config.run.checkpoint_every = 0;
    config.run.eval_generation_examples = 0;

    let opts = EvalOptions {
        baselines: false,
        ..EvalOptions::for_scenario(gear_data::Scenario::Rir, 0)
    };
    let test = EvalSet::from_triples(test);
    let out = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(config, out.path(), Device::Cpu).unwrap();
    let untrained = evaluate(trainer.model(), &test, &opts).unwrap();
    let mut local = Vec::new();
    trainer
        .train(&train, None, &mut |e| {
            if let gear_train::Event::Step(s) = e {
                local.push(s.loss_local);
            }
        })
        .unwrap();
    let trained = evaluate(trainer.model(), &test, &opts).unwrap();
    let m = |r: &gear_eval::EvalReport, k: &str| r.metric("gear", k).unwrap();
    eprintln!(
        "{} train / {} test triples, {} steps, L_LOC {:.3} → {:.3}; held-out local R@3 {:.3} → {:.3}, \
         MAP@3 {:.3} → {:.3}; global R@5 {:.3} → {:.3}",
        train.len(),
        test.triples.len(),
        local.len(),
        local[0],
        local[local.len() - 1],
        m(&untrained, "local.recall@3"),
        m(&trained, "local.recall@3"),
        m(&untrained, "local.map@3"),
        m(&trained, "local.map@3"),
        m(&untrained, "global.recall@5"),
        m(&trained, "global.recall@5"),
    );
    assert!(
        m(&trained, "local.recall@3") > m(&untrained, "local.recall@3") + 0.15,
        "{untrained:?} vs {trained:?}"
    );
    assert!(m(&trained, "local.map@3") > m(&untrained, "local.map@3"));
}

/// `optim.freeze_document_encoder`: `E_d` keeps its weights bit for bit while the query side
/// learns, and the first step (every document a cache miss; no dropout in the tiny model)
/// computes the same loss as an unfrozen run, so the cached states are the encoder's own.
#[test]
fn a_frozen_document_encoder_stays_put_while_the_query_side_learns() {
    let _serial = serial();
    let (triples, tok) = data(4, 5);
    let triples: Vec<Triple> = triples.into_iter().take(16).collect();
    let run = |freeze: bool| {
        let model = tiny_model(&tok, 5);
        let before = sorted_variables(model.var_store());
        let before: Vec<(String, tch::Tensor)> =
            before.into_iter().map(|(k, t)| (k, t.copy())).collect();
        let mut config = config(3, 1e-3);
        config.optim.freeze_document_encoder = freeze;
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = Trainer::with_model(model, config, dir.path()).unwrap();
        let mut losses = Vec::new();
        trainer
            .train(&triples, None, &mut |e| {
                if let gear_train::Event::Step(s) = e {
                    losses.push((s.loss, s.loss_lm));
                }
            })
            .unwrap();
        let after = trainer.model().var_store().variables();
        let changed: BTreeSet<String> = before
            .iter()
            .filter(|(k, t)| !t.equal(&after[k]))
            .map(|(k, _)| k.clone())
            .collect();
        (losses, changed)
    };
    let (frozen, changed) = run(true);
    assert_eq!(frozen.len(), 6, "3 epochs of 2 batches");
    assert!(
        changed.iter().all(|k| !k.starts_with("document_encoder.")),
        "{changed:?}"
    );
    assert!(changed
        .iter()
        .any(|k| k.starts_with("query_encoder.encoder.layer.0.attention.self")));
    assert!(changed.iter().any(|k| k.contains(".crossattention.")));
    let (free, changed) = run(false);
    assert!(changed.iter().any(|k| k.starts_with("document_encoder.")));
    assert!(
        (frozen[0].0 - free[0].0).abs() < 1e-4,
        "first step: frozen {:?} vs unfrozen {:?}",
        frozen[0],
        free[0]
    );
    // The LM loss falls (the total also holds L_CL, which rises as the queue fills).
    assert!(frozen[5].1 < frozen[0].1, "{frozen:?}");
}

#[test]
fn hard_negatives_join_the_contrastive_candidates_and_zero_ignores_them() {
    let _serial = serial();
    let (triples, tok) = data(8, 6);
    let batch: Vec<Triple> = triples.iter().take(8).cloned().collect();
    let in_batch: BTreeSet<&str> = batch.iter().map(|t| t.document.id.as_str()).collect();
    let others: Vec<gear_data::Document> = {
        let mut seen = BTreeSet::new();
        triples
            .iter()
            .filter(|t| !in_batch.contains(t.document.id.as_str()))
            .filter(|t| seen.insert(t.document.id.clone()))
            .map(|t| t.document.clone())
            .collect()
    };
    assert!(
        others.len() >= 2,
        "documents outside the batch: {}",
        others.len()
    );
    let with_negatives: Vec<Triple> = batch
        .iter()
        .enumerate()
        .map(|(i, t)| Triple {
            negatives: vec![
                others[i % others.len()].clone(),
                others[(i + 1) % others.len()].clone(),
            ],
            ..t.clone()
        })
        .collect();
    let first_cl = |triples: &[Triple], hard_negatives: usize| {
        let mut config = config(1, 1e-3);
        config.loss.hard_negatives = hard_negatives;
        config.run.max_steps = Some(1);
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = Trainer::with_model(tiny_model(&tok, 6), config, dir.path()).unwrap();
        let mut cl = Vec::new();
        trainer
            .train(triples, None, &mut |e| {
                if let gear_train::Event::Step(s) = e {
                    cl.push(s.loss_cl);
                }
            })
            .unwrap();
        cl[0]
    };
    let plain = first_cl(&batch, 1);
    let ignored = first_cl(&with_negatives, 0);
    let one = first_cl(&with_negatives, 1);
    let two = first_cl(&with_negatives, 2);
    assert!((plain - ignored).abs() < 1e-9, "{plain} vs {ignored}");
    // More candidates in every query's softmax: a strictly larger q→d loss at the first step.
    assert!(one > plain + 1e-4, "{plain} → {one}");
    assert!(two > one + 1e-4, "{one} → {two}");
}
