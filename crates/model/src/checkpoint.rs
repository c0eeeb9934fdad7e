//! Loading and saving a VarStore as safetensors, strictly: the VarStore's paths are the
//! checkpoint's keys, so no renaming table exists and every mismatch is an error with a name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{nn::VarStore, Kind, Tensor};

use crate::{Error, Result};

/// How to treat model variables that the checkpoint lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Every variable must be in the checkpoint (loading a GeAR checkpoint).
    Strict,
    /// Missing variables keep their initial values and are reported (initialising a GeAR model
    /// from a plain BERT checkpoint; the caller checks the report against the expected set).
    Partial,
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables filled from the checkpoint.
    pub loaded: BTreeSet<String>,
    /// Variables the checkpoint lacks (always empty after a strict load).
    pub missing: BTreeSet<String>,
    /// Checkpoint tensors no variable asked for (e.g. BERT's `pooler.*`, `embeddings.position_ids`).
    pub unused: BTreeSet<String>,
}

/// Loads `path` into the variables of `vs`. Shapes must match exactly; dtypes are converted to
/// the variable's. A checkpoint whose keys all start with `bert.` (a `BertFor…` head model) is
/// read with that prefix stripped.
pub fn load_safetensors(
    vs: &mut VarStore,
    path: impl AsRef<Path>,
    mode: LoadMode,
) -> Result<LoadReport> {
    load_safetensors_mapped(vs, path, mode, |name| Some(name.to_owned()))
}

/// As [`load_safetensors`], reading variable `name` from checkpoint key `key_of(name)`; a
/// variable mapped to `None` is not looked up and counts as missing.
pub fn load_safetensors_mapped(
    vs: &mut VarStore,
    path: impl AsRef<Path>,
    mode: LoadMode,
    key_of: impl Fn(&str) -> Option<String>,
) -> Result<LoadReport> {
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    let st = parse(&bytes, path)?;
    let names: BTreeSet<String> = st.names().into_iter().map(str::to_owned).collect();
    let prefix = if !names.is_empty() && names.iter().all(|n| n.starts_with("bert.")) {
        "bert."
    } else {
        ""
    };

    let mut report = LoadReport::default();
    let mut used = BTreeSet::new();
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in variables {
            let key = key_of(&name).map(|k| format!("{prefix}{k}"));
            let view = match key.as_deref().map(|k| st.tensor(k)) {
                Some(Ok(view)) => view,
                _ => match mode {
                    LoadMode::Strict => {
                        return Err(Error::MissingTensor {
                            path: path.to_owned(),
                            name,
                            expected: var.size(),
                        })
                    }
                    LoadMode::Partial => {
                        report.missing.insert(name);
                        continue;
                    }
                },
            };
            let found: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if found != var.size() {
                return Err(Error::ShapeMismatch {
                    path: path.to_owned(),
                    name,
                    found,
                    expected: var.size(),
                });
            }
            let src = tensor_from_view(&view, path, &name)?;
            var.f_copy_(&src.to_kind(var.kind()))?;
            used.extend(key);
            report.loaded.insert(name);
        }
        Ok(())
    })?;
    report.unused = names.into_iter().filter(|n| !used.contains(n)).collect();
    Ok(report)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn tensor_from_view(view: &TensorView<'_>, path: &Path, name: &str) -> Result<Tensor> {
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        other => {
            return Err(Error::UnsupportedDtype {
                path: path.to_owned(),
                name: name.to_owned(),
                dtype: format!("{other:?}"),
            })
        }
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)?;
    check_finite(&tensor, path, name)?;
    Ok(tensor)
}

/// Fails when a floating-point tensor holds NaN or infinite values; `path` and `name` say where.
pub fn check_finite(tensor: &Tensor, path: &Path, name: &str) -> Result<()> {
    if !tensor.is_floating_point() || tensor.numel() == 0 {
        return Ok(());
    }
    let bad = tensor.isfinite().logical_not();
    let count = bad.sum(Kind::Int64).int64_value(&[]);
    if count == 0 {
        return Ok(());
    }
    let flat = bad
        .to_kind(Kind::Int64)
        .flatten(0, -1)
        .argmax(0, false)
        .int64_value(&[]);
    // The flat index as one index per dimension (row, column, …).
    let mut first = Vec::new();
    let mut rest = flat;
    for &d in tensor.size().iter().rev() {
        first.push(rest % d.max(1));
        rest /= d.max(1);
    }
    first.reverse();
    Err(Error::NonFinite {
        path: path.to_owned(),
        name: name.to_owned(),
        count,
        first,
    })
}

/// Writes every variable of `vs` to `path` as safetensors, atomically: the data goes to a
/// temporary file beside `path` that is renamed over it only once complete.
pub fn save_safetensors(vs: &VarStore, path: impl AsRef<Path>) -> Result<()> {
    save_tensors(vs.variables().into_iter().collect(), path)
}

