//! An opened store: searched exactly or through HNSW, a [`gear_infer::Corpus`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gear_data::Document;
use gear_infer::{load_model, Corpus, ModelSource, Retriever};
use gear_model::{GearModel, Precision};
use pgvector::Vector;
use postgres::Client;

use crate::tables::read_meta;
use crate::{Error, Result, StoreAddress, StoreMeta, StoreSearch, STORE_FORMAT};

/// An opened store: searched exactly or through HNSW, documents read by id.
pub struct PgStore {
    client: Mutex<Client>,
    address: StoreAddress,
    meta: StoreMeta,
    search: StoreSearch,
}

impl PgStore {
    /// Opens the store at `address`: it must be complete, and `model_dir` must hold the model
    /// its vectors were embedded with (same fingerprint, same width).
    pub fn open(
        address: &StoreAddress,
        model_dir: &Path,
        model: &GearModel,
        search: StoreSearch,
    ) -> Result<Self> {
        let mut client = address.connect()?;
        let meta = usable_meta(&mut client, address, search)?;
        Self::for_model(client, address, meta, model_dir, model, search)
    }

    /// The opened store, once `model_dir` and `model` are found to be the ones its vectors
    /// were embedded with (same fingerprint, same width).
    fn for_model(
        client: Client,
        address: &StoreAddress,
        meta: StoreMeta,
        model_dir: &Path,
        model: &GearModel,
        search: StoreSearch,
    ) -> Result<Self> {
        let fingerprint = gear_infer::model_fingerprint(model_dir)?;
        if fingerprint != meta.fingerprint {
            return Err(address.store_error(format!(
                "was built with another model ({}, fingerprint {}); {} has fingerprint {fingerprint}",
                meta.model,
                meta.fingerprint,
                model_dir.display()
            )));
        }
        let width = model.config().encoder.hidden_size as usize;
        if width != meta.dim {
            return Err(address.store_error(format!(
                "holds vectors of width {}; the model embeds {width}",
                meta.dim
            )));
        }
        Ok(Self {
            client: Mutex::new(client),
            address: address.clone(),
            meta,
            search,
        })
    }

    /// The store's record.
    pub fn meta(&self) -> &StoreMeta {
        &self.meta
    }

    /// Runs `f` on the connection, opening a new one first when the last was closed (the
    /// database restarted), and once more on a new connection when `f` finds it closed. While
    /// the database cannot be reached the error is [`Error::Connect`].
    fn with_client<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        // A search that panicked left nothing half-done in the connection that matters: a
        // transaction not committed is rolled back when the next statement runs.
        let mut client = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if client.is_closed() {
            *client = self.address.connect()?;
            tracing::info!("{}: connected again", self.address.target);
        }
        match f(&mut client) {
            Ok(v) => Ok(v),
            Err(e) if client.is_closed() || e.is_closed() => {
                tracing::warn!(
                    "{}: the connection was lost ({e}); connecting again",
                    self.address.target
                );
                *client = self.address.connect()?;
                f(&mut client).map_err(|e| self.address.query_error(&e))
            }
            Err(e) => Err(self.address.query_error(&e)),
        }
    }

    /// The top `k` documents for each query vector (unit length, the model's query encoder).
    pub fn search_vectors(
        &self,
        queries: &[Vec<f32>],
        k: usize,
    ) -> Result<Vec<Vec<(Document, f32)>>> {
        queries.iter().map(|q| self.search_one(q, k)).collect()
    }

    fn search_one(&self, query: &[f32], k: usize) -> Result<Vec<(Document, f32)>> {
        let s = &self.address.schema;
        let q = Vector::from(query.to_vec());
        let k_rows = i64::try_from(k).unwrap_or(i64::MAX);
        let hits: Vec<(i64, f64)> = match self.search {
            StoreSearch::Exact => self.with_client(|client| {
                Ok(client
                    .query(
                        &format!(
                            "SELECT document, max(-(embedding <#> $1)) AS score FROM {s}.vectors GROUP BY document ORDER BY score DESC, document LIMIT $2"
                        ),
                        &[&q, &k_rows],
                    )?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect())
            })?,
            StoreSearch::Hnsw { ef_search } => {
                let candidates = k_rows.saturating_mul(self.meta.max_rows_per_document as i64);
                let rows = self.with_client(|client| {
                    let mut tx = client.transaction()?;
                    tx.batch_execute(&format!("SET LOCAL hnsw.ef_search = {ef_search}"))?;
                    let rows = tx.query(
                        &format!(
                            "SELECT document, -(embedding <#> $1) AS score FROM {s}.vectors ORDER BY embedding <#> $1 LIMIT $2"
                        ),
                        &[&q, &candidates],
                    )?;
                    tx.commit()?;
                    Ok(rows)
                })?;
                best_per_document(rows.iter().map(|r| (r.get(0), r.get(1))), k)
            }
        };
        let rows: Vec<i64> = hits.iter().map(|h| h.0).collect();
        let docs = self.with_client(|client| {
            client.query(
                &format!("SELECT row, id, title, text FROM {s}.documents WHERE row = ANY($1)"),
                &[&rows],
            )
        })?;
        let mut by_row: std::collections::HashMap<i64, Document> = docs
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Document {
                        id: r.get(1),
                        title: r.get(2),
                        text: r.get(3),
                    },
                )
            })
            .collect();
        hits.into_iter()
            .map(|(row, score)| {
                let doc = by_row.remove(&row).ok_or_else(|| {
                    self.address
                        .store_error(format!("vector of document row {row} has no document"))
                })?;
                Ok((doc, score as f32))
            })
            .collect()
    }

    /// The document with id `id`, if the store has one.
    pub fn find_document(&self, id: &str) -> Result<Option<Document>> {
        self.with_client(|client| document_by_id(client, &self.address.schema, id))
    }

    /// This crate's error as an inference error: a database that cannot be reached (or
    /// failed a statement) is [`gear_infer::Error::Unavailable`] — a server answers 503 and
    /// the same request may succeed later.
    fn infer_error(&self, e: Error) -> gear_infer::Error {
        match e {
            Error::Connect { .. } | Error::Query { .. } => {
                gear_infer::Error::Unavailable(e.to_string())
            }
            Error::Store { message, .. } => gear_infer::Error::Index {
                path: std::path::PathBuf::from(self.describe()),
                message,
            },
            Error::Infer(e) => e,
        }
    }
}

