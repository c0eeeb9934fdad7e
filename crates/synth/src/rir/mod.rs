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

mod filter;
mod preprocess;
mod query;
mod resume;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use gear_data::{Document, Error as DataError, OutputLock, Scenario, Tokenizer, Triple, Unit};

use crate::Result;

pub use preprocess::{candidates, preprocess, pronoun_led, Preprocessed};
pub use query::{document_rng, postprocess_query};
pub use resume::partial_path;

use filter::filter_by_similarity;
use query::rewrite_all;
use resume::{
    document_hash, finish, read_partial, settings_fingerprint, DocRecord, PARTIAL_HEADER,
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

impl RirStats {
    /// Adds `s`'s counts to these (`resumed` aside).
    pub fn add(&mut self, s: &RirStats) {
        self.documents += s.documents;
        self.sentences_dropped_repetitive += s.sentences_dropped_repetitive;
        self.dropped_few_sentences += s.dropped_few_sentences;
        self.dropped_few_tokens += s.dropped_few_tokens;
        self.candidates += s.candidates;
        self.dropped_few_candidates += s.dropped_few_candidates;
        self.rewritten += s.rewritten;
        self.dropped_empty_query += s.dropped_empty_query;
        self.dropped_low_similarity += s.dropped_low_similarity;
        self.triples += s.triples;
    }
}

/// Runs the pipeline over `documents`, writing triples to `output` (see the module docs for
/// resuming). `progress` is called after every document.
pub fn synthesize_rir(
    documents: impl Iterator<Item = gear_data::Result<Document>>,
    output: &Path,
    tokenizer: &Tokenizer,
    rewriter: &dyn Rewriter,
    embedder: Option<&dyn Embedder>,
    cfg: &RirConfig,
    progress: &mut dyn FnMut(&RirStats),
) -> Result<RirStats> {
    if cfg.min_similarity.is_some() && embedder.is_none() {
        return Err(DataError::InvalidSetting {
            field: "min_similarity",
            message: "the relevance filter needs an embedder (or set it to none)".into(),
        }
        .into());
    }
    let _lock = OutputLock::acquire(output)?;
    // Checked under the lock, so a run that finished just before this one counts too.
    if output.exists() {
        return Err(DataError::Output {
            path: output.to_owned(),
            message: "exists already; remove it to synthesise again".into(),
        }
        .into());
    }
    let partial = partial_path(output);
    let settings = settings_fingerprint(cfg, rewriter);
    let (mut done, mut stats) = read_partial(&partial, &settings)?;
    let mut sink = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .map_err(|source| DataError::Io {
            path: partial.clone(),
            source,
        })?;
    if done.is_empty() && stats == RirStats::default() {
        let header = serde_json::json!({ PARTIAL_HEADER: settings }).to_string() + "\n";
        sink.write_all(header.as_bytes())
            .and_then(|()| sink.sync_data())
            .map_err(|source| DataError::Io {
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
                            return Err(DataError::Output {
                                path: partial,
                                message: format!(
                                    "document `{}` differs from the one the interrupted run \
                                     processed: resume with the same input, or remove the \
                                     partial file to start over",
                                    doc.id
                                ),
                            }
                            .into())
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
        return Err(DataError::Output {
            path: partial,
            message: format!(
                "the interrupted run processed {} document(s) this input lacks (`{id}` among \
                 them): resume with the same input, or remove the partial file to start over",
                done.len()
            ),
        }
        .into());
    }
    finish(&partial, output, &mut stats)?;
    Ok(stats)
}

/// One kept document after steps 1–3: its pre-processed text, the picked candidates (sentence
/// indices, in order) and its generator, which step 5 goes on using.
struct Picked {
    pre: Preprocessed,
    picked: Vec<usize>,
    rng: ChaCha8Rng,
}

/// Steps 1–3 for one document; `None` when it is dropped (the reason is counted in `s`).
fn pick_units(
    doc: &Document,
    tokenizer: &Tokenizer,
    cfg: &RirConfig,
    s: &mut RirStats,
) -> Result<Option<Picked>> {
    let mut rng = document_rng(cfg.seed, &doc.id);
    let Some(pre) = preprocess(doc, tokenizer, cfg, s)? else {
        return Ok(None);
    };
    let cands = candidates(&pre, cfg);
    s.candidates += cands.len();
    if cands.len() < cfg.min_candidates.max(1) {
        s.dropped_few_candidates += 1;
        return Ok(None);
    }
    let mut picked: Vec<usize> = cands
        .choose_multiple(&mut rng, cfg.units_per_document)
        .copied()
        .collect();
    picked.sort_unstable();
    Ok(Some(Picked { pre, picked, rng }))
}

/// Step 5 for one document: a triple per picked unit whose query is not empty, taking the
/// rewriter's raw queries in order from `queries`.
fn document_triples<'q>(
    doc: &Document,
    item: Option<Picked>,
    queries: &mut impl Iterator<Item = &'q String>,
    s: &mut RirStats,
) -> Vec<Triple> {
    let mut triples = Vec::new();
    let Some(mut w) = item else {
        return triples;
    };
    for (k, &u) in w.picked.iter().enumerate() {
        let raw = queries.next().map_or("", String::as_str);
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
            id: Some(format!("{}#{k}", doc.id)),
            query,
            document: w.pre.document.clone(),
            units: vec![unit],
            answer: None,
            alternative_answers: Vec::new(),
            scenario: Scenario::Rir,
            negatives: Vec::new(),
        });
    }
    triples
}

/// Runs the six steps over one chunk of documents and appends a record per document.
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
    let mut work: Vec<(&Document, Option<Picked>, RirStats)> = Vec::with_capacity(docs.len());
    for doc in docs {
        let mut s = RirStats {
            documents: 1,
            ..RirStats::default()
        };
        let item = pick_units(doc, tokenizer, cfg, &mut s)?;
        work.push((doc, item, s));
    }

    // Step 4: every picked sentence of the chunk, `concurrency` at a time.
    let sentences: Vec<&str> = work
        .iter()
        .filter_map(|(_, w, _)| w.as_ref())
        .flat_map(|w| {
            w.picked.iter().map(|&u| {
                let s = w.pre.sentences[u];
                &w.pre.document.text[s.start..s.end]
            })
        })
        .collect();
    let queries = rewrite_all(rewriter, &sentences, cfg.concurrency.max(1))?;

    // Step 5, then step 6 over the whole chunk.
    let mut raw = queries.iter();
    let mut pending: Vec<(&Document, Vec<Triple>, RirStats)> = work
        .into_iter()
        .map(|(doc, item, mut s)| {
            let triples = document_triples(doc, item, &mut raw, &mut s);
            (doc, triples, s)
        })
        .collect();
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
        append_record(sink, partial, &record)?;
        stats.add(&s);
        progress(stats);
    }
    Ok(())
}

/// Appends one document's record to the partial file (flushed, so a crash loses at most a torn
/// last line, which the resume cuts off).
fn append_record(sink: &mut File, partial: &Path, record: &DocRecord) -> Result<()> {
    let io = |source| DataError::Io {
        path: partial.to_owned(),
        source,
    };
    let mut line = serde_json::to_vec(record).map_err(|e| io(e.into()))?;
    line.push(b'\n');
    sink.write_all(&line)
        .and_then(|()| sink.flush())
        .map_err(io)?;
    Ok(())
}
