//! `gear index build`, `gear locate`, `gear generate`, `gear explain`, `gear eval squad|beir`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gear_data::{Document, DocumentReader, TripleReader};
use gear_infer::{
    build_index, explain, load_model, render_html, render_terminal, BuildOptions, BuildOutcome,
    DocumentIndex, ModelSource,
};
use gear_model::{parse_device, GenerationOptions, LocateOptions, Search, UnitAggregation};
use indicatif::{ProgressBar, ProgressStyle};

/// Which model: a checkpoint or the pretrained bi-encoder.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelChoice {
    /// GeAR checkpoint folder (e.g. out/train-rir/run/checkpoint/model).
    #[arg(long, conflicts_with = "pretrained")]
    model: Option<PathBuf>,
    /// Use the pretrained all-MiniLM-L6-v2 (cross-attention and decoder untrained).
    #[arg(long)]
    pretrained: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl ModelChoice {
    /// Whether `--model` or `--pretrained` was given.
    pub(crate) fn given(&self) -> bool {
        self.model.is_some() || self.pretrained
    }

    /// Loads the chosen model on the chosen device.
    pub(crate) fn load(&self) -> Result<gear_model::GearModel> {
        let (model, _) = load_model(&self.source()?, parse_device(&self.device)?)?;
        Ok(model)
    }

    fn source(&self) -> Result<ModelSource> {
        match (&self.model, self.pretrained) {
            (Some(dir), false) => Ok(ModelSource::Checkpoint(dir.clone())),
            (None, true) => Ok(ModelSource::Pretrained),
            _ => bail!("pass --model CHECKPOINT or --pretrained"),
        }
    }
}

/// `gear index build --vectors`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorsArg {
    /// float32.
    F32,
    /// float16.
    F16,
}

/// `gear index ann --graph-vectors`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphVectorsArg {
    /// int8 (a quarter of float32).
    I8,
    /// float16.
    F16,
    /// float32.
    F32,
}

/// `gear index build --ann`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnArg {
    /// An HNSW graph, saved with the index (`gear search --backend hnsw` uses it).
    Hnsw,
}

/// How an HNSW graph is built (defaults: `HnswParams::default()`).
#[derive(clap::Args, Debug, Clone)]
pub struct HnswBuildArgs {
    /// Links per node (HNSW's M; default 32).
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..=1024))]
    hnsw_m: Option<u16>,
    /// Candidate list size while inserting (graph quality vs build time; default 200).
    #[arg(long, value_parser = at_least_one)]
    ef_construction: Option<usize>,
    /// The graph's own copy of the vectors, which it navigates with (default i8; results are
    /// scored again with the index's vectors).
    #[arg(long, value_enum)]
    graph_vectors: Option<GraphVectorsArg>,
}

impl HnswBuildArgs {
    fn given(&self) -> bool {
        self.hnsw_m.is_some() || self.ef_construction.is_some() || self.graph_vectors.is_some()
    }

    fn params(&self) -> gear_infer::HnswParams {
        let default = gear_infer::HnswParams::default();
        gear_infer::HnswParams {
            connectivity: self.hnsw_m.map_or(default.connectivity, usize::from),
            ef_construction: self.ef_construction.unwrap_or(default.ef_construction),
            vectors: match self.graph_vectors {
                None => default.vectors,
                Some(GraphVectorsArg::I8) => gear_infer::GraphVectors::I8,
                Some(GraphVectorsArg::F16) => gear_infer::GraphVectors::F16,
                Some(GraphVectorsArg::F32) => gear_infer::GraphVectors::F32,
            },
        }
    }
}

