//! The RIR synthesis pipeline (method §4, the paper's appendix A): documents in, (keyword query,
//! document, relevant sentence) triples out, every step counted.
//!
//! 1. **Pre-processing** — read the document sentence by sentence, dropping sentences with
//!    repeated line breaks or repeated phrases (a word trigram occurring twice, or a sentence
//!    seen before), until it ends or reaches `max_tokens` (500 < 512); drop documents with fewer
//!    than `min_sentences` (3) sentences or `min_tokens` (200) tokens.
//! 2. **Candidate units** — sentences of `unit_min_tokens..=unit_max_tokens` (8–20) tokens whose
//!    first word and subject are not pronouns (this, these, it, that, those, they, he, she, we,
//!    you, I). Without a parser the subject is taken as the first word, or — after an
//!    introductory phrase closed by a comma within the first eight words — the word after that
//!    comma. Drop documents with fewer than `min_candidates` (3).
//! 3. **Pick** `units_per_document` (3) candidates at random; the generator is seeded per document
//!    from the run's seed and the document id, so results do not depend on input order or resume.
//! 4. **Rewrite** each into a keyword query ([`Rewriter`]).
//! 5. **Post-process** — split on commas, drop duplicate keywords (case-insensitive, and keywords
//!    contained in another), shuffle their order with the document's generator.
//! 6. **Relevance filter** — keep triples whose query–document cosine under an [`Embedder`] is at
//!    least `min_similarity` (0.5).
//!
//! Output is resumable: finished documents are appended to `<output>.partial` (one record per
//! document); a rerun skips them, and the triples file appears only when the run completes. A
//! resume must be the same job: the partial file starts with a fingerprint of the settings that
//! shape the output (every [`RirConfig`] field but `concurrency`, and the rewriter's name), and
//! each record keeps a hash of its document — a rerun with other settings, or with an input whose
//! finished documents changed or disappeared, is refused rather than mixed in. One writer at a
//! time: `<output>.lock` is held for the whole run.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{
    split_sentences, Document, Error, JsonlWriter, Result, Scenario, Span, Tokenizer, Triple, Unit,
};

/// Rewrites a sentence into a keyword query. Implementations must be usable from several threads.
pub trait Rewriter: Sync {
    /// A short name for reports and errors.
    fn name(&self) -> &str;
    /// The query for `sentence` (comma-separated keywords).
    fn rewrite(&self, sentence: &str) -> Result<String>;
}

/// Embeds texts as unit-norm vectors, for the relevance filter.
pub trait Embedder {
    /// One vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}

/// The offline default rewriter: [`crate::extract_keywords`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KeywordRewriter(pub crate::KeywordOptions);

impl Rewriter for KeywordRewriter {
    fn name(&self) -> &str {
        "keywords"
    }
    fn rewrite(&self, sentence: &str) -> Result<String> {
        Ok(crate::extract_keywords(sentence, &self.0).join(", "))
    }
}

/// Settings of the pipeline; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RirConfig {
    /// Token budget of a pre-processed document.
    pub max_tokens: usize,
    /// Fewer tokens: document dropped.
    pub min_tokens: usize,
    /// Fewer sentences: document dropped.
    pub min_sentences: usize,
    /// Shortest candidate unit, in tokens.
    pub unit_min_tokens: usize,
    /// Longest candidate unit, in tokens.
    pub unit_max_tokens: usize,
    /// Fewer candidates: document dropped.
    pub min_candidates: usize,
    /// Units picked (and queries written) per document.
    pub units_per_document: usize,
    /// Relevance threshold on query–document cosine; `None` disables the filter.
    pub min_similarity: Option<f32>,
    /// Seed of the per-document generators.
    pub seed: u64,
    /// Rewrites in flight at once.
    pub concurrency: usize,
}

impl Default for RirConfig {
    fn default() -> Self {
        Self {
            max_tokens: 500,
            min_tokens: 200,
            min_sentences: 3,
            unit_min_tokens: 8,
            unit_max_tokens: 20,
            min_candidates: 3,
            units_per_document: 3,
            min_similarity: Some(0.5),
            seed: 0,
            concurrency: 1,
        }
    }
}

