//! Running cargo and the `gear` binary with the managed libtorch environment.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::Env;

/// Runs `cmd` (already carrying the environment), failing on a non-zero exit.
pub fn status(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// `cargo` with the libtorch environment set.
pub fn cargo(env: &Env) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    env.command(cargo)
}

/// Builds `gear` in release mode and returns its path.
pub fn build_gear(env: &Env) -> Result<std::path::PathBuf> {
    eprintln!("[xtask] building gear (release; the first build compiles tch, a few minutes)");
    status(cargo(env).args([
        "build",
        "--release",
        "--package",
        "gear-cli",
        "--bin",
        "gear",
    ]))?;
    Ok(crate::workspace_root()
        .join("target")
        .join("release")
        .join("gear"))
}

/// Builds `gear` and runs `gear <sub> <args…>` with stdio inherited.
pub fn run_gear(env: &Env, sub: &str, args: &[String]) -> Result<()> {
    let gear = build_gear(env)?;
    status(env.command(gear).arg(sub).args(args))
}

/// Writes `text` to `path` through a temporary file beside it and a rename, so `path` is either
/// the old file or the whole new one.
pub fn write_atomically(path: &std::path::Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// What a failed `gear` command said: its last stderr line without the `error: ` prefix (how
/// the benches report a refused `--precision bf16`).
pub fn gear_error(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let last = stderr.lines().last().unwrap_or("").trim();
    last.trim_start_matches("error: ").to_owned()
}
