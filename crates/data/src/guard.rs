//! What keeps resumable jobs honest: an input [`Fingerprint`] recorded when a job starts and
//! checked when it resumes, and an [`OutputLock`] that lets one writer at a time work on an
//! output.
//!
//! A resumable job (index build, RIR synthesis, training) keeps finished work beside its output.
//! Resuming it with other inputs would mix the two runs' results under one name, so every such
//! job hashes what shapes its output — the input files' bytes and the options that matter — and
//! refuses to resume when the hash differs. Two processes writing the same output would
//! interleave their work, so each writer holds an exclusive lock on `<output>.lock` for as long
//! as it runs; the operating system releases it when the process ends, however it ends.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A SHA-256 over named parts (files, option values), written as hex.
#[derive(Clone, Default)]
pub struct Fingerprint {
    hasher: Sha256,
}

impl Fingerprint {
    /// An empty fingerprint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named value (an option, a count, a version).
    pub fn value(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.part(name, value.to_string().as_bytes());
        self
    }

    /// Adds a named byte string.
    pub fn bytes(mut self, name: &str, bytes: &[u8]) -> Self {
        self.part(name, bytes);
        self
    }

    /// Adds the contents of a file, streamed.
    pub fn file(mut self, path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        self.hasher.update(b"file\0");
        self.hasher.update(len.to_le_bytes());
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            self.hasher.update(&buf[..n]);
        }
        Ok(self)
    }

    /// Adds a serialisable value as its JSON text.
    pub fn json<T: serde::Serialize>(self, name: &str, value: &T) -> Self {
        let text = serde_json::to_string(value).unwrap_or_else(|e| format!("unserialisable: {e}"));
        self.bytes(name, text.as_bytes())
    }

    fn part(&mut self, name: &str, bytes: &[u8]) {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        self.hasher.update((name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// An exclusive lock on `<output>.lock`, held until dropped (or the process ends).
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    _file: File,
}

impl OutputLock {
    /// Locks `output` for writing, or fails at once — naming the process that holds it — when
    /// another writer is at work on it.
    pub fn acquire(output: &Path) -> Result<Self> {
        let mut path = output.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        // The writer would create the output's folder anyway; the lock lives beside it.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    return Err(Error::Output {
                        path: output.to_owned(),
                        message: format!(
                            "another process is writing it ({}); wait for it to finish or stop it",
                            if holder.is_empty() {
                                "holder unknown"
                            } else {
                                holder
                            }
                        ),
                    });
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
            }
            // The previous holder removes the file when done; a lock taken on the removed file
            // is worth nothing, so take it again on the file now at `path`.
            if same_file(&file, &path) {
                break file;
            }
        };
        let holder = format!(
            "pid {} running `{}`",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        file.set_len(0).map_err(io)?;
        file.write_all(holder.as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked, so a waiting writer never sees a stale holder line. (A
        // process killed here leaves the file behind, unlocked: harmless.)
        let _ = std::fs::remove_file(&self.path);
    }
}

/// FNV-1a (the `fnv` crate): a stable 64-bit hash of a string such as a document id (std's
/// hasher may change between releases, and ids must hash the same in every run and on every
/// machine).
pub fn stable_hash(s: &str) -> u64 {
    stable_hash_seeded(s, 0)
}

/// [`stable_hash`] with its offset basis mixed with `seed` (the split assignment's hash).
pub(crate) fn stable_hash_seeded(s: &str, seed: u64) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::with_key(0xcbf2_9ce4_8422_2325 ^ seed);
    h.write(s.as_bytes());
    h.finish()
}

/// A configuration read from TOML: parsed by serde, then checked.
pub trait TomlConfig: serde::de::DeserializeOwned {
    /// What is wrong with the parsed values, if anything (the message names the setting).
    fn check(&self) -> std::result::Result<(), String>;
}

/// Parses TOML text into `T` and checks it: the one way every config of the workspace is read.
/// The error is the message; the caller names the file.
pub fn parse_config<T: TomlConfig>(text: &str) -> std::result::Result<T, String> {
    let config: T = toml::from_str(text).map_err(|e| e.to_string())?;
    config.check()?;
    Ok(config)
}

/// Reads a text file whole, without a leading byte-order mark; invalid UTF-8 is an error naming
/// the line and byte where it starts.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Error::BadLine {
            path: path.to_owned(),
            line,
            field: "(line)".into(),
            message: format!("invalid UTF-8 at byte {} of the line", column + 1),
        }
    })?;
    // A byte-order mark is not content: JSON, TOML and TSV parsers would see a stray character.
    Ok(match text.strip_prefix(crate::BOM) {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_fnv1a() {
        // The published FNV-1a 64-bit values: ids must keep hashing to them.
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(stable_hash_seeded("a", 0), stable_hash("a"));
        assert_ne!(stable_hash_seeded("a", 7), stable_hash("a"));
    }

    #[test]
    fn fingerprints_separate_parts_and_see_file_changes() {
        let a = Fingerprint::new().value("x", "ab").value("y", "c").finish();
        let b = Fingerprint::new().value("x", "a").value("y", "bc").finish();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "one").unwrap();
        let one = Fingerprint::new().file(&f).unwrap().finish();
        assert_eq!(one, Fingerprint::new().file(&f).unwrap().finish());
        std::fs::write(&f, "two").unwrap();
        assert_ne!(one, Fingerprint::new().file(&f).unwrap().finish());
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, b"a = 1\nb = \"x\xffy\"\n").unwrap();
        let err = read_text(&f).unwrap_err().to_string();
        assert!(err.contains("c.toml:2:") && err.contains("byte 7"), "{err}");
    }

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("index");
        let first = OutputLock::acquire(&out).unwrap();
        let err = OutputLock::acquire(&out).unwrap_err().to_string();
        assert!(err.contains("another process is writing it"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(!dir.path().join("index.lock").exists());
        OutputLock::acquire(&out).unwrap();
        // An output in folders that do not exist yet can be locked (its writer creates them).
        OutputLock::acquire(&dir.path().join("runs/new/index")).unwrap();
    }
}