/// Counts of every step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RirStats {
    /// Documents read in this run (resumed ones excluded).
    pub documents: usize,
    /// Documents skipped because an earlier run finished them.
    pub resumed: usize,
    /// Sentences dropped for repeated line breaks or phrases.
    pub sentences_dropped_repetitive: usize,
    /// Documents dropped for having fewer than `min_sentences` sentences.
    pub dropped_few_sentences: usize,
    /// Documents dropped for having fewer than `min_tokens` tokens.
    pub dropped_few_tokens: usize,
    /// Candidate units found in the kept documents.
    pub candidates: usize,
    /// Documents dropped for having fewer than `min_candidates` candidates.
    pub dropped_few_candidates: usize,
    /// Units picked and sent to the rewriter.
    pub rewritten: usize,
    /// Queries empty after post-processing.
    pub dropped_empty_query: usize,
    /// Triples under the relevance threshold.
    pub dropped_low_similarity: usize,
    /// Triples written.
    pub triples: usize,
}

const PRONOUNS: &[&str] = &[
    "this", "these", "it", "that", "those", "they", "he", "she", "we", "you", "i",
];

/// A pre-processed document: kept sentences joined by one space, and their spans in that text.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// The document with its new text.
    pub document: Document,
    /// Sentence spans (bytes) in `document.text`.
    pub sentences: Vec<Span>,
    /// Token count of each sentence.
    pub tokens: Vec<usize>,
}

fn content_tokens(tokenizer: &Tokenizer, text: &str) -> Result<usize> {
    // Without [CLS] and [SEP].
    Ok(tokenizer.count_tokens(text)?.saturating_sub(2))
}

fn is_repetitive(sentence: &str) -> bool {
    if sentence.contains("\n\n") || sentence.contains("\r\n\r\n") {
        return true;
    }
    let words: Vec<String> = sentence
        .split_whitespace()
        .map(|w| w.to_lowercase())
        .collect();
    let mut seen = HashSet::new();
    words.windows(3).any(|w| !seen.insert(w.to_vec()))
}

/// Step 1. `None` when the document is dropped (the reason is counted in `stats`).
pub fn preprocess(
    doc: &Document,
    tokenizer: &Tokenizer,
    cfg: &RirConfig,
    stats: &mut RirStats,
) -> Result<Option<Preprocessed>> {
    let mut text = String::new();
    let mut sentences = Vec::new();
    let mut tokens = Vec::new();
    let mut total = 0usize;
    let mut seen = HashSet::new();
    for span in split_sentences(&doc.text) {
        let s = &doc.text[span.start..span.end];
        if is_repetitive(s) || !seen.insert(s.to_lowercase()) {
            stats.sentences_dropped_repetitive += 1;
            continue;
        }
        let n = content_tokens(tokenizer, s)?;
        if total + n > cfg.max_tokens {
            break;
        }
        total += n;
        if !text.is_empty() {
            text.push(' ');
        }
        // Line breaks inside a kept sentence become spaces: units are single lines.
        let clean = s.split_whitespace().collect::<Vec<_>>().join(" ");
        sentences.push(Span::new(text.len(), text.len() + clean.len()));
        text.push_str(&clean);
        tokens.push(n);
    }
    if sentences.len() < cfg.min_sentences {
        stats.dropped_few_sentences += 1;
        return Ok(None);
    }
    if total < cfg.min_tokens {
        stats.dropped_few_tokens += 1;
        return Ok(None);
    }
    Ok(Some(Preprocessed {
        document: Document {
            id: doc.id.clone(),
            title: doc.title.clone(),
            text,
        },
        sentences,
        tokens,
    }))
}

fn first_word(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c == ',')
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
}

