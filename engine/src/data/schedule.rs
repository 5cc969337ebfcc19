//! Which examples of which task each epoch trains on: plain, replay and joint mixtures.
//!
//! Task 0 is the current task, 1.. the earlier ones (for joint training: all tasks, in order).
//! Every random choice is drawn from one seed, so the same seed and sizes give the same order.
//!
//! - Plain: the current task, reshuffled every epoch.
//! - Replay with fraction w (RhuiDih/cl: MixtureDataset): the current task whole, plus
//!   round(w·|D₀|) examples of each earlier task i, drawn once (at construction) without
//!   replacement when |Dᵢ| suffices, with replacement otherwise; the combined list is reshuffled
//!   every epoch with a seed derived from (seed, epoch).
//! - Joint: every task contributes N = max |Dᵢ| examples per epoch: ⌊N/|Dᵢ|⌋ whole copies plus a
//!   sample without replacement of the remaining N mod |Dᵢ|, drawn once; reshuffled every epoch.
//!
//! Rounding is half away from zero (`f64::round`).

use serde::Serialize;

use crate::tiny::SplitMix64;

use super::split::{below, shuffle};

/// How tasks are mixed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    Plain,
    Replay { fraction: f64 },
    Joint,
}

/// One training example: `index` into task `task`'s examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Draw {
    pub task: usize,
    pub index: usize,
}

/// Why a mixture was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// Replay or joint training with only the current task.
    #[error("{schedule} needs at least one earlier task's data: pass --past FILE")]
    NoPastData { schedule: &'static str },
    /// A replay fraction outside (0, 1].
    #[error("the replay fraction is {0}; give a fraction in (0, 1], such as 0.1")]
    BadFraction(f64),
    /// A task with no examples.
    #[error("task {task} has no examples; every task needs at least one")]
    EmptyTask { task: usize },
    /// No task at all.
    #[error("no training data: give the current task's data")]
    NoTasks,
}

impl ScheduleError {
    /// The stable code of this error.
    pub fn code(&self) -> crate::code::Code {
        match self {
            Self::NoPastData { .. } => crate::code::Code::NoPastData,
            Self::BadFraction(_) => crate::code::Code::BadReplayFraction,
            Self::EmptyTask { .. } => crate::code::Code::EmptyTask,
            Self::NoTasks => crate::code::Code::NoTasks,
        }
    }
}

/// A fixed multiset of draws, reshuffled every epoch.
#[derive(Debug, Clone)]
pub struct Mixture {
    schedule: Schedule,
    seed: u64,
    counts: Vec<usize>,
    /// The draws of one epoch, before shuffling.
    pool: Vec<Draw>,
}

// Tags that keep the seeds derived for different purposes apart.
const TAG_SAMPLE: u64 = 1;
const TAG_EPOCH: u64 = 2;

/// A seed for (`tag`, `i`) derived from `seed`.
fn derive(seed: u64, tag: u64, i: u64) -> u64 {
    let base = SplitMix64::new(seed).next_u64();
    SplitMix64::new(
        base ^ tag.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    )
    .next_u64()
}

/// `k` distinct indices of `0..n` (`k ≤ n`): the first `k` of a partial Fisher–Yates.
fn without_replacement(n: usize, k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + below(rng, n - i);
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

impl Mixture {
    /// Builds the mixture for tasks of `task_sizes` examples (task 0 the current one).
    pub fn new(schedule: Schedule, task_sizes: &[usize], seed: u64) -> Result<Self, ScheduleError> {
        if task_sizes.is_empty() {
            return Err(ScheduleError::NoTasks);
        }
        if let Schedule::Replay { fraction } = schedule
            && !(fraction > 0.0 && fraction <= 1.0)
        {
            return Err(ScheduleError::BadFraction(fraction));
        }
        let used = match schedule {
            Schedule::Plain => 1,
            Schedule::Replay { .. } => task_sizes.len(),
            Schedule::Joint => task_sizes.len(),
        };
        if used < 2 && schedule != Schedule::Plain {
            let name = if schedule == Schedule::Joint {
                "joint training"
            } else {
                "replay"
            };
            return Err(ScheduleError::NoPastData { schedule: name });
        }
        if let Some(task) = task_sizes[..used].iter().position(|n| *n == 0) {
            return Err(ScheduleError::EmptyTask { task });
        }

        let n0 = task_sizes[0];
        let mut counts = vec![0; task_sizes.len()];
        let mut pool = Vec::new();
        let whole = |task: usize, pool: &mut Vec<Draw>| {
            pool.extend((0..task_sizes[task]).map(|index| Draw { task, index }));
        };
        match schedule {
            Schedule::Plain => {
                whole(0, &mut pool);
                counts[0] = n0;
            }
            Schedule::Replay { fraction } => {
                whole(0, &mut pool);
                counts[0] = n0;
                let k = (fraction * n0 as f64).round() as usize;
                for (task, &n) in task_sizes.iter().enumerate().skip(1) {
                    let mut rng = SplitMix64::new(derive(seed, TAG_SAMPLE, task as u64));
                    let picks = if n >= k {
                        without_replacement(n, k, &mut rng)
                    } else {
                        (0..k).map(|_| below(&mut rng, n)).collect()
                    };
                    pool.extend(picks.into_iter().map(|index| Draw { task, index }));
                    counts[task] = k;
                }
            }
            Schedule::Joint => {
                let big = task_sizes.iter().copied().max().unwrap_or(0);
                for (task, &n) in task_sizes.iter().enumerate() {
                    for _ in 0..big / n {
                        whole(task, &mut pool);
                    }
                    let mut rng = SplitMix64::new(derive(seed, TAG_SAMPLE, task as u64));
                    let rest = without_replacement(n, big % n, &mut rng);
                    pool.extend(rest.into_iter().map(|index| Draw { task, index }));
                    counts[task] = big;
                }
            }
        }
        Ok(Self {
            schedule,
            seed,
            counts,
            pool,
        })
    }

    /// The schedule this mixture follows.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Examples drawn from each task per epoch (reported before training).
    pub fn counts(&self) -> Vec<usize> {
        self.counts.clone()
    }

    /// Examples per epoch.
    pub fn len(&self) -> usize {
        self.pool.len()
    }

    /// Whether an epoch is empty (never, for a mixture that was built).
    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
    }

    /// The order of epoch `epoch` (0-based).
    pub fn epoch(&self, epoch: usize) -> Vec<Draw> {
        let mut order = self.pool.clone();
        shuffle(
            &mut order,
            &mut SplitMix64::new(derive(self.seed, TAG_EPOCH, epoch as u64)),
        );
        order
    }
}
