//! The document index on disk and its search: `embeddings.safetensors` (`embeddings`
//! `[rows, dim]`, unit rows from `E_d`, and `document`, the document of each row — several rows
//! for a long document read in windows), `documents.jsonl` (the corpus, same order) and
//! `index.json` (format, backend, the model's path and fingerprint, counts, the SHA-256 of
//! `documents.jsonl`, and the size and modification time of every file). Built by
//! [`crate::build_index`].
//!
//! Opening maps the files instead of reading them (`mapped.rs`): the vectors are searched where
//! they lie, and a document is parsed when it is asked for. What opening checks: a known format
//! and backend, counts that agree, every document given its rows in order — and, when a file's
//! size or modification time differs from the build's record (or the index predates the
//! record), the full checks: `documents.jsonl`'s SHA-256 and every embedding finite. The model
//! is checked the same way ([`DocumentIndex::check_model`]): stamps first, the SHA-256 only when
//! a stamp differs.

use std::path::{Path, PathBuf};

use gear_data::Document;
use gear_model::GearModel;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::ann::{HnswConfig, HnswIndex};
use crate::ann_build::AnnMeta;
use crate::build::{model_fingerprint, model_stamps, FileStamp};
use crate::mapped::{MappedDocuments, MappedVectors};
use crate::opening::{file_names, open_parts, opened_stamp, read_meta};
use crate::search::{ExactIndex, Hit, VectorIndex};
use crate::{Error, Result};

pub(crate) const META: &str = "index.json";
pub(crate) const EMBEDDINGS: &str = "embeddings.safetensors";
pub(crate) const DOCUMENTS: &str = "documents.jsonl";

/// What `index.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Layout version.
    pub format: u32,
    /// Search backend (`exact`).
    pub backend: String,
    /// Folder of the model that embedded the documents.
    pub model: PathBuf,
    /// Fingerprint of that model's files (see [`model_fingerprint`]).
    pub fingerprint: String,
    /// Embedding width.
    pub dim: usize,
    /// Number of documents.
    pub documents: usize,
    /// Number of vectors (more than `documents` when long documents were embedded in windows;
    /// absent in format 1, where every document has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<usize>,
    /// SHA-256 of `documents.jsonl` (see [`gear_data::Fingerprint`]); absent in indexes built
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents_sha256: Option<String>,
    /// The model's files when the index was built (format 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_files: Vec<FileStamp>,
    /// The index's own files when it was built or last added to (format 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileStamp>,
    /// Parts appended by `gear index add`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<AddedPart>,
    /// How the vectors are stored (float32 unless recorded).
    #[serde(default)]
    pub precision: crate::build::VectorPrecision,
    /// The persisted HNSW graph over every row, when one was built (`gear index ann`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ann: Option<AnnMeta>,
}

/// Writes `meta` as `dir/index.json` by renaming a temporary file over it: the commit of a
/// change to an index.
pub(crate) fn commit_meta(dir: &Path, meta: &IndexMeta) -> Result<()> {
    let json = serde_json::to_string_pretty(meta).map_err(|e| Error::Input(e.to_string()))?;
    let tmp = dir.join("index.json.tmp");
    std::fs::write(&tmp, json).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, dir.join(META)).map_err(|source| Error::Io {
        path: dir.join(META),
        source,
    })
}

/// Documents and vectors appended to an index by [`crate::add_to_index`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedPart {
    /// Its documents (JSON lines) in the index folder.
    pub documents: String,
    /// Its vectors (safetensors) in the index folder.
    pub embeddings: String,
    /// SHA-256 of its documents file.
    pub documents_sha256: String,
}

/// The documents of every part, numbered on across them.
pub(crate) struct DocumentParts {
    parts: Vec<MappedDocuments>,
    /// First position of each part, and the total.
    starts: Vec<usize>,
}

impl DocumentParts {
    pub(crate) fn new(parts: Vec<MappedDocuments>) -> Self {
        let mut starts = vec![0];
        for p in &parts {
            starts.push(starts[starts.len() - 1] + p.len());
        }
        Self { parts, starts }
    }

    pub(crate) fn len(&self) -> usize {
        self.starts[self.starts.len() - 1]
    }

    fn locate(&self, i: usize) -> (&MappedDocuments, usize) {
        let part = self.starts.partition_point(|&s| s <= i) - 1;
        (&self.parts[part], i - self.starts[part])
    }

    fn get(&self, i: usize) -> Result<Document> {
        let (part, j) = self.locate(i);
        part.get(j)
    }

    fn id(&self, i: usize) -> Result<String> {
        let (part, j) = self.locate(i);
        part.id(j)
    }
}

/// The layout version this code writes (it reads 1 to 3; 2 adds the row → document map of
/// windowed documents, 3 a SHA-256 model fingerprint and the files' stamps).
pub const INDEX_FORMAT: u32 = 3;

/// The backends an index may record.
pub(crate) const BACKENDS: &[&str] = &["exact"];