/// Step 2's subject test: see the module documentation.
pub fn pronoun_led(sentence: &str) -> bool {
    if PRONOUNS.contains(&first_word(sentence).as_str()) {
        return true;
    }
    if let Some(comma) = sentence.find(',') {
        let intro_words = sentence[..comma].split_whitespace().count();
        if intro_words <= 8 && PRONOUNS.contains(&first_word(&sentence[comma + 1..]).as_str()) {
            return true;
        }
    }
    false
}

/// Step 2: indices of candidate sentences.
pub fn candidates(pre: &Preprocessed, cfg: &RirConfig) -> Vec<usize> {
    (0..pre.sentences.len())
        .filter(|&i| {
            let n = pre.tokens[i];
            let s = &pre.document.text[pre.sentences[i].start..pre.sentences[i].end];
            (cfg.unit_min_tokens..=cfg.unit_max_tokens).contains(&n) && !pronoun_led(s)
        })
        .collect()
}

/// Step 5: de-duplicated keywords in shuffled order, joined by `", "`.
pub fn postprocess_query(raw: &str, rng: &mut ChaCha8Rng) -> String {
    let mut keywords: Vec<String> = Vec::new();
    for k in raw.split([',', '\n', ';']) {
        let k = k
            .trim()
            .trim_matches(|c: char| c == '"' || c == '\'' || c == '.' || c == '-' || c == '*')
            .trim();
        let k = k.split_whitespace().collect::<Vec<_>>().join(" ");
        if !k.is_empty() && !keywords.iter().any(|e| e.eq_ignore_ascii_case(&k)) {
            keywords.push(k);
        }
    }
    // Drop a keyword whose words all appear, in order, inside a longer one.
    let lowered: Vec<String> = keywords
        .iter()
        .map(|k| format!(" {} ", k.to_lowercase()))
        .collect();
    let mut kept: Vec<String> = keywords
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            !lowered
                .iter()
                .enumerate()
                .any(|(j, o)| j != *i && o.len() > lowered[*i].len() && o.contains(&lowered[*i]))
        })
        .map(|(_, k)| k.clone())
        .collect();
    kept.shuffle(rng);
    kept.join(", ")
}

/// The per-document generator.
pub fn document_rng(seed: u64, id: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ crate::stable_hash(id))
}

#[derive(Serialize, Deserialize)]
struct DocRecord {
    document_id: String,
    /// [`document_hash`] of the document the record was made from.
    document_hash: String,
    stats: RirStats,
    triples: Vec<Triple>,
}

/// Runs the pipeline over `documents`, writing triples to `output` (see the module docs for
/// resuming). `progress` is called after every document.
pub fn synthesize_rir(
    documents: impl Iterator<Item = Result<Document>>,
    output: &Path,
    tokenizer: &Tokenizer,
    rewriter: &dyn Rewriter,
    embedder: Option<&dyn Embedder>,
    cfg: &RirConfig,
    progress: &mut dyn FnMut(&RirStats),
) -> Result<RirStats> {
    if cfg.min_similarity.is_some() && embedder.is_none() {
        return Err(Error::InvalidSetting {
            field: "min_similarity",
            message: "the relevance filter needs an embedder (or set it to none)".into(),
        });
    }
    let _lock = crate::OutputLock::acquire(output)?;
    // Checked under the lock, so a run that finished just before this one counts too.
    if output.exists() {
        return Err(Error::Output {
            path: output.to_owned(),
            message: "exists already; remove it to synthesise again".into(),
        });
    }
    let partial = partial_path(output);
    let settings = settings_fingerprint(cfg, rewriter);
    let (mut done, mut stats) = read_partial(&partial, &settings)?;
    let mut sink = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .map_err(|source| Error::Io {
            path: partial.clone(),
            source,
        })?;
    if done.is_empty() && stats == RirStats::default() {
        let header = serde_json::json!({ PARTIAL_HEADER: settings }).to_string() + "\n";
        sink.write_all(header.as_bytes())
            .and_then(|()| sink.sync_data())
            .map_err(|source| Error::Io {
                path: partial.clone(),
                source,
            })?;
    }
    stats.resumed = done.len();
    stats.documents = 0;

    let chunk = (cfg.concurrency.max(1) * 8).max(16);
    let mut buffer: Vec<Document> = Vec::with_capacity(chunk);
    let mut documents = documents.peekable();
    while documents.peek().is_some() {
        buffer.clear();
        while buffer.len() < chunk {
            match documents.next() {
                Some(doc) => {
                    let doc = doc?;
                    match done.remove(&doc.id) {
                        None => buffer.push(doc),
                        Some(hash) if hash == document_hash(&doc) => {}
                        Some(_) => {
                            return Err(Error::Output {
                                path: partial,
                                message: format!(
                                    "document `{}` differs from the one the interrupted run \
                                     processed: resume with the same input, or remove the \
                                     partial file to start over",
                                    doc.id
                                ),
                            })
                        }
                    }
                }
                None => break,
            }
        }
        process_chunk(
            &buffer, tokenizer, rewriter, embedder, cfg, &mut sink, &partial, &mut stats, progress,
        )?;
    }
    if let Some(id) = done.keys().min() {
        return Err(Error::Output {
            path: partial,
            message: format!(
                "the interrupted run processed {} document(s) this input lacks (`{id}` among \
                 them): resume with the same input, or remove the partial file to start over",
                done.len()
            ),
        });
    }
    finish(&partial, output, &mut stats)?;
    Ok(stats)
}

