//! Embedding a corpus straight into a store, whole or one shard at a time: `gear index build
//! --store URL [--shard I/N]`. Shards may run anywhere at once (a Ray cluster, several
//! machines); each writes its documents in transactions keyed by document row, so a shard killed
//! midway and run again writes only what is missing. [`finish`] then checks the store whole and
//! builds the HNSW index.

use std::ops::Range;
use std::path::Path;

use gear_data::Document;
use gear_infer::BuildOptions;
use gear_model::GearModel;

use crate::tables::{self, StorePlan, VectorRow};
use crate::{Error, HnswSettings, Result, StoreAddress, StoreMeta};

/// Shard `index` of `count`: a contiguous range of the corpus's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, from 0.
    pub index: usize,
    /// Shards in all.
    pub count: usize,
}

impl Shard {
    /// The whole corpus as one shard.
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// `I/N` as `gear index build --shard` takes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: write the shard as I/N, e.g. 0/4"))?;
        let parse = |s: &str, what: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|e| format!("`{text}`: {what} `{s}`: {e}"))
        };
        let (index, count) = (parse(i, "shard")?, parse(n, "count")?);
        if count == 0 || index >= count {
            return Err(format!(
                "`{text}`: the shard must be 0 to count − 1, and the count at least 1"
            ));
        }
        Ok(Self { index, count })
    }

    /// The documents of this shard in a corpus of `documents`.
    pub fn range(self, documents: usize) -> Range<usize> {
        let at = |i: usize| i * documents / self.count;
        at(self.index)..at(self.index + 1)
    }
}

/// How [`build`] embeds and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreBuildOptions {
    /// Which documents this call writes.
    pub shard: Shard,
    /// Batching, windows (the vectors are float32 whatever `precision` says: pgvector 0.6 has
    /// no float16 type).
    pub embed: BuildOptions,
    /// Documents per transaction: what a killed shard loses at most.
    pub commit_every: usize,
}

/// What one [`build`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    /// The shard's documents.
    pub range: Range<usize>,
    /// Documents this call embedded and wrote.
    pub written: usize,
    /// Documents of the shard already in the store (an earlier, interrupted run).
    pub present: usize,
    /// Documents no window takes in whole (cut at the model's length).
    pub cut: usize,
}

/// Embeds shard `shard` of `corpus` with `model` (loaded from `model_dir`) into the store at
/// `address`, `options.commit_every` documents per transaction; documents already there are
/// skipped.
/// The first writer records the plan (model, width, corpus); a store holding another is
/// refused. `progress(done, total)` counts the shard's documents. Call [`finish`] once every
/// shard is in.
pub fn build(
    model: &GearModel,
    model_dir: &Path,
    corpus: &[Document],
    address: &StoreAddress,
    options: &StoreBuildOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BuildReport> {
    gear_infer::check_corpus(corpus)?;
    let plan = StorePlan {
        model: model_dir.display().to_string(),
        fingerprint: gear_infer::model_fingerprint(model_dir)?,
        dim: model.config().encoder.hidden_size as usize,
        documents: corpus.len(),
        corpus: Some(gear_infer::corpus_fingerprint(corpus)),
    };
    let mut client = address.connect()?;
    tables::begin(&mut client, address, &plan, &mut |n| {
        Ok(gear_infer::corpus_fingerprint(
            &corpus[..n.min(corpus.len())],
        ))
    })?;
    let range = options.shard.range(corpus.len());
    let present = tables::present_rows(&mut client, address, range.clone())?;
    let mut report = BuildReport {
        range: range.clone(),
        written: 0,
        present: present.len(),
        cut: 0,
    };
    let total = range.len();
    progress(present.len(), total);
    let here = std::path::PathBuf::from(address.describe());
    let step = options.commit_every.max(1);
    let mut start = range.start;
    while start < range.end {
        let end = (start + step).min(range.end);
        // Parts are whole transactions: a part is in or out, unless an earlier run wrote with
        // another part size, in which case the part is embedded again and what is there kept.
        let held = tables::held(&present, start..end);
        if held < end - start {
            let docs = &corpus[start..end];
            let rows = gear_infer::embed_for_index(model, docs, start, &options.embed, &here)?;
            let vectors = vector_rows(&rows.vectors, &rows.owners)?;
            tables::write_rows(&mut client, address, start, docs, &vectors)?;
            report.written += end - start - held;
            report.cut += rows.cut;
        }
        start = end;
        progress(report.present + report.written, total);
    }
    Ok(report)
}

/// Index rows as store rows: each row's document and its part number within that document.
pub(crate) fn vector_rows(vectors: &tch::Tensor, owners: &[i64]) -> Result<Vec<VectorRow>> {
    let values: Vec<Vec<f32>> = Vec::try_from(
        vectors
            .to_kind(tch::Kind::Float)
            .to_device(tch::Device::Cpu),
    )
    .map_err(|e| Error::Infer(gear_infer::Error::Torch(e)))?;
    let mut part = 0i32;
    Ok(owners
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (&document, embedding))| {
            part = if i > 0 && owners[i - 1] == document {
                part + 1
            } else {
                0
            };
            VectorRow {
                document,
                part,
                embedding: pgvector::Vector::from(embedding),
            }
        })
        .collect())
}

/// Checks that the store holds every document of its corpus, builds pgvector's HNSW index with
/// `hnsw` and marks the store complete, so `gear search --store` and `gear serve --store` open
/// it. Returns its record.
pub fn finish(address: &StoreAddress, hnsw: HnswSettings) -> Result<StoreMeta> {
    let mut client = address.connect()?;
    tables::finish(&mut client, address, hnsw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_corpus_once_in_order() {
        for (docs, n) in [(10, 3), (3, 4), (0, 2), (1000, 7)] {
            let mut next = 0;
            for i in 0..n {
                let r = Shard { index: i, count: n }.range(docs);
                assert_eq!(r.start, next, "{docs} documents, shard {i}/{n}");
                next = r.end;
            }
            assert_eq!(next, docs);
        }
    }

    #[test]
    fn held_counts_the_sorted_rows_in_a_range() {
        let present = [0, 3, 4, 5, 9];
        assert_eq!(tables::held(&present, 0..10), 5);
        assert_eq!(tables::held(&present, 3..6), 3);
        assert_eq!(tables::held(&present, 6..9), 0);
        assert_eq!(tables::held(&present, 9..12), 1);
        assert_eq!(tables::held(&[], 0..4), 0);
    }

    #[test]
    fn a_shard_reads_as_i_of_n() {
        assert_eq!(Shard::parse("2/5"), Ok(Shard { index: 2, count: 5 }));
        for bad in ["5/5", "1/0", "a/2", "3", "-1/2"] {
            let e = Shard::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