/// Which search backend serves an opened index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Exact matrix-product search (on the index's device).
    #[default]
    Exact,
    /// Approximate HNSW search over the index's persisted graph (memory-mapped; CPU), its
    /// candidates scored again exactly. The index must have one (`gear index ann`).
    Hnsw(HnswConfig),
}

/// An opened index: its documents (read on demand), their vectors and the metadata.
pub struct DocumentIndex {
    dir: PathBuf,
    meta: IndexMeta,
    // Declared before `vectors`: the search may borrow the mapped vectors, so it goes first.
    search: Box<dyn VectorIndex>,
    /// The vectors of the build and of each `gear index add`, mapped.
    vectors: Vec<MappedVectors>,
    documents: DocumentParts,
    /// Id → position, built on the first lookup by id.
    ids: std::sync::OnceLock<std::collections::HashMap<String, usize>>,
    /// The document of each vector.
    owners: Vec<usize>,
    /// The most vectors any one document has.
    max_rows_per_document: usize,
    /// Every file of the index as it was when opened (stamp and inode), to tell a long-running
    /// reader that the files changed under it ([`DocumentIndex::changed_on_disk`]).
    opened: Vec<(FileStamp, u64)>,
    device: Device,
    backend: Backend,
}

impl DocumentIndex {
    /// Opens the index folder `dir` onto `device` with exact search.
    pub fn open(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        Self::open_with(dir, device, Backend::Exact)
    }

