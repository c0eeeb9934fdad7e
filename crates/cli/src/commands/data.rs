//! `gear data …`: build triples and corpora.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use gear_data::{import_squad, Document, DocumentReader, JsonlWriter, Tokenizer};
use gear_synth::{
    generate_corpus, synthesize_rir, KeywordRewriter, OpenAiConfig, OpenAiRewriter, Rewriter,
    RirConfig,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{count, EncoderArgs, GearModelArgs, MAX_BATCH};

/// `gear data` subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Turn SQuAD-format files into QAR triples (and the passage corpus).
    Squad {
        /// SQuAD v1.1 or v2.0 JSON file.
        #[arg(long)]
        input: PathBuf,
        /// Triples (JSON lines) to write.
        #[arg(long)]
        output: PathBuf,
        /// Also write every passage as `{id, title, text}` lines.
        #[arg(long)]
        corpus: Option<PathBuf>,
    },
    /// Write the embedded, generated corpus as `{id, title, text}` lines.
    Corpus {
        /// Output file.
        #[arg(long)]
        output: PathBuf,
        /// Number of documents (1 to 10,000,000).
        #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        count: u32,
        /// Generator seed.
        #[arg(long, default_value_t = 13)]
        seed: u64,
    },
    /// Synthesise RIR triples (keyword query, document, sentence) with the paper's pipeline.
    SynthRir(SynthArgs),
    /// Turn a BEIR split's judgements into RIR triples with mined hard negatives (see
    /// `loss.hard_negatives`).
    Beir(BeirArgs),
    /// Add hard negatives to triples (SQuAD questions, RIR triples): the miner's best-ranked
    /// documents among the triples' own, other than each triple's document (see
    /// `loss.hard_negatives`).
    Negatives(NegativesArgs),
    /// Split triples into train/dev/test by document (every triple of a document together).
    Split {
        /// Triples to split.
        #[arg(long)]
        input: PathBuf,
        /// Training part.
        #[arg(long)]
        train: PathBuf,
        /// Development part.
        #[arg(long)]
        dev: PathBuf,
        /// Test part.
        #[arg(long)]
        test: PathBuf,
        /// Share of documents for dev.
        #[arg(long, default_value_t = 0.1)]
        dev_fraction: f64,
        /// Share of documents for test.
        #[arg(long, default_value_t = 0.1)]
        test_fraction: f64,
        /// Split by the document title (the SQuAD article) instead of the document id.
        #[arg(long)]
        by_title: bool,
        /// Seed of the assignment.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Which rewriter turns sentences into queries.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewriterKind {
    /// Offline keyphrase extraction (default).
    Keywords,
    /// An OpenAI-compatible chat-completions endpoint.
    Openai,
}

/// Options of `gear data synth-rir`.
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// `{id, title, text}` JSON lines, or a SQuAD JSON file (passages of an article joined).
    #[arg(long)]
    input: PathBuf,
    /// Triples to write (resumes from `<output>.partial` when present).
    #[arg(long)]
    output: PathBuf,
    /// Query rewriter.
    #[arg(long, value_enum, default_value = "keywords")]
    rewriter: RewriterKind,
    /// Endpoint base URL for `--rewriter openai`, e.g. http://127.0.0.1:8000/v1.
    #[arg(long)]
    llm_url: Option<String>,
    /// Model name for `--rewriter openai`.
    #[arg(long)]
    llm_model: Option<String>,
    /// Requests in flight for `--rewriter openai` (1 to 256).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Relevance threshold (query–document cosine under the pretrained encoder); `0` keeps all.
    #[arg(long, default_value_t = 0.5)]
    min_similarity: f32,
    /// Seed for picking units and ordering keywords.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Documents with fewer content tokens (after pre-processing) are dropped. The paper's 200
    /// suits whole articles; a single Wikipedia paragraph has about 100–200, so a corpus of
    /// paragraphs needs a lower floor (`cargo xtask train-rir` uses 60).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    min_tokens: u32,
    /// Longest candidate unit sentence, in content tokens (the paper: 20; most sentences of
    /// Wikipedia paragraphs are longer, `cargo xtask train-rir` uses 40).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    unit_max_tokens: u32,
    /// Documents with fewer candidate unit sentences are dropped (the paper: 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    min_candidates: u32,
    /// Units picked (and queries written) per document (the paper: 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    units_per_document: u32,
    /// Skip malformed input lines (counted and reported) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    #[command(flatten)]
    model: EncoderArgs,
}

