//! The momentum bi-encoder and its queues (BLIP/ALBEF's momentum distillation, method §2): frozen
//! copies of `E_q` and `E_d` in their own VarStore, moved towards the trained encoders by an
//! exponential moving average after every step, and FIFO queues of their embeddings that serve as
//! extra negatives. Queues are non-trainable variables of the same VarStore, so a checkpoint of
//! it restores them.

use gear_model::{l2_normalize, mean_pool, Bert, GearModel};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::{Error, Result};

/// Momentum encoders and queues.
pub struct Momentum {
    vs: VarStore,
    query: Bert,
    document: Option<Bert>,
    queue: Option<Queue>,
}

/// The queues: momentum query and document embeddings and each entry's document id (−1: empty).
pub struct Queue {
    /// `[size, dim]`.
    pub queries: Tensor,
    /// `[size, dim]`.
    pub documents: Tensor,
    /// `[size]` document ids (a stable hash), −1 where nothing was enqueued yet.
    pub ids: Tensor,
    /// `[1]` next write position.
    pub ptr: Tensor,
}

impl Queue {
    /// Number of slots.
    pub fn size(&self) -> i64 {
        self.ids.size()[0]
    }

    /// Writes `queries`, `documents` `[n, dim]` and `ids [n]` at the pointer, wrapping around;
    /// with `n > size` only the last `size` rows are kept.
    pub fn enqueue(&mut self, queries: &Tensor, documents: &Tensor, ids: &Tensor) {
        let size = self.size();
        let n = ids.size()[0];
        let (queries, documents, ids) = if n > size {
            (
                queries.narrow(0, n - size, size),
                documents.narrow(0, n - size, size),
                ids.narrow(0, n - size, size),
            )
        } else {
            (
                queries.shallow_clone(),
                documents.shallow_clone(),
                ids.shallow_clone(),
            )
        };
        let n = ids.size()[0];
        let ptr = self.ptr.int64_value(&[0]);
        let device = self.ids.device();
        let index = (Tensor::arange(n, (Kind::Int64, device)) + ptr).remainder(size);
        tch::no_grad(|| {
            let _ = self
                .queries
                .index_copy_(0, &index, &queries.to_kind(self.queries.kind()));
            let _ =
                self.documents
                    .index_copy_(0, &index, &documents.to_kind(self.documents.kind()));
            let _ = self.ids.index_copy_(0, &index, &ids);
            let _ = self.ptr.fill_((ptr + n) % size);
        });
    }
}

impl Momentum {
    /// Copies the encoders of `model` into a new, frozen VarStore and allocates queues of
    /// `queue_size` (0: no queue).
    pub fn new(model: &GearModel, queue_size: i64) -> Result<Self> {
        let cfg = &model.config().encoder;
        let device = model.device();
        let vs = VarStore::new(device);
        let root = vs.root();
        let query = Bert::new(&(&root / "query_encoder"), cfg)?;
        let document = if model.config().share_encoders {
            None
        } else {
            Some(Bert::new(&(&root / "document_encoder"), cfg)?)
        };
        let queue = (queue_size > 0).then(|| {
            let q = &root / "queue";
            let dim = cfg.hidden_size;
            Queue {
                queries: q.add(
                    "queries",
                    Tensor::zeros([queue_size, dim], (Kind::Float, device)),
                    false,
                ),
                documents: q.add(
                    "documents",
                    Tensor::zeros([queue_size, dim], (Kind::Float, device)),
                    false,
                ),
                ids: q.add(
                    "ids",
                    Tensor::full([queue_size], -1, (Kind::Int64, device)),
                    false,
                ),
                ptr: q.add("ptr", Tensor::zeros([1], (Kind::Int64, device)), false),
            }
        });
        let mut momentum = Self {
            vs,
            query,
            document,
            queue,
        };
        momentum.copy_from(model, 0.0)?;
        momentum.vs.freeze();
        Ok(momentum)
    }

    /// `θ_m ← m·θ_m + (1 − m)·θ` for every encoder parameter, matched by name (`m = 0` copies).
    pub fn copy_from(&mut self, model: &GearModel, m: f64) -> Result<()> {
        let main = model.var_store().variables();
        tch::no_grad(|| {
            for (name, mut pm) in self.vs.variables() {
                if name.starts_with("queue.") {
                    continue;
                }
                let p = main.get(&name).ok_or_else(|| {
                    Error::Train(format!(
                        "momentum parameter `{name}` has no twin in the model"
                    ))
                })?;
                if m == 0.0 {
                    pm.copy_(p);
                } else {
                    let _ = pm.g_mul_scalar_(m).g_add_(&(p * (1.0 - m)));
                }
            }
            Ok(())
        })
    }

