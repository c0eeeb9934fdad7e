//! `gear`: the GeAR-rs command-line tool.
//!
//! Layout: `args.rs` holds the argument types commands share (one `--device`, the two ways of
//! choosing a model, every closed set of values as a `ValueEnum` with its conversion into the
//! library's type); `commands/` one module per subcommand group; `launch.rs` the `--nproc`
//! launcher.
//!
//! Subcommands: `embed` (one JSON line per stdin line), `demo`, `data` (SQuAD import, the
//! embedded corpus, RIR synthesis, splits), `score`, `train`, `train-reranker`, `eval` (triples,
//! SQuAD), `index build`, `search`, `locate`, `generate`, `explain`, `export` — `gear --help` lists them
//! with their options. Run through `cargo xtask gear …` (or after `eval "$(cargo xtask env)"`) to
//! get the managed libtorch on the library path. Every error goes to stderr with status 1; output
//! piped into a reader that stops early ends quietly (docs/reliability.md).

/// `println!` that returns the write's `io::Result` instead of panicking (on a closed pipe, say).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` that returns the write's `io::Result`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod args;
mod commands;
mod launch;

use clap::{Parser, Subcommand};
use commands::{data, demo, embed, eval, export, index, pair, rerank, score, search, serve, train};

#[derive(Parser)]
#[command(name = "gear", version, about = "GeAR: generation-augmented retrieval")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed one text per stdin line; write `{"text": …, "embedding": […]}` per line to stdout.
    Embed(embed::Args),
    /// Embed a small built-in corpus and answer a few queries against it.
    Demo(demo::Args),
    /// Build triples and corpora (SQuAD import, RIR synthesis, the embedded corpus).
    #[command(subcommand)]
    Data(data::Command),
    /// Score predictions (SQuAD EM/F1).
    #[command(subcommand)]
    Score(score::Command),
    /// Train GeAR on triples with a TOML configuration.
    Train(train::TrainArgs),
    /// Train the cross-encoder reranker baseline on the same triples.
    TrainReranker(rerank::Args),
    /// Evaluate a model.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Build a document index for global retrieval.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Top-k documents of an index for a query.
    Search(search::SearchArgs),
    /// A document's sentences ranked by the fusion encoder's cross-attention.
    Locate(pair::PairArgs),
    /// The decoder's text for a (query, document) pair.
    Generate(pair::PairArgs),
    /// Sentences, generated text and the ten most attended tokens, in colour and as HTML.
    Explain(pair::PairArgs),
    /// Write a checkpoint's bi-encoder as a sentence-transformers folder.
    Export(export::Args),
    /// Serve an index over HTTP: TEI-compatible /embed, /search with located sentences,
    /// /locate, /generate, /explain, /health, /metrics and a search page at /.
    Serve(serve::Args),
}

/// `gear eval` subcommands.
#[derive(Subcommand)]
enum EvalCommand {
    /// Global R@5/MAP@5, local R@k/MAP@k and generation scores on a triples file.
    Triples(eval::EvalArgs),
    /// The paper's QA protocol on SQuAD files, for GeAR and the bi-encoder baseline.
    Squad(eval::SquadArgs),
    /// BEIR's measures (nDCG@10, Recall@100, MAP@100, MRR@10) on a BEIR dataset, for the
    /// bi-encoder, BM25 and their hybrid.
    Beir(eval::BeirArgs),
}

