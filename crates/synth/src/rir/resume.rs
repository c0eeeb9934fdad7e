//! Resuming an interrupted RIR run: the partial file (a settings line, then one record per
//! finished document with its document's hash), reading it back, and turning it into the triples
//! file when the run completes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use gear_data::{Document, Error as DataError, Fingerprint, JsonlWriter, Triple};

use crate::Result;

use super::{Rewriter, RirConfig, RirStats};

#[derive(Serialize, Deserialize)]
pub(super) struct DocRecord {
    pub(super) document_id: String,
    /// [`document_hash`] of the document the record was made from.
    pub(super) document_hash: String,
    pub(super) stats: RirStats,
    pub(super) triples: Vec<Triple>,
}

/// The first line of a partial file: `{"gear_rir_settings": "<fingerprint>"}`.
pub(super) const PARTIAL_HEADER: &str = "gear_rir_settings";

/// What must not change between a run and its resume.
pub(super) fn settings_fingerprint(cfg: &RirConfig, rewriter: &dyn Rewriter) -> String {
    let mut shaping = cfg.clone();
    shaping.concurrency = 0;
    Fingerprint::new()
        .json("config", &shaping)
        .value("rewriter", rewriter.name())
        .finish()
}

/// A hash of a document's id, title and text.
pub(super) fn document_hash(doc: &Document) -> String {
    Fingerprint::new()
        .value("id", &doc.id)
        .value("title", &doc.title)
        .value("text", &doc.text)
        .finish()
}

/// `<output>.partial`.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// Finished document ids (with their documents' hashes) and their summed stats; a torn last line
/// (a crash mid-write) is cut off. A partial file made with other settings is refused.
pub(super) fn read_partial(
    partial: &Path,
    settings: &str,
) -> Result<(HashMap<String, String>, RirStats)> {
    let mut done = HashMap::new();
    let mut stats = RirStats::default();
    if !partial.exists() {
        return Ok((done, stats));
    }
    let io = |source| DataError::Io {
        path: partial.to_owned(),
        source,
    };
    let file = File::open(partial).map_err(io)?;
    let mut good_len = 0u64;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io)?;
        if n == 0 {
            break;
        }
        number += 1;
        if !line.ends_with('\n') {
            break; // torn tail of an interrupted run: redone
        }
        let bad = |message: String| DataError::BadLine {
            path: partial.to_owned(),
            line: number,
            field: "(line)".into(),
            message,
        };
        if number == 1 {
            let header: serde_json::Value =
                serde_json::from_str(line.trim_end()).map_err(|e| bad(e.to_string()))?;
            match header.get(PARTIAL_HEADER).and_then(|v| v.as_str()) {
                Some(fp) if fp == settings => {}
                Some(_) => {
                    return Err(DataError::Output {
                        path: partial.to_owned(),
                        message: "an interrupted run with other settings (seed, threshold, \
                                  rewriter, limits) left this: rerun with its settings, or \
                                  remove it to start over"
                            .into(),
                    }
                    .into())
                }
                None => {
                    return Err(DataError::Output {
                        path: partial.to_owned(),
                        message: "not a partial RIR file of this version (no settings line): \
                                  remove it to start over"
                            .into(),
                    }
                    .into())
                }
            }
        } else {
            let rec: DocRecord =
                serde_json::from_str(line.trim_end()).map_err(|e| bad(e.to_string()))?;
            done.insert(rec.document_id, rec.document_hash);
            stats.add(&rec.stats);
        }
        good_len += n as u64;
    }
    OpenOptions::new()
        .write(true)
        .open(partial)
        .and_then(|f| f.set_len(good_len))
        .map_err(io)?;
    Ok((done, stats))
}

/// Writes every triple of the partial file to `output` atomically and removes the partial file.
pub(super) fn finish(partial: &Path, output: &Path, stats: &mut RirStats) -> Result<()> {
    let io = |source| DataError::Io {
        path: partial.to_owned(),
        source,
    };
    let file = File::open(partial).map_err(io)?;
    // (The run holds the output's lock.)
    let mut writer = JsonlWriter::create_unlocked(output)?;
    for line in BufReader::new(file).lines().skip(1) {
        let rec: DocRecord = serde_json::from_str(&line.map_err(io)?).map_err(|e| io(e.into()))?;
        for t in &rec.triples {
            writer.write(t)?;
        }
    }
    stats.triples = writer.finish()?;
    std::fs::remove_file(partial).map_err(io)?;
    Ok(())
}
