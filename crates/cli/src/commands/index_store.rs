//! `gear index build --store` and `gear index finish`: a corpus embedded straight into
//! PostgreSQL, whole or one shard at a time (`--shard I/N`, on any number of machines or a Ray
//! cluster: `cargo xtask embed-cluster`), then checked whole and indexed.

use std::path::Path;

use anyhow::{bail, Result};
use gear_data::DocumentReader;
use gear_infer::BuildOptions;
use gear_store::{HnswSettings, Shard, StoreAddress, StoreBuildOptions};

use super::index::count_bar;
use crate::args::GearModelArgs;

/// pgvector's HNSW settings from `--hnsw-m` / `--ef-construction` (pgvector's defaults, 16 and
/// 64, when absent), checked against what pgvector takes.
pub fn pgvector_hnsw(m: Option<u32>, ef_construction: Option<u32>) -> Result<HnswSettings> {
    let default = HnswSettings::default();
    let (m, ef) = (
        m.unwrap_or(default.m),
        ef_construction.unwrap_or(default.ef_construction),
    );
    if !(2..=100).contains(&m) {
        bail!("--hnsw-m {m}: pgvector takes 2 to 100");
    }
    if !(4..=1000).contains(&ef) || ef < 2 * m {
        bail!("--ef-construction {ef}: pgvector takes 4 to 1000, and at least 2 × --hnsw-m ({m})");
    }
    Ok(HnswSettings {
        m,
        ef_construction: ef,
    })
}

/// Where and how `gear index build --store` writes.
pub struct StoreTarget<'a> {
    pub url: &'a str,
    pub schema: &'a str,
    /// `None`: the whole corpus, then [`finish`].
    pub shard: Option<Shard>,
    pub commit_every: usize,
    pub hnsw: HnswSettings,
}

/// `gear index build --store`.
pub fn build(
    corpus: &Path,
    model: &GearModelArgs,
    embed: BuildOptions,
    target: &StoreTarget<'_>,
) -> Result<()> {
    let address = StoreAddress::new(target.url, target.schema)?;
    let (gear, dir) = model.load()?;
    let docs = DocumentReader::open(corpus)?.collect::<Result<Vec<_>, _>>()?;
    let shard = target.shard.unwrap_or(Shard::WHOLE);
    let bar = count_bar("embed", "documents")?;
    let start = std::time::Instant::now();
    let options = StoreBuildOptions {
        shard,
        embed,
        commit_every: target.commit_every,
    };
    let report = gear_store::build(
        &gear,
        &dir,
        &docs,
        &address,
        &options,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let shard_name = format!("shard {}/{}", shard.index, shard.count);
    eprintln!(
        "{shard_name}: documents {}..{} of {}: wrote {}, {} already in {} schema {} ({:.1} s){}",
        report.range.start,
        report.range.end,
        docs.len(),
        report.written,
        report.present,
        address.target(),
        target.schema,
        start.elapsed().as_secs_f64(),
        if report.cut > 0 {
            format!(
                "; {} documents longer than the model reads were cut",
                report.cut
            )
        } else {
            String::new()
        }
    );
    // One line for scripts (the Ray driver reads it).
    println!(
        "{}",
        serde_json::json!({
            "shard": shard.index,
            "shards": shard.count,
            "first": report.range.start,
            "end": report.range.end,
            "written": report.written,
            "present": report.present,
        })
    );
    if target.shard.is_none() {
        finish(target.url, target.schema, target.hnsw)?;
    } else {
        eprintln!(
            "once every shard is in: gear index finish --store URL --schema {}",
            target.schema
        );
    }
    Ok(())
}

/// `gear index finish`.
pub fn finish(url: &str, schema: &str, hnsw: HnswSettings) -> Result<()> {
    let address = StoreAddress::new(url, schema)?;
    let start = std::time::Instant::now();
    let meta = gear_store::finish(&address, hnsw)?;
    eprintln!(
        "{} schema {schema}: {} documents, {} vectors; HNSW index built (m {}, ef_construction \
         {}) in {:.1} s; the store is complete",
        address.target(),
        meta.documents,
        meta.rows,
        hnsw.m,
        hnsw.ef_construction,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
