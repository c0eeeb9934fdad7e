//! The store's tables: created and recorded once ([`begin`]), filled in transactions keyed by
//! document row ([`write_rows`]), then checked whole and indexed ([`finish`]). `gear index push`
//! (from a local index) and `gear index build --store` (from a corpus, in shards on any number of
//! machines) both go through these three steps.

use std::ops::Range;

use pgvector::Vector;
use postgres::{Client, GenericClient};

use crate::{HnswSettings, Result, StoreAddress, StoreMeta, STORE_FORMAT};

/// What a store is being filled with: recorded by the first writer, and every later writer
/// (another shard, a resume) must bring the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePlan {
    /// The model folder embedding the vectors.
    pub model: String,
    /// Its fingerprint ([`gear_infer::model_fingerprint`]).
    pub fingerprint: String,
    /// Embedding width.
    pub dim: usize,
    /// Documents in all.
    pub documents: usize,
    /// SHA-256 of the corpus (every document's id, title and text, in order), when known.
    pub corpus: Option<String>,
}

/// One vector to write: its document's row, its part of the document (0 unless a long document
/// was embedded in windows: then the window's number) and the vector.
#[derive(Debug, Clone)]
pub struct VectorRow {
    /// The document's row.
    pub document: i64,
    /// Window number within the document.
    pub part: i32,
    /// The vector.
    pub embedding: Vector,
}

/// Creates the schema where missing and records `plan`, or checks it against what the store
/// records: another model or width is refused, and so is another corpus — unless the store is
/// complete and its corpus is the beginning of this one (`prefix(n)` is the fingerprint of this
/// corpus's first `n` documents): then the store grows, and is served again once finished.
/// Returns the store's record. Writers that start together (shards) are serialised by an
/// advisory lock on the schema's name.
pub(crate) fn begin(
    client: &mut Client,
    address: &StoreAddress,
    plan: &StorePlan,
    prefix: &mut dyn FnMut(usize) -> Result<String>,
) -> Result<StoreMeta> {
    let s = &address.schema;
    let mut tx = client.transaction().map_err(|e| address.query_error(&e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('gear-store:' || $1::text))",
        &[&s],
    )
    .map_err(|e| address.query_error(&e))?;
    tx.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS vector;
         CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value jsonb NOT NULL);
         CREATE TABLE IF NOT EXISTS {s}.documents (row bigint PRIMARY KEY, id text NOT NULL UNIQUE, title text NOT NULL, text text NOT NULL);
         CREATE TABLE IF NOT EXISTS {s}.vectors (document bigint NOT NULL REFERENCES {s}.documents (row), part integer NOT NULL, embedding vector({}) NOT NULL, PRIMARY KEY (document, part));",
        plan.dim
    ))
    .map_err(|e| address.query_error(&e))?;
    let found = read_meta(&mut tx, address)?;
    let meta = match found {
        Some(found) if same_corpus(&found, plan) => {
            check_model(address, &found, plan)?;
            found
        }
        Some(found) => {
            check_model(address, &found, plan)?;
            let grows = found.complete
                && found.documents < plan.documents
                && found.corpus.is_some()
                && found.corpus == Some(prefix(found.documents)?);
            if !grows {
                return Err(other_corpus(address, &found, plan));
            }
            tracing::info!(
                "{}: the store's {} documents begin this corpus: adding the other {}",
                address.target,
                found.documents,
                plan.documents - found.documents
            );
            let grown = StoreMeta {
                documents: plan.documents,
                corpus: plan.corpus.clone(),
                complete: false,
                ..found
            };
            write_meta(&mut tx, address, &grown)?;
            grown
        }
        None => {
            let meta = StoreMeta {
                format: STORE_FORMAT,
                model: plan.model.clone(),
                fingerprint: plan.fingerprint.clone(),
                dim: plan.dim,
                documents: plan.documents,
                rows: 0,
                max_rows_per_document: 0,
                complete: false,
                hnsw: HnswSettings::default(),
                corpus: plan.corpus.clone(),
            };
            write_meta(&mut tx, address, &meta)?;
            meta
        }
    };
    tx.commit().map_err(|e| address.query_error(&e))?;
    Ok(meta)
}

