//! BEIR datasets, as the BEIR benchmark lays them out: `corpus.jsonl` (`_id`, `title`, `text`),
//! `queries.jsonl` (`_id`, `text`) and `qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`,
//! with a header line). Fields BEIR files carry beyond those (`metadata`, …) are accepted and
//! ignored; everything else is checked, and an error names the file, the line and the field.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Document, Error, JsonlReader, Record, Result};

/// A BEIR dataset's split: the corpus, the queries judged in the split, and their judgements.
#[derive(Debug, Clone, Default)]
pub struct BeirData {
    /// Every corpus document, in file order.
    pub corpus: Vec<Document>,
    /// The queries that have judgements in the split, in `queries.jsonl` order: `(id, text)`.
    pub queries: Vec<(String, String)>,
    /// Judgements per query id: `(corpus id, graded relevance)`; relevance ≤ 0 is not relevant.
    pub qrels: HashMap<String, Vec<(String, i32)>>,
}

#[derive(Deserialize)]
struct CorpusLine {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

impl Record for CorpusLine {
    fn check(&self) -> std::result::Result<(), (String, String)> {
        if self.id.trim().is_empty() {
            return Err(("_id".into(), "is empty".into()));
        }
        if crate::is_blank(&self.text) && crate::is_blank(&self.title) {
            let why = crate::blank_reason(&self.text).unwrap_or("is empty");
            return Err(("text".into(), format!("{why} (and so is the title)")));
        }
        Ok(())
    }

    fn key(&self) -> Option<(&'static str, &str)> {
        Some(("_id", &self.id))
    }
}

impl Record for QueryLine {
    fn check(&self) -> std::result::Result<(), (String, String)> {
        if self.id.trim().is_empty() {
            return Err(("_id".into(), "is empty".into()));
        }
        if let Some(why) = crate::blank_reason(&self.text) {
            return Err(("text".into(), why.into()));
        }
        Ok(())
    }

