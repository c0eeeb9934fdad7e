//! An opened index's files, memory-mapped rather than read: the vector matrix of
//! `embeddings.safetensors` becomes a tensor over the mapping (no copy: pages load on first
//! use), and `documents.jsonl` is read one line at a time, by offset. Opening a million-passage
//! index so costs one scan for line ends, not a parse of every document and a copy of every
//! vector.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gear_data::{Document, JsonlReader};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// A read-only mapping of `path`.
pub(crate) fn map(path: &Path) -> Result<Arc<Mmap>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: the mapping is read-only and private to this process. Another process that
    // truncated or rewrote the file in place while it is mapped would change what we read (or
    // fault); index files are only ever replaced by rename, never written in place, so an open
    // index keeps the inode it mapped.
    #[allow(unsafe_code)]
    let mmap = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(Arc::new(mmap))
}

/// The `embeddings` matrix (float32 or float16 rows) and the `document` map (absent in format 1)
/// of a mapped safetensors file. The matrix is a tensor over the mapping itself when it is
/// aligned (the case for files this crate writes), else a copy; `check_finite` reads every
/// value (a full pass over the file).
pub(crate) struct MappedVectors {
    /// `[rows, dim]`, on the CPU, borrowing the mapping when it can (keep `_map` alive).
    pub vectors: Tensor,
    /// Row → document position, when the file holds it.
    pub owners: Option<Vec<i64>>,
    _map: Arc<Mmap>,
}

impl MappedVectors {
    pub(crate) fn open(path: &Path, check_finite: bool) -> Result<Self> {
        let map = map(path)?;
        let bad = |message: String| Error::Index {
            path: path.to_owned(),
            message,
        };
        let st = SafeTensors::deserialize(&map[..])
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let view = st
            .tensor("embeddings")
            .map_err(|_| bad("has no `embeddings` tensor".into()))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if shape.len() != 2 {
            return Err(bad(format!(
                "`embeddings` has shape {shape:?}, not [rows, dim]"
            )));
        }
        let data = view.data();
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            other => {
                return Err(bad(format!(
                    "`embeddings` is {other:?}; float32 or float16 expected"
                )))
            }
        };
        let align = if kind == Kind::Float { 4 } else { 2 };
        let vectors = if (data.as_ptr() as usize).is_multiple_of(align) {
            // SAFETY: `data` lies inside the mapping, which `MappedVectors` keeps alive for as
            // long as the tensor (the tensor is never handed out beyond it: `DocumentIndex`
            // gives copies), it holds `rows × dim` values of `kind` (safetensors checked the
            // length against the shape and dtype), it is aligned for them, and the mapping is
            // read-only: libtorch only reads it (search never writes its operands).
            #[allow(unsafe_code)]
            unsafe {
                Tensor::from_blob(data.as_ptr(), &shape, &[shape[1], 1], kind, Device::Cpu)
            }
        } else {
            Tensor::from_data_size(data, &shape, kind)
        };
        if check_finite {
            let positions = vectors.isfinite().logical_not().nonzero();
            let count = positions.size()[0];
            if count > 0 {
                let first = Vec::<i64>::try_from(positions.get(0))?;
                return Err(bad(format!(
                    "`embeddings` holds {count} non-finite value(s), the first at {first:?}; \
                     rebuild the index"
                )));
            }
        }
        let owners = match st.tensor("document") {
            Err(_) => None,
            Ok(v) if v.dtype() == Dtype::I64 => Some(
                v.data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
            Ok(v) => {
                return Err(bad(format!(
                    "`document` is {:?}; int64 expected",
                    v.dtype()
                )))
            }
        };
        Ok(Self {
            vectors,
            owners,
            _map: map,
        })
    }
}

/// `documents.jsonl`, mapped; line `i` is document `i`, parsed (and checked) when asked for.
pub(crate) struct MappedDocuments {
    path: PathBuf,
    map: Arc<Mmap>,
    /// Byte offset of each line's start, and one past the end.
    starts: Vec<usize>,
}

impl MappedDocuments {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let map = map(path)?;
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', &map[..]).map(|i| i + 1));
        if starts.last() != Some(&map.len()) {
            starts.push(map.len());
        }
        Ok(Self {
            path: path.to_owned(),
            map,
            starts,
        })
    }

    /// Lines (documents).
    pub(crate) fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// The raw bytes of line `i`, without its newline.
    fn line(&self, i: usize) -> &[u8] {
        let (a, b) = (self.starts[i], self.starts[i + 1]);
        let line = &self.map[a..b];
        line.strip_suffix(b"\n").unwrap_or(line)
    }

    /// Document `i`, checked as the corpus reader checks it (file, line and field on error).
    pub(crate) fn get(&self, i: usize) -> Result<Document> {
        let text = std::str::from_utf8(self.line(i)).map_err(|e| Error::Index {
            path: self.path.clone(),
            message: format!("line {}: invalid UTF-8 ({e})", i + 1),
        })?;
        Ok(JsonlReader::<Document>::parse_line(
            &self.path,
            i + 1,
            text,
        )?)
    }

    /// The id of document `i` (only that field is decoded).
    pub(crate) fn id(&self, i: usize) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct IdOnly {
            id: String,
        }
        serde_json::from_slice::<IdOnly>(self.line(i))
            .map(|d| d.id)
            .map_err(|e| Error::Index {
                path: self.path.clone(),
                message: format!("line {}: field id: {e}", i + 1),
            })
    }
}
