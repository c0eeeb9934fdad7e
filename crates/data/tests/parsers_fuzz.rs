//! Generated bad input for every reader of this crate (triples, corpus lines, SQuAD files):
//! whatever the bytes, a read never panics, and every rejection names the file, the line and the
//! field — the contract `docs/reliability.md` states.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use gear_data::{import_squad, Document, DocumentReader, Triple, TripleReader};
use proptest::prelude::*;

const TRIPLE: &str = r#"{"id":"q1","query":"crowd, cheered","scenario":"rir","document":{"id":"d1","title":"T","text":"Édith sang. The crowd cheered loudly."},"units":[{"start":12,"end":37,"text":"The crowd cheered loudly."}]}"#;
const DOCUMENT: &str = r#"{"id":"d1","title":"Édith","text":"Édith sang. The crowd cheered."}"#;
const SQUAD: &str = r#"{"version":"1.1","data":[{"title":"T","paragraphs":[{"context":"The river is long. It flows north.","qas":[{"id":"q1","question":"Which way?","answers":[{"text":"north","answer_start":28}]}]}]}]}"#;

/// Edits of a valid text: cut a range, insert bytes, or swap a value for one of the wrong kind.
fn mutated(valid: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    prop_oneof![
        (0..len, 0..len).prop_map(move |(a, b)| {
            let (a, b) = (a.min(b), a.max(b));
            let mut v = valid.as_bytes().to_vec();
            v.drain(a..b);
            v
        }),
        (0..len, proptest::collection::vec(any::<u8>(), 1..8)).prop_map(move |(at, bytes)| {
            let mut v = valid.as_bytes().to_vec();
            v.splice(at..at, bytes);
            v
        }),
        (
            0..len,
            prop::sample::select(vec![
                "null",
                "-1",
                "1e400",
                "\"\"",
                "[]",
                "{}",
                "\"\\ud800\"",
                "18446744073709551616",
                "true",
            ])
        )
            .prop_map(move |(at, value)| {
                // Replace the JSON value that follows the `:` at or after `at`.
                let text = valid.to_owned();
                let at = (at..=text.len())
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(text.len());
                let Some(colon) = text[at..].find(':').map(|i| at + i) else {
                    return text.into_bytes();
                };
                let rest = &text[colon + 1..];
                let end = rest
                    .char_indices()
                    .find(|&(i, c)| i > 0 && (c == ',' || c == '}'))
                    .map_or(rest.len(), |(i, _)| i);
                format!("{}:{value}{}", &text[..colon], &rest[end..]).into_bytes()
            }),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn write(dir: &tempfile::TempDir, name: &str, lines: &[Vec<u8>]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// An error that points at `file:line: field `…``.
fn names_line_and_field(err: &str, file: &str) -> bool {
    let Some(rest) = err.split_once(&format!("{file}:")).map(|(_, r)| r) else {
        return false;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    !digits.is_empty() && rest[digits.len()..].starts_with(": field `")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn triple_lines(lines in proptest::collection::vec(mutated(TRIPLE), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "t.jsonl", &lines);
        let mut reader = TripleReader::open(&path).unwrap().skip_bad(true);
        let ok: Vec<Triple> = reader.by_ref().collect::<Result<_, _>>().unwrap();
        for t in &ok {
            prop_assert!(t.validate().is_ok());
        }
        for e in reader.skipped() {
            let e = e.to_string();
            prop_assert!(names_line_and_field(&e, "t.jsonl"), "{}", e);
        }
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let non_blank = text.split('\n').filter(|l| !l.trim().is_empty()).count();
        prop_assert_eq!(ok.len() + reader.skipped().len(), non_blank, "no line dropped");
    }

    #[test]
    fn corpus_lines(lines in proptest::collection::vec(mutated(DOCUMENT), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "c.jsonl", &lines);
        let mut reader = DocumentReader::open(&path).unwrap().skip_bad(true);
        let ok: Vec<Document> = reader.by_ref().collect::<Result<_, _>>().unwrap();
        let mut ids: Vec<&str> = ok.iter().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), ok.len(), "ids unique");
        prop_assert!(ok.iter().all(|d| !d.text.trim().is_empty()));
        for e in reader.skipped() {
            let e = e.to_string();
            prop_assert!(names_line_and_field(&e, "c.jsonl"), "{}", e);
        }
    }

    #[test]
    fn squad_files(bytes in mutated(SQUAD)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, &bytes).unwrap();
        match import_squad(&path) {
            Ok(import) => {
                for t in &import.triples {
                    prop_assert!(t.validate().is_ok());
                }
            }
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.contains("s.json") && e.contains("field `"), "{}", e);
            }
        }
    }
}