    /// Opens the index folder `dir` with the given search backend.
    pub fn open_with(dir: impl AsRef<Path>, device: Device, backend: Backend) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        let bad = |message: String| Error::Index {
            path: dir.clone(),
            message,
        };
        let meta = read_meta(&dir)?;
        // Stamped before anything is read: a change from here on shows as a difference.
        let opened = file_names(&meta, backend)
            .into_iter()
            .map(|name| opened_stamp(&dir, &name))
            .collect::<Result<Vec<_>>>()?;
        if read_meta(&dir)? != meta {
            return Err(bad(format!(
                "{META} changed while it was being opened; try again"
            )));
        }
        let (vectors, documents, owners) = open_parts(&dir, &meta)?;
        let rows = meta.rows.unwrap_or(meta.documents);
        let dims_ok = vectors
            .iter()
            .all(|v| v.vectors.size()[1] == meta.dim as i64);
        if owners.len() != rows || !dims_ok || documents.len() != meta.documents {
            return Err(bad(format!(
                "{} documents and {} vectors disagree with {META} ({} documents, {rows} × {})",
                documents.len(),
                owners.len(),
                meta.documents,
                meta.dim
            )));
        }
        let max_rows_per_document = owners
            .chunk_by(|a, b| a == b)
            .map(<[i64]>::len)
            .max()
            .unwrap_or(1);
        let owners: Vec<usize> = owners.into_iter().map(|o| o as usize).collect();
        let parts: Vec<&Tensor> = vectors.iter().map(|v| &v.vectors).collect();
        let search: Box<dyn VectorIndex> = match backend {
            Backend::Exact => Box::new(ExactIndex::from_parts(&parts, device)),
            Backend::Hnsw(config) => {
                let Some(ann) = &meta.ann else {
                    return Err(bad(
                        "has no HNSW graph: build one with `gear index ann --index DIR` (or \
                         `gear index build --ann hnsw`), or search it exactly"
                            .into(),
                    ));
                };
                // A graph from another build (same rows, other edges) gives wrong neighbours
                // without a word: its contents must be the recorded ones.
                if let Some(stamp) = meta.files.iter().find(|f| f.name == ann.file) {
                    stamp.verify(&dir)?.into_error(&dir)?;
                }
                Box::new(HnswIndex::open(
                    &dir.join(&ann.file),
                    &parts,
                    &ann.params,
                    config,
                )?)
            }
        };
        Ok(Self {
            search,
            vectors,
            dir,
            meta,
            documents,
            ids: std::sync::OnceLock::new(),
            owners,
            max_rows_per_document,
            opened,
            device,
            backend,
        })
    }

    /// Opens the same folder again, with the same device and backend (after
    /// [`DocumentIndex::changed_on_disk`] said its files changed).
    pub fn reopen(&self) -> Result<Self> {
        Self::open_with(&self.dir, self.device, self.backend)
    }

    /// Which file of the index differs from when it was opened (size, modification time or
    /// inode: written in place, replaced, removed), if any; `index.json` included. Costs one
    /// `stat` per file. A process that keeps an index open (`gear serve`) asks before reading
    /// it: a memory-mapped file truncated under a reader kills the reader (`SIGBUS`), and one
    /// replaced by rename leaves the reader on the old contents.
    pub fn changed_on_disk(&self) -> Option<String> {
        self.opened.iter().find_map(
            |(stamp, inode)| match opened_stamp(&self.dir, &stamp.name) {
                Err(_) => Some(format!("{} is gone", stamp.name)),
                Ok((now, now_inode)) if !stamp.unchanged(&now) || now_inode != *inode => {
                    Some(format!(
                        "{} changed ({} bytes, was {})",
                        stamp.name, now.bytes, stamp.bytes
                    ))
                }
                Ok(_) => None,
            },
        )
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// Whether the index holds no documents (never, for a built one).
    pub fn is_empty(&self) -> bool {
        self.documents.len() == 0
    }

    /// Document `i` (index order), read from the file.
    pub fn document_at(&self, i: usize) -> Result<Document> {
        if i >= self.documents.len() {
            return Err(Error::Input(format!(
                "document {i} is past the index's {} documents",
                self.documents.len()
            )));
        }
        self.documents.get(i)
    }

    /// The document with id `id`. The first lookup reads every id once.
    pub fn document(&self, id: &str) -> Result<Document> {
        if self.ids.get().is_none() {
            let mut ids = std::collections::HashMap::with_capacity(self.documents.len());
            for i in 0..self.documents.len() {
                ids.insert(self.documents.id(i)?, i);
            }
            let _ = self.ids.set(ids);
        }
        match self.ids.get().and_then(|ids| ids.get(id)) {
            Some(&i) => self.documents.get(i),
            None => Err(Error::UnknownDocument {
                id: id.to_owned(),
                path: self.dir.clone(),
            }),
        }
    }

    /// The document (position, as [`DocumentIndex::document_at`] reads it) of each stored
    /// vector, in row order: a long document embedded in windows has several.
    pub fn owners(&self) -> &[usize] {
        &self.owners
    }

    /// The stored vectors of every part, in row order (tensors over the mapped files).
    pub(crate) fn vector_parts(&self) -> Vec<&Tensor> {
        self.vectors.iter().map(|v| &v.vectors).collect()
    }

    /// A copy of the stored vectors `[rows, dim]` (every part, in row order).
    pub fn vectors(&self) -> Tensor {
        Tensor::cat(
            &self.vectors.iter().map(|v| &v.vectors).collect::<Vec<_>>(),
            0,
        )
    }

    /// Fails unless the files in `model_dir` are the ones the index was built with: their
    /// sizes and modification times as recorded, or else their SHA-256.
    pub fn check_model(&self, model_dir: &Path) -> Result<()> {
        if self.meta.format < 3 {
            return Err(Error::Index {
                path: self.dir.clone(),
                message: format!(
                    "built by an older version (format {}), whose model fingerprint this version \
                     no longer computes: rebuild the index",
                    self.meta.format
                ),
            });
        }
        if !self.meta.model_files.is_empty()
            && model_stamps(model_dir).is_ok_and(|now| now == self.meta.model_files)
        {
            return Ok(());
        }
        let fp = model_fingerprint(model_dir)?;
        if fp != self.meta.fingerprint {
            return Err(Error::Index {
                path: self.dir.clone(),
                message: format!(
                    "built with another model ({}, fingerprint {}); {} has fingerprint {fp}",
                    self.meta.model.display(),
                    self.meta.fingerprint,
                    model_dir.display()
                ),
            });
        }
        Ok(())
    }

    /// Top-`k` documents for each query, embedded with `model`'s query encoder.
    pub fn search<S: AsRef<str>>(
        &self,
        model: &GearModel,
        queries: &[S],
        k: usize,
    ) -> Result<Vec<Vec<(Document, f32)>>> {
        if k == 0 {
            return Err(Error::Input("k must be at least 1".into()));
        }
        for (i, q) in queries.iter().enumerate() {
            let what = if queries.len() == 1 {
                "the query".to_owned()
            } else {
                format!("query {}", i + 1)
            };
            crate::check_readable(model, &what, q.as_ref())?;
        }
        let q = model.embed_queries(queries)?;
        self.search_embedded(&q, k)?
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|(i, score)| Ok((self.documents.get(i)?, score)))
                    .collect()
            })
            .collect()
    }

    /// Top-`k` documents for query vectors embedded elsewhere (`queries [n, dim]`, unit rows,
    /// from the index model's query encoder): document positions ([`DocumentIndex::document_at`])
    /// and scores, best first.
    pub fn search_embedded(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
        if k == 0 {
            return Err(Error::Input("k must be at least 1".into()));
        }
        let dim = queries.size().get(1).copied().unwrap_or(0);
        if queries.dim() != 2 || dim != self.meta.dim as i64 {
            return Err(Error::Input(format!(
                "query vectors {:?}: want [n, {}]",
                queries.size(),
                self.meta.dim
            )));
        }
        // A document's score is its best vector's. The k best documents' best vectors are among
        // the k × (most vectors per document) best vectors: every vector above a top-k
        // document's best belongs to one of the k − 1 documents above it.
        let fetch = (k * self.max_rows_per_document.max(1)).min(self.owners.len());
        let hits: Vec<Vec<Hit>> = self.search.search(queries, fetch)?;
        Ok(hits
            .into_iter()
            .map(|hs| {
                let mut seen = std::collections::HashSet::new();
                hs.into_iter()
                    .filter(|h| seen.insert(self.owners[h.row]))
                    .take(k)
                    .map(|h| (self.owners[h.row], h.score))
                    .collect()
            })
            .collect())
    }
}
