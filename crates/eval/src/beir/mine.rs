//! `gear data beir`: a BEIR split's judgements as training triples, each carrying hard
//! negatives mined by BM25 or the bi-encoder.
//!
//! Every judgement with relevance > 0 gives one RIR triple: the query, the judged document, and
//! as its unit the document's sentence that BM25 scores highest for the query (BEIR marks no
//! span; this sentence is what the LM and local-retrieval losses then target). The negatives
//! are the miner's best-ranked documents for the query that are not judged relevant to it (and
//! not the query itself, for datasets that hold queries as documents); documents judged 0 may
//! be negatives — that is what the judgement says.

use std::collections::HashSet;

use gear_data::{split_sentences, BeirData, Document, Scenario, Triple, Unit};
use gear_model::GearModel;

use super::{bm25_rows, corpus_texts, dense_rows, document_texts};
use crate::lexical::Bm25;
use crate::{Error, Result};

/// What ranks the corpus to mine hard negatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miner {
    /// Okapi BM25 over title and text.
    Bm25,
    /// The model's bi-encoder (exact inner product).
    BiEncoder,
}

/// What [`beir_triples`] made.
#[derive(Debug, Clone)]
pub struct MinedTriples {
    /// One triple per relevant judgement, in query order.
    pub triples: Vec<Triple>,
    /// Judged queries with at least one relevant document.
    pub queries: usize,
    /// Triples that got fewer negatives than asked (the miner ran out of candidates: BM25 ranks
    /// only documents that share a term with the query).
    pub short: usize,
    /// Candidates passed over because their text is the positive document's (a copy under
    /// another id): training on one would push the positive away from itself.
    pub copies: usize,
}

/// Turns `data`'s relevant judgements into triples with up to `negatives` hard negatives each.
/// `model` is needed for [`Miner::BiEncoder`] only.
pub fn beir_triples(
    data: &BeirData,
    miner: Miner,
    model: Option<&GearModel>,
    negatives: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<MinedTriples> {
    let doc_row: std::collections::HashMap<&str, usize> = data
        .corpus
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i))
        .collect();
    let relevant: Vec<Vec<&str>> = data
        .queries
        .iter()
        .map(|(qid, _)| {
            data.qrels[qid]
                .iter()
                .filter(|(_, g)| *g > 0)
                .map(|(d, _)| d.as_str())
                .collect()
        })
        .collect();
    let most_relevant = relevant.iter().map(Vec::len).max().unwrap_or(0);
    // Enough candidates to skip every relevant document, the query's own id and a few copies.
    let fetch = (negatives + most_relevant + 5).min(data.corpus.len());
    let texts = corpus_texts(data);
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let queries: Vec<&str> = data.queries.iter().map(|(_, q)| q.as_str()).collect();
    let rows = ranked_rows(
        Ranking {
            miner,
            model,
            fetch,
            batch_size,
        },
        negatives,
        &text_refs,
        &queries,
        progress,
    )?;
    progress("writing triples");
    let mut out = MinedTriples {
        triples: Vec::new(),
        queries: 0,
        short: 0,
        copies: 0,
    };
    for (((qid, query), relevant), rows) in data.queries.iter().zip(&relevant).zip(rows) {
        if relevant.is_empty() {
            continue;
        }
        out.queries += 1;
        let skip: HashSet<&str> = relevant.iter().copied().chain([qid.as_str()]).collect();
        let candidates: Vec<&Document> = rows
            .into_iter()
            .map(|r| &data.corpus[r])
            .filter(|d| !skip.contains(d.id.as_str()))
            .collect();
        for doc_id in relevant {
            let document = data.corpus[doc_row[doc_id]].clone();
            let (mined, copies) = other_texts(&candidates, &document, negatives);
            out.copies += copies;
            let unit = best_sentence(query, &document.text).ok_or_else(|| {
                Error::Input(format!(
                    "corpus document `{doc_id}` has no text to take a unit sentence from"
                ))
            })?;
            if mined.len() < negatives {
                out.short += 1;
            }
            out.triples.push(Triple {
                id: Some(format!("{qid}:{doc_id}")),
                query: query.clone(),
                document,
                units: vec![unit],
                answer: None,
                alternative_answers: Vec::new(),
                scenario: Scenario::Rir,
                negatives: mined,
            });
        }
    }
    Ok(out)
}

