//! SQuAD (v1.1 and v2.0) import: every answerable question becomes a QAR triple whose units are
//! the sentences holding its gold answers; the passages form the retrieval corpus.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{split_sentences, Document, Error, Result, Scenario, Span, Triple, Unit};

#[derive(Deserialize)]
struct File {
    data: Vec<Article>,
}

#[derive(Deserialize)]
struct Article {
    #[serde(default)]
    title: String,
    paragraphs: Vec<Paragraph>,
}

#[derive(Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Qa>,
}

#[derive(Deserialize)]
struct Qa {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<Answer>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct Answer {
    text: String,
    answer_start: usize,
}

/// A SQuAD file turned into triples and a corpus.
#[derive(Debug, Clone, Default)]
pub struct SquadImport {
    /// One QAR triple per answerable question.
    pub triples: Vec<Triple>,
    /// Every passage, id `"{article index}-{paragraph index}"` prefixed with the file stem.
    pub corpus: Vec<Document>,
    /// The article title of each passage (same order as `corpus`), for splitting by article.
    pub articles: Vec<String>,
    /// Counts.
    pub stats: SquadStats,
}

/// What an import saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SquadStats {
    /// Articles.
    pub articles: usize,
    /// Passages.
    pub passages: usize,
    /// Questions in the file.
    pub questions: usize,
    /// Questions turned into triples.
    pub answerable: usize,
    /// Unanswerable (v2.0 `is_impossible`, or no gold answer) questions skipped.
    pub unanswerable: usize,
    /// Triples with gold answers in more than one sentence.
    pub multi_unit: usize,
}

/// Parses a SQuAD-format file; a malformed file is an error naming the JSON path of the field.
fn read_file(path: &Path) -> Result<File> {
    let text = crate::read_text(path)?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| Error::BadLine {
        path: path.to_owned(),
        line: e.inner().line(),
        field: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// Reads a SQuAD-format file. A malformed file is an error naming the JSON path of the field.
pub fn import_squad(path: impl AsRef<Path>) -> Result<SquadImport> {
    let path = path.as_ref();
    let file = read_file(path)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = SquadImport::default();
    for (a, article) in file.data.iter().enumerate() {
        out.stats.articles += 1;
        for (p, para) in article.paragraphs.iter().enumerate() {
            out.stats.passages += 1;
            let doc = Document {
                id: format!("{stem}/{a}-{p}"),
                title: article.title.clone(),
                text: para.context.clone(),
            };
            let sentences = split_sentences(&doc.text);
            let byte_at = char_to_byte(&doc.text);
            for (q, qa) in para.qas.iter().enumerate() {
                out.stats.questions += 1;
                if let Some(why) = crate::blank_reason(&qa.question) {
                    return Err(Error::BadLine {
                        path: path.to_owned(),
                        line: 0,
                        field: format!("data[{a}].paragraphs[{p}].qas[{q}].question"),
                        message: why.into(),
                    });
                }
                if qa.is_impossible || qa.answers.is_empty() {
                    out.stats.unanswerable += 1;
                    continue;
                }
                let mut units =
                    answer_sentences(path, (a, p, q), qa, &doc.text, &sentences, &byte_at)?;
                units.sort();
                if units.len() > 1 {
                    out.stats.multi_unit += 1;
                }
                out.stats.answerable += 1;
                out.triples.push(Triple {
                    id: Some(qa.id.clone()),
                    query: qa.question.trim().to_owned(),
                    document: doc.clone(),
                    units: units
                        .iter()
                        .filter_map(|s| Unit::from_byte_span(&doc.text, *s))
                        .collect(),
                    answer: Some(qa.answers[0].text.clone()),
                    alternative_answers: alternatives(&qa.answers),
                    scenario: Scenario::Qar,
                    negatives: Vec::new(),
                });
            }
            out.corpus.push(doc);
            out.articles.push(article.title.clone());
        }
    }
    Ok(out)
}

/// The sentence holding each answer of question `qa` (at `(article, paragraph, question)` of
/// the file), each answer checked against the text it points at; without repeats.
fn answer_sentences(
    path: &Path,
    (a, p, q): (usize, usize, usize),
    qa: &Qa,
    text: &str,
    sentences: &[Span],
    byte_at: &[usize],
) -> Result<Vec<Span>> {
    let mut units: Vec<Span> = Vec::new();
    for (k, ans) in qa.answers.iter().enumerate() {
        let at = byte_at.get(ans.answer_start).copied().ok_or_else(|| {
            bad_answer(
                path,
                a,
                p,
                q,
                k,
                "answer_start is past the end of the context",
            )
        })?;
        let found: String = text[at..].chars().take(ans.text.chars().count()).collect();
        if found != ans.text {
            return Err(bad_answer(
                path,
                a,
                p,
                q,
                k,
                &format!(
                    "{} points at {found:?}, not at the answer text {:?}",
                    ans.answer_start, ans.text
                ),
            ));
        }
        let sentence = sentences
            .iter()
            .find(|s| s.contains(at))
            .copied()
            .ok_or_else(|| {
                bad_answer(
                    path,
                    a,
                    p,
                    q,
                    k,
                    "answer_start falls on white space between sentences",
                )
            })?;
        if !units.contains(&sentence) {
            units.push(sentence);
        }
    }
    Ok(units)
}

/// `byte_at[c]` = byte offset of character `c`; one extra entry for the end.
fn char_to_byte(text: &str) -> Vec<usize> {
    let mut v: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    v.push(text.len());
    v
}

fn bad_answer(path: &Path, a: usize, p: usize, q: usize, k: usize, message: &str) -> Error {
    Error::BadLine {
        path: PathBuf::from(path),
        line: 0,
        field: format!("data[{a}].paragraphs[{p}].qas[{q}].answers[{k}].answer_start"),
        message: message.to_owned(),
    }
}

/// The distinct answer texts after the first (which is the triple's `answer`).
fn alternatives(answers: &[Answer]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in &answers[1..] {
        if a.text != answers[0].text && !out.contains(&a.text) {
            out.push(a.text.clone());
        }
    }
    out
}

/// The gold answers of every answerable question, by question id (for `gear score squad`).
pub fn squad_gold_answers(path: impl AsRef<Path>) -> Result<Vec<(String, Vec<String>)>> {
    let path = path.as_ref();
    let file = read_file(path)?;
    Ok(file
        .data
        .into_iter()
        .flat_map(|a| a.paragraphs)
        .flat_map(|p| p.qas)
        .map(|qa| (qa.id, qa.answers.into_iter().map(|a| a.text).collect()))
        .collect())
}
