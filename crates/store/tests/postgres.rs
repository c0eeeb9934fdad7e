//! The PostgreSQL store against a real server: PostgreSQL 16 with pgvector from the `pgserver`
//! wheel (installed into the test venv by `cargo xtask test`), started on a loopback port as an
//! unprivileged user (PostgreSQL refuses root) and stopped when the test ends. Without the
//! wheel the test fails with the reason; it never passes silently.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use gear_data::{Document, Tokenizer};
use gear_infer::{
    add_to_index, build_index, load_model, BuildOptions, DocumentIndex, ModelSource, Retriever,
};
use gear_model::{BertConfig, GearConfig, GearModel};
use gear_store::{
    push, HnswSettings, PgStore, Shard, StoreAddress, StoreBuildOptions, StoreSearch,
};
use tch::Device;

mod pg;

use pg::Postgres;

fn corpus() -> Vec<Document> {
    let mut docs = gear_synth::generate_corpus(46, 5);
    // Longer than the model reads: embedded in several windows, scored by its best. Made of
    // texts that are not documents themselves, so no window ties with a document.
    let extra = docs.split_off(40);
    docs.push(Document {
        id: "long".into(),
        title: "Long".into(),
        text: extra
            .iter()
            .map(|d| d.text.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    });
    docs
}

/// A tiny seeded GeAR checkpoint over the corpus's words, saved in `dir/name`.
fn checkpoint(dir: &Path, name: &str, seed: i64) -> PathBuf {
    let docs = corpus();
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let tok = Tokenizer::word_level(&texts, 512).unwrap();
    let mut encoder = BertConfig::tiny(tok.vocab_size() as i64);
    encoder.max_position_embeddings = 512;
    let mut cfg = GearConfig::for_encoder(encoder);
    cfg.max_document_len = 96;
    // libtorch's generator is global and the tests run on parallel threads: seed and
    // initialise under one lock, so a seed always gives the same weights.
    static SEEDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _seeding = SEEDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed);
    let path = dir.join(name);
    GearModel::new(cfg, tok, Device::Cpu)
        .unwrap()
        .save(&path)
        .unwrap();
    path
}

