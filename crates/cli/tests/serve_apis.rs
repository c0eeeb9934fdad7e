//! The APIs of other servers on `gear serve`, as their users call them: OpenAI's
//! `/v1/embeddings` through the `openai` Python package, TEI's `/embed` through
//! huggingface_hub's `InferenceClient`, and TEI's `/rerank` with GeAR's located sentences —
//! numbers checked against the server's own routes, bad requests answered 4xx in each API's own
//! error shape, never 5xx — and one offset convention: `gear search --locate`, `gear locate
//! --json` and `/search` give the same sentences at the same character offsets.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod serve_harness;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use serve_harness::{gear, index, run_ok, serial, Server, QUERY};

const TEXTS: [&str; 3] = [
    "Super Bowl 50 was an American football game to determine the champion of the National \
     Football League (NFL) for the 2015 season.",
    "The American Football Conference (AFC) champion Denver Broncos defeated the National \
     Football Conference (NFC) champion Carolina Panthers 24–10 to earn their third Super Bowl \
     title. The game was played on February 7, 2016, at Levi's Stadium in the San Francisco Bay \
     Area at Santa Clara, California.",
    "Paris is the capital and most populous city of France.",
];

fn python() -> PathBuf {
    PathBuf::from(std::env::var_os("GEAR_HOME").expect("GEAR_HOME: run through cargo xtask test"))
        .join("venv/bin/python")
}

fn max_diff(a: &Value, b: &Value) -> f64 {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs())
        .fold(0.0, f64::max)
}

#[test]
fn openai_and_huggingface_hub_clients_read_the_same_embeddings_as_embed() {
    let _serial = serial();
    let server = Server::start(&[]);
    let (status, embed) = server.post("/embed", &json!({ "inputs": TEXTS }).to_string());
    assert_eq!(status, 200, "{embed}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/clients.py");
    let out = Command::new(python())
        .arg(script)
        .arg(&server.url)
        .args(TEXTS)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();

    // OpenAI's package, base64 (its default) and float, equals /embed's vectors to float32.
    for format in ["default", "float"] {
        for (i, want) in embed.as_array().unwrap().iter().enumerate() {
            let d = max_diff(&got[format][i], want);
            assert!(d <= 1e-7, "{format} {i}: max |diff| {d}");
        }
    }
    assert_eq!(got["default_index"], json!([0, 1, 2]));
    // Alone, a text is not padded as in a batch: equal to float32 rounding.
    assert!(max_diff(&got["single"], &embed[0]) <= 1e-5);
    assert_eq!(got["model"], "gear");
    // usage: the tokens the document encoder read, special tokens included.
    let tokenizer = gear_data::Tokenizer::from_file(
        gear_model::pretrained::minilm_dir()
            .unwrap()
            .join("tokenizer.json"),
        256,
    )
    .unwrap();
    let tokens: usize = TEXTS
        .iter()
        .map(|t| tokenizer.count_tokens(t).unwrap())
        .sum();
    assert_eq!(got["prompt_tokens"], json!(tokens));
    assert_eq!(got["total_tokens"], json!(tokens));
    // A width the model does not have is the client's BadRequestError, saying why.
    assert_eq!(got["refused"]["status"], 400, "{got}");
    assert!(
        got["refused"]["message"].as_str().unwrap().contains("384"),
        "{got}"
    );
    // huggingface_hub's InferenceClient on TEI's /embed.
    assert!(max_diff(&got["hf"], &embed[0]) <= 1e-5);
    // /info says the width `dimensions` must equal, and the arithmetic served.
    let (_, info) = server.get("/info");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["dimensions"], 384, "{info}");
    assert_eq!(info["precision"], "fp32", "{info}");
}