/// `gear index` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum IndexCommand {
    /// Embed a corpus (`{id, title, text}` lines) with the document encoder into an index folder.
    Build {
        /// Corpus file.
        #[arg(long)]
        corpus: PathBuf,
        /// Index folder to create (resumes from `<out>.partial` when present).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        model: ModelChoice,
        /// Documents per forward pass.
        #[arg(long, default_value_t = 32, value_parser = at_least_one)]
        batch_size: usize,
        /// Embed only the beginning of a document longer than the model reads at once (by
        /// default it gets one vector per window of whole sentences, and scores its best).
        #[arg(long)]
        no_windows: bool,
        /// How vectors are stored: f32, or f16 (half the file and memory; recall measured in
        /// docs/benchmarks.md). `index add` keeps the index's.
        #[arg(long, value_enum, default_value_t = VectorsArg::F32)]
        vectors: VectorsArg,
        /// Also build an approximate-search graph (as `gear index ann` does, once the vectors
        /// are in).
        #[arg(long, value_enum)]
        ann: Option<AnnArg>,
        #[command(flatten)]
        hnsw: HnswBuildArgs,
    },
    /// Build (or rebuild) an index's HNSW graph over its stored vectors and save it with the
    /// index, so `--backend hnsw` opens it at once; `gear index add` keeps it up to date.
    Ann {
        /// Index folder.
        #[arg(long)]
        index: PathBuf,
        #[command(flatten)]
        hnsw: HnswBuildArgs,
    },
    /// Append documents to an index: only they are embedded (with the index's model); the
    /// index stays the previous one until the add commits. Ids already present are refused.
    Add {
        /// Index folder to add to.
        #[arg(long)]
        index: PathBuf,
        /// Corpus file of the new documents.
        #[arg(long)]
        corpus: PathBuf,
        /// Override the model recorded in the index (must be the same files).
        #[arg(long)]
        model: Option<PathBuf>,
        /// `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Documents per forward pass.
        #[arg(long, default_value_t = 32, value_parser = at_least_one)]
        batch_size: usize,
        /// Embed only the beginning of a document longer than the model reads at once.
        #[arg(long)]
        no_windows: bool,
    },
}

/// Where the document of `locate`/`generate`/`explain` comes from.
#[derive(clap::Args, Debug, Clone)]
pub struct DocChoice {
    /// A text file holding the document.
    #[arg(long, conflicts_with = "doc_id")]
    doc: Option<PathBuf>,
    /// A document of `--index` by id.
    #[arg(long, requires = "index")]
    doc_id: Option<String>,
    /// The index to look `--doc-id` up in.
    #[arg(long)]
    index: Option<PathBuf>,
}

impl DocChoice {
    fn load(&self) -> Result<Document> {
        match (&self.doc, &self.doc_id, &self.index) {
            (Some(path), _, _) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Ok(Document {
                    id: name.clone(),
                    title: name,
                    text: text.trim_end().to_owned(),
                })
            }
            (None, Some(id), Some(index)) => {
                Ok(DocumentIndex::open(index, tch::Device::Cpu)?.document(id)?)
            }
            _ => bail!("pass --doc FILE or --doc-id ID --index DIR"),
        }
    }
}

/// How a sentence's token weights become its score (`--aggregation`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// The attention mass on the sentence's tokens (the paper's).
    Sum,
    /// The mean weight per token (no bias towards long sentences).
    Mean,
}

impl From<Aggregation> for UnitAggregation {
    fn from(a: Aggregation) -> Self {
        match a {
            Aggregation::Sum => UnitAggregation::Sum,
            Aggregation::Mean => UnitAggregation::Mean,
        }
    }
}

/// A count that must be at least 1 (`-k`, `--beams`).
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Options of `gear locate`, `gear generate` and `gear explain`.
#[derive(clap::Args, Debug)]
pub struct PairArgs {
    #[command(flatten)]
    model: ModelChoice,
    #[command(flatten)]
    doc: DocChoice,
    /// Sentences shown.
    #[arg(long, short, default_value_t = 5, value_parser = at_least_one)]
    k: usize,
    /// Sentence score: the attention mass on its tokens (`sum`) or its mean per token (`mean`).
    #[arg(long, value_enum, default_value_t = Aggregation::Sum)]
    aggregation: Aggregation,
    /// Fusion layer whose cross-attention ranks sentences (1-based); default: the model's
    /// `local_layer`.
    #[arg(long, value_parser = at_least_one)]
    layer: Option<usize>,
    /// Beam width for generation (1: greedy).
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    beams: usize,
    /// Write the explanation as a self-contained HTML page.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The query.
    query: String,
}