/// How candidates are ranked for mining.
struct Ranking<'a> {
    miner: Miner,
    model: Option<&'a GearModel>,
    /// Rows kept per query.
    fetch: usize,
    batch_size: usize,
}

/// The miner's top `fetch` rows of `texts` for each query; none when no negatives are asked.
fn ranked_rows(
    r: Ranking<'_>,
    negatives: usize,
    texts: &[&str],
    queries: &[&str],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Vec<usize>>> {
    Ok(match (negatives, r.miner, r.model) {
        (0, _, _) => vec![Vec::new(); queries.len()],
        (_, Miner::Bm25, _) => {
            progress("bm25");
            bm25_rows(texts, queries, r.fetch)
        }
        (_, Miner::BiEncoder, Some(model)) => {
            dense_rows(model, texts, queries, r.fetch, r.batch_size, progress)?
        }
        (_, Miner::BiEncoder, None) => {
            return Err(Error::Input(
                "mining with the bi-encoder needs a model".into(),
            ))
        }
    })
}

/// Hard negatives for triples that have none (SQuAD questions, synthesised RIR triples): the
/// corpus is the triples' own distinct documents (by id), and each triple gets the miner's
/// best-ranked documents for its query other than its own document and any document with the
/// same text. Triples keep everything else; negatives they had are replaced.
pub fn mine_negatives(
    triples: &[Triple],
    miner: Miner,
    model: Option<&GearModel>,
    negatives: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<MinedTriples> {
    let mut corpus: Vec<&Document> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for t in triples {
        if seen.insert(t.document.id.as_str()) {
            corpus.push(&t.document);
        }
    }
    let texts = document_texts(corpus.iter().copied());
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let queries: Vec<&str> = triples.iter().map(|t| t.query.as_str()).collect();
    // Enough candidates to skip the triple's own document and its copies.
    let fetch = (negatives + 4).min(corpus.len());
    let rows = ranked_rows(
        Ranking {
            miner,
            model,
            fetch,
            batch_size,
        },
        negatives,
        &text_refs,
        &queries,
        progress,
    )?;
    let mut out = MinedTriples {
        triples: Vec::with_capacity(triples.len()),
        queries: triples.len(),
        short: 0,
        copies: 0,
    };
    for (t, rows) in triples.iter().zip(rows) {
        let candidates: Vec<&Document> = rows
            .into_iter()
            .map(|r| corpus[r])
            .filter(|d| d.id != t.document.id)
            .collect();
        let (mined, copies) = other_texts(&candidates, &t.document, negatives);
        out.copies += copies;
        if mined.len() < negatives {
            out.short += 1;
        }
        out.triples.push(Triple {
            negatives: mined,
            ..t.clone()
        });
    }
    Ok(out)
}

/// The first `negatives` of `candidates` whose text differs from `positive`'s, and how many
/// copies of the positive's text were passed over before them.
fn other_texts(
    candidates: &[&Document],
    positive: &Document,
    negatives: usize,
) -> (Vec<Document>, usize) {
    let mut copies = 0;
    let mut mined = Vec::with_capacity(negatives);
    for d in candidates {
        if mined.len() == negatives {
            break;
        }
        if d.text.trim() == positive.text.trim() {
            copies += 1;
        } else {
            mined.push((*d).clone());
        }
    }
    (mined, copies)
}

/// The sentence of `text` BM25 scores highest for `query` (fitted on the text's sentences; the
/// first on a tie, so the first sentence when nothing matches).
fn best_sentence(query: &str, text: &str) -> Option<Unit> {
    let spans: Vec<_> = split_sentences(text)
        .into_iter()
        .filter(|s| s.slice(text).is_some_and(|t| !t.trim().is_empty()))
        .collect();
    let sentences: Vec<&str> = spans.iter().filter_map(|s| s.slice(text)).collect();
    if sentences.is_empty() {
        return None;
    }
    let ids: Vec<usize> = (0..sentences.len()).collect();
    let scores = Bm25::fit(&sentences).scores(query, &ids);
    let best = scores
        .iter()
        .enumerate()
        .fold(0, |best, (i, &s)| if s > scores[best] { i } else { best });
    Unit::from_byte_span(text, spans[best])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, text: &str) -> Document {
        Document {
            id: id.into(),
            title: String::new(),
            text: text.into(),
        }
    }

    fn data() -> BeirData {
        BeirData {
            corpus: vec![
                doc(
                    "d1",
                    "Cats sleep a lot. The tabby cat purrs when it is fed.",
                ),
                doc("d2", "A tabby cat is a striped cat. Tabby fur has stripes."),
                doc("d3", "Dogs bark at night."),
                doc("d4", "The tabby cat purrs loudly, a purring tabby."),
                doc("q1", "The tabby cat purrs? A query stored as a document."),
            ],
            queries: vec![("q1".into(), "tabby cat purrs".into())],
            qrels: [(
                "q1".to_string(),
                vec![("d1".to_string(), 2), ("d4".to_string(), 0)],
            )]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn bm25_negatives_skip_relevant_documents_and_the_query_itself() {
        let mined = beir_triples(&data(), Miner::Bm25, None, 2, 8, &mut |_| {}).unwrap();
        assert_eq!((mined.queries, mined.triples.len(), mined.short), (1, 1, 0));
        let t = &mined.triples[0];
        assert_eq!(t.id.as_deref(), Some("q1:d1"));
        assert_eq!(t.document.id, "d1");
        // The unit is the sentence that matches the query, not the first one.
        assert_eq!(t.units[0].text, "The tabby cat purrs when it is fed.");
        assert_eq!(t.validate(), Ok(()));
        let ids: Vec<&str> = t.negatives.iter().map(|d| d.id.as_str()).collect();
        // d4 (judged 0) matches best, then d2; d1 is relevant and q1 is the query.
        assert_eq!(ids, ["d4", "d2"]);
    }

    #[test]
    fn negatives_for_triples_skip_the_own_document_and_its_copies() {
        let corpus = data().corpus;
        let triple = |q: &str, d: &Document| Triple {
            id: None,
            query: q.into(),
            document: d.clone(),
            units: vec![Unit::from_byte_span(&d.text, gear_data::Span::new(0, 4)).unwrap()],
            answer: None,
            alternative_answers: Vec::new(),
            scenario: Scenario::Rir,
            negatives: Vec::new(),
        };
        // d4's text again under another id: never a negative of a d4 triple.
        let copy = doc("d4-copy", &corpus[3].text);
        let triples = vec![
            triple("tabby cat purrs", &corpus[3]),
            triple("striped tabby fur", &corpus[1]),
            triple("dogs bark", &corpus[2]),
            triple("tabby purrs", &copy),
        ];
        let mined = mine_negatives(&triples, Miner::Bm25, None, 2, 8, &mut |_| {}).unwrap();
        let ids = |i: usize| -> Vec<&str> {
            mined.triples[i]
                .negatives
                .iter()
                .map(|d| d.id.as_str())
                .collect()
        };
        assert_eq!(ids(0), ["d2"], "not d4 itself, not its copy");
        assert_eq!(ids(1).len(), 2);
        assert!(ids(1).contains(&"d4") && ids(1).contains(&"d4-copy"));
        assert_eq!(ids(3), ["d2"], "d4 has the copy's text");
        // "dogs bark" shares no term with the other documents: nothing to mine.
        assert!(ids(2).is_empty());
        assert_eq!(mined.short, 3);
        assert_eq!(mined.triples[0].query, "tabby cat purrs");
    }

    #[test]
    fn running_out_of_candidates_is_counted_and_zero_negatives_mines_nothing() {
        let mined = beir_triples(&data(), Miner::Bm25, None, 10, 8, &mut |_| {}).unwrap();
        assert_eq!(mined.short, 1);
        // BM25 ranks only documents sharing a term with the query: d3 is never a candidate.
        assert_eq!(mined.triples[0].negatives.len(), 2, "d4, d2");
        let none = beir_triples(&data(), Miner::Bm25, None, 0, 8, &mut |_| {}).unwrap();
        assert!(none.triples[0].negatives.is_empty());
        assert_eq!(none.short, 0);
        let err = beir_triples(&data(), Miner::BiEncoder, None, 1, 8, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("needs a model"), "{err}");
    }
}