/// Keeps freed tensor memory in the heap instead of returning it to the kernel after every op.
///
/// glibc serves blocks above its mmap threshold (at most 32 MiB by default) with fresh `mmap`s
/// and unmaps them on free, so every large activation of every layer is page-faulted in anew.
/// On 2 cores that cost ~12% of `gear embed`'s time (see docs/benchmarks.md); raising both
/// thresholds trades a higher resident size for it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    const ONE_GIB: libc::c_int = 1 << 30;
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists and takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, ONE_GIB);
        libc::mallopt(libc::M_TRIM_THRESHOLD, ONE_GIB);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => embed::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Data(cmd) => data::run(&cmd),
        Command::Score(cmd) => score::run(&cmd),
        Command::Train(args) => train::train(&args),
        Command::TrainReranker(args) => rerank::run(&args),
        Command::Eval(EvalCommand::Triples(args)) => eval::eval_triples(&args),
        Command::Eval(EvalCommand::Squad(args)) => eval::eval_squad(&args),
        Command::Eval(EvalCommand::Beir(args)) => eval::eval_beir(&args),
        Command::Index(cmd) => index::index(&cmd),
        Command::Search(args) => search::search(&args),
        Command::Locate(args) => pair::pair(&args, pair::PairMode::Locate),
        Command::Generate(args) => pair::pair(&args, pair::PairMode::Generate),
        Command::Explain(args) => pair::pair(&args, pair::PairMode::Explain),
        Command::Export(args) => export::run(&args),
        Command::Serve(args) => serve::run(&args),
    };
    match result {
        // The reader of our output has gone (`gear search … | head -1`): a normal end.
        Err(err) if is_broken_pipe(&err) => {}
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(1);
        }
        Ok(()) => {}
    }
}

/// A spinner with the elapsed time on stderr, for work that reports no finer progress (drawn
/// only on a terminal).
pub fn spinner(message: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Whether `err` comes from writing to a pipe whose reader has closed it.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind;
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    /// Options whose every value is meaningful: a seed only picks a random stream.
    const UNBOUNDED: [&str; 1] = ["seed"];

    /// Every option of every command that takes an integer: the command's words and the option.
    fn integer_options() -> Vec<(Vec<String>, clap::Arg)> {
        let id = |p: clap::builder::ValueParser| {
            clap::Arg::new("x")
                .value_parser(p)
                .get_value_parser()
                .type_id()
        };
        let integers = [
            id(clap::value_parser!(u8).into()),
            id(clap::value_parser!(u16).into()),
            id(clap::value_parser!(u32).into()),
            id(clap::value_parser!(u64).into()),
            id(clap::value_parser!(usize).into()),
            id(clap::value_parser!(i32).into()),
            id(clap::value_parser!(i64).into()),
        ];
        let mut out = Vec::new();
        let mut stack = vec![(Vec::<String>::new(), super::Cli::command())];
        while let Some((path, mut cmd)) = stack.pop() {
            cmd.build();
            for arg in cmd.get_arguments() {
                if integers.contains(&arg.get_value_parser().type_id()) {
                    out.push((path.clone(), arg.clone()));
                }
            }
            for sub in cmd.get_subcommands() {
                let mut words = path.clone();
                words.push(sub.get_name().to_owned());
                stack.push((words, sub.clone()));
            }
        }
        out
    }

    /// Every integer option states an upper bound: a value that would wrap, or allocate past
    /// memory, is refused by the parser with an error naming the option and its range — the
    /// root of `-k` near 2⁶⁴ returning one result and `--max-body-kib 2⁵⁴` answering every
    /// request 413. A new option without a bound fails here.
    #[test]
    fn every_integer_option_has_an_upper_bound() {
        let options = integer_options();
        assert!(
            options.len() > 30,
            "only {} integer options found: is the walk broken?",
            options.len()
        );
        let mut unbounded = Vec::new();
        for (path, arg) in &options {
            if UNBOUNDED.contains(&arg.get_id().as_str()) {
                continue;
            }
            let Some(long) = arg.get_long() else {
                unbounded.push(format!(
                    "gear {} <{}> is positional",
                    path.join(" "),
                    arg.get_id()
                ));
                continue;
            };
            for huge in [
                "18446744073709551615",
                "9223372036854775808",
                "1000000000000",
            ] {
                let mut argv = vec!["gear".to_owned()];
                argv.extend(path.iter().cloned());
                argv.extend([format!("--{long}"), huge.to_owned()]);
                match super::Cli::command().try_get_matches_from(&argv) {
                    Err(e) if e.kind() == ErrorKind::ValueValidation => {
                        let shown = e.to_string();
                        assert!(
                            shown.contains(huge)
                                && shown.contains(&format!("--{long}"))
                                && (shown.contains("..=") || shown.contains("too large")),
                            "{argv:?}: the error should name the option, the value and the range: \
                             {shown}"
                        );
                    }
                    _ => unbounded.push(argv[1..].join(" ")),
                }
            }
        }
        assert!(unbounded.is_empty(), "accepted: {unbounded:#?}");
    }
}
