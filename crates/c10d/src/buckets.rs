//! Moving many parameters in a few large collectives: tensors grouped into flat buckets (same
//! kind and device, a byte cap each), for averaging gradients and for broadcasting rank 0's
//! parameters.

use tch::{Device, Kind, Tensor};

use crate::{ProcessGroup, Result};

/// Overwrites `tensors` on every rank with rank `root`'s values, flattened into buckets of at
/// most `bucket_bytes` (one broadcast per bucket). Returns the number of broadcasts.
pub fn broadcast_tensors(
    group: &ProcessGroup,
    tensors: &[Tensor],
    root: usize,
    bucket_bytes: usize,
) -> Result<usize> {
    let buckets = plan_buckets(tensors, bucket_bytes);
    for bucket in &buckets {
        let members: Vec<&Tensor> = bucket.iter().map(|&i| &tensors[i]).collect();
        let flat = flatten(&members);
        group.broadcast(&flat, root)?;
        unflatten_into(&flat, &members);
    }
    Ok(buckets.len())
}

/// Averages gradients over ranks in a few large all-reduces: the parameters are grouped once
/// into buckets (same kind and device, at most `bucket_bytes` each); a step flattens each
/// bucket's gradients into one buffer, sums it over ranks, divides by the world size and copies
/// the result back.
#[derive(Debug, Clone)]
pub struct GradientBuckets {
    buckets: Vec<Vec<usize>>,
}

impl GradientBuckets {
    /// 25 MiB, torch DDP's default bucket cap.
    pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

    /// Buckets for `params`, in order.
    pub fn new(params: &[Tensor], bucket_bytes: usize) -> Self {
        Self {
            buckets: plan_buckets(params, bucket_bytes),
        }
    }

    /// Number of buckets (= all-reduces per step).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether there are no buckets.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Replaces every parameter's gradient with its average over ranks. Every rank must have
    /// the same parameters with a defined gradient (a parameter without one on every rank is
    /// skipped; on some ranks only, the ranks would disagree and this fails).
    pub fn all_reduce_mean(&self, group: &ProcessGroup, params: &[Tensor]) -> Result<usize> {
        let world = group.world_size() as f64;
        let mut calls = 0;
        for bucket in &self.buckets {
            let grads: Vec<Tensor> = bucket
                .iter()
                .map(|&i| params[i].grad())
                .filter(Tensor::defined)
                .collect();
            if grads.is_empty() {
                continue;
            }
            let members: Vec<&Tensor> = grads.iter().collect();
            let flat = flatten(&members);
            group.all_reduce_sum(&flat)?;
            let flat = flat / world;
            unflatten_into(&flat, &members);
            calls += 1;
        }
        Ok(calls)
    }
}

/// Groups tensor indices into buckets of one kind and device, each at most `cap` bytes (a
/// larger tensor gets a bucket of its own).
fn plan_buckets(tensors: &[Tensor], cap: usize) -> Vec<Vec<usize>> {
    let mut buckets: Vec<(Kind, Device, usize, Vec<usize>)> = Vec::new();
    let mut done: Vec<Vec<usize>> = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        let slot = buckets
            .iter()
            .position(|(k, d, _, _)| *k == t.kind() && *d == t.device());
        match slot {
            Some(s) if buckets[s].2 + bytes <= cap => {
                buckets[s].2 += bytes;
                buckets[s].3.push(i);
            }
            Some(s) => {
                let full =
                    std::mem::replace(&mut buckets[s], (t.kind(), t.device(), bytes, vec![i]));
                done.push(full.3);
            }
            None => buckets.push((t.kind(), t.device(), bytes, vec![i])),
        }
    }
    done.extend(buckets.into_iter().map(|b| b.3));
    done.retain(|b| !b.is_empty());
    done
}

fn flatten(tensors: &[&Tensor]) -> Tensor {
    tch::no_grad(|| {
        let flat: Vec<Tensor> = tensors.iter().map(|t| t.detach().reshape([-1])).collect();
        Tensor::cat(&flat, 0).contiguous()
    })
}

fn unflatten_into(flat: &Tensor, tensors: &[&Tensor]) {
    tch::no_grad(|| {
        let mut offset = 0i64;
        for t in tensors {
            let n = t.numel() as i64;
            let mut target = t.detach();
            target.copy_(&flat.narrow(0, offset, n).view_as(t));
            offset += n;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_respect_the_cap_and_kinds() {
        let ts = vec![
            Tensor::zeros([10], (Kind::Float, Device::Cpu)), // 40 B
            Tensor::zeros([10], (Kind::Float, Device::Cpu)), // 40 B
            Tensor::zeros([4], (Kind::Int64, Device::Cpu)),  // 32 B, own kind
            Tensor::zeros([30], (Kind::Float, Device::Cpu)), // 120 B, over the cap alone
            Tensor::zeros([5], (Kind::Float, Device::Cpu)),  // 20 B
        ];
        assert_eq!(
            plan_buckets(&ts, 100),
            vec![vec![0, 1], vec![3], vec![4], vec![2]]
        );
        assert_eq!(plan_buckets(&ts, 1 << 20), vec![vec![0, 1, 3, 4], vec![2]]);
    }

    #[test]
    fn flatten_round_trips() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let b = Tensor::from_slice(&[5.0f32]);
        let flat = flatten(&[&a, &b]);
        assert_eq!(
            Vec::<f32>::try_from(&flat).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0]
        );
        let doubled = &flat * 2.0;
        unflatten_into(&doubled, &[&a, &b]);
        assert_eq!(
            Vec::<f32>::try_from(a.reshape([-1])).unwrap(),
            vec![2.0, 4.0, 6.0, 8.0]
        );
        assert_eq!(Vec::<f32>::try_from(&b).unwrap(), vec![10.0]);
    }
}