/// Which ranker mines the hard negatives of `gear data beir`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinerArg {
    /// BM25 over title and text (lexical look-alikes; needs no model).
    Bm25,
    /// The bi-encoder of `--model` / `--pretrained` (semantic look-alikes).
    BiEncoder,
}

/// Options of `gear data beir`.
#[derive(clap::Args, Debug)]
pub struct BeirArgs {
    /// A BEIR dataset folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`).
    #[arg(long)]
    data: PathBuf,
    /// The qrels split to turn into triples.
    #[arg(long, default_value = "train")]
    split: String,
    /// Triples (JSON lines) to write.
    #[arg(long)]
    output: PathBuf,
    /// Hard negatives per triple (0 to 64): the miner's best-ranked documents not judged
    /// relevant to the query.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=64))]
    negatives: u32,
    /// What ranks the corpus for mining.
    #[arg(long, value_enum, default_value_t = MinerArg::Bm25)]
    miner: MinerArg,
    /// The model for `--miner bi-encoder` (refused with `--miner bm25`, which uses none).
    #[command(flatten)]
    model: GearModelArgs,
    /// Texts per forward pass (bi-encoder mining).
    #[arg(long, default_value_t = 32, value_parser = count(1..=MAX_BATCH))]
    batch_size: usize,
}

/// Options of `gear data negatives`.
#[derive(clap::Args, Debug)]
pub struct NegativesArgs {
    /// Triples (JSON lines) to read.
    #[arg(long)]
    input: PathBuf,
    /// Triples with negatives to write.
    #[arg(long)]
    output: PathBuf,
    /// Hard negatives per triple (0 to 64).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=64))]
    negatives: u32,
    /// What ranks the documents for mining.
    #[arg(long, value_enum, default_value_t = MinerArg::Bm25)]
    miner: MinerArg,
    /// The model for `--miner bi-encoder` (refused with `--miner bm25`, which uses none).
    #[command(flatten)]
    model: GearModelArgs,
    /// Texts per forward pass (bi-encoder mining).
    #[arg(long, default_value_t = 32, value_parser = count(1..=MAX_BATCH))]
    batch_size: usize,
}

/// The miner `miner` names and, for the bi-encoder, its model.
fn miner_of(
    miner: MinerArg,
    model: &GearModelArgs,
) -> Result<(gear_eval::Miner, Option<gear_model::GearModel>)> {
    Ok(match miner {
        MinerArg::Bm25 => {
            if model.given() {
                bail!("--model/--pretrained pick the bi-encoder miner's model: pass --miner bi-encoder, or drop them for BM25");
            }
            (gear_eval::Miner::Bm25, None)
        }
        MinerArg::BiEncoder => (gear_eval::Miner::BiEncoder, Some(model.load()?.0)),
    })
}

/// Writes mined triples to `output`, says on stderr how many got fewer than `negatives`, and
/// returns how many were written.
fn write_mined(mined: &gear_eval::MinedTriples, output: &Path, negatives: u32) -> Result<usize> {
    let mut w = JsonlWriter::create(output)?;
    for t in &mined.triples {
        w.write(t)?;
    }
    let n = w.finish()?;
    if mined.copies > 0 {
        eprintln!(
            "{} candidate negative(s) were passed over: their text is their triple's positive \
             document's (a copy under another id)",
            mined.copies
        );
    }
    if mined.short > 0 {
        eprintln!(
            "{} triples got fewer than {negatives} negatives (the miner ranked too few other documents)",
            mined.short
        );
    }
    Ok(n)
}