/// The first line of a partial file: `{"gear_rir_settings": "<fingerprint>"}`.
const PARTIAL_HEADER: &str = "gear_rir_settings";

/// What must not change between a run and its resume.
fn settings_fingerprint(cfg: &RirConfig, rewriter: &dyn Rewriter) -> String {
    let mut shaping = cfg.clone();
    shaping.concurrency = 0;
    crate::Fingerprint::new()
        .json("config", &shaping)
        .value("rewriter", rewriter.name())
        .finish()
}

/// A hash of a document's id, title and text.
fn document_hash(doc: &Document) -> String {
    crate::Fingerprint::new()
        .value("id", &doc.id)
        .value("title", &doc.title)
        .value("text", &doc.text)
        .finish()
}

#[allow(clippy::too_many_arguments)]
fn process_chunk(
    docs: &[Document],
    tokenizer: &Tokenizer,
    rewriter: &dyn Rewriter,
    embedder: Option<&dyn Embedder>,
    cfg: &RirConfig,
    sink: &mut File,
    partial: &Path,
    stats: &mut RirStats,
    progress: &mut dyn FnMut(&RirStats),
) -> Result<()> {
    // Steps 1–3 per document, on this thread.
    struct Work {
        pre: Preprocessed,
        picked: Vec<usize>,
        rng: ChaCha8Rng,
    }
    let mut work: Vec<(&Document, Option<Work>, RirStats)> = Vec::with_capacity(docs.len());
    for doc in docs {
        let mut s = RirStats {
            documents: 1,
            ..RirStats::default()
        };
        let mut rng = document_rng(cfg.seed, &doc.id);
        let item = match preprocess(doc, tokenizer, cfg, &mut s)? {
            None => None,
            Some(pre) => {
                let cands = candidates(&pre, cfg);
                s.candidates += cands.len();
                if cands.len() < cfg.min_candidates.max(1) {
                    s.dropped_few_candidates += 1;
                    None
                } else {
                    let mut picked: Vec<usize> = cands
                        .choose_multiple(&mut rng, cfg.units_per_document)
                        .copied()
                        .collect();
                    picked.sort_unstable();
                    Some(Work { pre, picked, rng })
                }
            }
        };
        work.push((doc, item, s));
    }

    // Step 4: every picked sentence of the chunk, `concurrency` at a time.
    let jobs: Vec<(usize, usize)> = work
        .iter()
        .enumerate()
        .flat_map(|(d, (_, w, _))| {
            w.iter()
                .flat_map(move |w| w.picked.iter().map(move |&u| (d, u)))
        })
        .collect();
    let sentences: Vec<&str> = jobs
        .iter()
        .map(|&(d, u)| {
            let w = work[d]
                .1
                .as_ref()
                .map(|w| (&w.pre.document.text, w.pre.sentences[u]));
            w.map_or("", |(t, s)| &t[s.start..s.end])
        })
        .collect();
    let queries = rewrite_all(rewriter, &sentences, cfg.concurrency.max(1))?;

    // Steps 5–6, then one record per document.
    let mut q_index = 0;
    let mut pending: Vec<(&Document, Vec<Triple>, RirStats)> = Vec::with_capacity(work.len());
    for (doc, item, mut s) in work {
        let id = &doc.id;
        let mut triples = Vec::new();
        if let Some(mut w) = item {
            for (k, &u) in w.picked.iter().enumerate() {
                let raw = &queries[q_index];
                q_index += 1;
                s.rewritten += 1;
                let query = postprocess_query(raw, &mut w.rng);
                if query.is_empty() {
                    s.dropped_empty_query += 1;
                    continue;
                }
                let span = w.pre.sentences[u];
                let Some(unit) = Unit::from_byte_span(&w.pre.document.text, span) else {
                    continue;
                };
                triples.push(Triple {
                    id: Some(format!("{id}#{k}")),
                    query,
                    document: w.pre.document.clone(),
                    units: vec![unit],
                    answer: None,
                    scenario: Scenario::Rir,
                    negatives: Vec::new(),
                });
            }
        }
        pending.push((doc, triples, s));
    }
    if let (Some(embedder), Some(threshold)) = (embedder, cfg.min_similarity) {
        filter_by_similarity(&mut pending, embedder, threshold)?;
    }
    for (doc, triples, mut s) in pending {
        s.triples = triples.len();
        let record = DocRecord {
            document_id: doc.id.clone(),
            document_hash: document_hash(doc),
            stats: s.clone(),
            triples,
        };
        let mut line = serde_json::to_vec(&record).map_err(|e| Error::Io {
            path: partial.to_owned(),
            source: e.into(),
        })?;
        line.push(b'\n');
        sink.write_all(&line)
            .and_then(|()| sink.flush())
            .map_err(|source| Error::Io {
                path: partial.to_owned(),
                source,
            })?;
        add(stats, &s);
        progress(stats);
    }
    Ok(())
}

