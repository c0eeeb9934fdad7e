//! The document index on disk and its search: `embeddings.safetensors` (`embeddings`
//! `[rows, dim]`, unit rows from `E_d`, and `document`, the document of each row — several rows
//! for a long document read in windows), `documents.jsonl` (the corpus, same order) and
//! `index.json` (format, backend, the model's path and fingerprint, counts, the SHA-256 of
//! `documents.jsonl`). Built by [`crate::build_index`]. Opening checks what a reader can check
//! cheaply: a known format and backend, `documents.jsonl` unchanged since the build, ids unique,
//! every document given its rows in order, and every embedding finite.

use std::path::{Path, PathBuf};

use gear_data::{Document, DocumentReader};
use gear_model::{read_tensors, GearModel};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::build::{covers, model_fingerprint, partial_dir};
use crate::search::{ExactIndex, Hit, HnswConfig, HnswIndex, VectorIndex};
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
}

/// The layout version this code writes (it reads 1 and 2; 2 adds the row → document map of
/// windowed documents).
pub const INDEX_FORMAT: u32 = 2;

/// The backends an index may record.
const BACKENDS: &[&str] = &["exact"];

/// Which search backend serves an opened index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Exact matrix-product search (on the index's device).
    #[default]
    Exact,
    /// Approximate HNSW search, the graph built in memory when the index is opened (CPU).
    Hnsw(HnswConfig),
}

/// A loaded index: documents, their vectors and the metadata.
pub struct DocumentIndex {
    dir: PathBuf,
    meta: IndexMeta,
    documents: Vec<Document>,
    search: Box<dyn VectorIndex>,
    /// The document of each vector.
    owners: Vec<usize>,
    /// The most vectors any one document has.
    max_rows_per_document: usize,
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
        if !dir.is_dir() {
            let hint = if partial_dir(&dir).exists() {
                " (a partial build exists: run the build again to finish it)"
            } else {
                ""
            };
            return Err(bad(format!("no such index folder{hint}")));
        }
        for f in [META, EMBEDDINGS, DOCUMENTS] {
            if !dir.join(f).is_file() {
                return Err(bad(format!("missing {f}")));
            }
        }
        let meta: IndexMeta =
            serde_json::from_str(&std::fs::read_to_string(dir.join(META)).map_err(|source| {
                Error::Io {
                    path: dir.join(META),
                    source,
                }
            })?)
            .map_err(|e| bad(format!("{META}: {e}")))?;
        if !(1..=INDEX_FORMAT).contains(&meta.format) {
            return Err(bad(format!(
                "{META}: format {} is not a format this version reads (1 to {INDEX_FORMAT}); \
                 rebuild the index with this version",
                meta.format
            )));
        }
        if !BACKENDS.contains(&meta.backend.as_str()) {
            return Err(bad(format!(
                "{META}: unknown backend `{}` (known: {})",
                meta.backend,
                BACKENDS.join(", ")
            )));
        }
        if let Some(expected) = &meta.documents_sha256 {
            let found = gear_data::Fingerprint::new()
                .file(&dir.join(DOCUMENTS))?
                .finish();
            if &found != expected {
                return Err(bad(format!(
                    "{DOCUMENTS} changed since the index was built (its rows no longer match \
                     the embeddings); rebuild the index"
                )));
            }
        }
        let documents =
            DocumentReader::open(dir.join(DOCUMENTS))?.collect::<gear_data::Result<Vec<_>>>()?;
        let tensors = read_tensors(dir.join(EMBEDDINGS))?;
        let tensor = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
        };
        let vectors = tensor("embeddings")
            .ok_or_else(|| bad(format!("{EMBEDDINGS} has no `embeddings` tensor")))?;
        // (`read_tensors` has refused non-finite values, naming the first one's index.)
        let rows = meta.rows.unwrap_or(meta.documents);
        if vectors.size() != [rows as i64, meta.dim as i64] || documents.len() != meta.documents {
            return Err(bad(format!(
                "{} documents and embeddings {:?} disagree with {META} ({} documents, {rows} × {})",
                documents.len(),
                vectors.size(),
                meta.documents,
                meta.dim
            )));
        }
        let owners: Vec<i64> = match tensor("document") {
            // Format 1: one vector per document.
            None => (0..documents.len() as i64).collect(),
            Some(t) => Vec::<i64>::try_from(t.to_kind(tch::Kind::Int64))?,
        };
        if owners.len() != rows || !covers(&owners, 0, documents.len()) {
            return Err(bad(format!(
                "{EMBEDDINGS}: its `document` map does not give every document its vectors, in \
                 order; rebuild the index"
            )));
        }
        let max_rows_per_document = owners
            .chunk_by(|a, b| a == b)
            .map(<[i64]>::len)
            .max()
            .unwrap_or(1);
        let owners: Vec<usize> = owners.into_iter().map(|o| o as usize).collect();
        let search: Box<dyn VectorIndex> = match backend {
            Backend::Exact => Box::new(ExactIndex::new(&vectors, device)),
            Backend::Hnsw(config) => Box::new(HnswIndex::new(&vectors, &config)?),
        };
        Ok(Self {
            search,
            dir,
            meta,
            documents,
            owners,
            max_rows_per_document,
        })
    }

    /// The metadata.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// The documents, in index order.
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// The document with id `id`.
    pub fn document(&self, id: &str) -> Result<&Document> {
        self.documents
            .iter()
            .find(|d| d.id == id)
            .ok_or_else(|| Error::UnknownDocument {
                id: id.to_owned(),
                path: self.dir.clone(),
            })
    }

    /// Fails unless the files in `model_dir` are the ones the index was built with.
    pub fn check_model(&self, model_dir: &Path) -> Result<()> {
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
    ) -> Result<Vec<Vec<(&Document, f32)>>> {
        if k == 0 {
            return Err(Error::Input("k must be at least 1".into()));
        }
        if let Some(i) = queries.iter().position(|q| q.as_ref().trim().is_empty()) {
            return Err(Error::Input(format!("query {} is empty", i + 1)));
        }
        let q = model.embed_queries(queries)?;
        // A document's score is its best vector's. The k best documents' best vectors are among
        // the k × (most vectors per document) best vectors: every vector above a top-k
        // document's best belongs to one of the k − 1 documents above it.
        let fetch = (k * self.max_rows_per_document.max(1)).min(self.owners.len());
        let hits: Vec<Vec<Hit>> = self.search.search(&q, fetch)?;
        Ok(hits
            .into_iter()
            .map(|hs| {
                let mut seen = std::collections::HashSet::new();
                hs.into_iter()
                    .filter(|h| seen.insert(self.owners[h.row]))
                    .take(k)
                    .map(|h| (&self.documents[self.owners[h.row]], h.score))
                    .collect()
            })
            .collect())
    }
}
