//! Building the document index (see [`crate::DocumentIndex`] for the layout): documents embedded
//! with `E_d` in resumable shards under `<out>.partial/` — a long document as one vector per
//! window of whole sentences — then assembled in `<out>.tmp/` and renamed into place, so the
//! index folder appears only when complete. A resume must be the same build: the partial folder
//! records the model's fingerprint, a SHA-256 of the corpus (every document's id, title and text,
//! in order), the shard size and the windows setting, and a rerun with anything else is refused,
//! naming what changed. One writer at a time: `<out>.lock` is held for the whole build.

use std::path::{Path, PathBuf};

use gear_data::{Document, JsonlWriter};
use gear_model::{read_tensors, save_tensors, GearModel};
use tch::Tensor;

use crate::store::{
    AddedPart, DocumentIndex, IndexMeta, DOCUMENTS, EMBEDDINGS, INDEX_FORMAT, META,
};
use crate::{Error, Result};

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

/// The files of a model folder its fingerprint covers (those present).
const MODEL_FILES: [&str; 4] = [
    "gear.toml",
    "config.json",
    "tokenizer.json",
    "model.safetensors",
];

/// A file as an index records it, to tell cheaply whether it changed: its name, size and
/// modification time (nanoseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    /// File name inside its folder.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: u64,
}

impl FileStamp {
    /// The stamp of `dir/name` now.
    pub fn of(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let modified = meta
            .modified()
            .map_err(|source| Error::Io { path, source })?;
        let modified_ns = modified
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Ok(Self {
            name: name.to_owned(),
            bytes: meta.len(),
            modified_ns,
        })
    }
}

/// The stamps of a model folder's fingerprinted files.
pub(crate) fn model_stamps(dir: &Path) -> Result<Vec<FileStamp>> {
    MODEL_FILES
        .iter()
        .filter(|name| dir.join(name).is_file())
        .map(|name| FileStamp::of(dir, name))
        .collect()
}

/// A model folder's fingerprint: SHA-256 over the names and contents of its config, tokenizer
/// and weights files. Computed when an index is built; an opened index compares the files'
/// stamps first and hashes again only when one changed.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    let mut fingerprint = gear_data::Fingerprint::new();
    let mut any = false;
    for name in MODEL_FILES {
        let path = dir.join(name);
        if path.is_file() {
            any = true;
            fingerprint = fingerprint.value("name", name).file(&path)?;
        }
    }
    if !any {
        return Err(Error::Input(format!(
            "{}: no model files to fingerprint",
            dir.display()
        )));
    }
    Ok(fingerprint.finish())
}

