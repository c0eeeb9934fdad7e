//! The index in PostgreSQL from the command line: `gear index push`, then `gear search`,
//! `gear locate --doc-id` and two `gear serve` replicas with `--store URL` answer as the index
//! folder does; a database restart under a running server gives 503s, then the same answers.
//! Against a real PostgreSQL with pgvector (the `pgserver` wheel that `cargo xtask test`
//! installs), started by the test on a loopback port.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use serde_json::{json, Value};

#[path = "../../store/tests/pg/mod.rs"]
mod pg;
mod serve_harness;

use serve_harness::{gear, index, run_ok, serial, Server, QUERY};

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Same documents in the same order, same texts and located sentences, scores to 1e-5.
fn same_hits(a: &[Value], b: &[Value], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!((&x["id"], &x["text"]), (&y["id"], &y["text"]), "{what}");
        let d = (x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs();
        assert!(d < 1e-5, "{what}: score {} vs {}", x["score"], y["score"]);
        let (sa, sb) = (
            x["sentences"].as_array().unwrap(),
            y["sentences"].as_array().unwrap(),
        );
        assert_eq!(sa.len(), sb.len(), "{what}");
        for (s, t) in sa.iter().zip(sb) {
            for field in ["index", "start", "end", "text"] {
                assert_eq!(s[field], t[field], "{what}: {field}");
            }
        }
    }
}

#[test]
fn a_pushed_index_answers_from_the_cli_and_two_serve_replicas_as_the_folder_does() {
    let _serial = serial();
    let pg = pg::Postgres::start();
    let url = pg.url();
    let store = ["--store", url.as_str(), "--schema", "wiki"];

    let mut cmd = gear();
    cmd.args(["index", "push", "--index"])
        .arg(index())
        .args(store);
    let out = cmd.output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("pushed 40 documents"), "{said}");
    assert!(!said.contains("s3cret"), "{said}");

    // `gear search`: the folder's ids, scores and located sentences.
    let search = |source: &[&str]| {
        let mut cmd = gear();
        cmd.arg("search")
            .args(source)
            .args(["-k", "5", "--locate", "2", "--json", QUERY]);
        lines(&run_ok(cmd))
    };
    let folder = search(&["--index", index().to_str().unwrap()]);
    let pushed = search(&store);
    same_hits(&folder, &pushed, "gear search --store vs --index");

    // `gear locate --doc-id` reads the document from the store.
    let id = folder[1]["id"].as_str().unwrap();
    let locate = |source: &[&str]| {
        let mut cmd = gear();
        cmd.args(["locate", "--pretrained", "--doc-id", id])
            .args(source)
            .args(["--json", QUERY]);
        run_ok(cmd)
    };
    assert_eq!(
        locate(&["--index", index().to_str().unwrap()]),
        locate(&store)
    );
    let mut cmd = gear();
    cmd.args(["locate", "--pretrained", "--doc-id", "no-such-id"])
        .args(store)
        .arg(QUERY);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no document with id `no-such-id`"), "{said}");

    // Two stateless replicas over the store: the same answers, the folder's documents.
    let a = Server::start_with(&store);
    let b = Server::start_with(&store);
    let body = json!({"query": QUERY, "k": 5, "locate": 2}).to_string();
    let (status, from_a) = a.post("/search", &body);
    assert_eq!(status, 200, "{from_a}");
    let (status, from_b) = b.post("/search", &body);
    assert_eq!(status, 200, "{from_b}");
    assert_eq!(from_a, from_b, "two replicas over one store");
    same_hits(
        from_a["results"].as_array().unwrap(),
        &folder,
        "/search over the store vs gear search --index",
    );
    let (_, info) = a.get("/info");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["documents"], 40, "{info}");

    // The database restarts under the server: 503 naming where it is (never the password),
    // texts that need no database still answered, then the same answers without a restart.
    pg.down();
    let (status, down) = a.post("/search", &body);
    assert_eq!(status, 503, "{down}");
    let message = down.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{}", pg.port)),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    let (status, embedded) = a.post("/embed", &json!({"inputs": QUERY}).to_string());
    assert_eq!(status, 200, "{embedded}");
    pg.up();
    let (status, again) = a.post("/search", &body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, from_a, "answers again, the same");
}
