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
/// modification time (nanoseconds since the Unix epoch) — and, for the index's own files, the
/// SHA-256 of its contents, checked when the size or time differ (a copied index keeps its
/// contents and gets new times; a file rewritten in place, rows shuffled or a graph taken from
/// another build, does not keep its contents).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    /// File name inside its folder.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: u64,
    /// SHA-256 of the contents ([`gear_data::Fingerprint`] of the file), recorded for the
    /// index's own files (not for the model's, which the model fingerprint covers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
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
            sha256: None,
        })
    }

    /// The stamp of `dir/name` now, with the SHA-256 of its contents.
    pub fn hashed(dir: &Path, name: &str) -> Result<Self> {
        let stamp = Self::of(dir, name)?;
        Ok(Self {
            sha256: Some(content_sha256(&dir.join(name))?),
            ..stamp
        })
    }

    /// Whether `now` (a fresh [`FileStamp::of`]) shows the file unchanged: same name, size and
    /// modification time.
    pub fn unchanged(&self, now: &FileStamp) -> bool {
        self.name == now.name && self.bytes == now.bytes && self.modified_ns == now.modified_ns
    }

    /// Checks `dir/name` against this record: unchanged by its stamp, or else holding the
    /// recorded contents (hashed only then).
    pub fn verify(&self, dir: &Path) -> Result<Verdict> {
        let now = Self::of(dir, &self.name)?;
        if self.unchanged(&now) {
            return Ok(Verdict::Unchanged);
        }
        let Some(expected) = &self.sha256 else {
            return Ok(Verdict::Unrecorded);
        };
        let changed = |how: String| {
            Verdict::Changed(format!(
                "{} changed since the index was built or last added to ({how}): its vectors, \
                 documents and graph no longer belong together; rebuild the index, or put back \
                 the file index.json records",
                self.name
            ))
        };
        if now.bytes != self.bytes {
            return Ok(changed(format!(
                "{} bytes, index.json records {}",
                now.bytes, self.bytes
            )));
        }
        if &content_sha256(&dir.join(&self.name))? != expected {
            return Ok(changed("same size, other contents".into()));
        }
        Ok(Verdict::SameContents)
    }
}

/// What [`FileStamp::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Size and modification time as recorded.
    Unchanged,
    /// Other stamp, the recorded contents (a copy).
    SameContents,
    /// Other stamp and no SHA-256 recorded (an index built before they were): other checks
    /// decide.
    Unrecorded,
    /// Other contents: why, for the error.
    Changed(String),
}

impl Verdict {
    /// The error for a changed file of the index in `dir`, if this is one.
    pub(crate) fn into_error(self, dir: &Path) -> Result<()> {
        match self {
            Verdict::Changed(message) => Err(Error::Index {
                path: dir.to_owned(),
                message,
            }),
            _ => Ok(()),
        }
    }
}

/// SHA-256 of a file's contents, as [`FileStamp::sha256`] records it.
fn content_sha256(path: &Path) -> Result<String> {
    Ok(gear_data::Fingerprint::new().file(path)?.finish())
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
