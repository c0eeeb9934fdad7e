//! Checkpoints: written whole into a temporary folder and swapped in (`save_checkpoint`), found
//! again after a kill between the two renames of a swap (`find_checkpoint`), and resumed only
//! with the configuration they were trained with (`resume`).

use std::path::{Path, PathBuf};

use gear_model::{
    load_safetensors_mapped, read_tensors, save_tensors, write_folder_atomically, GearModel,
    LoadMode,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::{TrainState, Trainer};
use crate::{Error, Precision, Result, TrainConfig};

#[derive(Serialize, Deserialize)]
struct SavedState {
    state: TrainState,
    config: TrainConfig,
}

impl Trainer {
    /// Continues the run whose checkpoint is in `out/checkpoint`. The configuration must equal
    /// the saved one except for `[run]` `max_steps`, `eval_every`, `checkpoint_every` and
    /// `precision`.
    pub fn resume(config: TrainConfig, out: impl Into<PathBuf>, device: Device) -> Result<Self> {
        config.run.precision.check(device)?;
        let out = out.into();
        let ck = find_checkpoint(&out).ok_or_else(|| Error::Resume {
            path: out.join("checkpoint"),
            message: "no checkpoint to resume from".into(),
        })?;
        let bad = |message: String| Error::Resume {
            path: ck.clone(),
            message,
        };
        let json = ck.join("train_state.json");
        let text =
            std::fs::read_to_string(&json).map_err(|e| bad(format!("{}: {e}", json.display())))?;
        let saved: SavedState =
            serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", json.display())))?;
        let comparable = |c: &TrainConfig| {
            let mut c = c.clone();
            c.run.max_steps = None;
            c.run.eval_every = 0;
            c.run.checkpoint_every = 0;
            c.run.precision = Precision::default();
            c
        };
        if comparable(&saved.config) != comparable(&config) {
            let then = serde_json::to_value(comparable(&saved.config)).unwrap_or_default();
            let now = serde_json::to_value(comparable(&config)).unwrap_or_default();
            let what = first_difference(&then, &now, "")
                .map_or_else(String::new, |(field, a, b)| {
                    format!(": `{field}` was {a}, now {b}")
                });
            return Err(bad(format!(
                "the configuration differs from the one the checkpoint was trained with{what} \
                 (only [run] max_steps, eval_every, checkpoint_every and precision may change)"
            )));
        }
        let model = GearModel::load(ck.join("model"), device)?;
        let mut trainer = Self::with_model(model, config, out.clone())?;
        let tensors_path = ck.join("train_state.safetensors");
        load_safetensors_mapped(
            trainer.momentum.var_store_mut(),
            &tensors_path,
            LoadMode::Strict,
            |n| Some(format!("momentum.{n}")),
        )?;
        let tensors: std::collections::HashMap<String, Tensor> =
            read_tensors(&tensors_path)?.into_iter().collect();
        let temp = tensors
            .get("temp")
            .ok_or_else(|| bad("no `temp` in train_state.safetensors".into()))?;
        tch::no_grad(|| trainer.temp.copy_(temp));
        trainer
            .optimizer
            .load_state(
                |k| {
                    tensors
                        .get(&format!("optim.{k}"))
                        .map(|t| t.to_device(device))
                },
                saved.state.step,
            )
            .map_err(bad)?;
        trainer.state = saved.state;
        trainer.last_checkpoint = Some(ck);
        Ok(trainer)
    }

    /// Writes `out/checkpoint/{model/, train_state.safetensors, train_state.json}` atomically
    /// (built in a temporary folder that replaces the old checkpoint only once complete). In a
    /// data-parallel run only rank 0 writes; other ranks return the path without writing.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        if self.rank().0 != 0 {
            return Ok(self.out.join("checkpoint"));
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(&self.out).map_err(io(&self.out))?;
        let ck = self.out.join("checkpoint");
        let saved = SavedState {
            state: self.state.clone(),
            config: self.config.clone(),
        };
        let json = serde_json::to_string_pretty(&saved).map_err(|e| Error::Train(e.to_string()))?;
        let mut tensors: Vec<(String, Tensor)> = self
            .momentum
            .var_store()
            .variables()
            .into_iter()
            .map(|(k, t)| (format!("momentum.{k}"), t))
            .collect();
        tensors.push(("temp".into(), self.temp.detach()));
        tensors.extend(
            self.optimizer
                .state()
                .into_iter()
                .map(|(k, t)| (format!("optim.{k}"), t)),
        );
        // `.checkpoint.tmp-{pid}` filled, then swapped in (`find_checkpoint` knows the names).
        write_folder_atomically(&ck, "checkpoint", |tmp| {
            self.model.save(tmp.join("model"))?;
            save_tensors(tensors, tmp.join("train_state.safetensors"))?;
            let path = tmp.join("train_state.json");
            std::fs::write(&path, json).map_err(|source| gear_model::Error::Io { path, source })
        })?;
        // Leftovers of runs killed mid-save are superseded now.
        if let Ok(entries) = std::fs::read_dir(&self.out) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".checkpoint.tmp-") || name.starts_with(".checkpoint.old-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        self.last_checkpoint = Some(ck.clone());
        Ok(ck)
    }
}

/// The checkpoint to resume from: `out/checkpoint`, or — when a process was killed between the
/// two renames of a checkpoint swap — the complete new one (`.checkpoint.tmp-*` with its
/// `train_state.json`, written last) or else the previous one (`.checkpoint.old-*`).
pub fn find_checkpoint(out: &Path) -> Option<PathBuf> {
    let ck = out.join("checkpoint");
    if ck.join("train_state.json").is_file() {
        return Some(ck);
    }
    let mut candidates: Vec<(u8, u64, PathBuf)> = std::fs::read_dir(out)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rank = if name.starts_with(".checkpoint.tmp-") {
                0
            } else if name.starts_with(".checkpoint.old-") {
                1
            } else {
                return None;
            };
            let json = e.path().join("train_state.json");
            let saved: SavedState =
                serde_json::from_str(&std::fs::read_to_string(&json).ok()?).ok()?;
            Some((rank, u64::MAX - saved.state.step, e.path()))
        })
        .collect();
    // The most advanced complete checkpoint, preferring the new one of an interrupted swap.
    candidates.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    candidates.into_iter().next().map(|c| c.2)
}

/// The first field (dotted path) where two JSON values differ, with both values.
fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
    path: &str,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let field = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                first_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &field,
                )
            })
        }
        _ if a != b => Some((path.to_owned(), a.to_string(), b.to_string())),
        _ => None,
    }
}
