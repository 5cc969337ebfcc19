//! Data-parallel micro-batches: the rows of a micro-batch are split into shards, and every shard
//! runs its forward and backward pass on its own thread with its own rayon pool; the trainer
//! adds their gradients in shard order.
//!
//! Why: with one graph per micro-batch, each op is parallelised inside itself. gemm forks and
//! joins rayon's threads on every one of a step's thousands of matrix multiplies, and candle's
//! element-wise ops run on the calling thread alone (`cli/src/tuning.rs` turns their spinning
//! pool off), so a 2-core machine was only ~1.5 cores busy during a LoRA step on SmolLM2-135M.
//! Shards need no synchronisation until their gradients are added.
//!
//! Results: the same bit for bit for the same thread count. Another thread count splits the
//! rows differently, so the gradients' sums are rounded differently (float rounding, ~1e-7
//! relative); the dropout masks do not change (see [`crate::model::DropoutStream`]).

use std::ops::Range;

use super::TrainError;

/// The shards of every micro-batch and their thread pools.
pub struct Shards {
    /// One pool per shard; empty when there is a single shard, which runs on the calling thread
    /// with the global pool.
    pools: Vec<rayon::ThreadPool>,
}

impl Shards {
    /// As many shards as `threads`, at most one per row of a micro-batch of `rows` rows; the
    /// threads are shared out among the shards' pools.
    pub fn new(threads: usize, rows: usize) -> Result<Self, TrainError> {
        let count = threads.min(rows).max(1);
        if count == 1 {
            return Ok(Self { pools: Vec::new() });
        }
        let pools = (0..count)
            .map(|i| {
                let share = threads / count + usize::from(i < threads % count);
                rayon::ThreadPoolBuilder::new()
                    .num_threads(share)
                    .thread_name(move |t| format!("clreg-shard-{i}.{t}"))
                    .build()
                    .map_err(|e| {
                        TrainError::Compute(format!("cannot start the training threads: {e}"))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { pools })
    }

    /// The number of shards.
    pub fn count(&self) -> usize {
        self.pools.len().max(1)
    }

    /// The row ranges of a micro-batch of `rows` rows, in order: as even as possible (earlier
    /// shards take the extra rows), none empty.
    pub fn ranges(&self, rows: usize) -> Vec<Range<usize>> {
        let n = self.count().min(rows).max(1);
        let mut start = 0;
        (0..n)
            .map(|i| {
                let len = rows / n + usize::from(i < rows % n);
                let range = start..start + len;
                start += len;
                range
            })
            .filter(|r| !r.is_empty())
            .collect()
    }

    /// `f(shard, rows)` for every shard of a micro-batch of `rows` rows, concurrently; the
    /// results in shard order. A panic in a shard reaches the caller.
    pub fn run<T, F>(&self, rows: usize, f: F) -> Vec<T>
    where
        T: Send,
        F: Fn(usize, Range<usize>) -> T + Sync,
    {
        let ranges = self.ranges(rows);
        if self.pools.is_empty() || ranges.len() <= 1 {
            return ranges
                .into_iter()
                .enumerate()
                .map(|(i, r)| f(i, r))
                .collect();
        }
        let f = &f;
        std::thread::scope(|s| {
            let rest: Vec<_> = ranges
                .iter()
                .cloned()
                .enumerate()
                .skip(1)
                .map(|(i, r)| {
                    let pool = &self.pools[i];
                    s.spawn(move || pool.install(|| f(i, r)))
                })
                .collect();
            let mut out = vec![self.pools[0].install(|| f(0, ranges[0].clone()))];
            for handle in rest {
                out.push(
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
            out
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_shared_out_evenly_and_in_order() {
        let shards = Shards::new(2, 4).unwrap();
        assert_eq!(shards.count(), 2);
        assert_eq!(shards.ranges(4), vec![0..2, 2..4]);
        assert_eq!(shards.ranges(3), vec![0..2, 2..3]);
        // A short last micro-batch (packing) has fewer shards.
        assert_eq!(shards.ranges(1), vec![0..1]);
        assert!(shards.ranges(0).is_empty());
        let three = Shards::new(3, 8).unwrap();
        assert_eq!(three.ranges(8), vec![0..3, 3..6, 6..8]);
    }

    #[test]
    fn never_more_shards_than_threads_or_rows() {
        assert_eq!(Shards::new(1, 8).unwrap().count(), 1);
        assert_eq!(Shards::new(8, 1).unwrap().count(), 1);
        assert_eq!(Shards::new(16, 4).unwrap().count(), 4);
        assert_eq!(Shards::new(1, 8).unwrap().ranges(8), vec![0..8]);
    }

    #[test]
    fn shards_run_on_their_own_pools_and_return_in_order() {
        let shards = Shards::new(2, 4).unwrap();
        let out = shards.run(4, |i, rows| {
            let name = std::thread::current().name().map(str::to_owned);
            (i, rows, name, rayon::current_num_threads())
        });
        assert_eq!(out.len(), 2);
        for (k, (i, rows, name, threads)) in out.into_iter().enumerate() {
            assert_eq!(i, k);
            assert_eq!(rows, k * 2..k * 2 + 2);
            assert_eq!(name.as_deref(), Some(format!("clreg-shard-{k}.0").as_str()));
            assert_eq!(threads, 1);
        }
    }
}
