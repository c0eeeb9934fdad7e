//! Every configuration in `configs/` parses and validates, and the paper configs carry the
//! paper's hyper-parameters.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;

use gear_train::TrainConfig;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

#[test]
fn all_configs_parse() {
    let mut n = 0;
    for entry in std::fs::read_dir(configs()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            TrainConfig::from_toml_file(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert_eq!(n, 5, "rir-demo, rir-paper, rir-wiki, qar-paper, qar-squad");
}

#[test]
fn paper_configs_hold_the_papers_values() {
    for name in ["rir-paper.toml", "qar-paper.toml"] {
        let c = TrainConfig::from_toml_file(configs().join(name)).unwrap();
        assert_eq!(
            (
                c.optim.lr,
                c.optim.start_lr,
                c.optim.min_lr,
                c.optim.warmup_steps
            ),
            (1e-5, 1e-6, 1e-6, 1000)
        );
        assert_eq!(
            (
                c.optim.adamw.weight_decay,
                c.optim.adamw.eps,
                c.optim.adamw.beta1,
                c.optim.adamw.beta2
            ),
            (0.05, 1e-8, 0.9, 0.999)
        );
        assert_eq!(
            (
                c.loss.alpha,
                c.loss.momentum,
                c.loss.queue_size,
                c.loss.distill_weight,
                c.loss.distill_ramp_epochs
            ),
            (0.25, 0.995, 57_600, 0.4, 2.0)
        );
        assert_eq!(
            (c.run.epochs, c.model.max_document_len, c.model.local_layer),
            (10, 512, Some(10))
        );
        // Nothing beyond the paper: one learning rate, no local-retrieval loss, random
        // cross-attention.
        assert_eq!((c.optim.new_lr_scale, c.loss.local_weight), (1.0, 0.0));
        assert_eq!(
            c.model.cross_attention_init,
            gear_model::CrossAttentionInit::Random
        );
    }
    let rir = TrainConfig::from_toml_file(configs().join("rir-paper.toml")).unwrap();
    let qar = TrainConfig::from_toml_file(configs().join("qar-paper.toml")).unwrap();
    assert_eq!((rir.data.batch_size, qar.data.batch_size), (16, 48));
}

#[test]
fn a_bad_field_names_file_and_field() {
    let text = std::fs::read_to_string(configs().join("rir-demo.toml"))
        .unwrap()
        .replace("queue_size = 256", "queue_size = 4");
    let err = TrainConfig::from_toml_str(&text, std::path::Path::new("configs/x.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("configs/x.toml") && err.contains("queue_size"),
        "{err}"
    );
    let text = std::fs::read_to_string(configs().join("rir-demo.toml"))
        .unwrap()
        .replace("[loss]", "[loss]\nbeta = 1");
    let err = TrainConfig::from_toml_str(&text, std::path::Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("beta"), "{err}");
}

#[test]
fn nonsense_values_are_refused_by_name() {
    let demo = std::fs::read_to_string(configs().join("rir-demo.toml")).unwrap();
    let with = |section: &str, line: &str| {
        // Replace the key if the demo sets it, else add it to its section.
        let key = line.split('=').next().unwrap().trim();
        let mut out = String::new();
        let mut replaced = false;
        for l in demo.lines() {
            if l.trim_start().starts_with(&format!("{key} "))
                || l.trim_start().starts_with(&format!("{key}="))
            {
                out.push_str(line);
                replaced = true;
            } else {
                out.push_str(l);
            }
            out.push('\n');
        }
        if !replaced {
            out = out.replace(&format!("[{section}]\n"), &format!("[{section}]\n{line}\n"));
        }
        TrainConfig::from_toml_str(&out, std::path::Path::new("c.toml"))
            .err()
            .map(|e| e.to_string())
    };
    for (section, line, field) in [
        ("optim", "beta1 = 1.5", "optim.beta1"),
        ("optim", "beta2 = -0.1", "optim.beta2"),
        ("optim", "eps = -1e-8", "optim.eps"),
        ("optim", "clip_norm = -1.0", "optim.clip_norm"),
        ("optim", "weight_decay = -0.01", "optim.weight_decay"),
        ("optim", "lr = nan", "optim.lr"),
        (
            "optim",
            "warmup_steps = 9223372036854775807",
            "optim.warmup_steps",
        ),
        (
            "loss",
            "distill_ramp_epochs = -2.0",
            "loss.distill_ramp_epochs",
        ),
        ("loss", "alpha = inf", "loss.alpha"),
        ("data", "bucket_batches = 0", "data.bucket_batches"),
        ("model", "max_document_len = 0", "model.max_document_len"),
        ("model", "max_query_len = 1", "model.max_query_len"),
    ] {
        let err = with(section, line).unwrap_or_else(|| panic!("`{line}` was accepted"));
        assert!(
            err.contains("c.toml") && err.contains(&format!("`{field}`")),
            "`{line}`: {err}"
        );
    }
    assert_eq!(
        with("optim", "clip_norm = 0.0"),
        None,
        "0 turns clipping off"
    );
}

#[test]
fn a_model_init_that_names_no_folder_is_refused_by_key() {
    let text = std::fs::read_to_string(configs().join("rir-demo.toml"))
        .unwrap()
        .replace("init = \"minilm\"", "init = \"/no/such/model\"");
    let c = TrainConfig::from_toml_str(&text, std::path::Path::new("c.toml")).unwrap();
    let err = c.init_dir().unwrap_err().to_string();
    assert!(
        err.contains("`model.init`") && err.contains("/no/such/model"),
        "{err}"
    );
}

mod generated {
    use proptest::prelude::*;

    use super::*;

    /// The demo config with one edit: a range cut, bytes inserted, or a value replaced.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let valid = std::fs::read_to_string(configs().join("rir-demo.toml")).unwrap();
        let len = valid.len();
        let (a, b, c) = (valid.clone(), valid.clone(), valid);
        prop_oneof![
            (0..len, 0..len).prop_map(move |(x, y)| {
                let mut v = a.as_bytes().to_vec();
                v.drain(x.min(y)..x.max(y));
                v
            }),
            (0..len, proptest::collection::vec(any::<u8>(), 1..8)).prop_map(move |(at, bytes)| {
                let mut v = b.as_bytes().to_vec();
                v.splice(at..at, bytes);
                v
            }),
            (
                0..len,
                prop::sample::select(vec![
                    "-1",
                    "0",
                    "nan",
                    "inf",
                    "-inf",
                    "1e308",
                    "\"x\"",
                    "[]",
                    "9223372036854775807",
                    "-9223372036854775808",
                    "true",
                ])
            )
                .prop_map(move |(at, value)| {
                    // Replace the value of the first `key = value` line at or after `at`.
                    let mut out = String::new();
                    let mut done = false;
                    let mut offset = 0;
                    for line in c.lines() {
                        match line.split_once(" = ") {
                            Some((key, _)) if !done && offset >= at => {
                                out.push_str(&format!("{key} = {value}"));
                                done = true;
                            }
                            _ => out.push_str(line),
                        }
                        out.push('\n');
                        offset += line.len() + 1;
                    }
                    out.into_bytes()
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 400,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Never a panic; a refusal names the file; an accepted config passes validation.
        #[test]
        fn generated_configs(bytes in mutated()) {
            let Ok(text) = String::from_utf8(bytes) else {
                return Ok(());
            };
            match TrainConfig::from_toml_str(&text, std::path::Path::new("c.toml")) {
                Ok(c) => prop_assert!(c.validate().is_ok()),
                Err(e) => {
                    let e = e.to_string();
                    prop_assert!(e.contains("c.toml"), "{}", e);
                }
            }
        }
    }
}
