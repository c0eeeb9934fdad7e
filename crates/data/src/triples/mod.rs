//! The (q, d, u) triple format: one JSON object per line, read and written as streams.
//!
//! ```json
//! {"query": "super bowl 50, venue", "scenario": "qar", "answer": "Levi's Stadium",
//!  "document": {"id": "56be4db0", "title": "Super_Bowl_50", "text": "Super Bowl 50 was …"},
//!  "units": [{"start": 0, "end": 120, "text": "Super Bowl 50 was …"}]}
//! ```
//!
//! A triple may also carry `negatives`: documents known *not* to answer the query (hard
//! negatives, e.g. mined by `gear data beir`); training adds them to the contrastive loss's
//! candidates (`loss.hard_negatives`). Triples without them are unchanged.
//!
//! Unit offsets are **character** (Unicode scalar value) offsets into `document.text`, as in
//! SQuAD and Python, so files move between languages unchanged; [`Triple::unit_spans`] gives the
//! byte spans Rust code slices with. Every line is checked when read: a malformed line is an
//! error naming the file, the line and the field — or, with [`TripleReader::skip_bad`], counted
//! and reported, never dropped silently.

mod jsonl;

use serde::{Deserialize, Serialize};

use crate::Span;

pub use jsonl::{DocumentReader, JsonlReader, JsonlWriter, TripleReader};

/// The retrieval scenario a triple belongs to (method §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Question-answer retrieval: the generation target is the answer.
    Qar,
    /// Relevant-information retrieval: keyword queries; the target is the unit sentence.
    Rir,
}

/// A document: passage or article.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Stable identifier, unique within a corpus.
    pub id: String,
    /// Title (may be empty).
    #[serde(default)]
    pub title: String,
    /// Full text.
    pub text: String,
}

/// A relevant unit of a document: character offsets `[start, end)` and the text they cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// `document.text` between the two.
    pub text: String,
}

/// One training or evaluation example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triple {
    /// Optional example id (SQuAD question id, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The query.
    pub query: String,
    /// The document holding the answer.
    pub document: Document,
    /// The relevant unit(s), at least one.
    pub units: Vec<Unit>,
    /// QAR generation target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Other gold answers (SQuAD's dev sets have up to three per question): generation is
    /// scored against the best matching one, as the official script does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternative_answers: Vec<String>,
    /// The scenario.
    pub scenario: Scenario,
    /// Hard negatives: documents that do not answer the query (may be empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negatives: Vec<Document>,
}

impl Unit {
    /// The unit covering byte span `span` of `text`.
    pub fn from_byte_span(text: &str, span: Span) -> Option<Unit> {
        let (start, end) = span.char_offsets(text)?;
        Some(Unit {
            start,
            end,
            text: span.slice(text)?.to_owned(),
        })
    }
}

impl Triple {
    /// The generation target: the answer for QAR, the first unit's text for RIR.
    pub fn target(&self) -> &str {
        match (self.scenario, &self.answer) {
            (Scenario::Qar, Some(a)) => a,
            _ => self.units.first().map_or("", |u| u.text.as_str()),
        }
    }

    /// Every text generation is scored against: the target and, for QAR, the alternative
    /// answers.
    pub fn gold_texts(&self) -> Vec<&str> {
        let mut out = vec![self.target()];
        if self.scenario == Scenario::Qar {
            out.extend(self.alternative_answers.iter().map(String::as_str));
        }
        out
    }

    /// Units as byte spans into `document.text` (checked by [`Triple::validate`]).
    pub fn unit_spans(&self) -> Vec<Span> {
        let text = &self.document.text;
        let mut byte_at: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        byte_at.push(text.len());
        self.units
            .iter()
            .map(|u| {
                let at = |c: usize| byte_at.get(c).copied().unwrap_or(text.len());
                Span::new(at(u.start), at(u.end))
            })
            .collect()
    }

    /// Where a QAR triple's answer sits in its document, as a byte span: the first occurrence
    /// of the answer text inside a unit (the answer's sentence), else its first occurrence in
    /// the document; `None` for RIR, a triple without an answer, or an answer the document does
    /// not contain verbatim.
    pub fn answer_span(&self) -> Option<Span> {
        let answer = self.answer.as_deref().filter(|a| !a.is_empty())?;
        if self.scenario != Scenario::Qar {
            return None;
        }
        let text = &self.document.text;
        let found_in = |within: Span| {
            let slice = within.slice(text)?;
            let at = within.start + slice.find(answer)?;
            Some(Span::new(at, at + answer.len()))
        };
        self.unit_spans()
            .into_iter()
            .find_map(found_in)
            .or_else(|| found_in(Span::new(0, text.len())))
    }

