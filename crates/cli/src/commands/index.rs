//! `gear index build`, `gear index ann`, `gear index add`, `gear index push`, `gear index
//! finish`: a document index for global retrieval (a folder, or a PostgreSQL store), its HNSW
//! graph, and appending to it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gear_data::DocumentReader;
use gear_infer::{build_index, BuildOptions, BuildOutcome};
use indicatif::{ProgressBar, ProgressStyle};

use super::index_store;
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

/// The store `gear index push` and `gear index finish` write.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// The database: `postgres://user@host:port/db`.
    #[arg(long)]
    store: String,
    /// Schema in it (created when missing).
    #[arg(long, default_value = "gear")]
    schema: String,
}

/// pgvector's HNSW index settings (`gear index push` and `gear index finish`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PgHnswArgs {
    /// pgvector HNSW links per node (`m`).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=100))]
    hnsw_m: u32,
    /// pgvector HNSW candidate list while building (`ef_construction`; at least 2 × m).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(4..=1000))]
    ef_construction: u32,
}

impl PgHnswArgs {
    fn settings(self) -> Result<gear_store::HnswSettings> {
        index_store::pgvector_hnsw(Some(self.hnsw_m), Some(self.ef_construction))
    }
}

/// `gear index` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum IndexCommand {
    /// Embed a corpus (`{id, title, text}` lines) with the document encoder into an index folder
    /// (`--out`), or straight into PostgreSQL with pgvector (`--store`, whole or `--shard I/N`).
    Build {
        /// Corpus file.
        #[arg(long)]
        corpus: PathBuf,
        /// Index folder to create (resumes from `<out>.partial` when present).
        #[arg(long, required_unless_present = "store", conflicts_with = "store")]
        out: Option<PathBuf>,
        /// Embed into this database instead (`postgres://user@host:port/db`): documents and
        /// vectors in transactions keyed by document, so a rerun writes only what is missing,
        /// and a corpus that begins with the store's adds the rest.
        #[arg(long)]
        store: Option<String>,
        /// Schema to write with `--store` (created when missing; default `gear`).
        #[arg(long)]
        schema: Option<String>,
        /// With `--store`: embed only shard I of N (a contiguous range of the corpus) and leave
        /// the store unfinished; `gear index finish` completes it once every shard is in.
        #[arg(long, value_parser = gear_store::Shard::parse)]
        shard: Option<gear_store::Shard>,
        /// With `--store`: documents per transaction (what a killed run loses at most; default
        /// 256).
        #[arg(long, value_parser = count(1..=1_000_000))]
        commit_every: Option<usize>,
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
        #[command(flatten)]
        target: StoreArgs,
        #[command(flatten)]
        hnsw: PgHnswArgs,
    },
    /// Complete a store written by `gear index build --store --shard I/N`: check that every
    /// document is in, build pgvector's HNSW index, mark it servable.
    Finish {
        #[command(flatten)]
        target: StoreArgs,
        #[command(flatten)]
        hnsw: PgHnswArgs,
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
            store,
            schema,
            shard,
            commit_every,
            model,
            batch_size,
            no_windows,
            vectors,
            ann,
            hnsw,
        } => {
            let opts = BuildOptions {
                batch_size: *batch_size,
                windows: !no_windows,
                precision: (*vectors).into(),
                ..BuildOptions::default()
            };
            if let Some(url) = store {
                let target = store_target(
                    url,
                    schema.as_deref().unwrap_or("gear"),
                    (*shard, commit_every.unwrap_or(256)),
                    hnsw,
                    (*ann, *vectors),
                )?;
                return index_store::build(corpus, model, opts, &target);
            }
            if schema.is_some() || shard.is_some() || commit_every.is_some() {
                bail!("--schema, --shard and --commit-every apply with --store only");
            }
            if ann.is_none() && hnsw.given() {
                bail!("--hnsw-m, --ef-construction and --graph-vectors apply with --ann hnsw or --store only");
            }
            let out = out.as_deref().context("give --out DIR or --store URL")?;
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
            target,
            hnsw,
        } => push(index, &target.store, &target.schema, hnsw.settings()?),
        IndexCommand::Finish { target, hnsw } => {
            index_store::finish(&target.store, &target.schema, hnsw.settings()?)
        }
    }
}

/// Where `gear index build --store` writes, from its options; what only an index folder has
/// (`--ann`, `--graph-vectors`, `--vectors f16`) is refused, and so are HNSW settings with
/// `--shard` (`gear index finish` builds the index then).
fn store_target<'a>(
    url: &'a str,
    schema: &'a str,
    (shard, commit_every): (Option<gear_store::Shard>, usize),
    hnsw: &HnswBuildArgs,
    (ann, vectors): (Option<AnnArg>, VectorsArg),
) -> Result<index_store::StoreTarget<'a>> {
    if ann.is_some() || hnsw.graph_vectors.is_some() {
        bail!("--ann and --graph-vectors build a graph in an index folder; a store gets pgvector's HNSW index (--hnsw-m, --ef-construction)");
    }
    if vectors == VectorsArg::F16 {
        bail!("--vectors f16: pgvector 0.6 stores float32 vectors only (its halfvec type came in 0.7)");
    }
    if shard.is_some() && (hnsw.hnsw_m.is_some() || hnsw.ef_construction.is_some()) {
        bail!("with --shard the HNSW index is built by `gear index finish`: give --hnsw-m and --ef-construction there");
    }
    let ef = hnsw
        .ef_construction
        .map(|e| u32::try_from(e).unwrap_or(u32::MAX));
    Ok(index_store::StoreTarget {
        url,
        schema,
        shard,
        commit_every,
        hnsw: index_store::pgvector_hnsw(hnsw.hnsw_m.map(u32::from), ef)?,
    })
}

/// `gear index push`.
fn push(index: &Path, url: &str, schema: &str, hnsw: gear_store::HnswSettings) -> Result<()> {
    let address = gear_store::StoreAddress::new(url, schema)?;
    let opened = gear_infer::DocumentIndex::open(index, tch::Device::Cpu)?;
    let bar = count_bar("push", "documents")?;
    let start = std::time::Instant::now();
    let written = gear_store::push(&opened, &address, hnsw, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
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
pub(crate) fn count_bar(label: &str, unit: &str) -> Result<ProgressBar> {
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
