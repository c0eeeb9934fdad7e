//! Training batches: a seeded, per-epoch reproducible order of examples grouped by length so that
//! little compute goes to padding, and tokenisation of (query, document, target) batches.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Batch, Result, Tokenizer, Triple};

/// How examples are grouped into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Examples per batch.
    pub batch_size: usize,
    /// Length bucketing: the shuffled examples are cut into windows of `bucket_batches` batches,
    /// sorted by length inside each window, then cut into batches. `1` disables bucketing
    /// (batches are random); larger windows pad less but mix less.
    pub bucket_batches: usize,
    /// Seed of the shuffles.
    pub seed: u64,
}

/// The batches of one epoch: example indices, every index exactly once. The same
/// `(config, epoch)` always gives the same plan; the last batch may be smaller.
pub fn plan_epoch(lengths: &[usize], config: &BatchingConfig, epoch: u64) -> Vec<Vec<usize>> {
    let batch = config.batch_size.max(1);
    let mut rng =
        ChaCha8Rng::seed_from_u64(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let window = batch * config.bucket_batches.max(1);
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(lengths.len().div_ceil(batch));
    for chunk in order.chunks_mut(window) {
        if config.bucket_batches > 1 {
            // Stable sort: equal lengths keep their shuffled order.
            chunk.sort_by_key(|&i| lengths[i]);
        }
        batches.extend(chunk.chunks(batch).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Fraction of token positions that are padding when `batches` are padded to their longest
/// member.
pub fn padding_waste(lengths: &[usize], batches: &[Vec<usize>]) -> f64 {
    let (mut real, mut total) = (0usize, 0usize);
    for b in batches {
        let longest = b.iter().map(|&i| lengths[i]).max().unwrap_or(0);
        real += b.iter().map(|&i| lengths[i]).sum::<usize>();
        total += longest * b.len();
    }
    if total == 0 {
        0.0
    } else {
        1.0 - real as f64 / total as f64
    }
}

/// One tokenised training batch.
#[derive(Debug, Clone)]
pub struct TripleBatch {
    /// Indices of the triples in the source list.
    pub indices: Vec<usize>,
    /// Queries.
    pub queries: Batch,
    /// Documents.
    pub documents: Batch,
    /// Generation targets (answer or unit sentence), `[CLS] … [SEP]`; the model replaces
    /// `[CLS]` with its `[Decode]` token.
    pub targets: Batch,
    /// The hard negatives taken from the triples (at most the asked number per triple, in
    /// triple order) with their document ids; `None` when the batch has none.
    pub negatives: Option<(Batch, Vec<String>)>,
}

/// Tokenizers for the three roles, each with its own length limit.
#[derive(Debug, Clone)]
pub struct TripleTokenizer {
    query: Tokenizer,
    document: Tokenizer,
    target: Tokenizer,
}

impl TripleTokenizer {
    /// One tokenizer, three limits.
    pub fn new(
        tokenizer: &Tokenizer,
        max_query: usize,
        max_document: usize,
        max_target: usize,
    ) -> Result<Self> {
        Ok(Self {
            query: tokenizer.with_max_len(max_query)?,
            document: tokenizer.with_max_len(max_document)?,
            target: tokenizer.with_max_len(max_target)?,
        })
    }

    /// The query tokenizer (truncating to the query limit).
    pub fn query(&self) -> &Tokenizer {
        &self.query
    }

    /// The document tokenizer (truncating to the document limit).
    pub fn document(&self) -> &Tokenizer {
        &self.document
    }

    /// The generation-target tokenizer (truncating to the target limit).
    pub fn target(&self) -> &Tokenizer {
        &self.target
    }

    /// Document lengths in tokens (truncated), the key for [`plan_epoch`].
    pub fn document_lengths(&self, triples: &[Triple]) -> Result<Vec<usize>> {
        triples
            .iter()
            .map(|t| {
                Ok(self
                    .document
                    .count_tokens(&t.document.text)?
                    .min(self.document.max_len()))
            })
            .collect()
    }

    /// Tokenises `triples[indices]`, with the first `max_negatives` of each triple's hard
    /// negatives (0: none).
    pub fn batch(
        &self,
        triples: &[Triple],
        indices: &[usize],
        max_negatives: usize,
    ) -> Result<TripleBatch> {
        let pick = |f: fn(&Triple) -> &str| {
            indices
                .iter()
                .map(|&i| f(&triples[i]))
                .collect::<Vec<&str>>()
        };
        Ok(TripleBatch {
            indices: indices.to_vec(),
            queries: self.query.encode_batch(&pick(|t| t.query.as_str()))?,
            documents: self
                .document
                .encode_batch(&pick(|t| t.document.text.as_str()))?,
            targets: self.target.encode_batch(&pick(Triple::target))?,
            negatives: self.negatives(triples, indices, max_negatives)?,
        })
    }

    fn negatives(
        &self,
        triples: &[Triple],
        indices: &[usize],
        max_negatives: usize,
    ) -> Result<Option<(Batch, Vec<String>)>> {
        let negatives: Vec<&crate::Document> = indices
            .iter()
            .flat_map(|&i| triples[i].negatives.iter().take(max_negatives))
            .collect();
        if negatives.is_empty() {
            return Ok(None);
        }
        let texts: Vec<&str> = negatives.iter().map(|d| d.text.as_str()).collect();
        let ids = negatives.iter().map(|d| d.id.clone()).collect();
        Ok(Some((self.document.encode_batch(&texts)?, ids)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths() -> Vec<usize> {
        (0..1000).map(|i| 20 + (i * 7919) % 480).collect()
    }

    #[test]
    fn every_example_once_and_reproducible_per_epoch() {
        let cfg = BatchingConfig {
            batch_size: 16,
            bucket_batches: 20,
            seed: 3,
        };
        let a = plan_epoch(&lengths(), &cfg, 0);
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, plan_epoch(&lengths(), &cfg, 0));
        assert_ne!(a, plan_epoch(&lengths(), &cfg, 1));
        assert_ne!(
            a,
            plan_epoch(&lengths(), &BatchingConfig { seed: 4, ..cfg }, 0)
        );
        assert!(a.iter().all(|b| b.len() <= 16));
    }

    #[test]
    fn splits_are_stable_and_near_their_fractions() {
        let counts = (0..10_000).fold([0usize; 3], |mut c, i| {
            match split_of(&format!("doc-{i}"), 1, 0.1, 0.2) {
                Split::Train => c[0] += 1,
                Split::Dev => c[1] += 1,
                Split::Test => c[2] += 1,
            }
            c
        });
        assert!(
            (6800..7200).contains(&counts[0])
                && (850..1150).contains(&counts[1])
                && (1800..2200).contains(&counts[2]),
            "{counts:?}"
        );
        assert_eq!(split_of("x", 1, 0.1, 0.2), split_of("x", 1, 0.1, 0.2));
    }

    #[test]
    fn bucketing_cuts_padding() {
        let random = BatchingConfig {
            batch_size: 16,
            bucket_batches: 1,
            seed: 3,
        };
        let bucketed = BatchingConfig {
            bucket_batches: 50,
            ..random
        };
        let w_random = padding_waste(&lengths(), &plan_epoch(&lengths(), &random, 0));
        let w_bucketed = padding_waste(&lengths(), &plan_epoch(&lengths(), &bucketed, 0));
        assert!(w_random > 0.4, "{w_random}");
        assert!(w_bucketed < 0.05, "{w_bucketed}");
    }
}

/// Which part of a split an example belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training.
    Train,
    /// Development (model selection).
    Dev,
    /// Held-out test.
    Test,
}

/// Assigns a split from a stable hash of `key` (a document id or an article title), so that every
/// example of one document lands in the same split, whatever the file order.
pub fn split_of(key: &str, seed: u64, dev_fraction: f64, test_fraction: f64) -> Split {
    let h = crate::guard::stable_hash_seeded(key, seed);
    // splitmix64's finaliser: FNV-1a alone leaves the high bits of similar short keys correlated.
    let mut z = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    if u < test_fraction {
        Split::Test
    } else if u < test_fraction + dev_fraction {
        Split::Dev
    } else {
        Split::Train
    }
}