    /// Checks what serde cannot: a non-empty query and document, at least one unit, each
    /// unit's offsets in range and matching its text, and negatives that are other, distinct,
    /// non-empty documents. Returns the offending field and why.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        if let Some(why) = crate::blank_reason(&self.query) {
            return Err(("query".into(), why.into()));
        }
        if let Some(why) = crate::blank_reason(&self.document.text) {
            return Err(("document.text".into(), why.into()));
        }
        if self.units.is_empty() {
            return Err(("units".into(), "needs at least one unit".into()));
        }
        let chars = self.document.text.chars().count();
        for (i, (unit, span)) in self.units.iter().zip(self.unit_spans()).enumerate() {
            if unit.start >= unit.end {
                return Err((
                    format!("units[{i}]"),
                    format!(
                        "is empty: start {} must be below end {}",
                        unit.start, unit.end
                    ),
                ));
            }
            if unit.end > chars {
                return Err((
                    format!("units[{i}]"),
                    format!(
                        "offsets {}..{} outside the document's {chars} characters",
                        unit.start, unit.end
                    ),
                ));
            }
            if span.slice(&self.document.text) != Some(unit.text.as_str()) {
                return Err((
                    format!("units[{i}].text"),
                    "does not match the document at its offsets".into(),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, negative) in self.negatives.iter().enumerate() {
            if negative.id.trim().is_empty() {
                return Err((format!("negatives[{i}].id"), "is empty".into()));
            }
            if let Some(why) = crate::blank_reason(&negative.text) {
                return Err((format!("negatives[{i}].text"), why.into()));
            }
            if negative.text.trim() == self.document.text.trim() {
                return Err((
                    format!("negatives[{i}].text"),
                    format!(
                        "is the text of the triple's own document (`{}` is a copy of `{}`): a \
                         negative must differ from the positive",
                        negative.id, self.document.id
                    ),
                ));
            }
            if negative.id == self.document.id {
                return Err((
                    format!("negatives[{i}].id"),
                    format!(
                        "`{}` is the triple's own document: a negative must be another one",
                        negative.id
                    ),
                ));
            }
            if !seen.insert(negative.id.as_str()) {
                return Err((
                    format!("negatives[{i}].id"),
                    format!("`{}` is listed twice", negative.id),
                ));
            }
        }
        Ok(())
    }
}

/// A JSON-lines record with checks beyond its serde shape.
pub trait Record: serde::de::DeserializeOwned {
    /// The offending field and why, if the record is invalid.
    fn check(&self) -> std::result::Result<(), (String, String)>;

    /// The field that must be unique within a file, and its value (`None`: no such field).
    fn key(&self) -> Option<(&'static str, &str)> {
        None
    }
}

impl Record for Triple {
    fn check(&self) -> std::result::Result<(), (String, String)> {
        self.validate()
    }
}

impl Record for Document {
    fn check(&self) -> std::result::Result<(), (String, String)> {
        if self.id.trim().is_empty() {
            return Err(("id".into(), "is empty".into()));
        }
        if let Some(why) = crate::blank_reason(&self.text) {
            return Err(("text".into(), why.into()));
        }
        Ok(())
    }

    fn key(&self) -> Option<(&'static str, &str)> {
        Some(("id", &self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    fn triple() -> Triple {
        let text = "Édith sang. The crowd cheered loudly.".to_string();
        let unit = Unit::from_byte_span(&text, Span::new(13, 38)).unwrap();
        Triple {
            id: Some("q1".into()),
            query: "crowd, cheered".into(),
            document: Document {
                id: "d1".into(),
                title: "Test".into(),
                text,
            },
            units: vec![unit],
            answer: None,
            alternative_answers: Vec::new(),
            scenario: Scenario::Rir,
            negatives: Vec::new(),
        }
    }

    #[test]
    fn character_offsets_and_byte_spans() {
        let t = triple();
        assert_eq!(t.units[0].start, 12, "É is one character but two bytes");
        assert_eq!(t.unit_spans(), [Span::new(13, 38)]);
        assert_eq!(t.target(), "The crowd cheered loudly.");
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn the_answer_is_found_in_its_sentence_first() {
        let mut t = triple();
        assert_eq!(t.answer_span(), None, "RIR has no answer");
        t.scenario = Scenario::Qar;
        // "sang" occurs only before the unit: found in the document.
        t.answer = Some("sang".into());
        assert_eq!(t.answer_span(), Some(Span::new(7, 11)));
        // "e" occurs before the unit too, but the unit's own occurrence wins.
        t.answer = Some("e".into());
        let span = t.answer_span().unwrap();
        assert_eq!((span.start, span.slice(&t.document.text)), (15, Some("e")));
        t.answer = Some("booed".into());
        assert_eq!(t.answer_span(), None);
        t.answer = Some(String::new());
        assert_eq!(t.answer_span(), None);
    }

    #[test]
    fn negatives_round_trip_and_are_checked() {
        let mut t = triple();
        let plain = serde_json::to_string(&t).unwrap();
        assert!(!plain.contains("negatives"), "no field when there are none");
        t.negatives = vec![Document {
            id: "d2".into(),
            title: String::new(),
            text: "The band played on.".into(),
        }];
        assert_eq!(t.validate(), Ok(()));
        let line = serde_json::to_string(&t).unwrap();
        let back: Triple = serde_json::from_str(&line).unwrap();
        assert_eq!(back, t);

        let mut own = t.clone();
        own.negatives[0].id = "d1".into();
        let (field, why) = own.validate().unwrap_err();
        assert_eq!(field, "negatives[0].id");
        assert!(why.contains("own document"), "{why}");

        let mut twice = t.clone();
        twice.negatives.push(twice.negatives[0].clone());
        assert_eq!(twice.validate().unwrap_err().0, "negatives[1].id");

        let mut empty = t;
        empty.negatives[0].text = " ".into();
        assert_eq!(empty.validate().unwrap_err().0, "negatives[0].text");
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = JsonlWriter::create(&path).unwrap();
        w.write(&triple()).unwrap();
        w.write(&triple()).unwrap();
        assert!(!path.exists(), "nothing visible before finish");
        assert_eq!(w.finish().unwrap(), 2);
        let back: Vec<Triple> = TripleReader::open(&path)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(back, vec![triple(), triple()]);
    }

    #[test]
    fn malformed_lines_name_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        let good = serde_json::to_string(&triple()).unwrap();
        let missing_query = good.replace("\"query\":\"crowd, cheered\",", "");
        let bad_offset = good.replace("\"end\":37", "\"end\":99");
        let wrong_type = good.replace("\"start\":12", "\"start\":\"twelve\"");
        std::fs::write(
            &path,
            format!("{good}\n\n{missing_query}\n{bad_offset}\n{wrong_type}\nnot json\n"),
        )
        .unwrap();

        let err = TripleReader::open(&path)
            .unwrap()
            .nth(1)
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.jsonl:3") && err.contains("query"),
            "{err}"
        );

        let mut reader = TripleReader::open(&path).unwrap().skip_bad(true);
        let ok: Vec<_> = reader.by_ref().collect::<Result<_>>().unwrap();
        assert_eq!(ok.len(), 1);
        let msgs: Vec<String> = reader.skipped().iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(
            msgs[1].contains(":4") && msgs[1].contains("units[0]"),
            "{}",
            msgs[1]
        );
        assert!(
            msgs[2].contains(":5") && msgs[2].contains("units[0].start"),
            "{}",
            msgs[2]
        );
        assert!(msgs[3].contains(":6"), "{}", msgs[3]);
    }

    #[test]
    fn invalid_utf8_duplicate_ids_empty_texts_and_empty_units_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.jsonl");
        let mut bytes = b"{\"id\":\"a\",\"text\":\"one\"}\n".to_vec();
        bytes.extend_from_slice(b"{\"id\":\"b\",\"text\":\"t\xe9\"}\n");
        bytes.extend_from_slice(b"{\"id\":\"a\",\"text\":\"two\"}\n");
        bytes.extend_from_slice(b"{\"id\":\"c\",\"text\":\"  \"}\n");
        std::fs::write(&path, bytes).unwrap();
        let mut reader = DocumentReader::open(&path).unwrap().skip_bad(true);
        let ok: Vec<_> = reader.by_ref().collect::<Result<_>>().unwrap();
        assert_eq!(ok.len(), 1);
        let msgs: Vec<String> = reader.skipped().iter().map(ToString::to_string).collect();
        assert!(msgs[0].contains("corpus.jsonl:2:") && msgs[0].contains("invalid UTF-8"));
        assert!(
            msgs[1].contains(":3:") && msgs[1].contains("`id`") && msgs[1].contains("line 1"),
            "{}",
            msgs[1]
        );
        assert!(msgs[2].contains(":4:") && msgs[2].contains("`text`: is empty"));

        let mut t = triple();
        t.units[0].end = t.units[0].start;
        t.units[0].text.clear();
        let err = t.validate().unwrap_err();
        assert_eq!(err.0, "units[0]");
        assert!(err.1.contains("is empty"), "{}", err.1);
    }

    #[test]
    fn dropped_writer_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        {
            let mut w = JsonlWriter::create(&path).unwrap();
            w.write(&triple()).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
