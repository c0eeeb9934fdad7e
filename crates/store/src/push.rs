//! Copying a local index into a store, resumably, and reading the store's record.

use gear_infer::DocumentIndex;
use pgvector::Vector;
use postgres::Client;

use crate::{HnswSettings, Result, StoreAddress, StoreMeta, STORE_FORMAT};

/// Documents and vectors written per transaction by [`push`].
const PUSH_BATCH: usize = 512;

/// Copies the index `index` into the store at `address`, then builds the HNSW index with
/// `hnsw`. Documents and their vectors go in transactions of 512 documents keyed by row, so an
/// interrupted push resumes where it stopped without duplicate rows; a store holding another
/// model's vectors is refused. `progress(done, total)` reports documents written. Returns the
/// documents written by this call.
pub fn push(
    index: &DocumentIndex,
    address: &StoreAddress,
    hnsw: HnswSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    let mut client = address.connect()?;
    let s = &address.schema;
    let owners = index.owners();
    // Rows of each document, in order: document d owns rows first_row[d]..first_row[d + 1].
    let mut first_row = vec![0usize; index.len() + 1];
    for &o in owners {
        first_row[o + 1] += 1;
    }
    let max_rows_per_document = first_row.iter().copied().max().unwrap_or(0).max(1);
    for d in 0..index.len() {
        first_row[d + 1] += first_row[d];
    }
    let meta = index.meta();
    let wanted = StoreMeta {
        format: STORE_FORMAT,
        model: meta.model.display().to_string(),
        fingerprint: meta.fingerprint.clone(),
        dim: meta.dim,
        documents: index.len(),
        rows: owners.len(),
        max_rows_per_document,
        complete: false,
        hnsw,
    };
    create_schema(&mut client, address, meta.dim)?;
    if already_pushed(&mut client, address, &wanted)? {
        return Ok(0);
    }
    write_meta(&mut client, address, &wanted)?;
    let done: i64 = client
        .query_one(&format!("SELECT count(*) FROM {s}.documents"), &[])
        .map_err(|e| address.query_error(&e))?
        .get(0);
    let done = usize::try_from(done).unwrap_or(0);
    let vectors = index.vectors().to_kind(tch::Kind::Float);
    if done > 0 && done < index.len() {
        tracing::info!(
            "{}: resuming an interrupted push at document {done} of {}",
            address.target,
            index.len()
        );
    }
    progress(done, index.len());
    let mut start = done;
    while start < index.len() {
        let end = (start + PUSH_BATCH).min(index.len());
        write_documents(
            &mut client,
            address,
            index,
            &vectors,
            &first_row,
            start..end,
        )?;
        start = end;
        progress(start, index.len());
    }
    tracing::info!(
        "{}: building the HNSW index (m {}, ef_construction {})",
        address.target,
        hnsw.m,
        hnsw.ef_construction
    );
    client
        .batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS vectors_hnsw ON {s}.vectors USING hnsw (embedding vector_ip_ops) WITH (m = {}, ef_construction = {})",
            hnsw.m, hnsw.ef_construction
        ))
        .map_err(|e| address.query_error(&e))?;
    write_meta(
        &mut client,
        address,
        &StoreMeta {
            complete: true,
            ..wanted
        },
    )?;
    Ok(index.len() - done.min(index.len()))
}

/// The extension, the schema and its tables, where missing.
fn create_schema(client: &mut Client, address: &StoreAddress, dim: usize) -> Result<()> {
    let s = &address.schema;
    client
        .batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS vector;
             CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value jsonb NOT NULL);
             CREATE TABLE IF NOT EXISTS {s}.documents (row bigint PRIMARY KEY, id text NOT NULL UNIQUE, title text NOT NULL, text text NOT NULL);
             CREATE TABLE IF NOT EXISTS {s}.vectors (row bigint PRIMARY KEY, document bigint NOT NULL REFERENCES {s}.documents (row), embedding vector({dim}) NOT NULL);"
        ))
        .map_err(|e| address.query_error(&e))
}

/// Whether the store already holds exactly this index, complete; an error when it holds
/// another model's vectors.
fn already_pushed(client: &mut Client, address: &StoreAddress, wanted: &StoreMeta) -> Result<bool> {
    let Some(found) = read_meta(client, address)? else {
        return Ok(false);
    };
    if found.fingerprint != wanted.fingerprint || found.dim != wanted.dim {
        return Err(address.store_error(format!(
            "holds vectors of another model ({}, fingerprint {}, width {}); this index was \
             built with {} (fingerprint {}, width {}): push into another schema or drop \
             this one",
            found.model, found.fingerprint, found.dim, wanted.model, wanted.fingerprint, wanted.dim
        )));
    }
    Ok(found.complete && found.documents == wanted.documents && found.rows == wanted.rows)
}

/// Documents `range` and their vectors in one transaction; rows already there are kept.
fn write_documents(
    client: &mut Client,
    address: &StoreAddress,
    index: &DocumentIndex,
    vectors: &tch::Tensor,
    first_row: &[usize],
    range: std::ops::Range<usize>,
) -> Result<()> {
    let s = &address.schema;
    let mut tx = client.transaction().map_err(|e| address.query_error(&e))?;
    let insert_doc = tx
        .prepare(&format!(
            "INSERT INTO {s}.documents (row, id, title, text) VALUES ($1, $2, $3, $4) ON CONFLICT (row) DO NOTHING"
        ))
        .map_err(|e| address.query_error(&e))?;
    let insert_vec = tx
        .prepare(&format!(
            "INSERT INTO {s}.vectors (row, document, embedding) VALUES ($1, $2, $3) ON CONFLICT (row) DO NOTHING"
        ))
        .map_err(|e| address.query_error(&e))?;
    for d in range {
        let doc = index.document_at(d)?;
        tx.execute(&insert_doc, &[&(d as i64), &doc.id, &doc.title, &doc.text])
            .map_err(|e| address.query_error(&e))?;
        for row in first_row[d]..first_row[d + 1] {
            let v: Vec<f32> =
                Vec::try_from(vectors.get(row as i64)).map_err(gear_infer::Error::Torch)?;
            tx.execute(&insert_vec, &[&(row as i64), &(d as i64), &Vector::from(v)])
                .map_err(|e| address.query_error(&e))?;
        }
    }
    tx.commit().map_err(|e| address.query_error(&e))
}

pub(crate) fn read_meta(client: &mut Client, address: &StoreAddress) -> Result<Option<StoreMeta>> {
    let s = &address.schema;
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

fn write_meta(client: &mut Client, address: &StoreAddress, meta: &StoreMeta) -> Result<()> {
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
