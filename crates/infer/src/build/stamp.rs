//! What an index records of the model that built it: each file's stamp (name, size, modification
//! time), checked cheaply at open, and the SHA-256 fingerprint over the files' contents, computed
//! again only when a stamp changed.

use std::path::Path;

use crate::{Error, Result};

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
