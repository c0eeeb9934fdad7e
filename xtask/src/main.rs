//! `cargo xtask`: the project's task runner (rust-analyzer's pattern).
//!
//! Every command first makes sure the Python environment with libtorch and the pretrained
//! encoder exists (see [`setup`]), then runs cargo or the `gear` binary with `LIBTORCH` and
//! `LD_LIBRARY_PATH` pointing at it.

mod bench_encode;
mod bench_index;
mod bench_train;
mod cmd;
mod embed_cluster;
mod parity;
mod pipelines;
mod replicas;
mod serve;
mod setup;
mod test;
mod tidy;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "GeAR-rs task runner")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the Python environment with torch and the pretrained MiniLM (idempotent).
    Setup {
        /// Also install an optional model into `$GEAR_HOME/models` (downloaded on demand only).
        #[arg(long, value_enum)]
        model: Option<setup::OptionalModel>,
    },
    /// Run every test of the workspace (sets up first).
    Test {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Check the tree's rules: crate docs, file and function lengths, leaf layering (also the
    /// first step of `test`).
    Tidy,
    /// Run the `gear` binary (release build) with any arguments: `cargo xtask gear data squad …`.
    Gear {
        /// Arguments passed to `gear`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Embed one text per stdin line with `gear embed` (sets up first).
    Embed {
        /// Arguments passed to `gear embed`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The main job: embedded corpus → RIR triples → split → train GeAR → evaluate trained vs
    /// untrained on the held-out split.
    TrainRir(pipelines::RirArgs),
    /// The same for SQuAD-format files (QAR).
    TrainQar(pipelines::QarArgs),
    /// Variants of a training config trained on a pipeline's train split and scored on its dev
    /// split, one table (`--list` shows the rows).
    Ablate(pipelines::AblateArgs),
    /// Run the criterion benchmarks (`cargo bench` with the libtorch environment).
    Bench {
        /// Arguments passed to `cargo bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Regenerate the sentence-transformers reference embeddings used by the parity test.
    ParityFixture,
    /// Encoding throughput of `gear embed` against sentence-transformers on the SQuAD passages.
    BenchEncode(bench_encode::Args),
    /// GeAR training throughput, fp32 against bf16 autocast (refused where the CPU has no
    /// bfloat16 instructions).
    BenchTrain(bench_train::Args),
    /// The index at 10^5 and 10^6 synthetic vectors beside FAISS: open time, RSS, exact and HNSW
    /// QPS, recall.
    BenchIndex(bench_index::Args),
    /// Embed a corpus into a PostgreSQL store over a Ray cluster (one `gear index build --shard`
    /// task per shard, retried when a worker dies), then `gear index finish`.
    EmbedCluster(embed_cluster::Args),
    /// Serve the shipped Wikipedia passages over HTTP (search page at /): the main job's model
    /// when it has run, else the pretrained MiniLM; the index is built on first start.
    Serve(serve::ServeArgs),
    /// `gear serve` throughput with and without dynamic batching, and a bounded load test.
    BenchServe(serve::BenchArgs),
    /// The bad-input sweep: every `gear` command fed input a user can get wrong, closed pipes and
    /// a second writer; prints the table of outcomes (also part of `cargo xtask test`).
    Sweep,
    /// Print the environment variables other tools need to use the managed libtorch
    /// (`eval "$(cargo xtask env)"`).
    Env,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup { model } => {
            let env = setup::ensure()?;
            if let Some(model) = model {
                setup::ensure_model(&env, model)?;
            }
            Ok(())
        }
        Command::Test { args } => test::run(&args),
        Command::Tidy => tidy::run(),
        Command::Sweep => {
            let env = setup::ensure()?;
            cmd::status(cmd::cargo(&env).args([
                "test",
                "-p",
                "gear-cli",
                "--test",
                "sweep",
                "--",
                "--nocapture",
            ]))
        }
        Command::Gear { args } => {
            let env = setup::ensure()?;
            let gear = cmd::build_gear(&env)?;
            cmd::status(env.command(gear).args(&args))
        }
        Command::Embed { args } => cmd::run_gear(&setup::ensure()?, "embed", &args),
        Command::TrainRir(args) => pipelines::rir(&setup::ensure()?, &args),
        Command::TrainQar(args) => pipelines::qar(&setup::ensure()?, &args),
        Command::Ablate(args) => pipelines::ablate(&setup::ensure()?, &args),
        Command::Bench { args } => {
            let env = setup::ensure()?;
            cmd::status(cmd::cargo(&env).arg("bench").args(&args))
        }
        Command::ParityFixture => parity::run(&setup::ensure()?),
        Command::BenchEncode(args) => bench_encode::run(&setup::ensure()?, &args),
        Command::BenchTrain(args) => bench_train::run(&setup::ensure()?, &args),
        Command::BenchIndex(args) => bench_index::run(&setup::ensure()?, &args),
        Command::EmbedCluster(args) => embed_cluster::run(&setup::ensure()?, &args),
        Command::Serve(args) => serve::serve(&setup::ensure()?, &args),
        Command::BenchServe(args) => serve::bench(&setup::ensure()?, &args),
        Command::Env => {
            let env = setup::ensure()?;
            for (k, v) in env.vars() {
                println!("export {k}={}", shell_quote(&v));
            }
            Ok(())
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
