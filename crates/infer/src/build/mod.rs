//! Building the document index (see [`crate::DocumentIndex`] for the layout): documents embedded
//! with `E_d` in resumable shards under `<out>.partial/` — a long document as one vector per
//! window of whole sentences — then assembled in a temporary folder beside `<out>` and renamed
//! into place (`write.rs`), so the index folder appears only when complete. A resume must be the same build: the partial folder
//! records the model's fingerprint, a SHA-256 of the corpus (every document's id, title and text,
//! in order), the shard size and the windows setting, and a rerun with anything else is refused,
//! naming what changed. One writer at a time: `<out>.lock` is held for the whole build.

mod add;
mod embed;
mod stamp;
mod write;

use std::path::{Path, PathBuf};

use gear_data::Document;
use gear_model::{read_tensors, save_tensors, GearModel};
use tch::Tensor;

use crate::{Error, Result};

pub use add::add_to_index;
pub use stamp::{model_fingerprint, FileStamp, Verdict};
pub use write::index_vectors;

pub(crate) use stamp::model_stamps;

use embed::embed_shard;
pub use embed::{embed_for_index, EmbeddedRows};
use write::write_index;

/// Options of [`build_index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Documents per forward pass (grouped by length inside a shard).
    pub batch_size: usize,
    /// Documents per resumable shard.
    pub shard_size: usize,
    /// Stop after finishing this many shards in this call (the rest is left for a resume).
    pub max_shards: Option<usize>,
    /// Embed a document longer than the model reads at once as several vectors, one per window
    /// of whole sentences (consecutive windows sharing a sentence); its search score is the
    /// best of them. Off: only its beginning is embedded.
    pub windows: bool,
    /// How the vectors are stored.
    pub precision: VectorPrecision,
}

/// How an index stores its vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorPrecision {
    /// float32 (4 bytes a value).
    #[default]
    F32,
    /// float16 (2 bytes a value): half the file and memory; search converts blocks of rows to
    /// float32 as it scores them.
    F16,
}

impl VectorPrecision {
    pub(crate) fn kind(self) -> tch::Kind {
        match self {
            Self::F32 => tch::Kind::Float,
            Self::F16 => tch::Kind::Half,
        }
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            shard_size: 2048,
            max_shards: None,
            windows: true,
            precision: VectorPrecision::F32,
        }
    }
}

/// How a build call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildOutcome {
    /// The index folder is written.
    Complete,
    /// Stopped early; `done` of `total` shards are saved for a resume.
    Partial {
        /// Shards finished so far.
        done: usize,
        /// Shards in all.
        total: usize,
    },
}

pub(crate) fn partial_dir(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// Embeds `corpus` with `model`'s document encoder into the index folder `out`.
pub fn build_index(
    model: &GearModel,
    model_dir: &Path,
    corpus: &[Document],
    out: &Path,
    options: &BuildOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BuildOutcome> {
    if corpus.is_empty() {
        return Err(Error::Input("the corpus holds no documents".into()));
    }
    check_corpus(corpus)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let _lock = gear_data::OutputLock::acquire(out)?;
    // Checked under the lock, so a build that finished just before this one counts too.
    if out.exists() {
        return Err(Error::Index {
            path: out.to_owned(),
            message: "exists already; remove it to rebuild".into(),
        });
    }
    let fingerprint = model_fingerprint(model_dir)?;
    let partial = partial_dir(out);
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    let shard_size = options.shard_size.max(1);
    let total = corpus.len().div_ceil(shard_size);
    let plan = serde_json::json!({
        "fingerprint": fingerprint,
        "corpus": corpus_fingerprint(corpus),
        "documents": corpus.len(),
        "shard_size": shard_size,
        "windows": options.windows,
        "precision": options.precision,
    });
    check_plan(&partial, &plan)?;
    if let Some(partial_outcome) =
        embed_shards(model, corpus, &partial, shard_size, options, progress)?
    {
        return Ok(partial_outcome);
    }
    let shard_path = |s: usize| partial.join(format!("shard-{s:06}.safetensors"));

    // All shards present: assemble the index in a temporary folder, then move it into place.
    let shards = (0..total)
        .map(|s| read_shard(&shard_path(s)))
        .collect::<Result<Vec<_>>>()?;
    let embeddings = Tensor::cat(&shards.iter().map(|(e, _)| e).collect::<Vec<_>>(), 0);
    let owners: Vec<i64> = shards.iter().flat_map(|(_, o)| o.iter().copied()).collect();
    write_index(
        out,
        embeddings,
        owners,
        corpus,
        model_dir,
        fingerprint,
        options.precision,
    )?;
    std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    Ok(BuildOutcome::Complete)
}

/// Records the build's plan in `partial/build.json`, or — resuming — refuses a partial build
/// made with other inputs, naming what changed.
fn check_plan(partial: &Path, plan: &serde_json::Value) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let plan_path = partial.join("build.json");
    if plan_path.exists() {
        let old: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&plan_path).map_err(io(&plan_path))?)
                .map_err(|e| Error::Index {
                    path: partial.to_owned(),
                    message: e.to_string(),
                })?;
        if &old != plan {
            let differs: Vec<&str> = [
                ("fingerprint", "model"),
                ("corpus", "corpus"),
                ("documents", "document count"),
                ("shard_size", "shard size"),
                ("windows", "windows setting"),
                ("precision", "vector precision"),
            ]
            .into_iter()
            .filter(|(key, _)| old.get(key) != plan.get(key))
            .map(|(_, what)| what)
            .collect();
            return Err(Error::Index {
                path: partial.to_owned(),
                message: format!(
                    "a partial build with another {} is in the way: resume with the same \
                     inputs, or remove it to start over",
                    if differs.is_empty() {
                        "format".to_owned()
                    } else {
                        differs.join(", ")
                    }
                ),
            });
        }
    } else {
        std::fs::write(&plan_path, plan.to_string()).map_err(io(&plan_path))?;
    }
    Ok(())
}

