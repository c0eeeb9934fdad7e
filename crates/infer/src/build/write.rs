//! Writing a complete index folder: vectors, document map, documents and `index.json`, in a
//! temporary folder renamed into place (the one atomic folder writer, `gear-model`'s).

use std::path::Path;

use gear_data::{Document, JsonlWriter};
use gear_model::save_tensors;
use tch::Tensor;

use super::{check_corpus, covers, model_fingerprint, model_stamps, FileStamp, VectorPrecision};
use crate::store::{IndexMeta, DOCUMENTS, EMBEDDINGS, INDEX_FORMAT, META};
use crate::{Error, Result};

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

/// Writes the three files into a temporary folder beside `out` and renames it to `out`
/// ([`gear_model::write_folder_atomically`]; the caller holds the lock).
pub(super) fn write_index(
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
    let dim = embeddings.size()[1] as usize;
    // The caller holds the lock and has checked that `out` does not exist.
    remove_stale_temporaries(out)?;
    gear_model::write_folder_atomically(out, "index", |tmp: &Path| -> Result<()> {
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
                FileStamp::hashed(tmp, DOCUMENTS)?,
                FileStamp::hashed(tmp, EMBEDDINGS)?,
            ],
            added: Vec::new(),
            precision,
            ann: None,
        };
        let json = serde_json::to_string_pretty(&meta).map_err(|e| Error::Input(e.to_string()))?;
        std::fs::write(tmp.join(META), json).map_err(io(tmp))?;
        Ok(())
    })
}

/// Removes what an interrupted write of `out` left beside it (`.{name}.tmp-{pid}`, which may hold
/// a whole index's vectors): under the index lock no other write of `out` can be running.
fn remove_stale_temporaries(out: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else {
        return Ok(());
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|source| Error::Io { path, source })?;
        }
    }
    Ok(())
}