    fn key(&self) -> Option<(&'static str, &str)> {
        Some(("_id", &self.id))
    }
}

/// Reads `dir/corpus.jsonl`, `dir/queries.jsonl` and `dir/qrels/<split>.tsv`.
pub fn read_beir(dir: impl AsRef<Path>, split: &str) -> Result<BeirData> {
    let dir = dir.as_ref();
    // The JSON-lines files go through the shared reader: file:line:field errors, invalid UTF-8
    // named by line, duplicate `_id`s refused.
    let corpus: Vec<Document> = JsonlReader::<CorpusLine>::open(dir.join("corpus.jsonl"))?
        .map(|c| {
            c.map(|c| Document {
                id: c.id,
                title: c.title,
                text: c.text,
            })
        })
        .collect::<Result<_>>()?;
    let doc_ids: HashSet<&str> = corpus.iter().map(|d| d.id.as_str()).collect();
    let all_queries: Vec<(String, String)> =
        JsonlReader::<QueryLine>::open(dir.join("queries.jsonl"))?
            .map(|q| q.map(|q| (q.id, q.text)))
            .collect::<Result<_>>()?;
    let query_ids: HashSet<&str> = all_queries.iter().map(|(id, _)| id.as_str()).collect();

    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    let mut qrels: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    let mut seen = HashSet::new();
    for_each_line(&qrels_path, |line, text| {
        let bad = |field: &str, message: String| bad_line(&qrels_path, line, field, message);
        let cols: Vec<&str> = text.split('\t').map(str::trim).collect();
        if line == 1 && cols.first().is_some_and(|c| *c == "query-id") {
            return Ok(()); // the header
        }
        let [q, d, score] = cols.as_slice() else {
            return Err(bad(
                "(line)",
                format!(
                    "{} tab-separated columns; want query-id, corpus-id, score",
                    cols.len()
                ),
            ));
        };
        let score: i32 = score
            .parse()
            .map_err(|e| bad("score", format!("`{score}`: {e}")))?;
        if !query_ids.contains(*q) {
            return Err(bad("query-id", format!("`{q}` is not in queries.jsonl")));
        }
        if !doc_ids.contains(*d) {
            return Err(bad("corpus-id", format!("`{d}` is not in corpus.jsonl")));
        }
        if !seen.insert(((*q).to_owned(), (*d).to_owned())) {
            return Err(bad("corpus-id", format!("(`{q}`, `{d}`) is judged twice")));
        }
        qrels
            .entry((*q).to_owned())
            .or_default()
            .push(((*d).to_owned(), score));
        Ok(())
    })?;
    if qrels.is_empty() {
        return Err(Error::Output {
            path: qrels_path,
            message: "holds no judgements".into(),
        });
    }
    // Only a positive score marks a relevant document: with none, every query has nothing to
    // find, and an evaluation or mined training file would be all zeros or empty.
    if !qrels.values().flatten().any(|(_, score)| *score > 0) {
        let judged: usize = qrels.values().map(Vec::len).sum();
        return Err(Error::Output {
            path: qrels_path,
            message: format!(
                "holds {judged} judgement(s) and none is positive (score > 0): no query has a \
                 relevant document to find"
            ),
        });
    }
    let queries = all_queries
        .into_iter()
        .filter(|(id, _)| qrels.contains_key(id))
        .collect();
    Ok(BeirData {
        corpus,
        queries,
        qrels,
    })
}

fn bad_line(path: &Path, line: usize, field: &str, message: String) -> Error {
    Error::BadLine {
        path: path.to_owned(),
        line,
        field: field.to_owned(),
        message,
    }
}

/// Calls `f(line number, text)` for every non-blank line; invalid UTF-8 names its line.
fn for_each_line(path: &PathBuf, mut f: impl FnMut(usize, &str) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        let text = std::str::from_utf8(&buf).map_err(|e| {
            bad_line(
                path,
                line,
                "(line)",
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
            )
        })?;
        let text = text.trim_end_matches(['\n', '\r']);
        // A byte-order mark would make the header look like data.
        let text = if line == 1 {
            crate::strip_bom(text)
        } else {
            text
        };
        if text.trim().is_empty() {
            continue;
        }
        f(line, text)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(dir: &Path, corpus: &str, queries: &str, qrels: &str) {
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
        std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
        std::fs::write(dir.join("qrels/test.tsv"), qrels).unwrap();
    }

    #[test]
    fn reads_beir_layout_and_ignores_extra_metadata() {
        let dir = tempfile::tempdir().unwrap();
        dataset(
            dir.path(),
            "{\"_id\":\"d1\",\"title\":\"A\",\"text\":\"one\",\"metadata\":{\"url\":\"x\"}}\n{\"_id\":\"d2\",\"text\":\"two\"}\n",
            "{\"_id\":\"q1\",\"text\":\"first?\",\"metadata\":{}}\n{\"_id\":\"q2\",\"text\":\"unjudged\"}\n",
            "query-id\tcorpus-id\tscore\nq1\td2\t2\nq1\td1\t0\n",
        );
        let b = read_beir(dir.path(), "test").unwrap();
        assert_eq!(b.corpus.len(), 2);
        assert_eq!(b.queries, vec![("q1".to_owned(), "first?".to_owned())]);
        assert_eq!(
            b.qrels["q1"],
            vec![("d2".to_owned(), 2), ("d1".to_owned(), 0)]
        );
    }

    #[test]
    fn bad_files_name_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = "{\"_id\":\"d1\",\"text\":\"one\"}\n";
        let queries = "{\"_id\":\"q1\",\"text\":\"first?\"}\n";
        for (c, q, r, want) in [
            (
                "{\"_id\":\"d1\",\"text\":\"one\"}\n{\"_id\":\"d1\",\"text\":\"x\"}\n",
                queries,
                "q1\td1\t1\n",
                "corpus.jsonl:2: field `_id`",
            ),
            (
                "{\"_id\":\"d1\"}\n",
                queries,
                "q1\td1\t1\n",
                "corpus.jsonl:1: field `(line)`",
            ),
            (
                corpus,
                "{\"_id\":\"q1\",\"text\":7}\n",
                "q1\td1\t1\n",
                "queries.jsonl:1: field `text`",
            ),
            (
                corpus,
                queries,
                "query-id\tcorpus-id\tscore\nq1\td9\t1\n",
                "test.tsv:2: field `corpus-id`",
            ),
            (
                corpus,
                queries,
                "q9\td1\t1\n",
                "test.tsv:1: field `query-id`",
            ),
            (
                corpus,
                queries,
                "q1\td1\thigh\n",
                "test.tsv:1: field `score`",
            ),
            (corpus, queries, "q1\td1\n", "test.tsv:1: field `(line)`"),
            (corpus, queries, "q1\td1\t1\nq1\td1\t2\n", "judged twice"),
        ] {
            dataset(dir.path(), c, q, r);
            let err = read_beir(dir.path(), "test").unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err}");
        }
    }
}