/// The store's record, when the store can be served: it holds an index of this format whose
/// push finished, and `search` is one pgvector takes.
fn usable_meta(
    client: &mut Client,
    address: &StoreAddress,
    search: StoreSearch,
) -> Result<StoreMeta> {
    let meta =
        match read_meta(client, address) {
            Ok(Some(meta)) => meta,
            // No schema or table: say what to do rather than quote the database.
            Ok(None) | Err(Error::Query { .. }) => return Err(address.store_error(
                "holds no GeAR index: push one with `gear index push --index DIR --store URL`, or \
                 embed a corpus into it with `gear index build --corpus FILE --store URL`",
            )),
            Err(other) => return Err(other),
        };
    if meta.format != STORE_FORMAT {
        return Err(address.store_error(format!(
            "format {} is not the format this version reads ({STORE_FORMAT})",
            meta.format
        )));
    }
    if !meta.complete {
        return Err(address.store_error(
            "is not complete (its push or build did not finish): run `gear index push` again, \
             or `gear index finish` once every shard of `gear index build --store` is in",
        ));
    }
    if let StoreSearch::Hnsw { ef_search } = search {
        if !(1..=1000).contains(&ef_search) {
            return Err(
                address.store_error(format!("ef_search {ef_search}: pgvector takes 1 to 1000"))
            );
        }
    }
    Ok(meta)
}

/// A [`Retriever`] over the store at `address` — what [`Retriever::open`] is for an index
/// folder: the model is the folder the store records (or `model_dir`, which must hold the same
/// files), loaded on `device` in `precision` once the store is found usable.
pub fn open_retriever(
    address: &StoreAddress,
    model_dir: Option<&Path>,
    device: tch::Device,
    precision: Precision,
    search: StoreSearch,
) -> Result<Retriever> {
    let mut client = address.connect()?;
    let meta = usable_meta(&mut client, address, search)?;
    let dir = model_dir.map_or_else(|| PathBuf::from(&meta.model), Path::to_path_buf);
    let (mut model, _) = load_model(&ModelSource::for_dir(&dir), device)?;
    model.set_precision(precision);
    let store = PgStore::for_model(client, address, meta, &dir, &model, search)?;
    Ok(Retriever::with_corpus(model, Box::new(store)))
}

/// The document with id `id` in the store at `address`, if it has one; no model needed.
pub fn find_document(address: &StoreAddress, id: &str) -> Result<Option<Document>> {
    let mut client = address.connect()?;
    document_by_id(&mut client, &address.schema, id).map_err(|e| address.query_error(&e))
}

fn document_by_id(
    client: &mut Client,
    schema: &str,
    id: &str,
) -> Result<Option<Document>, postgres::Error> {
    let row = client.query_opt(
        &format!("SELECT id, title, text FROM {schema}.documents WHERE id = $1"),
        &[&id],
    )?;
    Ok(row.map(|r| Document {
        id: r.get(0),
        title: r.get(1),
        text: r.get(2),
    }))
}

/// The `k` best documents from (document, score) candidates, each at its best score; ties by
/// document row.
fn best_per_document(candidates: impl Iterator<Item = (i64, f64)>, k: usize) -> Vec<(i64, f64)> {
    let mut best: std::collections::HashMap<i64, f64> = std::collections::HashMap::new();
    for (d, score) in candidates {
        let e = best.entry(d).or_insert(f64::NEG_INFINITY);
        if score > *e {
            *e = score;
        }
    }
    let mut ranked: Vec<(i64, f64)> = best.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

impl Corpus for PgStore {
    fn search(
        &self,
        model: &GearModel,
        queries: &[&str],
        k: usize,
    ) -> gear_infer::Result<Vec<Vec<(Document, f32)>>> {
        if k == 0 {
            return Err(gear_infer::Error::Input("k must be at least 1".into()));
        }
        for (i, q) in queries.iter().enumerate() {
            gear_infer::check_readable(model, &format!("query {}", i + 1), q)?;
        }
        let q = model
            .embed_queries(queries)
            .map_err(gear_infer::Error::Model)?;
        let q: Vec<Vec<f32>> =
            Vec::try_from(q.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu))
                .map_err(gear_infer::Error::Torch)?;
        self.search_vectors(&q, k).map_err(|e| self.infer_error(e))
    }

    fn document(&self, id: &str) -> gear_infer::Result<Document> {
        match self.find_document(id).map_err(|e| self.infer_error(e))? {
            Some(doc) => Ok(doc),
            None => Err(gear_infer::Error::UnknownDocument {
                id: id.to_owned(),
                path: std::path::PathBuf::from(self.describe()),
            }),
        }
    }

    fn len(&self) -> usize {
        self.meta.documents
    }

    fn describe(&self) -> String {
        format!("store {}", self.address.describe())
    }

    fn recorded_model(&self) -> String {
        self.meta.model.clone()
    }

    fn fingerprint(&self) -> String {
        self.meta.fingerprint.clone()
    }
}