fn negatives(args: &NegativesArgs) -> Result<()> {
    let triples = gear_data::TripleReader::open(&args.input)?.collect::<Result<Vec<_>, _>>()?;
    let (miner, model) = miner_of(args.miner, &args.model)?;
    let bar = crate::spinner("negatives".into());
    let mined = gear_eval::mine_negatives(
        &triples,
        miner,
        model.as_ref(),
        args.negatives as usize,
        args.batch_size,
        &mut |step| bar.set_message(format!("negatives: {step}")),
    )?;
    bar.finish_and_clear();
    let n = write_mined(&mined, &args.output, args.negatives)?;
    eprintln!(
        "wrote {n} triples with up to {} negatives each to {}",
        args.negatives,
        args.output.display()
    );
    Ok(())
}

fn beir(args: &BeirArgs) -> Result<()> {
    let data = gear_data::read_beir(&args.data, &args.split)?;
    let (miner, model) = miner_of(args.miner, &args.model)?;
    let bar = crate::spinner("beir".into());
    let mined = gear_eval::beir_triples(
        &data,
        miner,
        model.as_ref(),
        args.negatives as usize,
        args.batch_size,
        &mut |step| bar.set_message(format!("beir: {step}")),
    )?;
    bar.finish_and_clear();
    let n = write_mined(&mined, &args.output, args.negatives)?;
    eprintln!(
        "wrote {n} triples ({} queries of {}, split `{}`) with up to {} negatives each, mined \
         by {}, to {}",
        mined.queries,
        args.data.display(),
        args.split,
        args.negatives,
        match args.miner {
            MinerArg::Bm25 => "BM25",
            MinerArg::BiEncoder => "the bi-encoder",
        },
        args.output.display()
    );
    Ok(())
}

pub fn run(cmd: &Command) -> Result<()> {
    match cmd {
        Command::Beir(args) => beir(args),
        Command::Negatives(args) => negatives(args),
        Command::Squad {
            input,
            output,
            corpus,
        } => squad(input, output, corpus.as_ref()),
        Command::Corpus {
            output,
            count,
            seed,
        } => {
            let mut w = JsonlWriter::create(output)?;
            for d in generate_corpus(*count as usize, *seed) {
                w.write(&d)?;
            }
            let n = w.finish()?;
            eprintln!("wrote {n} documents to {}", output.display());
            Ok(())
        }
        Command::SynthRir(args) => synth(args),
        Command::Split {
            input,
            train,
            dev,
            test,
            dev_fraction,
            test_fraction,
            by_title,
            seed,
        } => {
            let mut writers = [
                JsonlWriter::create(train)?,
                JsonlWriter::create(dev)?,
                JsonlWriter::create(test)?,
            ];
            for t in gear_data::TripleReader::open(input)? {
                let t = t?;
                let key = if *by_title {
                    &t.document.title
                } else {
                    &t.document.id
                };
                let part = match gear_data::split_of(key, *seed, *dev_fraction, *test_fraction) {
                    gear_data::Split::Train => 0,
                    gear_data::Split::Dev => 1,
                    gear_data::Split::Test => 2,
                };
                writers[part].write(&t)?;
            }
            let [a, b, c] = writers;
            eprintln!(
                "train {}, dev {}, test {} triples",
                a.finish()?,
                b.finish()?,
                c.finish()?
            );
            Ok(())
        }
    }
}

fn squad(input: &PathBuf, output: &PathBuf, corpus: Option<&PathBuf>) -> Result<()> {
    let import = import_squad(input)?;
    let mut w = JsonlWriter::create(output)?;
    for t in &import.triples {
        w.write(t)?;
    }
    w.finish()?;
    if let Some(path) = corpus {
        let mut w = JsonlWriter::create(path)?;
        for d in &import.corpus {
            w.write(d)?;
        }
        w.finish()?;
    }
    eprintln!("{}", serde_json::to_string_pretty(&import.stats)?);
    Ok(())
}

