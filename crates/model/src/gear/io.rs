//! A [`GearModel`]'s checkpoint folder: `gear.toml`, `model.safetensors` and `tokenizer.json`,
//! loaded strictly and written atomically.

use std::path::Path;

use gear_data::Tokenizer;
use tch::Device;

use super::{GearModel, CONFIG_FILE, DECODE_TOKEN, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::checkpoint::{
    load_safetensors, required_file, save_safetensors, write_folder_atomically, LoadMode,
};
use crate::gear::config::GearConfig;
use crate::{Error, Result};

impl GearModel {
    /// Loads a checkpoint folder written by [`GearModel::save`], strictly.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = GearConfig::from_toml_file(required_file(dir, CONFIG_FILE)?)?;
        let tokenizer_path = required_file(dir, TOKENIZER_FILE)?;
        let tokenizer = Tokenizer::from_file(&tokenizer_path, config.max_document_len)?;
        if tokenizer.token_to_id(DECODE_TOKEN).is_none() {
            return Err(Error::Config {
                path: tokenizer_path,
                message: format!("no `{DECODE_TOKEN}` token: not a GeAR checkpoint's tokenizer"),
            });
        }
        let weights = required_file(dir, WEIGHTS_FILE)?;
        let mut model = Self::new(config, tokenizer, device)?;
        load_safetensors(&mut model.vs, &weights, LoadMode::Strict)?;
        Ok(model)
    }

    /// Writes `dir/{gear.toml, model.safetensors, tokenizer.json}` atomically: everything goes to
    /// a temporary folder beside `dir` that replaces `dir` only once complete.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        write_folder_atomically(dir.as_ref(), "checkpoint", |tmp| {
            save_safetensors(&self.vs, tmp.join(WEIGHTS_FILE))?;
            std::fs::write(tmp.join(CONFIG_FILE), self.config.to_toml_string()?).map_err(
                |source| Error::Io {
                    path: tmp.to_owned(),
                    source,
                },
            )?;
            Ok(self.texts.document().save(tmp.join(TOKENIZER_FILE))?)
        })
    }
}
