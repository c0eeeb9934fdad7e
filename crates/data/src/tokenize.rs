//! Tokenisation over a model's `tokenizer.json`: truncation, batch padding and byte offsets.

use std::path::{Path, PathBuf};

use tokenizers::{PaddingParams, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::{Error, Result};

/// A WordPiece/BPE tokenizer loaded from a Hugging Face `tokenizer.json`, with a fixed maximum
/// length (special tokens included, as sentence-transformers counts it).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same tokenizer without truncation, for counting tokens.
    untruncated: tokenizers::Tokenizer,
    max_len: usize,
    pad_id: u32,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("max_len", &self.max_len)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

/// A padded batch of encodings, row-major `[batch, seq_len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    ids: Vec<i64>,
    mask: Vec<i64>,
    special: Vec<bool>,
    offsets: Vec<Vec<(usize, usize)>>,
    seq_len: usize,
}

impl Tokenizer {
    /// Loads `tokenizer.json` and sets truncation to `max_len` tokens (special tokens included).
    ///
    /// Any padding stored in the file is switched off: batches are padded to their longest member
    /// by [`Tokenizer::encode_batch`].
    pub fn from_file(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::Tokenizer {
                path: path.to_owned(),
                message: "file not found".into(),
            });
        }
        // Read as every reader reads (a byte-order mark is not JSON), then parsed.
        let text = crate::read_text(path)?;
        let inner: tokenizers::Tokenizer =
            text.parse()
                .map_err(|e: tokenizers::Error| Error::Tokenizer {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
        Self::from_tokenizer(inner, max_len, path.to_owned())
    }

    fn from_tokenizer(
        mut inner: tokenizers::Tokenizer,
        max_len: usize,
        path: PathBuf,
    ) -> Result<Self> {
        // [CLS] and [SEP] alone take two positions.
        if max_len < 2 {
            return Err(Error::InvalidSetting {
                field: "max_len",
                message: format!("must be at least 2 (got {max_len})"),
            });
        }
        let pad_id = match inner.get_padding() {
            Some(PaddingParams { pad_id, .. }) => *pad_id,
            None => inner.token_to_id("[PAD]").ok_or_else(|| Error::Tokenizer {
                path: path.clone(),
                message: "no padding configuration and no `[PAD]` token in the vocabulary".into(),
            })?,
        };
        inner.with_padding(None);
        let mut untruncated = inner.clone();
        untruncated
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map_err(|e| Error::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            inner,
            untruncated,
            max_len,
            pad_id,
            path,
        })
    }

    /// An uncased BERT WordPiece tokenizer (BERT normaliser and pre-tokeniser, `[CLS] … [SEP]`)
    /// over `vocab`, one token per entry, ids in order. `vocab` must hold `[PAD]`, `[UNK]`,
    /// `[CLS]` and `[SEP]`. Useful for small models built in code (tests, examples).
    pub fn from_vocab(vocab: &[&str], max_len: usize) -> Result<Self> {
        use tokenizers::models::wordpiece::WordPiece;
        use tokenizers::normalizers::BertNormalizer;
        use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
        use tokenizers::processors::bert::BertProcessing;

        let path = PathBuf::from("<vocab>");
        let err = |message: String| Error::Tokenizer {
            path: path.clone(),
            message,
        };
        let id = |t: &str| {
            vocab
                .iter()
                .position(|v| *v == t)
                .map(|i| i as u32)
                .ok_or_else(|| err(format!("vocabulary lacks `{t}`")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        id("[PAD]")?;
        id("[UNK]")?;
        let text = vocab.join("\n");
        let table = WordPiece::read_bytes(text.as_bytes()).map_err(|e| err(e.to_string()))?;
        let wp = WordPiece::builder()
            .vocab(table)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::new(wp);
        inner.with_normalizer(Some(BertNormalizer::default()));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
        inner.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        inner.add_special_tokens(&[
            tokenizers::AddedToken::from("[PAD]", true),
            tokenizers::AddedToken::from("[UNK]", true),
            tokenizers::AddedToken::from("[CLS]", true),
            tokenizers::AddedToken::from("[SEP]", true),
        ]);
        Self::from_tokenizer(inner, max_len, path)
    }

    /// A word-level tokenizer for `texts`: the vocabulary is every lower-cased run of
    /// alphanumeric characters and every other non-space character found in them, plus the four
    /// BERT specials — so each word is one token. For small models built in code.
    pub fn word_level<S: AsRef<str>>(texts: &[S], max_len: usize) -> Result<Self> {
        let mut vocab = std::collections::BTreeSet::new();
        for text in texts {
            let mut word = String::new();
            for c in text.as_ref().to_lowercase().chars() {
                if c.is_alphanumeric() {
                    word.push(c);
                    continue;
                }
                if !word.is_empty() {
                    vocab.insert(std::mem::take(&mut word));
                }
                if !c.is_whitespace() {
                    vocab.insert(c.to_string());
                }
            }
            if !word.is_empty() {
                vocab.insert(word);
            }
        }
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
        let all: Vec<&str> = specials
            .iter()
            .copied()
            .chain(
                vocab
                    .iter()
                    .map(String::as_str)
                    .filter(|w| !specials.contains(w)),
            )
            .collect();
        Self::from_vocab(&all, max_len)
    }

    /// Adds `token` as a special token (never split, never produced from text by normalisation)
    /// and returns its id; a token already present keeps its id.
    pub fn add_special_token(&mut self, token: &str) -> u32 {
        if let Some(id) = self.inner.token_to_id(token) {
            return id;
        }
        let added = [tokenizers::AddedToken::from(token, true)];
        self.inner.add_special_tokens(&added);
        self.untruncated.add_special_tokens(&added);
        self.inner
            .token_to_id(token)
            .unwrap_or_else(|| unreachable!("a special token just added has an id"))
    }

    /// Writes the tokenizer (added tokens, truncation included) as `tokenizer.json` at `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.inner.save(path, false).map_err(|e| Error::Tokenizer {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Decodes ids to text, special tokens skipped, WordPiece `##` pieces joined.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Encode(e.to_string()))
    }

    /// Same tokenizer, another maximum length.
    pub fn with_max_len(&self, max_len: usize) -> Result<Self> {
        Self::from_tokenizer(self.inner.clone(), max_len, self.path.clone())
    }

    /// Maximum number of tokens per text, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// One past the largest id the tokenizer can produce (added tokens included): the rows an
    /// embedding table needs. Larger than [`Tokenizer::vocab_size`] when ids have gaps.
    pub fn id_bound(&self) -> usize {
        self.largest_id_except(&[])
            .map_or(0, |(id, _)| id as usize + 1)
    }

    /// The largest id among the tokenizer's tokens other than `except`, with its token.
    pub fn largest_id_except(&self, except: &[&str]) -> Option<(u32, String)> {
        self.inner
            .get_vocab(true)
            .into_iter()
            .filter(|(token, _)| !except.contains(&token.as_str()))
            .max_by_key(|(_, id)| *id)
            .map(|(token, id)| (id, token))
    }

    /// Tokens `text` becomes without special tokens: 0 when the model would read nothing of it
    /// (white space, control and zero-width characters, which the normaliser drops).
    pub fn content_tokens(&self, text: &str) -> Result<usize> {
        let enc = self
            .untruncated
            .encode(text, false)
            .map_err(|e| Error::Encode(e.to_string()))?;
        Ok(enc.len())
    }

    /// Id of the padding token.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of `token` if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The file this tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tokens `text` takes before truncation, special tokens included.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let enc = self
            .untruncated
            .encode(text, true)
            .map_err(|e| Error::Encode(e.to_string()))?;
        Ok(enc.len())
    }

    /// Tokenises `texts` (special tokens added, truncated to [`Tokenizer::max_len`]) and pads them
    /// to the longest one.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Batch> {
        // One text after another on the calling thread: the `tokenizers` rayon pool would
        // compete for cores with libtorch's OpenMP threads, and a batch's tokenisation is small
        // next to its forward pass (`gear embed` on 913 SQuAD passages, 2 cores: 21.6 s with the
        // pool, 20.6 s without).
        let encodings = texts
            .iter()
            .map(|t| self.inner.encode(t.as_ref(), true))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Encode(e.to_string()))?;
        let seq_len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let n = encodings.len();
        let mut batch = Batch {
            ids: vec![i64::from(self.pad_id); n * seq_len],
            mask: vec![0; n * seq_len],
            special: vec![true; n * seq_len],
            offsets: Vec::with_capacity(n),
            seq_len,
        };
        for (row, enc) in encodings.iter().enumerate() {
            let base = row * seq_len;
            for (j, &id) in enc.get_ids().iter().enumerate() {
                batch.ids[base + j] = i64::from(id);
                batch.mask[base + j] = 1;
            }
            for (j, &s) in enc.get_special_tokens_mask().iter().enumerate() {
                batch.special[base + j] = s == 1;
            }
            batch.offsets.push(enc.get_offsets().to_vec());
        }
        Ok(batch)
    }
}