fn same_corpus(found: &StoreMeta, plan: &StorePlan) -> bool {
    found.documents == plan.documents
        && !matches!((&found.corpus, &plan.corpus), (Some(a), Some(b)) if a != b)
}

/// Refuses a store that holds another format, model or width than `plan`.
fn check_model(address: &StoreAddress, found: &StoreMeta, plan: &StorePlan) -> Result<()> {
    if found.format != STORE_FORMAT {
        return Err(address.store_error(format!(
            "holds a store of format {} (this version writes {STORE_FORMAT}): use another \
             schema or drop this one",
            found.format
        )));
    }
    if found.fingerprint != plan.fingerprint || found.dim != plan.dim {
        return Err(address.store_error(format!(
            "holds vectors of another model ({}, fingerprint {}, width {}); this one is {} \
             (fingerprint {}, width {}): use another schema or drop this one",
            found.model, found.fingerprint, found.dim, plan.model, plan.fingerprint, plan.dim
        )));
    }
    Ok(())
}

fn other_corpus(address: &StoreAddress, found: &StoreMeta, plan: &StorePlan) -> crate::Error {
    address.store_error(format!(
        "holds another corpus ({} documents, corpus SHA-256 {}{}); this one has {} (SHA-256 \
         {}), and the store's documents are not its beginning: use another schema or drop this \
         one",
        found.documents,
        found.corpus.as_deref().unwrap_or("not recorded"),
        if found.complete { "" } else { ", not finished" },
        plan.documents,
        plan.corpus.as_deref().unwrap_or("not recorded"),
    ))
}

/// Rows of `range` the store already holds (each with its vectors: they are written in one
/// transaction).
pub(crate) fn present_rows(
    client: &mut Client,
    address: &StoreAddress,
    range: Range<usize>,
) -> Result<Vec<usize>> {
    let s = &address.schema;
    let rows = client
        .query(
            &format!("SELECT row FROM {s}.documents WHERE row >= $1 AND row < $2 ORDER BY row"),
            &[&(range.start as i64), &(range.end as i64)],
        )
        .map_err(|e| address.query_error(&e))?;
    Ok(rows
        .iter()
        .map(|r| usize::try_from(r.get::<_, i64>(0)).unwrap_or(0))
        .collect())
}

/// How many of the sorted rows `present` fall in `range`.
pub(crate) fn held(present: &[usize], range: Range<usize>) -> usize {
    present.partition_point(|&r| r < range.end) - present.partition_point(|&r| r < range.start)
}

/// `documents` (rows `first..`, their positions in the corpus) and their `vectors` in one
/// transaction; rows already there are kept, so a part written twice (a retried shard) leaves
/// one copy.
pub(crate) fn write_rows(
    client: &mut Client,
    address: &StoreAddress,
    first: usize,
    documents: &[gear_data::Document],
    vectors: &[VectorRow],
) -> Result<()> {
    let s = &address.schema;
    let q = |e: postgres::Error| address.query_error(&e);
    let mut tx = client.transaction().map_err(q)?;
    let insert_doc = tx
        .prepare(&format!(
            "INSERT INTO {s}.documents (row, id, title, text) VALUES ($1, $2, $3, $4) ON CONFLICT (row) DO NOTHING"
        ))
        .map_err(q)?;
    let insert_vec = tx
        .prepare(&format!(
            "INSERT INTO {s}.vectors (document, part, embedding) VALUES ($1, $2, $3) ON CONFLICT (document, part) DO NOTHING"
        ))
        .map_err(q)?;
    for (i, doc) in documents.iter().enumerate() {
        let row = (first + i) as i64;
        tx.execute(&insert_doc, &[&row, &doc.id, &doc.title, &doc.text])
            .map_err(q)?;
    }
    for v in vectors {
        tx.execute(&insert_vec, &[&v.document, &v.part, &v.embedding])
            .map_err(q)?;
    }
    tx.commit().map_err(q)
}

