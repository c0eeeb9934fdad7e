//! A tokenised batch as the two tensors every forward takes.

use gear_data::Batch;
use tch::{Device, Tensor};

/// The ids and the 0/1 attention mask of `batch`, each `[batch, seq_len]`, on `device`.
pub fn batch_tensors(batch: &Batch, device: Device) -> (Tensor, Tensor) {
    let shape = [batch.len() as i64, batch.seq_len() as i64];
    let ids = Tensor::from_slice(batch.ids())
        .view(shape)
        .to_device(device);
    let mask = Tensor::from_slice(batch.attention_mask())
        .view(shape)
        .to_device(device);
    (ids, mask)
}
