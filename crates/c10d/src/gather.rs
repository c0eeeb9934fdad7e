//! Gathering rows across ranks that hold different numbers of them (the global batch of
//! embeddings of a data-parallel contrastive step).

use tch::{Device, Tensor};

use crate::{Error, ProcessGroup, Result};

/// Every rank's row count (`rows` here), in rank order: one small all-gather.
pub fn row_counts(group: &ProcessGroup, rows: i64, device: Device) -> Result<Vec<i64>> {
    let counts = group.all_gather(&Tensor::from_slice(&[rows]).to_device(device))?;
    Vec::<i64>::try_from(counts.to_device(Device::Cpu))
        .map_err(|e| Error::Unsupported(format!("row counts: {e}")))
}

/// Concatenates every rank's rows of `t` (`[n_r, …]`, `n_r` may differ between ranks) in rank
/// order. Returns the gathered tensor (no gradient) and each rank's row count.
pub fn all_gather_rows(group: &ProcessGroup, t: &Tensor) -> Result<(Tensor, Vec<i64>)> {
    let rows = t.size().first().copied().unwrap_or(1);
    let counts = row_counts(group, rows, t.device())?;
    let all = all_gather_counted(group, t, &counts)?;
    Ok((all, counts))
}

/// As [`all_gather_rows`] when the row counts are already known (from [`row_counts`]): several
/// tensors with the same rows per rank need one count exchange, not one each.
pub fn all_gather_counted(group: &ProcessGroup, t: &Tensor, counts: &[i64]) -> Result<Tensor> {
    let t = t.detach().contiguous();
    let rows = t.size().first().copied().unwrap_or(1);
    if counts.len() != group.world_size() || counts.get(group.rank()) != Some(&rows) {
        return Err(Error::Unsupported(format!(
            "all_gather_counted: counts {counts:?} do not give rank {} its {rows} rows",
            group.rank()
        )));
    }
    let max = counts.iter().copied().max().unwrap_or(0);
    let padded = if rows < max {
        let mut shape = t.size();
        shape[0] = max - rows;
        Tensor::cat(
            &[&t, &Tensor::zeros(shape.as_slice(), (t.kind(), t.device()))],
            0,
        )
    } else {
        t
    };
    let all = group.all_gather(&padded)?;
    let parts: Vec<Tensor> = counts
        .iter()
        .enumerate()
        .map(|(r, &n)| all.narrow(0, r as i64 * max, n))
        .collect();
    Ok(Tensor::cat(&parts, 0))
}
