//! Opening an index folder: its record read and checked, every file's stamp compared with the
//! record (and its SHA-256 when the stamp differs), the parts mapped and their row maps checked.

use std::path::Path;

use crate::build::{covers, partial_dir, FileStamp, Verdict};
use crate::mapped::{MappedDocuments, MappedVectors};
use crate::store::{
    Backend, DocumentParts, IndexMeta, BACKENDS, DOCUMENTS, EMBEDDINGS, INDEX_FORMAT, META,
};
use crate::{Error, Result};

/// Every file an index opened with `backend` reads: `index.json`, the documents and vectors of
/// each part, the graph (HNSW search).
pub(crate) fn file_names(meta: &IndexMeta, backend: Backend) -> Vec<String> {
    let mut names = vec![META.to_owned(), DOCUMENTS.to_owned(), EMBEDDINGS.to_owned()];
    for p in &meta.added {
        names.push(p.documents.clone());
        names.push(p.embeddings.clone());
    }
    if matches!(backend, Backend::Hnsw(_)) {
        names.extend(meta.ann.as_ref().map(|a| a.file.clone()));
    }
    names
}

/// The stamp and inode of `dir/name` now.
pub(crate) fn opened_stamp(dir: &Path, name: &str) -> Result<(FileStamp, u64)> {
    let stamp = FileStamp::of(dir, name)?;
    #[cfg(unix)]
    let inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir.join(name))
            .map_err(|source| Error::Io {
                path: dir.join(name),
                source,
            })?
            .ino()
    };
    #[cfg(not(unix))]
    let inode = 0;
    Ok((stamp, inode))
}

/// `dir/index.json`, after checking the folder holds an index of a format and backend this
/// version reads.
pub(crate) fn read_meta(dir: &Path) -> Result<IndexMeta> {
    let dir = dir.to_owned();
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
    Ok(meta)
}

/// The mapped vectors and documents of every part of the index in `dir`, and the document of
/// each vector (numbered on across parts), checked against `meta` — fully (documents' SHA-256,
/// finite vectors) when a file's stamp differs from the record.
pub(crate) fn open_parts(
    dir: &Path,
    meta: &IndexMeta,
) -> Result<(Vec<MappedVectors>, DocumentParts, Vec<i64>)> {
    let bad = |message: String| Error::Index {
        path: dir.to_owned(),
        message,
    };
    // Every file the record covers: unchanged since the build (size and mtime as recorded), or
    // holding the recorded contents (SHA-256, checked only when the stamp differs). When all
    // are, the build's checks stand.
    // The graph is checked where it is opened (HNSW search): exact search does not read it.
    let graph = meta.ann.as_ref().map(|a| a.file.as_str());
    let mut unchanged = !meta.files.is_empty();
    let mut changed = None;
    for f in meta.files.iter().filter(|f| Some(f.name.as_str()) != graph) {
        match f.verify(dir)? {
            Verdict::Unchanged | Verdict::SameContents => {}
            Verdict::Unrecorded => unchanged = false,
            other => {
                unchanged = false;
                changed.get_or_insert(other);
            }
        }
    }
    let mut part_files = vec![(
        DOCUMENTS.to_owned(),
        EMBEDDINGS.to_owned(),
        meta.documents_sha256.clone(),
    )];
    part_files.extend(meta.added.iter().map(|p| {
        (
            p.documents.clone(),
            p.embeddings.clone(),
            Some(p.documents_sha256.clone()),
        )
    }));
    let mut vectors = Vec::new();
    let mut documents = Vec::new();
    let mut owners: Vec<i64> = Vec::new();
    for (docs_name, vectors_name, sha) in &part_files {
        if let (false, Some(expected)) = (unchanged, sha) {
            let found = gear_data::Fingerprint::new()
                .file(&dir.join(docs_name))?
                .finish();
            if &found != expected {
                return Err(bad(format!(
                    "{docs_name} changed since the index was built (its rows no longer \
                     match the embeddings); rebuild the index"
                )));
            }
        }
        let docs = MappedDocuments::open(&dir.join(docs_name))?;
        let part = MappedVectors::open(&dir.join(vectors_name), !unchanged)?;
        let rows = part.vectors.size()[0] as usize;
        let local: Vec<i64> = match &part.owners {
            // Format 1: one vector per document.
            None => (0..docs.len() as i64).collect(),
            Some(o) => o.clone(),
        };
        if local.len() != rows || !covers(&local, 0, docs.len()) {
            return Err(bad(format!(
                "{vectors_name}: its `document` map does not give every document of \
                 {docs_name} its vectors, in order; rebuild the index"
            )));
        }
        let first: usize = documents.iter().map(MappedDocuments::len).sum();
        owners.extend(local.iter().map(|o| o + first as i64));
        documents.push(docs);
        vectors.push(part);
    }
    // After the checks that say more (which document moved, which value is not finite).
    if let Some(changed) = changed {
        changed.into_error(dir)?;
    }
    let documents = DocumentParts::new(documents);
    Ok((vectors, documents, owners))
}
