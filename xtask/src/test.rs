//! `cargo xtask test`: every test of the workspace, with libtorch and the pretrained model set up.
//! Ends with one summary line, `tests: N passed, N failed`, summed over every test binary.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd::cargo;
use crate::setup;

pub fn run(extra: &[String]) -> Result<()> {
    check_leaf_layers()?;
    let env = setup::ensure()?;
    // The reference stack some tests compare with (export, parity): normally installed with the
    // pretrained package already.
    setup::ensure_sentence_transformers(&env)?;
    // trec_eval's measures, for the BEIR evaluation's parity test.
    setup::ensure_python_module(&env, "pytrec_eval", "pytrec-eval-terrier")?;
    let mut total = Counts::default();
    // Benches once each in test mode, so they cannot rot unnoticed.
    total.add(run_counted(
        cargo(&env)
            .args(["test", "--workspace", "--bench", "*"])
            .args(extra),
    )?);
    // Unit, integration and doc tests of every crate (xtask included).
    total.add(run_counted(
        cargo(&env).args(["test", "--workspace"]).args(extra),
    )?);
    println!("\ntests: {} passed, {} failed", total.passed, total.failed);
    Ok(())
}

/// `gear-data` and `gear-metrics` must stay usable without libtorch.
fn check_leaf_layers() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for leaf in ["gear-data", "gear-metrics"] {
        let out = Command::new(&cargo)
            .args([
                "tree",
                "--package",
                leaf,
                "--edges",
                "normal",
                "--prefix",
                "none",
            ])
            .output()
            .context("cannot run cargo tree")?;
        if !out.status.success() {
            bail!(
                "cargo tree -p {leaf} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        if let Some(dep) = tree
            .lines()
            .find(|l| l.starts_with("tch ") || l.starts_with("torch-sys "))
        {
            bail!("{leaf} must not depend on libtorch, but its tree has `{dep}`");
        }
    }
    eprintln!("[xtask] layering: gear-data and gear-metrics do not depend on tch");
    Ok(())
}

#[derive(Debug, Default, PartialEq)]
struct Counts {
    passed: u64,
    failed: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Runs `cmd`, echoing its stdout, and sums the libtest `test result:` lines.
fn run_counted(cmd: &mut Command) -> Result<Counts> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut counts = Counts::default();
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        writeln!(out, "{line}")?;
        if let Some(c) = parse_result_line(&line) {
            counts.add(c);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(counts)
}

/// `test result: ok. 15 passed; 0 failed; …` → counts.
fn parse_result_line(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result:")?;
    let number_before = |word: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(word))
            .and_then(|n| n.split_whitespace().last())
            .and_then(|n| n.parse().ok())
    };
    Some(Counts {
        passed: number_before(" passed")?,
        failed: number_before(" failed")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summaries() {
        let c = parse_result_line(
            "test result: ok. 15 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s",
        );
        assert_eq!(
            c,
            Some(Counts {
                passed: 15,
                failed: 0
            })
        );
        let c = parse_result_line("test result: FAILED. 4 passed; 1 failed; 0 ignored");
        assert_eq!(
            c,
            Some(Counts {
                passed: 4,
                failed: 1
            })
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
