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