pub fn index(cmd: &IndexCommand) -> Result<()> {
    match cmd {
        IndexCommand::Build {
            corpus,
            out,
            model,
            batch_size,
            no_windows,
            vectors,
            ann,
            hnsw,
        } => {
            if ann.is_none() && hnsw.given() {
                bail!("--hnsw-m, --ef-construction and --graph-vectors apply with --ann hnsw only");
            }
            let opts = BuildOptions {
                batch_size: *batch_size,
                windows: !no_windows,
                precision: match vectors {
                    VectorsArg::F32 => gear_infer::VectorPrecision::F32,
                    VectorsArg::F16 => gear_infer::VectorPrecision::F16,
                },
                ..BuildOptions::default()
            };
            if build(corpus, out, model, &opts)? && ann.is_some() {
                build_graph(out, hnsw)?;
            }
            Ok(())
        }
        IndexCommand::Add {
            index,
            corpus,
            model,
            device,
            batch_size,
            no_windows,
        } => add(
            index,
            corpus,
            model.as_deref(),
            device,
            *batch_size,
            *no_windows,
        ),
        IndexCommand::Ann { index, hnsw } => build_graph(index, hnsw),
    }
}

/// `gear index build` without the graph; whether the index is complete.
fn build(
    corpus: &std::path::Path,
    out: &std::path::Path,
    model: &ModelChoice,
    opts: &BuildOptions,
) -> Result<bool> {
    let device = parse_device(&model.device)?;
    let (gear, dir) = load_model(&model.source()?, device)?;
    let docs = DocumentReader::open(corpus)?.collect::<Result<Vec<_>, _>>()?;
    let bar = count_bar("index", "shards")?;
    let outcome = build_index(&gear, &dir, &docs, out, opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    match outcome {
        BuildOutcome::Complete => {
            eprintln!("indexed {} documents into {}", docs.len(), out.display());
            Ok(true)
        }
        BuildOutcome::Partial { done, total } => {
            eprintln!("{done}/{total} shards done; run again to finish");
            Ok(false)
        }
    }
}

/// `gear index ann`.
fn build_graph(index: &std::path::Path, hnsw: &HnswBuildArgs) -> Result<()> {
    let bar = count_bar("hnsw", "vectors")?;
    let start = std::time::Instant::now();
    let ann = gear_infer::build_ann(index, &hnsw.params(), &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    eprintln!(
        "HNSW graph over {} vectors saved as {} in {:.1} s (M {}, ef_construction {}, {:?} \
         vectors)",
        ann.rows,
        index.join(&ann.file).display(),
        start.elapsed().as_secs_f64(),
        ann.params.connectivity,
        ann.params.ef_construction,
        ann.params.vectors
    );
    Ok(())
}

/// A progress bar counting `unit` (shards of `index build` and `index add`, vectors of the
/// HNSW graph).
fn count_bar(label: &str, unit: &str) -> Result<ProgressBar> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {label} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}})"
        ))
        .context("template")?
        .progress_chars("=> "),
    );
    Ok(bar)
}