/// An index of `docs` embedded with the checkpoint `ck`, built in `out` and opened.
fn indexed(ck: &Path, docs: &[Document], out: &Path) -> DocumentIndex {
    build_index(
        &model(ck),
        ck,
        docs,
        out,
        &BuildOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    DocumentIndex::open(out, Device::Cpu).unwrap()
}

fn model(dir: &Path) -> GearModel {
    load_model(&ModelSource::Checkpoint(dir.to_owned()), Device::Cpu)
        .unwrap()
        .0
}

#[test]
fn a_pushed_index_answers_as_the_local_one_and_refuses_what_does_not_fit() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), "m", 1);
    let idx = dir.path().join("idx");
    let local = indexed(&ck, &corpus(), &idx);
    assert!(
        local.owners().len() > local.len(),
        "the long document has several vectors"
    );
    let address = StoreAddress::new(&pg.url(), "gear").unwrap();
    let mut seen = Vec::new();
    let written = push(&local, &address, HnswSettings::default(), &mut |d, t| {
        seen.push((d, t))
    })
    .unwrap();
    assert_eq!(written, local.len());
    assert_eq!(seen.last(), Some(&(local.len(), local.len())));
    // Pushing again writes nothing.
    assert_eq!(
        push(&local, &address, HnswSettings::default(), &mut |_, _| {}).unwrap(),
        0
    );

    // Exact search: the local index's ids and scores.
    let queries = [
        "where is the river bridge",
        "old mill",
        "the engineer built it",
    ];
    let exact = Retriever::with_corpus(
        model(&ck),
        Box::new(PgStore::open(&address, &ck, &model(&ck), StoreSearch::Exact).unwrap()),
    );
    let here = Retriever::new(model(&ck), DocumentIndex::open(&idx, Device::Cpu).unwrap());
    let k = 10;
    let theirs = exact.search(&queries, k, 2, None).unwrap();
    let ours = here.search(&queries, k, 2, None).unwrap();
    for (a, b) in theirs.iter().zip(&ours) {
        assert_eq!(a.results.len(), k);
        for (x, y) in a.results.iter().zip(&b.results) {
            assert_eq!((&x.id, &x.text), (&y.id, &y.text), "{}", a.query);
            assert!(
                (x.score - y.score).abs() < 1e-5,
                "{} vs {}",
                x.score,
                y.score
            );
            // Located on this node from the stored text: the same sentences.
            assert_eq!(x.sentences, y.sentences);
        }
    }
    assert_eq!(
        exact.document("long").unwrap().text,
        local.document("long").unwrap().text
    );
    let err = exact.document("nope").unwrap_err();
    assert!(
        matches!(err, gear_infer::Error::UnknownDocument { .. }),
        "{err}"
    );
    assert_eq!(
        gear_store::find_document(&address, "long")
            .unwrap()
            .unwrap()
            .text,
        local.document("long").unwrap().text
    );
    assert!(gear_store::find_document(&address, "nope")
        .unwrap()
        .is_none());

    // A database restart: while it is down, searches are Unavailable (a server's 503) naming
    // host and port; once it is back, the same store answers again without being reopened.
    pg.down();
    let err = exact.search(&queries, k, 0, None).unwrap_err();
    assert!(matches!(err, gear_infer::Error::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{}", pg.port)),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cret"), "{err}");
    pg.up();
    let again = exact.search(&queries, k, 2, None).unwrap();
    assert_eq!(again, theirs);

    // HNSW: most of the exact top 10 at a generous ef_search.
    let hnsw = PgStore::open(
        &address,
        &ck,
        &model(&ck),
        StoreSearch::Hnsw { ef_search: 100 },
    )
    .unwrap();
    let approx = Retriever::with_corpus(model(&ck), Box::new(hnsw))
        .search(&queries, k, 0, None)
        .unwrap();
    let mut agree = 0;
    for (a, b) in approx.iter().zip(&ours) {
        let want: Vec<&str> = b.results.iter().map(|h| h.id.as_str()).collect();
        agree += a
            .results
            .iter()
            .filter(|h| want.contains(&h.id.as_str()))
            .count();
    }
    assert!(
        agree * 10 >= queries.len() * k * 9,
        "HNSW recall@10 {agree}/{}",
        queries.len() * k
    );

    // An interrupted push (the last documents missing, the record unfinished) is refused at
    // open, and resumes without duplicates.
    let mut client = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    client
        .batch_execute(
            "DELETE FROM gear.vectors WHERE document >= 20; DELETE FROM gear.documents WHERE row >= 20;
             UPDATE gear.meta SET value = jsonb_set(value, '{complete}', 'false');",
        )
        .unwrap();
    let err = PgStore::open(&address, &ck, &model(&ck), StoreSearch::Exact)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("did not finish"), "{err}");
    assert_eq!(
        push(&local, &address, HnswSettings::default(), &mut |_, _| {}).unwrap(),
        local.len() - 20
    );
    let mut count = |table: &str| -> i64 {
        client
            .query_one(&format!("SELECT count(*) FROM gear.{table}"), &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(count("documents"), local.len() as i64);
    assert_eq!(count("vectors"), local.owners().len() as i64);

    // Another model: refused at open and at push, by fingerprint.
    let other = checkpoint(dir.path(), "other", 2);
    let err = PgStore::open(&address, &other, &model(&other), StoreSearch::Exact)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another model"), "{err}");
    let other_local = indexed(&other, &corpus(), &dir.path().join("other-idx"));
    let err = push(
        &other_local,
        &address,
        HnswSettings::default(),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("another model"), "{err}");
    // An empty schema says how to fill it.
    let empty = StoreAddress::new(&pg.url(), "empty").unwrap();
    let err = PgStore::open(&empty, &ck, &model(&ck), StoreSearch::Exact)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("gear index push"), "{err}");

    // Unreachable: host and port named, the password never.
    let closed = pg::free_port();
    let gone = StoreAddress::new(
        &format!("postgres://postgres:s3cret@127.0.0.1:{closed}/postgres"),
        "gear",
    )
    .unwrap();
    let err = PgStore::open(&gone, &ck, &model(&ck), StoreSearch::Exact)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert!(StoreAddress::new(&pg.url(), "bad-name;").is_err());
}

