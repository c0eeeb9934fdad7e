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

/// Processes whose command line holds every one of `words`: (pid, parent pid).
fn processes_with(words: &[&str]) -> Vec<(i32, i32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if words.iter().all(|w| args.iter().any(|a| a == w)) {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let parent = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            found.push((pid, parent));
        }
    }
    found
}

/// The corpus embedded over a real Ray cluster (`xtask/scripts/embed_cluster.py`, what `cargo
/// xtask embed-cluster` runs), one task per shard running `gear index build --store --shard`;
/// the worker of one shard is killed midway, Ray retries it, and the store — once `gear index
/// finish` has checked it — holds the vectors a single `gear index build --store` writes (to
/// 1e-5, same rows, no duplicates) and answers the same searches.
#[test]
fn a_corpus_embedded_over_ray_with_a_worker_killed_equals_a_single_process_build() {
    let _serial = serial();
    let pg = pg::Postgres::start();
    let url = pg.url();
    let all = index().parent().unwrap().join("passages-all.jsonl");
    let text = std::fs::read_to_string(&all).unwrap();
    let corpus = index().parent().unwrap().join("cluster.jsonl");
    let first: String = text.lines().take(160).map(|l| format!("{l}\n")).collect();
    std::fs::write(&corpus, first).unwrap();
    let build = |schema: &str, extra: &[&str]| {
        let mut cmd = gear();
        cmd.args(["index", "build", "--pretrained", "--corpus"])
            .arg(&corpus)
            .args(["--store", &url, "--schema", schema])
            .args(extra);
        cmd
    };
    run_ok(build("single", &[]));

    let home = std::env::var_os("GEAR_HOME").expect("GEAR_HOME: run through cargo xtask test");
    let python = std::path::PathBuf::from(home).join("venv/bin/python");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../xtask/scripts/embed_cluster.py");
    let mut driver = std::process::Command::new(&python);
    driver
        .arg(&script)
        .args(["--gear", env!("CARGO_BIN_EXE_gear"), "--corpus"])
        .arg(&corpus)
        .args(["--store", &url, "--schema", "cluster", "--shards", "2"])
        .args(["--start-local", "2", "--pretrained", "--batch-size", "4"])
        .args(["--commit-every", "8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let driver = driver.spawn().unwrap_or_else(|e| {
        panic!(
            "{}: {e} (Ray is installed by cargo xtask test)",
            python.display()
        )
    });

    // Kill the worker of shard 1/2 once some of its parts are in and not all.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let start = std::time::Instant::now();
    let killed = loop {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "shard 1 never was midway"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let Ok(row) = client.query_one(
            "SELECT count(*) FROM cluster.documents WHERE row >= 80",
            &[],
        ) else {
            continue; // the schema is not created yet
        };
        let done: i64 = row.get(0);
        if done == 0 || done >= 72 {
            assert!(done < 72, "shard 1 finished before it could be killed");
            continue;
        }
        let running = processes_with(&["--shard", "1/2", "cluster"]);
        if let Some(&(pid, worker)) = running.first() {
            // The Ray worker running the task, then the gear process it started.
            for p in [worker, pid] {
                kill_process(p);
            }
            break done;
        }
    };
    let out = driver.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Ray driver: {said}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let shard1 = &report["shards"][1];
    assert!(shard1["attempts"].as_u64().unwrap() >= 2, "{report}");
    assert!(
        shard1["present"].as_i64().unwrap() >= killed,
        "the retry found the parts written before the kill ({killed}): {report}"
    );
    // Served only once finished.
    let search = |schema: &str| {
        let mut cmd = gear();
        cmd.args(["search", "--store", &url, "--schema", schema])
            .args(["-k", "5", "--locate", "2", "--json", QUERY]);
        cmd
    };
    let refused = search("cluster").output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("gear index finish"),
        "{said}"
    );
    let mut finish = gear();
    finish.args(["index", "finish", "--store", &url, "--schema", "cluster"]);
    run_ok(finish);

    let mut rows = |schema: &str| -> Vec<(i64, i32, pgvector::Vector)> {
        client
            .query(
                &format!("SELECT document, part, embedding FROM {schema}.vectors ORDER BY document, part"),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    let (one, many) = (rows("single"), rows("cluster"));
    assert_eq!(one.len(), many.len());
    assert!(one.len() >= 160);
    for (a, b) in one.iter().zip(&many) {
        assert_eq!((a.0, a.1), (b.0, b.1));
        let worst =
            a.2.as_slice()
                .iter()
                .zip(b.2.as_slice())
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
        assert!(worst < 1e-5, "document {} part {}: {worst}", a.0, a.1);
    }
    let documents: i64 = client
        .query_one("SELECT count(*) FROM cluster.documents", &[])
        .unwrap()
        .get(0);
    assert_eq!(documents, 160);
    same_hits(
        &lines(&run_ok(search("cluster"))),
        &lines(&run_ok(search("single"))),
        "search: the Ray-built store vs the single-process one",
    );
}

/// SIGKILL to `pid` (through `kill(1)`).
fn kill_process(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid}");
}
