//! JSON-lines files of [`Record`]s: a reader that checks every line (file, line and field on
//! error; bad lines counted, never dropped silently) and refuses duplicate keys, and an atomic
//! writer (temp file, renamed into place by `finish`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Document, Record, Triple};
use crate::{Error, Result};

/// Streams triples from a JSON-lines file.
pub type TripleReader = JsonlReader<Triple>;

/// Streams documents (`{id, title, text}` per line, e.g. a WikiExtractor dump) from a file.
pub type DocumentReader = JsonlReader<Document>;

/// Streams checked records from a JSON-lines file.
pub struct JsonlReader<T> {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    line: usize,
    /// Unique keys seen so far and the line of each.
    keys: HashMap<String, usize>,
    skip_bad: bool,
    skipped: Vec<Error>,
    _record: std::marker::PhantomData<fn() -> T>,
}

impl<T: Record> JsonlReader<T> {
    /// Opens `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let file = File::open(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            reader: BufReader::new(file),
            buf: Vec::new(),
            line: 0,
            keys: HashMap::new(),
            skip_bad: false,
            skipped: Vec::new(),
            _record: std::marker::PhantomData,
        })
    }

    /// Malformed lines are counted and kept in [`TripleReader::skipped`] instead of ending the read.
    pub fn skip_bad(mut self, skip: bool) -> Self {
        self.skip_bad = skip;
        self
    }

    /// The errors of lines skipped so far.
    pub fn skipped(&self) -> &[Error] {
        &self.skipped
    }

    /// Parses one line of the file; `line` is 1-based.
    pub fn parse_line(path: &Path, line: usize, text: &str) -> Result<T> {
        let bad = |field: String, message: String| Error::BadLine {
            path: path.to_owned(),
            line,
            field,
            message,
        };
        let de = &mut serde_json::Deserializer::from_str(text);
        let record: T = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            bad(
                if field == "." { "(line)".into() } else { field },
                e.into_inner().to_string(),
            )
        })?;
        record
            .check()
            .map_err(|(field, message)| bad(field, message))?;
        Ok(record)
    }
}

impl<T: Record> Iterator for JsonlReader<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    return Some(Err(Error::Io {
                        path: self.path.clone(),
                        source,
                    }))
                }
            }
            self.line += 1;
            let parsed = match std::str::from_utf8(&self.buf) {
                Err(e) => Err(Error::BadLine {
                    path: self.path.clone(),
                    line: self.line,
                    field: "(line)".into(),
                    message: format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
                }),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => {
                    // A byte-order mark before the first record is not part of it.
                    let text = if self.line == 1 {
                        crate::strip_bom(text)
                    } else {
                        text
                    };
                    Self::parse_line(&self.path, self.line, text.trim_end_matches(['\n', '\r']))
                }
            };
            let parsed = parsed.and_then(|record| self.check_unique(record));
            match parsed {
                Err(e) if self.skip_bad => self.skipped.push(e),
                other => return Some(other),
            }
        }
    }
}

impl<T: Record> JsonlReader<T> {
    /// Fails on a record whose key an earlier line of the file holds already.
    fn check_unique(&mut self, record: T) -> Result<T> {
        if let Some((field, key)) = record.key() {
            if let Some(first) = self.keys.get(key) {
                return Err(Error::BadLine {
                    path: self.path.clone(),
                    line: self.line,
                    field: field.to_owned(),
                    message: format!("`{key}` repeats line {first}; ids must be unique"),
                });
            }
            self.keys.insert(key.to_owned(), self.line);
        }
        Ok(record)
    }
}

/// Writes JSON lines atomically: to `path.tmp` first, renamed to `path` by
/// [`JsonlWriter::finish`]. Dropping the writer without finishing leaves `path` untouched. While
/// it writes, the writer holds `path`'s [`OutputLock`](crate::OutputLock): a second writer of the
/// same file fails at once instead of interleaving.
pub struct JsonlWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    count: usize,
    _lock: Option<crate::OutputLock>,
}

impl JsonlWriter {
    /// Starts writing `path`, locking it.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let lock = crate::OutputLock::acquire(path.as_ref())?;
        let mut writer = Self::create_unlocked(path)?;
        writer._lock = Some(lock);
        Ok(writer)
    }

    /// Starts writing `path` without taking its lock: for callers that hold a lock covering it
    /// already (a job's output lock, a private temporary folder).
    pub fn create_unlocked(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        Ok(Self {
            path,
            tmp,
            out: BufWriter::new(file),
            count: 0,
            _lock: None,
        })
    }

    /// Appends one value as a line.
    pub fn write<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let io = |source| Error::Io {
            path: self.tmp.clone(),
            source,
        };
        serde_json::to_writer(&mut self.out, value).map_err(|e| io(e.into()))?;
        self.out.write_all(b"\n").map_err(io)?;
        self.count += 1;
        Ok(())
    }

    /// Lines written so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Flushes, syncs and renames the file into place; returns the number of lines.
    pub fn finish(mut self) -> Result<usize> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        self.out.flush().map_err(io(&self.tmp))?;
        self.out.get_ref().sync_all().map_err(io(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        Ok(self.count)
    }
}

impl Drop for JsonlWriter {
    fn drop(&mut self) {
        // Unfinished: remove the partial temp file (a no-op after `finish` renamed it).
        let _ = std::fs::remove_file(&self.tmp);
    }
}
