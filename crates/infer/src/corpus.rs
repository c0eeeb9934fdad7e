//! Where a [`crate::Retriever`]'s documents and vectors live: an index folder on this machine
//! ([`DocumentIndex`]), or a database (`gear-store`'s PostgreSQL store) — anything that finds
//! the top documents for embedded queries and reads a document by id.

use gear_data::Document;
use gear_model::GearModel;

use crate::store::DocumentIndex;
use crate::Result;

/// Documents with their vectors, searchable by a model's query embeddings.
pub trait Corpus: Send {
    /// The top `k` documents for each query (embedded with `model`'s query encoder), best
    /// first, with the cosine of the query and the document's best vector.
    fn search(
        &self,
        model: &GearModel,
        queries: &[&str],
        k: usize,
    ) -> Result<Vec<Vec<(Document, f32)>>>;

    /// The document with id `id` ([`crate::Error::UnknownDocument`] when there is none).
    fn document(&self, id: &str) -> Result<Document>;

    /// Number of documents.
    fn len(&self) -> usize;

    /// Whether there is no document.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the corpus lives, for messages (a folder, a database and schema).
    fn describe(&self) -> String;

    /// The model folder its vectors were embedded with, as recorded when they were.
    fn recorded_model(&self) -> String;

    /// That model's fingerprint ([`crate::model_fingerprint`]): a model that serves the
    /// corpus must have it.
    fn fingerprint(&self) -> String;

    /// The index folder behind this corpus, when it is one (a server watches its files).
    fn as_index(&self) -> Option<&DocumentIndex> {
        None
    }
}

impl Corpus for DocumentIndex {
    fn search(
        &self,
        model: &GearModel,
        queries: &[&str],
        k: usize,
    ) -> Result<Vec<Vec<(Document, f32)>>> {
        DocumentIndex::search(self, model, queries, k)
    }

    fn document(&self, id: &str) -> Result<Document> {
        DocumentIndex::document(self, id)
    }

    fn len(&self) -> usize {
        DocumentIndex::len(self)
    }

    fn describe(&self) -> String {
        format!("index {}", self.dir().display())
    }

    fn recorded_model(&self) -> String {
        self.meta().model.display().to_string()
    }

    fn fingerprint(&self) -> String {
        self.meta().fingerprint.clone()
    }

    fn as_index(&self) -> Option<&DocumentIndex> {
        Some(self)
    }
}
