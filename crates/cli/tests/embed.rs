//! `gear embed` end to end: the binary with the pretrained model from `cargo xtask setup`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Result;
use gear_model::{pretrained, EncoderOptions, SentenceEncoder};

fn gear(stdin: &[u8], args: &[&str]) -> Result<std::process::Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gear"))
        .arg("embed")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped stdin").write_all(stdin)?;
    Ok(child.wait_with_output()?)
}

#[test]
fn writes_one_json_line_per_input_line_in_order() -> Result<()> {
    let out = gear(
        b"first text\r\nsecond, longer text about rivers\n\nlast\n",
        &["--batch-size", "2"],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let texts: Vec<&str> = lines
        .iter()
        .map(|l| l["text"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        texts,
        ["first text", "second, longer text about rivers", "", "last"]
    );

    let enc = SentenceEncoder::load(pretrained::minilm_dir()?, &EncoderOptions::default())?;
    let expected = enc.embed_vecs(&texts)?;
    for (line, want) in lines.iter().zip(&expected) {
        let got: Vec<f32> = serde_json::from_value(line["embedding"].clone())?;
        assert_eq!(got.len(), 384);
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff <= 1e-6, "{diff}");
    }
    Ok(())
}

#[test]
fn empty_stdin_gives_empty_output() -> Result<()> {
    let out = gear(b"", &[])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    Ok(())
}

#[test]
fn bad_utf8_and_bad_model_folder_are_clear_errors() -> Result<()> {
    let out = gear(b"fine\n\xff\xfe broken\n", &[])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");

    let dir = tempfile::tempdir()?;
    let out = gear(b"x\n", &["--model", dir.path().to_str().unwrap_or(".")])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    Ok(())
}

/// Whether the kernel lists a bfloat16 instruction set for this CPU (read independently of
/// libtorch, which gear asks).
fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| {
            l.split_whitespace()
                .any(|f| f == "avx512_bf16" || f == "amx_bf16")
        })
}

#[test]
fn bf16_runs_where_the_cpu_has_bf16_instructions_and_is_refused_elsewhere() -> Result<()> {
    let texts = b"Where was Super Bowl 50 played?\nThe game was played at Levi's Stadium.\n";
    let bf16 = gear(texts, &["--precision", "bf16"])?;
    let stderr = String::from_utf8_lossy(&bf16.stderr);
    if cpu_has_bf16() {
        assert!(bf16.status.success(), "{stderr}");
        let fp32 = gear(texts, &[])?;
        assert!(fp32.status.success());
        let rows = |out: &[u8]| -> Vec<Vec<f32>> {
            String::from_utf8_lossy(out)
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    serde_json::from_value(v["embedding"].clone()).unwrap()
                })
                .collect()
        };
        for (a, b) in rows(&bf16.stdout).iter().zip(&rows(&fp32.stdout)) {
            let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            assert!(cos >= 0.999, "bf16 vs fp32 cosine {cos}");
        }
    } else {
        // Refused before any work, naming the processor and what it lacks.
        assert!(!bf16.status.success());
        assert!(bf16.stdout.is_empty());
        assert!(
            stderr.contains("--precision bf16") && stderr.contains("no AVX-512 BF16 or AMX-BF16"),
            "{stderr}"
        );
        assert!(stderr.contains("--precision fp32"), "{stderr}");
        // Training is refused the same way, before it reads its data.
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/rir-demo.toml");
        let out = Command::new(env!("CARGO_BIN_EXE_gear"))
            .args([
                "train",
                "--config",
                config,
                "--train",
                "/nonexistent/train.jsonl",
            ])
            .args(["--out", "/nonexistent/out", "--precision", "bf16"])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("no AVX-512 BF16 or AMX-BF16"), "{stderr}");
    }
    Ok(())
}