/// Checks that every document of the plan is in with at least one vector, builds pgvector's
/// HNSW index with `hnsw` and marks the store complete (only then is it served). Returns the
/// final record. A store missing documents is refused, naming the first missing rows.
pub(crate) fn finish(
    client: &mut Client,
    address: &StoreAddress,
    hnsw: HnswSettings,
) -> Result<StoreMeta> {
    let s = &address.schema;
    let q = |e: postgres::Error| address.query_error(&e);
    let Some(meta) = read_meta(client, address)? else {
        return Err(address.store_error(
            "holds no GeAR index to finish: write one with `gear index build --store` or `gear \
             index push`",
        ));
    };
    let documents: i64 = client
        .query_one(&format!("SELECT count(*) FROM {s}.documents"), &[])
        .map_err(q)?
        .get(0);
    let missing = missing_rows(client, address, meta.documents, 5)?;
    if usize::try_from(documents).unwrap_or(0) != meta.documents || !missing.is_empty() {
        return Err(address.store_error(format!(
            "holds {documents} of its {} documents (missing rows {}{}): run the shards that \
             write them again, then finish",
            meta.documents,
            missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            if missing.len() == 5 { ", …" } else { "" }
        )));
    }
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(max(n), 0), coalesce(sum(n), 0)::bigint FROM (SELECT count(*) AS n FROM {s}.vectors GROUP BY document) AS per"
            ),
            &[],
        )
        .map_err(q)?;
    // Documents with vectors, the most vectors of one document, and vectors in all: one scan.
    let (groups, max_rows, rows): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if usize::try_from(groups).unwrap_or(0) != meta.documents {
        return Err(address.store_error(format!(
            "{} of its {} documents have no vector",
            meta.documents
                .saturating_sub(usize::try_from(groups).unwrap_or(0)),
            meta.documents
        )));
    }
    tracing::info!(
        "{}: building the HNSW index (m {}, ef_construction {})",
        address.target,
        hnsw.m,
        hnsw.ef_construction
    );
    // An index built before with the same settings is kept: pgvector indexes rows added since
    // as they were inserted (a grown store is not rebuilt).
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{s}.vectors_hnsw")],
        )
        .map_err(q)?
        .get(0);
    if exists && meta.hnsw != hnsw {
        client
            .batch_execute(&format!("DROP INDEX {s}.vectors_hnsw"))
            .map_err(q)?;
    }
    client
        .batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS vectors_hnsw ON {s}.vectors USING hnsw (embedding vector_ip_ops) WITH (m = {}, ef_construction = {})",
            hnsw.m, hnsw.ef_construction
        ))
        .map_err(q)?;
    let done = StoreMeta {
        rows: usize::try_from(rows).unwrap_or(0),
        max_rows_per_document: usize::try_from(max_rows).unwrap_or(0),
        complete: true,
        hnsw,
        ..meta
    };
    write_meta(client, address, &done)?;
    Ok(done)
}

/// Up to `limit` rows below `documents` that the store does not hold.
fn missing_rows(
    client: &mut Client,
    address: &StoreAddress,
    documents: usize,
    limit: i64,
) -> Result<Vec<i64>> {
    let s = &address.schema;
    let rows = client
        .query(
            &format!(
                "SELECT r FROM generate_series(0::bigint, $1::bigint - 1) AS r WHERE NOT EXISTS (SELECT 1 FROM {s}.documents d WHERE d.row = r) ORDER BY r LIMIT $2"
            ),
            &[&(documents as i64), &limit],
        )
        .map_err(|e| address.query_error(&e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The store's record, if it has one; `None` also when the schema or table is missing.
pub(crate) fn read_meta(
    client: &mut impl GenericClient,
    address: &StoreAddress,
) -> Result<Option<StoreMeta>> {
    let s = &address.schema;
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{s}.meta")],
        )
        .map_err(|e| address.query_error(&e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!("SELECT value::text FROM {s}.meta WHERE key = 'index'"),
            &[],
        )
        .map_err(|e| address.query_error(&e))?;
    row.map(|r| {
        let text: String = r.get(0);
        serde_json::from_str(&text)
            .map_err(|e| address.store_error(format!("its meta row does not read: {e}")))
    })
    .transpose()
}

fn write_meta(
    client: &mut impl GenericClient,
    address: &StoreAddress,
    meta: &StoreMeta,
) -> Result<()> {
    let s = &address.schema;
    let json =
        serde_json::to_string(meta).map_err(|e| address.store_error(format!("meta: {e}")))?;
    client
        .execute(
            &format!(
                "INSERT INTO {s}.meta (key, value) VALUES ('index', $1::text::jsonb) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            &[&json],
        )
        .map_err(|e| address.query_error(&e))?;
    Ok(())
}