/// Reads every tensor of a safetensors file (on the CPU), sorted by name.
pub fn read_tensors(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    let st = parse(&bytes, path)?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        out.push((name.clone(), tensor_from_view(&view, path, &name)?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Writes named tensors to `path` as safetensors, atomically (temporary file, then rename).
pub fn save_tensors(tensors: Vec<(String, Tensor)>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut variables = tensors;
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut owned = Vec::with_capacity(variables.len());
    for (name, t) in variables {
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let (dtype, elem) = match t.kind() {
            Kind::Float => (Dtype::F32, 4),
            Kind::Half => (Dtype::F16, 2),
            Kind::BFloat16 => (Dtype::BF16, 2),
            Kind::Double => (Dtype::F64, 8),
            Kind::Int64 => (Dtype::I64, 8),
            Kind::Int => (Dtype::I32, 4),
            other => {
                return Err(Error::UnsupportedDtype {
                    path: path.to_owned(),
                    name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        let numel = t.numel();
        let mut data = vec![0u8; numel * elem];
        t.f_copy_data_u8(&mut data, numel)?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name, dtype, shape, data));
    }
    let views = owned
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Safetensors {
                    path: path.to_owned(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let tmp = temp_path(path);
    safetensors::serialize_to_file(views, None, &tmp).map_err(|e| Error::Safetensors {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// `dir/.name.tmp` beside `path`, so the final rename stays on one file system.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Fails unless every id `tokenizer` can produce (but those of `except`, read by another table)
/// has a row in an embedding table of `rows` rows (`field` of the model's config): a tokenizer
/// from another model would otherwise index past the table inside libtorch.
pub(crate) fn check_tokenizer_fits(
    tokenizer: &gear_data::Tokenizer,
    rows: i64,
    field: &str,
    except: &[&str],
) -> Result<()> {
    match tokenizer.largest_id_except(except) {
        Some((id, token)) if i64::from(id) >= rows => Err(Error::Config {
            path: tokenizer.path().to_owned(),
            message: format!(
                "token `{token}` has id {id}, past the model's embedding table ({rows} rows, \
                 `{field}`): this tokenizer does not belong to this model"
            ),
        }),
        _ => Ok(()),
    }
}

/// `dir/file`, or [`Error::MissingFile`] when it is not a file.
pub(crate) fn required_file(dir: &Path, file: &'static str) -> Result<PathBuf> {
    let p = dir.join(file);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingFile {
            dir: dir.to_owned(),
            file,
        })
    }
}

/// Writes a model folder atomically: `fill` writes into a temporary folder beside `dir`
/// (`.{name}.tmp-{pid}`), which then replaces `dir` (the old one moved aside and removed only
/// once the new one is in place). `fallback` names the temporary folder when `dir` has no name.
/// `fill` may fail with any error this crate's converts into (the index writer's, the trainer's).
pub fn write_folder_atomically<E: From<Error>>(
    dir: &Path,
    fallback: &str,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = dir
        .file_name()
        .map_or_else(|| fallback.to_owned(), |n| n.to_string_lossy().into_owned());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    fill(&tmp)?;
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(io(dir))?;
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    fn store(width: i64) -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let _ = root.sub("a").var(
            "weight",
            &[width, 2],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        let _ = root.sub("b").var(
            "bias",
            &[2],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        vs
    }

    #[test]
    fn save_then_strict_load_restores_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let src = store(3);
        save_safetensors(&src, &path).unwrap();
        let mut dst = store(3);
        let report = load_safetensors(&mut dst, &path, LoadMode::Strict).unwrap();
        assert_eq!(report.loaded.len(), 2);
        assert!(report.missing.is_empty() && report.unused.is_empty());
        for (name, t) in src.variables() {
            let u = &dst.variables()[&name];
            assert!(t.equal(u), "{name} differs after reload");
        }
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn misshaped_tensor_names_tensor_and_both_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        save_safetensors(&store(3), &path).unwrap();
        let err = load_safetensors(&mut store(4), &path, LoadMode::Strict).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("a.weight") && msg.contains("[3, 2]") && msg.contains("[4, 2]"),
            "{msg}"
        );
    }

    #[test]
    fn missing_tensor_fails_strict_and_is_reported_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        save_safetensors(&store(3), &path).unwrap();
        let mut bigger = store(3);
        let _ = bigger
            .root()
            .sub("c")
            .var("weight", &[1], nn::Init::Const(7.0));
        let err = load_safetensors(&mut bigger, &path, LoadMode::Strict).unwrap_err();
        assert!(err.to_string().contains("c.weight"), "{err}");
        let report = load_safetensors(&mut bigger, &path, LoadMode::Partial).unwrap();
        assert_eq!(report.missing.iter().collect::<Vec<_>>(), ["c.weight"]);
        assert_eq!(report.loaded.len(), 2);
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, b"not a checkpoint").unwrap();
        let err = load_safetensors(&mut store(3), &path, LoadMode::Strict).unwrap_err();
        assert!(matches!(err, Error::Safetensors { .. }), "{err}");
    }
}