impl Batch {
    /// Number of texts in the batch.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether the batch holds no text.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Padded length (the longest text's token count).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Token ids, row-major `[batch, seq_len]`, padding filled with the pad id.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// Attention mask, row-major `[batch, seq_len]`: 1 for real tokens, 0 for padding.
    pub fn attention_mask(&self) -> &[i64] {
        &self.mask
    }

    /// Whether each position is a special token (`[CLS]`, `[SEP]`, padding), row-major.
    pub fn special_tokens_mask(&self) -> &[bool] {
        &self.special
    }

    /// Number of real (non-padding) tokens of text `i`.
    pub fn token_count(&self, i: usize) -> usize {
        self.offsets[i].len()
    }

    /// Byte offsets `(start, end)` into text `i` of each of its real tokens; special tokens have
    /// `(0, 0)`.
    pub fn offsets(&self, i: usize) -> &[(usize, usize)] {
        &self.offsets[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BERT-style tokenizer built in memory, so these tests need no model files.
    fn tiny() -> Tokenizer {
        let vocab = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "##s", ".", "a",
        ];
        Tokenizer::from_vocab(&vocab, 8).unwrap()
    }

    #[test]
    fn special_tokens_are_added_once_and_survive_save() {
        let mut tok = tiny();
        let id = tok.add_special_token("[Decode]");
        assert_eq!(id, 12);
        assert_eq!(tok.add_special_token("[Decode]"), 12);
        assert_eq!(tok.vocab_size(), 13);
        let dir = std::env::temp_dir().join(format!("gear-data-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        tok.save(&path).unwrap();
        let back = Tokenizer::from_file(&path, 8).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back.token_to_id("[Decode]"), Some(12));
        assert_eq!(
            back.encode_batch(&["the cat"]).unwrap().ids(),
            &[2, 4, 5, 3]
        );
        assert_eq!(back.decode(&[2, 4, 5, 9, 3]).unwrap(), "the cats");
    }

    #[test]
    fn pads_to_longest_and_masks_padding() {
        let tok = tiny();
        let b = tok
            .encode_batch(&["The cat", "the cats sat on a mat."])
            .unwrap();
        assert_eq!(b.len(), 2);
        // [CLS] the cat ##s sat on a mat . [SEP] = 10 tokens, truncated to 8.
        assert_eq!(b.seq_len(), 8);
        assert_eq!(&b.ids()[..4], &[2, 4, 5, 3]);
        assert_eq!(&b.attention_mask()[..8], &[1, 1, 1, 1, 0, 0, 0, 0]);
        assert_eq!(&b.ids()[4..8], &[0, 0, 0, 0]);
        assert_eq!(b.token_count(0), 4);
        assert_eq!(b.token_count(1), 8);
        // Truncation keeps [SEP] last, as sentence-transformers does.
        assert_eq!(b.ids()[15], 3);
    }

    #[test]
    fn offsets_point_into_the_original_text() {
        let tok = tiny();
        let text = "The  CATS sat";
        let b = tok.encode_batch(&[text]).unwrap();
        let pieces: Vec<&str> = b.offsets(0)[1..b.token_count(0) - 1]
            .iter()
            .map(|&(s, e)| &text[s..e])
            .collect();
        assert_eq!(pieces, ["The", "CAT", "S", "sat"]);
        assert!(b.special_tokens_mask()[0]);
        assert!(!b.special_tokens_mask()[1]);
    }

    #[test]
    fn counts_tokens_before_truncation() {
        let tok = tiny();
        assert_eq!(tok.count_tokens("the cat").unwrap(), 4);
        assert_eq!(tok.count_tokens("the cats sat on a mat.").unwrap(), 10);
    }

    #[test]
    fn empty_batch_and_empty_text() {
        let tok = tiny();
        let b = tok.encode_batch::<&str>(&[]).unwrap();
        assert!(b.is_empty());
        let b = tok.encode_batch(&[""]).unwrap();
        assert_eq!(b.ids(), &[2, 3]);
    }

    #[test]
    fn rejects_tiny_max_len_and_missing_file() {
        assert!(matches!(
            tiny().with_max_len(1),
            Err(Error::InvalidSetting {
                field: "max_len",
                ..
            })
        ));
        let err = Tokenizer::from_file("/nonexistent/tokenizer.json", 16).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tokenizer.json"));
    }
}