/// Read scaling is PostgreSQL's own: a hot standby serves the store while new documents are
/// pushed to the primary, and answers with them — as the local index with them does — once it
/// has replayed the primary's writes, without being reopened. Writes to it are refused.
#[test]
fn a_hot_standby_serves_the_documents_pushed_to_the_primary_once_it_caught_up() {
    let primary = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), "m", 1);
    let idx = dir.path().join("idx");
    let docs = corpus();
    let (first, more) = docs.split_at(30);
    let local = indexed(&ck, first, &idx);
    let on_primary = StoreAddress::new(&primary.url(), "gear").unwrap();
    push(&local, &on_primary, HnswSettings::default(), &mut |_, _| {}).unwrap();

    let standby = Postgres::standby_of(&primary);
    let on_standby = StoreAddress::new(&standby.url(), "gear").unwrap();
    let replica = Retriever::with_corpus(
        model(&ck),
        Box::new(PgStore::open(&on_standby, &ck, &model(&ck), StoreSearch::Exact).unwrap()),
    );
    let all = docs.len();
    let query = ["the engineer built the bridge"];
    let before = replica.search(&query, all, 0, None).unwrap();
    assert_eq!(before[0].results.len(), first.len());
    let err = push(&local, &on_standby, HnswSettings::default(), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("read-only"), "{err}");

    // `gear index add` on the local index, then a push to the primary: only the new documents.
    add_to_index(
        &model(&ck),
        &ck,
        more,
        &idx,
        &BuildOptions::default(),
        &mut |_, _| {},
        &mut |_, _| {},
    )
    .unwrap();
    let grown = DocumentIndex::open(&idx, Device::Cpu).unwrap();
    assert_eq!(
        push(&grown, &on_primary, HnswSettings::default(), &mut |_, _| {}).unwrap(),
        more.len()
    );
    let start = std::time::Instant::now();
    let after = loop {
        let answer = replica.search(&query, all, 0, None).unwrap();
        if answer[0].results.len() == all {
            break answer;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the standby did not catch up in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let here = Retriever::new(model(&ck), grown)
        .search(&query, all, 0, None)
        .unwrap();
    for (x, y) in after[0].results.iter().zip(&here[0].results) {
        assert_eq!(x.id, y.id);
        assert!(
            (x.score - y.score).abs() < 1e-5,
            "{} vs {}",
            x.score,
            y.score
        );
    }
}

/// `gear index build --store` in shards: each shard writes its documents, a store missing one
/// is not finished (naming the missing rows) nor served, a shard run twice writes nothing more,
/// and the finished store answers as the index folder built in one process. A longer corpus
/// that begins with the store's grows it; another corpus is refused.
#[test]
fn a_store_built_in_shards_equals_the_index_folder_and_grows_with_its_corpus() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), "m", 1);
    let docs = corpus();
    let local = indexed(&ck, &docs, &dir.path().join("idx"));
    let address = StoreAddress::new(&pg.url(), "sharded").unwrap();
    let options = |index| StoreBuildOptions {
        shard: Shard { index, count: 3 },
        embed: BuildOptions {
            batch_size: 4,
            ..BuildOptions::default()
        },
        commit_every: 5,
    };
    let m = model(&ck);
    let build = |index, corpus: &[Document]| {
        gear_store::build(&m, &ck, corpus, &address, &options(index), &mut |_, _| {})
    };
    let first = build(0, &docs).unwrap();
    assert_eq!(
        (first.range.clone(), first.written, first.present),
        (0..13, 13, 0)
    );
    build(2, &docs).unwrap();
    let err = gear_store::finish(&address, HnswSettings::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds 27 of its 41 documents (missing rows 13, 14, 15, 16, 17, …)"),
        "{err}"
    );
    let err = PgStore::open(&address, &ck, &m, StoreSearch::Exact)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("did not finish"), "{err}");
    let middle = build(1, &docs).unwrap();
    assert_eq!((middle.range.clone(), middle.written), (13..27, 14));
    assert_eq!(build(1, &docs).unwrap().written, 0, "a shard run again");
    let meta = gear_store::finish(&address, HnswSettings::default()).unwrap();
    assert_eq!(
        (meta.documents, meta.rows),
        (local.len(), local.owners().len())
    );

    // The same vectors as the folder, and the same answers.
    let mut client = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    let stored: Vec<(i64, i32, pgvector::Vector)> = client
        .query(
            "SELECT document, part, embedding FROM sharded.vectors ORDER BY document, part",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let vectors = local.vectors().to_kind(tch::Kind::Float);
    let owners: Vec<i64> = stored.iter().map(|v| v.0).collect();
    let want: Vec<i64> = local.owners().iter().map(|&o| o as i64).collect();
    assert_eq!(owners, want);
    for (row, (_, _, v)) in stored.iter().enumerate() {
        let here: Vec<f32> = Vec::try_from(vectors.get(row as i64)).unwrap();
        let worst = here
            .iter()
            .zip(v.as_slice())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "row {row}: {worst}");
    }
    let store = Retriever::with_corpus(
        model(&ck),
        Box::new(PgStore::open(&address, &ck, &m, StoreSearch::Exact).unwrap()),
    );
    let folder = Retriever::new(model(&ck), local);
    let query = ["the engineer built the bridge"];
    let (a, b) = (
        store.search(&query, 10, 0, None).unwrap(),
        folder.search(&query, 10, 0, None).unwrap(),
    );
    for (x, y) in a[0].results.iter().zip(&b[0].results) {
        assert_eq!(x.id, y.id);
        assert!((x.score - y.score).abs() < 1e-5);
    }

    // A corpus that begins with the store's grows it (only the new documents are embedded);
    // any other is refused.
    let mut more = docs.clone();
    more.push(Document {
        id: "new".into(),
        title: "New".into(),
        text: "A new bridge over the river, built by the engineer.".into(),
    });
    let whole = StoreBuildOptions {
        shard: Shard::WHOLE,
        ..options(0)
    };
    let grown = gear_store::build(&m, &ck, &more, &address, &whole, &mut |_, _| {}).unwrap();
    assert_eq!((grown.written, grown.present), (1, docs.len()));
    assert_eq!(
        gear_store::finish(&address, HnswSettings::default())
            .unwrap()
            .documents,
        docs.len() + 1
    );
    let mut other = more.clone();
    other.swap(0, 1);
    let err = gear_store::build(&m, &ck, &other, &address, &whole, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds another corpus"), "{err}");
}