fn add(
    index: &std::path::Path,
    corpus: &std::path::Path,
    model: Option<&std::path::Path>,
    device: &str,
    batch_size: usize,
    no_windows: bool,
) -> Result<()> {
    let (opened, gear) =
        crate::search::open_index_and_model(index, model, device, gear_infer::Backend::Exact)?;
    let dir = model.map_or_else(|| opened.meta().model.clone(), std::path::Path::to_path_buf);
    let before = opened.len();
    drop(opened);
    let docs = DocumentReader::open(corpus)?.collect::<Result<Vec<_>, _>>()?;
    let bar = count_bar("add", "shards")?;
    let opts = BuildOptions {
        batch_size,
        windows: !no_windows,
        ..BuildOptions::default()
    };
    let graph = count_bar("hnsw", "vectors")?;
    let added = gear_infer::add_to_index(
        &gear,
        &dir,
        &docs,
        index,
        &opts,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
        &mut |done, total| {
            bar.finish_and_clear();
            graph.set_length(total as u64);
            graph.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    graph.finish_and_clear();
    eprintln!(
        "added {added} documents to {} ({before} → {})",
        index.display(),
        before + added
    );
    Ok(())
}

/// `locate`, `generate` or `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairMode {
    /// Sentences only.
    Locate,
    /// Generated text only.
    Generate,
    /// Everything.
    Explain,
}

pub fn pair(args: &PairArgs, mode: PairMode) -> Result<()> {
    if args.query.trim().is_empty() {
        bail!("the query is empty");
    }
    let device = parse_device(&args.model.device)?;
    let (model, _) = load_model(&args.model.source()?, device)?;
    let doc = args.doc.load()?;
    let locate = LocateOptions {
        aggregation: args.aggregation.into(),
        top_tokens: 10,
        layer: args.layer,
    };
    let search = if args.beams > 1 {
        Search::Beam {
            width: args.beams,
            length_penalty: 1.0,
        }
    } else {
        Search::Greedy
    };
    let generation = GenerationOptions {
        max_len: model.config().max_target_len,
        search,
        use_cache: true,
    };
    let e = explain(
        &model,
        &args.query,
        &doc,
        &locate,
        (mode != PairMode::Locate).then_some(&generation),
    )?;
    if let Some(path) = &args.html {
        std::fs::write(path, render_html(&e, args.k))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&e)?)?;
        return Ok(());
    }
    match mode {
        PairMode::Locate => {
            for s in e.sentences.iter().take(args.k) {
                outln!("{:.4}  [{}] {}", s.score, s.index, s.text)?;
            }
        }
        PairMode::Generate => outln!("{}", e.generated.unwrap_or_default())?,
        PairMode::Explain => {
            let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
            out!("{}", render_terminal(&e, color, args.k))?;
        }
    }
    Ok(())
}

