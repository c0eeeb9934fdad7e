//! `gear search`: the top-k documents of an index for one query or a file of queries, with
//! each result's best sentences on request.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gear_infer::{Backend, Retriever, RetrieverOptions};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{count, BackendArgs, DeviceArg, InferencePrecision};

/// Options of `gear search`.
#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Results.
    #[arg(long, short, default_value_t = 10, value_parser = count(1..=100_000))]
    k: usize,
    /// Override the model recorded in the index (must be the same files).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    precision: InferencePrecision,
    /// For each result, its K best sentences by cross-attention (local retrieval), with
    /// character spans (0: none).
    #[arg(long, default_value_t = 0, value_parser = count(0..=1000))]
    locate: usize,
    /// A file of queries, one per line (blank lines skipped), instead of QUERY; JSON lines carry
    /// a `query` field.
    #[arg(long, conflicts_with = "query")]
    queries: Option<PathBuf>,
    /// The query.
    #[arg(required_unless_present = "queries")]
    query: Option<String>,
}

pub fn search(args: &SearchArgs) -> Result<()> {
    let queries: Vec<String> = match (&args.query, &args.queries) {
        (Some(q), _) => vec![q.clone()],
        (None, Some(path)) => read_queries(path)?,
        (None, None) => bail!("pass a QUERY or --queries FILE"),
    };
    if let Some(i) = queries.iter().position(|q| gear_data::is_blank(q)) {
        bail!(
            "the query is empty or holds only invisible characters{}",
            if args.queries.is_some() {
                format!(" (query {})", i + 1)
            } else {
                String::new()
            }
        );
    }
    let retriever = args.source.open(
        args.model.as_deref(),
        args.device.get(),
        args.precision,
        &args.backend,
    )?;
    let many = args.queries.is_some();
    let bar = if many {
        let bar = ProgressBar::new(queries.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} search [{bar:30}] {pos}/{len} queries ({eta})")
                .context("template")?
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    // Blocks of queries: one query-encoder forward each, and their hits located together.
    let block_size = if args.locate > 0 { 32 } else { 256 };
    for block in queries.chunks(block_size) {
        for answer in retriever.search(block, args.k, args.locate, None)? {
            if many && !args.json {
                outln!("query: {}", answer.query)?;
            }
            for hit in &answer.results {
                if args.json {
                    let mut line = serde_json::to_value(hit)?;
                    if many {
                        line["query"] = answer.query.as_str().into();
                    }
                    outln!("{line}")?;
                } else {
                    let preview: String = hit.text.chars().take(100).collect();
                    outln!(
                        "{:>3}  {:.4}  {}  {}  {preview}…",
                        hit.rank,
                        hit.score,
                        hit.id,
                        hit.title
                    )?;
                    for s in hit.sentences.iter().flatten() {
                        outln!(
                            "       {:.4}  [{}] chars {}..{}  {}",
                            s.score,
                            s.index,
                            s.start,
                            s.end,
                            s.text
                        )?;
                    }
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Opens the index and the model it was built with (or `model`, which must be the same files),
/// the model running in `precision`.
pub(crate) fn open_retriever(
    index: &std::path::Path,
    model: Option<&std::path::Path>,
    device: tch::Device,
    precision: InferencePrecision,
    backend: Backend,
) -> Result<Retriever> {
    let options = RetrieverOptions {
        model: model.map(std::path::Path::to_path_buf),
        device,
        precision: precision.checked(device)?,
        backend,
    };
    Ok(Retriever::open(index, &options)?)
}

/// Where the documents searched are: an index folder, or an index pushed into PostgreSQL.
#[derive(clap::Args, Debug)]
pub struct SourceArgs {
    /// Index folder.
    #[arg(long, required_unless_present = "store")]
    index: Option<PathBuf>,
    /// An index pushed into PostgreSQL (`gear index push`) instead of a folder:
    /// `postgres://user@host:port/db`. `--backend hnsw --ef-search N` uses pgvector's HNSW
    /// index; the default scans every vector (the folder's exact answer).
    #[arg(long, conflicts_with = "index")]
    store: Option<String>,
    /// The schema the index was pushed into.
    #[arg(long, default_value = "gear", requires = "store")]
    schema: String,
}

impl SourceArgs {
    /// The folder or the store, for messages.
    pub fn describe(&self) -> String {
        match (&self.index, &self.store) {
            (Some(index), _) => index.display().to_string(),
            (None, Some(url)) => gear_store::StoreAddress::new(url, &self.schema)
                .map(|a| a.describe())
                .unwrap_or_else(|_| "the store".into()),
            (None, None) => String::new(),
        }
    }

    /// Opens the documents with their model (or `model`, which must be the same files),
    /// running in `precision`, searched as `backend` says.
    pub fn open(
        &self,
        model: Option<&std::path::Path>,
        device: tch::Device,
        precision: InferencePrecision,
        backend: &BackendArgs,
    ) -> Result<Retriever> {
        match (&self.index, &self.store) {
            (Some(index), _) => open_retriever(index, model, device, precision, backend.backend()?),
            (None, Some(url)) => {
                if backend.reranks() {
                    bail!("--rerank applies to an index folder: pgvector scores its candidates itself");
                }
                let search = match backend.backend()? {
                    Backend::Exact => gear_store::StoreSearch::Exact,
                    Backend::Hnsw(c) => gear_store::StoreSearch::Hnsw {
                        ef_search: u32::try_from(c.ef_search).unwrap_or(u32::MAX),
                    },
                };
                open_store(url, &self.schema, model, (device, precision), search)
            }
            (None, None) => bail!("pass --index DIR or --store URL"),
        }
    }
}

/// Opens the index pushed into PostgreSQL at `url` (schema `schema`) with its model (or
/// `model`, which must be the same files).
fn open_store(
    url: &str,
    schema: &str,
    model: Option<&std::path::Path>,
    (device, precision): (tch::Device, InferencePrecision),
    search: gear_store::StoreSearch,
) -> Result<Retriever> {
    let precision = precision.checked(device)?;
    let address = gear_store::StoreAddress::new(url, schema)?;
    Ok(gear_store::open_retriever(
        &address, model, device, precision, search,
    )?)
}

/// One query per line; blank lines skipped; invalid UTF-8 names its line.
fn read_queries(path: &std::path::Path) -> Result<Vec<String>> {
    let text = gear_data::read_text(path)?;
    let queries: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if queries.is_empty() {
        bail!("{}: holds no queries", path.display());
    }
    Ok(queries)
}