#[test]
fn rerank_ranks_by_the_bi_encoder_and_points_at_sentences_as_locate_does() {
    let _serial = serial();
    let server = Server::start(&[]);
    let request = json!({"query": QUERY, "texts": TEXTS, "return_text": true, "sentences": 2});
    let (status, ranks) = server.post("/rerank", &request.to_string());
    assert_eq!(status, 200, "{ranks}");
    let ranks = ranks.as_array().unwrap();
    let mut order: Vec<u64> = ranks.iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert!(
        ranks
            .windows(2)
            .all(|w| w[0]["score"].as_f64() >= w[1]["score"].as_f64()),
        "not best first: {ranks:?}"
    );
    assert_eq!(order[2], 2, "the text about Paris ranks last: {ranks:?}");
    order.sort_unstable();
    assert_eq!(order, [0, 1, 2]);

    // The score is (cosine + 1) / 2 of /embed's query and document vectors; raw_scores the cosine.
    let (_, q) = server.post(
        "/embed",
        &json!({"inputs": QUERY, "encoder": "query"}).to_string(),
    );
    let (_, d) = server.post("/embed", &json!({ "inputs": TEXTS }).to_string());
    let cosine = |i: usize| -> f64 {
        q[0].as_array()
            .unwrap()
            .iter()
            .zip(d[i].as_array().unwrap())
            .map(|(a, b)| a.as_f64().unwrap() * b.as_f64().unwrap())
            .sum()
    };
    let (_, raw) = server.post(
        "/rerank",
        &json!({"query": QUERY, "texts": TEXTS, "raw_scores": true}).to_string(),
    );
    for r in ranks {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["text"], TEXTS[i]);
        let score = r["score"].as_f64().unwrap();
        assert!((score - (cosine(i) + 1.0) / 2.0).abs() < 1e-5, "{r}");
        let plain = raw
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["index"] == i)
            .unwrap();
        assert!((plain["score"].as_f64().unwrap() - cosine(i)).abs() < 1e-5);
        assert!(plain.get("text").is_none() && plain.get("sentences").is_none());
        // Its sentences are /locate's for the same text, with character spans into it.
        let (_, located) = server.post(
            "/locate",
            &json!({"query": QUERY, "document": TEXTS[i], "k": 2}).to_string(),
        );
        same(&r["sentences"], &located["sentences"], &format!("text {i}"));
        for s in r["sentences"].as_array().unwrap() {
            let (start, end) = (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap());
            let span: String = TEXTS[i]
                .chars()
                .skip(start as usize)
                .take((end - start) as usize)
                .collect();
            assert_eq!(s["text"].as_str().unwrap(), span);
        }
    }
    // The two-sentence text's best sentence is the one that names the winner.
    let two = ranks.iter().find(|r| r["index"] == 1).unwrap();
    assert!(
        two["sentences"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Broncos"),
        "{two}"
    );
}

