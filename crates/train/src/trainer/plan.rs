//! The data plan of an epoch across ranks: global batches that every rank can share
//! (`global_plan`) and each rank's contiguous share of one (`shard`).

use gear_data::plan_epoch;

/// The epoch's plan of global batches (`batching.batch_size` = per-rank size × world). A batch
/// too small to give every rank an example (at most one per epoch, the tail of the data) joins
/// the batch before it, so no example is dropped; with one process nothing changes.
pub fn global_plan(
    lengths: &[usize],
    batching: &gear_data::BatchingConfig,
    epoch: u64,
    world: usize,
) -> Vec<Vec<usize>> {
    let mut plan = plan_epoch(lengths, batching, epoch);
    while let Some(i) = plan.iter().position(|b| b.len() < world) {
        if plan.len() == 1 {
            break;
        }
        let small = plan.remove(i);
        let into = if i == 0 { 0 } else { i - 1 };
        plan[into].extend(small);
    }
    plan
}

/// Rank `rank`'s contiguous share of a global batch: sizes differ by at most one, earlier
/// ranks take the extra examples, and the shares concatenated in rank order are the batch.
pub fn shard(batch: &[usize], rank: usize, world: usize) -> &[usize] {
    let base = batch.len() / world;
    let extra = batch.len() % world;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    &batch[start..start + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_concatenate_to_the_batch_and_differ_by_at_most_one() {
        let batch: Vec<usize> = (10..17).collect();
        for world in 1..=7 {
            let shares: Vec<&[usize]> = (0..world).map(|r| shard(&batch, r, world)).collect();
            assert_eq!(shares.concat(), batch, "world {world}");
            let sizes: Vec<usize> = shares.iter().map(|s| s.len()).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "world {world}: {sizes:?}");
            assert!(
                sizes.windows(2).all(|w| w[0] >= w[1]),
                "earlier ranks take extras"
            );
        }
    }

    #[test]
    fn global_plan_merges_a_tail_too_small_to_share() {
        let lengths = vec![5usize; 17];
        let batching = gear_data::BatchingConfig {
            batch_size: 8,
            bucket_batches: 1,
            seed: 3,
        };
        let single = global_plan(&lengths, &batching, 0, 1);
        assert_eq!(
            single,
            plan_epoch(&lengths, &batching, 0),
            "one process: unchanged"
        );
        assert_eq!(single.len(), 3);
        let two = global_plan(&lengths, &batching, 0, 2);
        assert_eq!(two.len(), 2, "the one-example batch joined another");
        assert!(two.iter().all(|b| b.len() >= 2));
        let mut seen: Vec<usize> = two.concat();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..17).collect::<Vec<_>>(),
            "no example dropped or repeated"
        );
    }
}