fn rewrite_all(
    rewriter: &dyn Rewriter,
    sentences: &[&str],
    concurrency: usize,
) -> Result<Vec<String>> {
    if concurrency <= 1 || sentences.len() <= 1 {
        return sentences.iter().map(|s| rewriter.rewrite(s)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<String>>>> = sentences
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..concurrency.min(sentences.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(s) = sentences.get(i) else { break };
                let r = rewriter.rewrite(s);
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(Error::Rewrite {
                    rewriter: rewriter.name().into(),
                    message: "worker thread panicked".into(),
                })
            })
        })
        .collect()
}

/// Cosine similarity (0 for a zero vector), whatever the embedder's normalisation.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator > 0.0 {
        dot / denominator
    } else {
        0.0
    }
}

fn filter_by_similarity(
    pending: &mut [(&Document, Vec<Triple>, RirStats)],
    embedder: &dyn Embedder,
    threshold: f32,
) -> Result<()> {
    let queries: Vec<&str> = pending
        .iter()
        .flat_map(|(_, t, _)| t.iter().map(|t| t.query.as_str()))
        .collect();
    if queries.is_empty() {
        return Ok(());
    }
    let docs: Vec<&str> = pending
        .iter()
        .filter(|(_, t, _)| !t.is_empty())
        .map(|(_, t, _)| t[0].document.text.as_str())
        .collect();
    let q = embedder.embed(&queries)?;
    let d = embedder.embed(&docs)?;
    if q.len() != queries.len() || d.len() != docs.len() {
        return Err(Error::Embed(format!(
            "asked for {} + {} vectors, got {} + {}",
            queries.len(),
            docs.len(),
            q.len(),
            d.len()
        )));
    }
    let (mut qi, mut di) = (0, 0);
    for (_, triples, s) in pending.iter_mut() {
        if triples.is_empty() {
            continue;
        }
        let doc = &d[di];
        di += 1;
        let before = triples.len();
        let mut keep = Vec::with_capacity(before);
        for t in triples.drain(..) {
            let cos = cosine(&q[qi], doc);
            qi += 1;
            if cos >= threshold {
                keep.push(t);
            }
        }
        s.dropped_low_similarity += before - keep.len();
        *triples = keep;
    }
    Ok(())
}