    /// Unit-norm momentum embeddings of queries and documents (no gradient).
    pub fn embed(
        &self,
        q_ids: &Tensor,
        q_mask: &Tensor,
        d_ids: &Tensor,
        d_mask: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        tch::no_grad(|| {
            let q = self.query.forward_t(q_ids, q_mask, false)?.hidden;
            let d_enc = self.document.as_ref().unwrap_or(&self.query);
            let d = d_enc.forward_t(d_ids, d_mask, false)?.hidden;
            Ok((
                l2_normalize(&mean_pool(&q, q_mask)),
                l2_normalize(&mean_pool(&d, d_mask)),
            ))
        })
    }

    /// Unit-norm momentum document embeddings (no gradient): hard negatives.
    pub fn embed_documents(&self, d_ids: &Tensor, d_mask: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| {
            let d_enc = self.document.as_ref().unwrap_or(&self.query);
            let d = d_enc.forward_t(d_ids, d_mask, false)?.hidden;
            Ok(l2_normalize(&mean_pool(&d, d_mask)))
        })
    }

    /// Unit-norm momentum query embeddings (no gradient).
    pub fn embed_queries(&self, q_ids: &Tensor, q_mask: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| {
            let q = self.query.forward_t(q_ids, q_mask, false)?.hidden;
            Ok(l2_normalize(&mean_pool(&q, q_mask)))
        })
    }

    /// The queues, if any.
    pub fn queue(&self) -> Option<&Queue> {
        self.queue.as_ref()
    }

    /// The queues, mutably.
    pub fn queue_mut(&mut self) -> Option<&mut Queue> {
        self.queue.as_mut()
    }

    /// The VarStore (for checkpoints).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The VarStore, mutably (for restoring checkpoints).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.vs.device()
    }
}

/// Named variables of a VarStore, sorted, for comparisons in tests and tools.
pub fn sorted_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(size: i64) -> Queue {
        Queue {
            queries: Tensor::zeros([size, 2], (Kind::Float, Device::Cpu)),
            documents: Tensor::zeros([size, 2], (Kind::Float, Device::Cpu)),
            ids: Tensor::full([size], -1, (Kind::Int64, Device::Cpu)),
            ptr: Tensor::zeros([1], (Kind::Int64, Device::Cpu)),
        }
    }

    fn rows(n: i64, start: f32) -> Tensor {
        Tensor::arange(n * 2, (Kind::Float, Device::Cpu)).view([n, 2]) + f64::from(start)
    }

    #[test]
    fn enqueue_wraps_around_exactly() {
        let mut q = queue(5);
        q.enqueue(
            &rows(3, 0.0),
            &rows(3, 100.0),
            &Tensor::from_slice(&[10i64, 11, 12]),
        );
        assert_eq!(q.ptr.int64_value(&[0]), 3);
        assert_eq!(Vec::<i64>::try_from(&q.ids).unwrap(), [10, 11, 12, -1, -1]);
        q.enqueue(
            &rows(3, 6.0),
            &rows(3, 106.0),
            &Tensor::from_slice(&[13i64, 14, 15]),
        );
        // Slots 3, 4, then 0 again.
        assert_eq!(Vec::<i64>::try_from(&q.ids).unwrap(), [15, 11, 12, 13, 14]);
        assert_eq!(q.ptr.int64_value(&[0]), 1);
        assert_eq!(
            Vec::<f32>::try_from(q.queries.get(0)).unwrap(),
            [10.0, 11.0]
        );
        assert_eq!(
            Vec::<f32>::try_from(q.documents.get(4)).unwrap(),
            [108.0, 109.0]
        );
        // A batch larger than the queue keeps its last rows.
        let mut small = queue(2);
        small.enqueue(
            &rows(3, 0.0),
            &rows(3, 0.0),
            &Tensor::from_slice(&[1i64, 2, 3]),
        );
        assert_eq!(Vec::<i64>::try_from(&small.ids).unwrap(), [2, 3]);
    }
}
