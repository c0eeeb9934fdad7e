//! The OpenAI-compatible rewriter against a small chat-completions server started here on
//! 127.0.0.1: request shape, retries after transient errors, clean failure on client errors.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use gear_synth::{OpenAiConfig, OpenAiRewriter, Rewriter, REWRITE_INSTRUCTION};

/// Answers each connection with the next status in `script` (200 = a completion whose content is
/// the user's sentence lower-cased with commas between its first three words). Records bodies.
fn serve(script: Vec<u16>) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for status in script {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            let mut line = String::new();
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(
                request_line.starts_with("POST /v1/chat/completions"),
                "{request_line}"
            );
            let sentence = json["messages"][1]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            log.lock().unwrap().push(json);
            let (code, payload) = match status {
                200 => {
                    let words: Vec<String> = sentence
                        .split_whitespace()
                        .take(3)
                        .map(str::to_lowercase)
                        .collect();
                    (200, serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": words.join(", ")}}]}).to_string())
                }
                other => (other, "{\"error\": \"scripted failure\"}".to_string()),
            };
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
                payload.len()
            );
        }
    });
    (url, seen)
}

fn config(url: String) -> OpenAiConfig {
    OpenAiConfig {
        backoff_ms: 10,
        max_attempts: 3,
        ..OpenAiConfig::new(url, "test-model")
    }
}

#[test]
fn sends_the_instruction_and_retries_transient_errors() {
    let (url, seen) = serve(vec![503, 429, 200]);
    let rw = OpenAiRewriter::new(config(url)).unwrap();
    let q = rw.rewrite("The Brebron River Flows north.").unwrap();
    assert_eq!(q, "the, brebron, river");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2]["model"], "test-model");
    assert_eq!(seen[2]["messages"][0]["content"], REWRITE_INSTRUCTION);
    assert_eq!(seen[2]["messages"][0]["role"], "system");
}

#[test]
fn gives_up_after_max_attempts_and_fails_fast_on_client_errors() {
    let (url, _) = serve(vec![500, 500, 500]);
    let err = OpenAiRewriter::new(config(url))
        .unwrap()
        .rewrite("x y z")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 attempts") && err.contains("HTTP 500"),
        "{err}"
    );

    let (url, seen) = serve(vec![400, 200]);
    let err = OpenAiRewriter::new(config(url))
        .unwrap()
        .rewrite("x y z")
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 400"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1, "no retry on a client error");
}

#[test]
fn rejects_bad_settings() {
    assert!(OpenAiRewriter::new(OpenAiConfig::new("ftp://x", "m")).is_err());
    let mut c = OpenAiConfig::new("http://127.0.0.1:1/v1", "m");
    c.max_attempts = 0;
    assert!(OpenAiRewriter::new(c).is_err());
}

#[test]
fn the_pipeline_rewrites_concurrently_through_the_endpoint() {
    let docs = gear_synth::generate_corpus(4, 21);
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let tok = gear_data::Tokenizer::word_level(&texts, 512).unwrap();
    let (url, seen) = serve(vec![200; 12]);
    let rw = OpenAiRewriter::new(config(url)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rir.jsonl");
    let cfg = gear_synth::RirConfig {
        min_similarity: None,
        concurrency: 4,
        min_tokens: 100,
        ..gear_synth::RirConfig::default()
    };
    let stats = gear_synth::synthesize_rir(
        docs.into_iter().map(Ok),
        &out,
        &tok,
        &rw,
        None,
        &cfg,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(stats.rewritten, 12, "{stats:?}");
    assert_eq!(seen.lock().unwrap().len(), 12);
    let triples: Vec<_> = gear_data::TripleReader::open(&out)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in &triples {
        // The scripted server answers with the unit's first three words.
        let first: Vec<String> = t.units[0]
            .text
            .split_whitespace()
            .take(3)
            .map(str::to_lowercase)
            .collect();
        let mut got: Vec<&str> = t.query.split(", ").collect();
        let mut want: Vec<&str> = first.iter().map(String::as_str).collect();
        got.sort_unstable();
        want.sort_unstable();
        want.dedup();
        assert_eq!(got, want);
    }
}
