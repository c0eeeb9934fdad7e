//! `gear index build`, `gear index ann`, `gear index add`: a document index for global retrieval,
//! its HNSW graph, and appending to it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gear_data::DocumentReader;
use gear_infer::{build_index, BuildOptions, BuildOutcome};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{
    count, AnnArg, DeviceArg, GearModelArgs, GraphVectorsArg, InferencePrecision, VectorsArg,
    MAX_BATCH,
};

/// How an HNSW graph is built (defaults: `HnswParams::default()`).
#[derive(clap::Args, Debug, Clone)]
pub struct HnswBuildArgs {
    /// Links per node (HNSW's M; default 32).
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..=1024))]
    hnsw_m: Option<u16>,
    /// Candidate list size while inserting (graph quality vs build time; default 200).
    #[arg(long, value_parser = count(1..=65_536))]
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
            vectors: self.graph_vectors.map_or(default.vectors, Into::into),
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
        model: GearModelArgs,
        /// Documents per forward pass.
        #[arg(long, default_value_t = 32, value_parser = count(1..=MAX_BATCH))]
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
    /// Copy an index into PostgreSQL with pgvector (documents, vectors, the model's
    /// fingerprint) and build pgvector's HNSW index there; `gear search --store URL` then
    /// answers from the database. Resumes an interrupted push without duplicates.
    Push {
        /// Index folder to copy.
        #[arg(long)]
        index: PathBuf,
        /// The database: `postgres://user@host:port/db`.
        #[arg(long)]
        store: String,
        /// Schema to write (created when missing).
        #[arg(long, default_value = "gear")]
        schema: String,
        /// pgvector HNSW links per node (`m`).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=100))]
        hnsw_m: u32,
        /// pgvector HNSW candidate list while building (`ef_construction`; at least 2 × m).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(4..=1000))]
        ef_construction: u32,
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
        #[command(flatten)]
        device: DeviceArg,
        #[command(flatten)]
        precision: InferencePrecision,
        /// Documents per forward pass.
        #[arg(long, default_value_t = 32, value_parser = count(1..=MAX_BATCH))]
        batch_size: usize,
        /// Embed only the beginning of a document longer than the model reads at once.
        #[arg(long)]
        no_windows: bool,
    },
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
                precision: (*vectors).into(),
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
            precision,
            batch_size,
            no_windows,
        } => add(
            index,
            corpus,
            model.as_deref(),
            (device.get(), *precision),
            *batch_size,
            *no_windows,
        ),
        IndexCommand::Ann { index, hnsw } => build_graph(index, hnsw),
        IndexCommand::Push {
            index,
            store,
            schema,
            hnsw_m,
            ef_construction,
        } => push(index, store, schema, *hnsw_m, *ef_construction),
    }
}

/// `gear index push`.
fn push(index: &Path, url: &str, schema: &str, m: u32, ef_construction: u32) -> Result<()> {
    if ef_construction < 2 * m {
        bail!("--ef-construction {ef_construction} must be at least 2 × --hnsw-m ({m}), as pgvector requires");
    }
    let address = gear_store::StoreAddress::new(url, schema)?;
    let opened = gear_infer::DocumentIndex::open(index, tch::Device::Cpu)?;
    let bar = count_bar("push", "documents")?;
    let start = std::time::Instant::now();
    let written = gear_store::push(
        &opened,
        &address,
        gear_store::HnswSettings { m, ef_construction },
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    eprintln!(
        "pushed {written} documents of {} ({} in all) into {} schema {schema}, HNSW index built, in {:.1} s",
        index.display(),
        opened.len(),
        address.target(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `gear index build` without the graph; whether the index is complete.
fn build(corpus: &Path, out: &Path, model: &GearModelArgs, opts: &BuildOptions) -> Result<bool> {
    let (gear, dir) = model.load()?;
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
fn build_graph(index: &Path, hnsw: &HnswBuildArgs) -> Result<()> {
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
    index: &Path,
    corpus: &Path,
    model: Option<&Path>,
    (device, precision): (tch::Device, InferencePrecision),
    batch_size: usize,
    no_windows: bool,
) -> Result<()> {
    let retriever =
        super::search::open_retriever(index, model, device, precision, gear_infer::Backend::Exact)?;
    let opened = retriever.index()?;
    let dir = model.map_or_else(|| opened.meta().model.clone(), Path::to_path_buf);
    let before = opened.len();
    // The index's files are mapped while it is open: adding rewrites its record.
    let (gear, _) = retriever.into_parts();
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