/// Options of `gear eval beir`.
#[derive(clap::Args, Debug)]
pub struct BeirArgs {
    /// A BEIR dataset folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`).
    #[arg(long)]
    data: PathBuf,
    /// The qrels split.
    #[arg(long, default_value = "test")]
    split: String,
    #[command(flatten)]
    model: ModelChoice,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    batch_size: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn eval_beir(args: &BeirArgs) -> Result<()> {
    let data = gear_data::read_beir(&args.data, &args.split)?;
    let device = parse_device(&args.model.device)?;
    let (model, _) = load_model(&args.model.source()?, device)?;
    let bar = crate::spinner("beir".into());
    let report = gear_infer::eval_beir(Some(&model), &data, args.batch_size, &mut |step| {
        bar.set_message(format!("beir: {step}"));
    })?;
    bar.finish_and_clear();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    outln!(
        "{} judged queries, {} documents ({})",
        report.queries,
        report.documents,
        args.data.display()
    )?;
    outln!(
        "{:>10}  {}",
        "method",
        gear_infer::MEASURES.map(|m| format!("{m:>10}")).join("  ")
    )?;
    for (method, m) in &report.methods {
        let cells: Vec<String> = gear_infer::MEASURES
            .iter()
            .map(|k| format!("{:>10.4}", m[*k]))
            .collect();
        outln!("{method:>10}  {}", cells.join("  "))?;
    }
    Ok(())
}

/// Options of `gear eval squad`.
#[derive(clap::Args, Debug)]
pub struct SquadArgs {
    /// SQuAD-format files (`.json`), or QAR triples files (`.jsonl`, e.g. a held-out split
    /// written by `gear data split`); all their passages form the retrieval corpus.
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Skip the cross-encoder-style local baseline (one joint forward per question–sentence
    /// pair: the slowest method).
    #[arg(long)]
    no_cross_encoder: bool,
    /// A trained cross-encoder reranker (`gear train-reranker`) to rank the same sentences
    /// (method `reranker`).
    #[arg(long)]
    reranker: Option<PathBuf>,
    #[command(flatten)]
    model: ModelChoice,
    /// Evaluate the untrained start of this training config (pretrained encoders, new
    /// cross-attention and decoder initialised as training initialises them) instead of
    /// `--model` / `--pretrained`.
    #[arg(long, conflicts_with_all = ["model", "pretrained"])]
    untrained: Option<PathBuf>,
    /// Local-retrieval layers to sweep: `all` or a comma list (default: the model's).
    #[arg(long)]
    layers: Option<String>,
    /// Questions used for generation metrics.
    #[arg(long, default_value_t = 0)]
    generation_examples: usize,
    /// Write every question's sentence spans and relevant indices (JSON lines) for an
    /// independent cross-check (xtask/scripts/squad_baseline.py).
    #[arg(long)]
    export_sentences: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn eval_squad(args: &SquadArgs) -> Result<()> {
    let device = parse_device(&args.model.device)?;
    let model = match &args.untrained {
        Some(config) => crate::train::untrained_model(config, device)?,
        None => load_model(&args.model.source()?, device)?.0,
    };
    let mut data = gear_infer::EvalSet::default();
    for path in &args.data {
        if path.extension().is_some_and(|e| e == "jsonl") {
            let triples = TripleReader::open(path)?.collect::<Result<Vec<_>, _>>()?;
            data.extend(gear_infer::EvalSet::from_triples(triples));
        } else {
            data.extend(gear_infer::EvalSet::from_squad(gear_data::import_squad(
                path,
            )?));
        }
    }
    if data.triples.is_empty() {
        anyhow::bail!("no questions in {:?}", args.data);
    }
    let n_layers = model.config().encoder.num_hidden_layers as usize;
    let layers = match args.layers.as_deref() {
        None => Vec::new(),
        Some("all") => (1..=n_layers).collect(),
        Some(list) => list
            .split(',')
            .map(|x| {
                x.trim()
                    .parse::<usize>()
                    .with_context(|| format!("--layers: `{x}` is not a layer number"))
            })
            .collect::<Result<Vec<_>>>()?,
    };
    if let Some(path) = &args.export_sentences {
        let mut w = gear_data::JsonlWriter::create(path)?;
        for t in gear_infer::local_targets(&data)? {
            w.write(&t)?;
        }
        w.finish()?;
    }
    let scenario = data.triples[0].scenario;
    let options = gear_infer::EvalOptions {
        layers,
        cross_encoder: !args.no_cross_encoder,
        ..gear_infer::EvalOptions::for_scenario(scenario, args.generation_examples)
    };
    run_evaluation(
        &model,
        &data,
        &options,
        args.reranker.as_deref(),
        device,
        args.json,
    )
}

/// Runs [`gear_infer::evaluate`] (and the trained reranker when given) under a spinner and
/// prints the report: `gear eval squad` and `gear eval triples` alike.
pub fn run_evaluation(
    model: &gear_model::GearModel,
    data: &gear_infer::EvalSet,
    options: &gear_infer::EvalOptions,
    reranker: Option<&std::path::Path>,
    device: tch::Device,
    json: bool,
) -> Result<()> {
    let bar = crate::spinner(format!(
        "eval: {} queries over {} documents",
        data.triples.len(),
        data.corpus.len()
    ));
    let mut report = gear_infer::evaluate(model, data, options)?;
    if let Some(dir) = reranker {
        let reranker = gear_model::CrossEncoder::load(dir, device)
            .with_context(|| format!("loading the reranker in {}", dir.display()))?;
        let (metrics, seconds) = gear_infer::eval_reranker(&reranker, data, 64)?;
        report.methods.insert("reranker".into(), metrics);
        report.local_seconds.insert("reranker".into(), seconds);
    }
    bar.finish_and_clear();
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    outln!(
        "{} queries ({} with no sentence holding a gold start), {} documents",
        report.questions,
        report.unlocatable,
        report.passages
    )?;
    outln!("gear: {}", report.gear_line())?;
    for (method, m) in report.methods.iter().filter(|(k, _)| *k != "gear") {
        let cells: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
        outln!("{method:>13}: {}", cells.join("  "))?;
    }
    for (layer, m) in &report.layers {
        let cells: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
        outln!("  layer {layer:>2}: {}", cells.join("  "))?;
    }
    Ok(())
}