#[test]
fn bad_rerank_and_openai_requests_get_4xx_in_their_api_s_shape() {
    let _serial = serial();
    let server = Server::start(&[]);
    let long = "word ".repeat(400);
    let many = vec!["a"; 257]; // the limit is 256 inputs per request
    let tei = [
        (json!({"query": QUERY, "texts": []}), 422),
        (json!({"query": QUERY, "texts": ["a", " \u{200b} "]}), 422),
        (json!({"query": "", "texts": ["a"]}), 422),
        (
            json!({"query": QUERY, "texts": ["a"], "truncation_direction": "Left"}),
            422,
        ),
        (
            json!({"query": QUERY, "texts": ["a"], "sentences": 51}),
            422,
        ),
        (
            json!({"query": QUERY, "texts": ["a"], "colour": "red"}),
            422,
        ),
        (json!({"query": QUERY, "texts": many}), 413),
        (json!({"query": QUERY, "texts": [long]}), 413),
        (json!({"query": QUERY, "texts": "not a list"}), 422),
    ];
    for (body, want) in tei {
        let (status, answer) = server.post("/rerank", &body.to_string());
        assert_eq!(status, want, "{body} → {answer}");
        assert_eq!(answer["error_type"], "Validation", "{body} → {answer}");
        assert!(answer["error"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, _) = server.post(
        "/rerank",
        &json!({"query": QUERY, "texts": [long], "truncate": true}).to_string(),
    );
    assert_eq!(status, 200, "truncate: true reads the beginning");

    let openai = [
        (json!({"model": "gear", "input": []}), Some("input")),
        (json!({"model": "gear", "input": ""}), Some("input")),
        (
            json!({"model": "gear", "input": [101, 2023]}),
            Some("input"),
        ),
        (
            json!({"model": "gear", "input": [[101], [2023]]}),
            Some("input"),
        ),
        (
            json!({"model": "gear", "input": "a", "encoding_format": "int8"}),
            Some("encoding_format"),
        ),
        (
            json!({"model": "gear", "input": "a", "dimensions": 383}),
            Some("dimensions"),
        ),
        (json!({"model": "gear", "input": many}), Some("input")),
        (json!({"input": "a"}), None),
        (
            json!({"model": "gear", "input": "a", "temperature": 1}),
            None,
        ),
        (json!({"model": "gear", "input": long}), Some("input")),
        (json!(["model", "gear"]), None),
    ];
    for (body, param) in openai {
        let (status, answer) = server.post("/v1/embeddings", &body.to_string());
        assert_eq!(status, 400, "{body} → {answer}");
        let error = &answer["error"];
        assert_eq!(error["type"], "invalid_request_error", "{body} → {answer}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(error["param"], json!(param), "{body} → {answer}");
    }
    let (status, answer) = server.post(
        "/v1/embeddings",
        &json!({"model": "gear", "input": long, "truncate": true}).to_string(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["usage"]["prompt_tokens"], 256,
        "the encoder read 256 tokens"
    );
    let (status, _) = server.get("/health");
    assert_eq!(status, 200, "the server is still up");
}

#[test]
fn the_cli_and_the_server_give_the_same_sentences_at_the_same_character_offsets() {
    let _serial = serial();
    let server = Server::start(&[]);
    let (status, searched) = server.post(
        "/search",
        &json!({"query": QUERY, "k": 3, "locate": 2}).to_string(),
    );
    assert_eq!(status, 200, "{searched}");
    let results = searched["results"].as_array().unwrap();
    let mut cmd = gear();
    cmd.args(["search", "--index"])
        .arg(index())
        .args(["-k", "3", "--locate", "2", "--json", QUERY]);
    let cli: Vec<Value> = run_ok(cmd)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cli.len(), results.len());
    let mut beyond_ascii = 0;
    for (http, line) in results.iter().zip(&cli) {
        assert_eq!(http["id"], line["id"]);
        same(
            &http["sentences"],
            &line["sentences"],
            "gear search vs /search",
        );
        // `gear locate --json` on the same document: its best two sentences, the same offsets.
        let mut cmd = gear();
        cmd.args(["locate", "--pretrained", "--index"])
            .arg(index())
            .args(["--doc-id", http["id"].as_str().unwrap(), "--json", QUERY]);
        let located: Value = serde_json::from_str(&run_ok(cmd)).unwrap();
        let top2 = Value::Array(located["sentences"].as_array().unwrap()[..2].to_vec());
        same(&http["sentences"], &top2, "gear locate --json vs /search");
        // Character offsets, checked against the text itself.
        let text = http["text"].as_str().unwrap();
        for s in http["sentences"].as_array().unwrap() {
            let (start, end) = (
                s["start"].as_u64().unwrap() as usize,
                s["end"].as_u64().unwrap() as usize,
            );
            let chars: String = text.chars().skip(start).take(end - start).collect();
            assert_eq!(s["text"].as_str().unwrap(), chars);
            let sentence = s["text"].as_str().unwrap();
            beyond_ascii += usize::from(text.find(sentence) != Some(start));
        }
    }
    assert!(
        beyond_ascii > 0,
        "no sentence after a non-ASCII character: the test would not tell bytes from characters"
    );
}

/// Two lists of located sentences are the same: same sentences at the same character offsets,
/// scores equal to 1e-5 (a sentence located in a grouped pass, beside other documents, and
/// alone differ in the last bits of their float sums).
fn same(a: &Value, b: &Value, what: &str) {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        for field in ["index", "start", "end", "text"] {
            assert_eq!(x[field], y[field], "{what}: {field}: {x} vs {y}");
        }
        let d = (x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs();
        assert!(d < 1e-5, "{what}: score {x} vs {y}");
    }
}