/// Documents from a JSON-lines file, or the articles of a SQuAD file.
fn read_documents(path: &PathBuf, skip_bad: bool) -> Result<(Vec<Document>, usize)> {
    let is_json = path.extension().is_some_and(|e| e == "json");
    if is_json {
        let import = import_squad(path)?;
        let mut docs: Vec<Document> = Vec::new();
        for (doc, article) in import.corpus.iter().zip(&import.articles) {
            match docs.last_mut() {
                Some(last) if &last.title == article => {
                    last.text.push('\n');
                    last.text.push_str(&doc.text);
                }
                _ => docs.push(Document {
                    // Passage ids are `<file stem>/<article>-<paragraph>`: the article keeps the first part.
                    id: doc
                        .id
                        .rsplit_once('-')
                        .map_or(doc.id.as_str(), |(head, _)| head)
                        .to_string(),
                    title: article.clone(),
                    text: doc.text.clone(),
                }),
            }
        }
        return Ok((docs, 0));
    }
    let mut reader = DocumentReader::open(path)?.skip_bad(skip_bad);
    let docs = reader.by_ref().collect::<gear_data::Result<Vec<_>>>()?;
    for e in reader.skipped() {
        eprintln!("skipped: {e}");
    }
    Ok((docs, reader.skipped().len()))
}

/// The RIR relevance filter embeds with the pretrained bi-encoder.
struct RelevanceFilter<'a>(&'a gear_model::SentenceEncoder);

impl gear_synth::Embedder for RelevanceFilter<'_> {
    fn embed(&self, texts: &[&str]) -> gear_synth::Result<Vec<Vec<f32>>> {
        self.0
            .embed_vecs(texts)
            .map_err(|e| gear_synth::Error::Embed(e.to_string()))
    }
}

fn synth(args: &SynthArgs) -> Result<()> {
    let rewriter: Box<dyn Rewriter> = match args.rewriter {
        RewriterKind::Keywords => Box::new(KeywordRewriter::default()),
        RewriterKind::Openai => {
            let (Some(url), Some(model)) = (&args.llm_url, &args.llm_model) else {
                bail!("--rewriter openai needs --llm-url and --llm-model");
            };
            let mut cfg = OpenAiConfig::new(url.clone(), model.clone());
            cfg.api_key = std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty());
            Box::new(OpenAiRewriter::new(cfg)?)
        }
    };
    let encoder = args.model.load()?;
    let filter = RelevanceFilter(&encoder);
    let tokenizer: &Tokenizer = encoder.tokenizer();
    let tokenizer = tokenizer.with_max_len(tokenizer.max_len())?;
    let (docs, skipped) = read_documents(&args.input, args.skip_bad)?;
    let cfg = RirConfig {
        min_similarity: (args.min_similarity > 0.0).then_some(args.min_similarity),
        seed: args.seed,
        min_tokens: args.min_tokens as usize,
        units_per_document: args.units_per_document as usize,
        unit_max_tokens: args.unit_max_tokens as usize,
        min_candidates: args.min_candidates as usize,
        concurrency: if args.rewriter == RewriterKind::Openai {
            usize::from(args.concurrency)
        } else {
            1
        },
        ..RirConfig::default()
    };
    let bar = ProgressBar::new(docs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} synth-rir [{bar:30}] {pos}/{len} docs {msg} ({eta})",
        )
        .context("progress template")?
        .progress_chars("=> "),
    );
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stats = synthesize_rir(
        docs.into_iter().map(Ok),
        &args.output,
        &tokenizer,
        rewriter.as_ref(),
        cfg.min_similarity
            .map(|_| &filter as &dyn gear_synth::Embedder),
        &cfg,
        &mut |s| {
            let done = s.documents + s.resumed;
            if !interactive && done % 50 == 0 {
                eprintln!("synth-rir: {done} documents, {} triples", s.triples);
            }
            bar.set_position((s.documents + s.resumed) as u64);
            bar.set_message(format!("{} triples", s.triples));
        },
    )?;
    bar.finish_and_clear();
    eprintln!("{}", serde_json::to_string_pretty(&stats)?);
    if skipped > 0 {
        eprintln!("{skipped} malformed input line(s) skipped");
    }
    Ok(())
}