fn add(total: &mut RirStats, s: &RirStats) {
    total.documents += s.documents;
    total.sentences_dropped_repetitive += s.sentences_dropped_repetitive;
    total.dropped_few_sentences += s.dropped_few_sentences;
    total.dropped_few_tokens += s.dropped_few_tokens;
    total.candidates += s.candidates;
    total.dropped_few_candidates += s.dropped_few_candidates;
    total.rewritten += s.rewritten;
    total.dropped_empty_query += s.dropped_empty_query;
    total.dropped_low_similarity += s.dropped_low_similarity;
    total.triples += s.triples;
}

/// `<output>.partial`.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// Finished document ids (with their documents' hashes) and their summed stats; a torn last line
/// (a crash mid-write) is cut off. A partial file made with other settings is refused.
fn read_partial(partial: &Path, settings: &str) -> Result<(HashMap<String, String>, RirStats)> {
    let mut done = HashMap::new();
    let mut stats = RirStats::default();
    if !partial.exists() {
        return Ok((done, stats));
    }
    let io = |source| Error::Io {
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
        let bad = |message: String| Error::BadLine {
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
                    return Err(Error::Output {
                        path: partial.to_owned(),
                        message: "an interrupted run with other settings (seed, threshold, \
                                  rewriter, limits) left this: rerun with its settings, or \
                                  remove it to start over"
                            .into(),
                    })
                }
                None => {
                    return Err(Error::Output {
                        path: partial.to_owned(),
                        message: "not a partial RIR file of this version (no settings line): \
                                  remove it to start over"
                            .into(),
                    })
                }
            }
        } else {
            let rec: DocRecord =
                serde_json::from_str(line.trim_end()).map_err(|e| bad(e.to_string()))?;
            done.insert(rec.document_id, rec.document_hash);
            add(&mut stats, &rec.stats);
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
fn finish(partial: &Path, output: &Path, stats: &mut RirStats) -> Result<()> {
    let io = |source| Error::Io {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pronoun_subjects_are_detected() {
        assert!(pronoun_led("It was built in 1900."));
        assert!(pronoun_led("In 1990, they moved north."));
        assert!(pronoun_led("\"This\" is quoted."));
        assert!(!pronoun_led("The town lies on the river."));
        assert!(!pronoun_led("In 1990, the mill closed, and it burned."));
        assert!(!pronoun_led("Ithaca is an island."));
    }

    #[test]
    fn repeated_phrases_and_line_breaks() {
        assert!(is_repetitive(
            "Click here to read more. Click here to read more."
        ));
        assert!(is_repetitive("A title\n\nand a body."));
        assert!(!is_repetitive("The river flows north into the sea."));
    }

    #[test]
    fn postprocessing_dedupes_and_reorders_deterministically() {
        let raw = "Super Bowl 50, super bowl 50, Denver Broncos, Broncos, \"Levi's Stadium\".";
        let a = postprocess_query(raw, &mut document_rng(1, "d"));
        let b = postprocess_query(raw, &mut document_rng(1, "d"));
        assert_eq!(a, b);
        let mut parts: Vec<&str> = a.split(", ").collect();
        parts.sort_unstable();
        assert_eq!(parts, ["Denver Broncos", "Levi's Stadium", "Super Bowl 50"]);
        assert_eq!(postprocess_query(" , ,", &mut document_rng(1, "d")), "");
    }
}