pub(crate) fn partial_dir(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// An index folder `out` over vectors embedded elsewhere: `vectors [rows, dim]` (unit rows,
/// float32), `owners[r]` the position in `corpus` of row `r` (every document its rows, in
/// order; `None`: one row per document), recorded as embedded by the model in `model_dir`
/// (whose query encoder must match them for `search`). Written to a temporary folder and
/// renamed into place, under the index lock.
pub fn index_vectors(
    vectors: &Tensor,
    owners: Option<Vec<i64>>,
    corpus: &[Document],
    model_dir: &Path,
    out: &Path,
    precision: VectorPrecision,
) -> Result<()> {
    if corpus.is_empty() {
        return Err(Error::Input("the corpus holds no documents".into()));
    }
    check_corpus(corpus)?;
    let rows = vectors.size().first().copied().unwrap_or(0);
    let owners = owners.unwrap_or_else(|| (0..corpus.len() as i64).collect());
    if owners.len() as i64 != rows || !covers(&owners, 0, corpus.len()) {
        return Err(Error::Input(format!(
            "{rows} vectors and a row map of {} entries do not give each of the {} documents \
             its rows, in order",
            owners.len(),
            corpus.len()
        )));
    }
    let vectors = vectors
        .to_kind(tch::Kind::Float)
        .to_device(tch::Device::Cpu);
    gear_model::check_finite(&vectors, out, "embeddings")
        .map_err(|e| Error::Input(format!("unusable vectors: {e}")))?;
    let _lock = gear_data::OutputLock::acquire(out)?;
    if out.exists() {
        return Err(Error::Index {
            path: out.to_owned(),
            message: "exists already; remove it to rebuild".into(),
        });
    }
    write_index(
        out,
        vectors,
        owners,
        corpus,
        model_dir,
        model_fingerprint(model_dir)?,
        precision,
    )
}

/// Writes the three files into `<out>.tmp` and renames it to `out` (the caller holds the lock).
fn write_index(
    out: &Path,
    embeddings: Tensor,
    owners: Vec<i64>,
    corpus: &[Document],
    model_dir: &Path,
    fingerprint: String,
    precision: VectorPrecision,
) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let rows = owners.len();
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let dim = embeddings.size()[1] as usize;
    save_tensors(
        vec![
            ("embeddings".into(), embeddings.to_kind(precision.kind())),
            ("document".into(), Tensor::from_slice(&owners)),
        ],
        tmp.join(EMBEDDINGS),
    )?;
    // (Inside the build's private temporary folder, under the index lock.)
    let mut w = JsonlWriter::create_unlocked(tmp.join(DOCUMENTS))?;
    for d in corpus {
        w.write(d)?;
    }
    w.finish()?;
    let stamps = model_stamps(model_dir)?;
    let meta = IndexMeta {
        format: INDEX_FORMAT,
        backend: "exact".into(),
        model: std::fs::canonicalize(model_dir).unwrap_or_else(|_| model_dir.to_owned()),
        fingerprint,
        dim,
        documents: corpus.len(),
        rows: Some(rows),
        documents_sha256: Some(
            gear_data::Fingerprint::new()
                .file(&tmp.join(DOCUMENTS))?
                .finish(),
        ),
        model_files: stamps,
        files: vec![
            FileStamp::of(&tmp, DOCUMENTS)?,
            FileStamp::of(&tmp, EMBEDDINGS)?,
        ],
        added: Vec::new(),
        precision,
        ann: None,
    };
    let json = serde_json::to_string_pretty(&meta).map_err(|e| Error::Input(e.to_string()))?;
    std::fs::write(tmp.join(META), json).map_err(io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    Ok(())
}

/// Appends `corpus` to the index in `dir`: embeds only the new documents (with `model`, which
/// must be the index's model) into a new part, `documents-K.jsonl` and
/// `embeddings-K.safetensors`, then commits by renaming a new `index.json` into place — the one
/// step that makes the part visible. Until then the index is the previous one, whatever happens
/// to the process; the files of an add that did not commit are ignored and overwritten by the
/// next. Ids already in the index (or twice in `corpus`) are refused. An index with an HNSW
/// graph gets the new rows inserted into it too, in the same commit (`graph_progress(rows_done,
/// rows)`). Returns the documents added.
pub fn add_to_index(
    model: &GearModel,
    model_dir: &Path,
    corpus: &[Document],
    dir: &Path,
    options: &BuildOptions,
    progress: &mut dyn FnMut(usize, usize),
    graph_progress: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    if corpus.is_empty() {
        return Err(Error::Input("the corpus to add holds no documents".into()));
    }
    check_corpus(corpus)?;
    let _lock = gear_data::OutputLock::acquire(dir)?;
    let index = DocumentIndex::open(dir, tch::Device::Cpu)?;
    index.check_model(model_dir)?;
    for (i, d) in corpus.iter().enumerate() {
        match index.document(&d.id) {
            Ok(_) => {
                return Err(Error::Input(format!(
                    "document {} of the corpus to add (`{}`) is already in {}; ids must be \
                     unique",
                    i + 1,
                    d.id,
                    dir.display()
                )))
            }
            Err(Error::UnknownDocument { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut meta = index.meta().clone();
    let shard_size = options.shard_size.max(1);
    let total = corpus.len().div_ceil(shard_size);
    let (mut vectors, mut owners, mut truncated) = (Vec::new(), Vec::new(), 0);
    for (s, docs) in corpus.chunks(shard_size).enumerate() {
        let (v, rows, cut) = embed_shard(model, docs, s * shard_size, options, dir)?;
        truncated += cut;
        vectors.push(v);
        owners.extend(rows);
        progress(s + 1, total);
    }
    warn_truncated(truncated, corpus.len(), model.config().max_document_len);
    let vectors = Tensor::cat(&vectors, 0);
    let k = meta.added.len() + 1;
    let part = AddedPart {
        documents: format!("documents-{k}.jsonl"),
        embeddings: format!("embeddings-{k}.safetensors"),
        documents_sha256: String::new(),
    };
    let rows = owners.len();
    // Both files are written whole (temporary file, rename) before index.json names them.
    save_tensors(
        vec![
            ("embeddings".into(), vectors.to_kind(meta.precision.kind())),
            ("document".into(), Tensor::from_slice(&owners)),
        ],
        dir.join(&part.embeddings),
    )?;
    let _ = std::fs::remove_file(dir.join(&part.documents));
    let mut w = JsonlWriter::create_unlocked(dir.join(&part.documents))?;
    for d in corpus {
        w.write(d)?;
    }
    w.finish()?;
    let part = AddedPart {
        documents_sha256: gear_data::Fingerprint::new()
            .file(&dir.join(&part.documents))?
            .finish(),
        ..part
    };
    meta.files.push(FileStamp::of(dir, &part.documents)?);
    meta.files.push(FileStamp::of(dir, &part.embeddings)?);
    meta.documents += corpus.len();
    meta.rows = Some(meta.rows.unwrap_or(meta.documents - corpus.len()) + rows);
    meta.added.push(part);
    // The graph, when the index has one, gains the new rows in the same commit (written under
    // its next generation's name; the one the previous index.json names stays until then).
    let replaced = match meta.ann.clone() {
        None => None,
        Some(ann) => {
            let stored = vectors.to_kind(meta.precision.kind());
            let (graph, next) = crate::ann_build::extended_graph(
                dir,
                &ann,
                &index.vector_parts(),
                &[&stored],
                graph_progress,
            )?;
            crate::ann_build::stage_graph(dir, &mut meta, &graph, next)?
        }
    };
    drop(index);
    // The commit.
    crate::store::commit_meta(dir, &meta)?;
    if let Some(old) = replaced {
        let _ = std::fs::remove_file(dir.join(old));
    }
    Ok(corpus.len())
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

fn warn_truncated(truncated: usize, embedded: usize, max_len: usize) {
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

/// The texts to embed for `docs` (whose first has index `first` in the corpus), the document
/// index of each, and how many documents still hold text no row takes in.
/// `docs` (corpus positions from `first`) embedded by `model`'s document encoder, one row per
/// document or per window: the finite vectors, each row's document position, and how many
/// documents no window takes in whole. `path` names the output in errors.
fn embed_shard(
    model: &GearModel,
    docs: &[Document],
    first: usize,
    options: &BuildOptions,
    path: &Path,
) -> Result<(Tensor, Vec<i64>, usize)> {
    let (texts, owners, cut) = rows_of(model, docs, first, options.windows)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = gear_model::embed_length_sorted(&refs, options.batch_size.max(1), |b| {
        model.embed_documents(b)
    })?;
    gear_model::check_finite(&vectors, path, "embeddings")
        .map_err(|e| Error::Input(format!("the model produced unusable embeddings: {e}")))?;
    Ok((vectors, owners, cut))
}

fn rows_of(
    model: &GearModel,
    docs: &[Document],
    first: usize,
    windows: bool,
) -> Result<(Vec<String>, Vec<i64>, usize)> {
    let max_len = model.config().max_document_len;
    let (mut texts, mut owners, mut cut) = (Vec::new(), Vec::new(), 0usize);
    for (i, d) in docs.iter().enumerate() {
        let owner = (first + i) as i64;
        let fits = model.tokenizer().count_tokens(&d.text)? <= max_len;
        let sentences = if fits || !windows {
            Vec::new()
        } else {
            gear_data::split_sentences(&d.text)
        };
        if sentences.len() < 2 {
            cut += usize::from(!fits);
            texts.push(d.text.clone());
            owners.push(owner);
            continue;
        }
        let w = crate::explain::model_windows(model, &d.text, &sentences)?;
        cut += usize::from(w.cut_sentences > 0);
        for w in w.windows {
            texts.push(d.text[sentences[w.start].start..sentences[w.end - 1].end].to_owned());
            owners.push(owner);
        }
    }
    Ok((texts, owners, cut))
}

/// Ids unique and texts non-empty (what [`DocumentReader`] checks per file, for callers that
/// build a corpus in memory).
fn check_corpus(corpus: &[Document]) -> Result<()> {
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

/// What a resume must match: every document's id, title and text, in order.
fn corpus_fingerprint(corpus: &[Document]) -> String {
    corpus
        .iter()
        .fold(gear_data::Fingerprint::new(), |f, d| {
            f.value("id", &d.id)
                .value("title", &d.title)
                .value("text", &d.text)
        })
        .finish()
}