/// Embeds every shard of `corpus` not yet saved in `partial` (a saved shard that does not cover
/// its documents is embedded again). `Some(Partial)` when `options.max_shards` stopped it.
fn embed_shards(
    model: &GearModel,
    corpus: &[Document],
    partial: &Path,
    shard_size: usize,
    options: &BuildOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<BuildOutcome>> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let total = corpus.len().div_ceil(shard_size);
    let shard_path = |s: usize| partial.join(format!("shard-{s:06}.safetensors"));
    let mut built = 0usize;
    let (mut truncated, mut embedded) = (0usize, 0usize);
    let max_len = model.config().max_document_len;
    for s in 0..total {
        let path = shard_path(s);
        let first = s * shard_size;
        let docs = &corpus[first..((s + 1) * shard_size).min(corpus.len())];
        if path.exists() {
            match read_shard(&path) {
                Ok((_, owners)) if covers(&owners, first, docs.len()) => {
                    progress(s + 1, total);
                    continue;
                }
                Ok(_) => tracing::warn!(
                    "{}: its rows do not cover its documents; embedding the shard again",
                    path.display()
                ),
                Err(e) => tracing::warn!("{e}; embedding the shard again"),
            }
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        if options.max_shards.is_some_and(|m| built >= m) {
            let done = (0..total).filter(|&i| shard_path(i).exists()).count();
            warn_truncated(truncated, embedded, max_len);
            return Ok(Some(BuildOutcome::Partial { done, total }));
        }
        let (vectors, owners, cut) = embed_shard(model, docs, first, options, &path)?;
        truncated += cut;
        embedded += docs.len();
        save_tensors(
            vec![
                ("embeddings".into(), vectors),
                ("document".into(), Tensor::from_slice(&owners)),
            ],
            &path,
        )?;
        built += 1;
        progress(s + 1, total);
    }
    warn_truncated(truncated, embedded, max_len);

    Ok(None)
}

pub(super) fn warn_truncated(truncated: usize, embedded: usize, max_len: usize) {
    if truncated > 0 {
        tracing::warn!(
            "{truncated} of the {embedded} documents embedded in this run are not indexed whole: \
             they hold text longer than the model's {max_len} tokens that no window takes in \
             (a single overlong sentence, or windows turned off); only its beginning is indexed"
        );
    }
}

/// The embeddings of one finished shard and the document index of each row.
fn read_shard(path: &Path) -> Result<(Tensor, Vec<i64>)> {
    let tensors = read_tensors(path)?;
    let find = |name: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| Error::Index {
                path: path.to_owned(),
                message: format!("no `{name}` tensor in the shard"),
            })
    };
    let embeddings = find("embeddings")?;
    let owners = Vec::<i64>::try_from(find("document")?.to_kind(tch::Kind::Int64))?;
    if embeddings.size().first() != Some(&(owners.len() as i64)) {
        return Err(Error::Index {
            path: path.to_owned(),
            message: "embeddings and their document map differ in length".into(),
        });
    }
    Ok((embeddings, owners))
}

/// Whether `owners` maps rows to exactly documents `first..first + n`, each at least once, in
/// order.
pub(crate) fn covers(owners: &[i64], first: usize, n: usize) -> bool {
    let (first, last) = (first as i64, (first + n) as i64 - 1);
    n > 0
        && owners.first() == Some(&first)
        && owners.last() == Some(&last)
        && owners.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1)
}

/// Ids unique and texts non-empty (what [`gear_data::DocumentReader`] checks per file, for
/// callers that build a corpus in memory).
pub fn check_corpus(corpus: &[Document]) -> Result<()> {
    let mut seen = std::collections::HashMap::with_capacity(corpus.len());
    for (i, d) in corpus.iter().enumerate() {
        if d.id.trim().is_empty() || d.text.trim().is_empty() {
            return Err(Error::Input(format!(
                "corpus document {} (`{}`): empty {}",
                i + 1,
                d.id,
                if d.id.trim().is_empty() { "id" } else { "text" }
            )));
        }
        if let Some(first) = seen.insert(d.id.as_str(), i) {
            return Err(Error::Input(format!(
                "corpus documents {} and {} share the id `{}`; ids must be unique",
                first + 1,
                i + 1,
                d.id
            )));
        }
    }
    Ok(())
}

/// What a resume must match: every document's id, title and text, in order (also what a
/// database store records of its corpus).
pub fn corpus_fingerprint<D: std::borrow::Borrow<Document>>(
    corpus: impl IntoIterator<Item = D>,
) -> String {
    corpus
        .into_iter()
        .fold(gear_data::Fingerprint::new(), |f, d| {
            let d = d.borrow();
            f.value("id", &d.id)
                .value("title", &d.title)
                .value("text", &d.text)
        })
        .finish()
}
