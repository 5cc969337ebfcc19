//! Seeded train/eval/test splits of a TRACE dataset.

use crate::tiny::SplitMix64;

use super::Example;

/// A dataset cut into three disjoint parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    pub train: Vec<Example>,
    pub eval: Vec<Example>,
    pub test: Vec<Example>,
}

/// Why a split was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// A fraction outside [0, 1).
    #[error("the {which} fraction is {value}; give a fraction in [0, 1), such as 0.1")]
    BadFraction { which: &'static str, value: f64 },
    /// Eval and test together take everything.
    #[error(
        "the eval and test fractions sum to {sum} (eval {eval} + test {test}); they must sum to \
         less than 1 to leave training data"
    )]
    NoRoomForTrain { eval: f64, test: f64, sum: f64 },
    /// Rounding left no training example.
    #[error(
        "{n} examples split {eval} eval / {test} test leave no training example; add examples \
         or lower the fractions"
    )]
    TooFew { n: usize, eval: usize, test: usize },
}

impl SplitError {
    /// The stable code of this error.
    pub fn code(&self) -> crate::code::Code {
        match self {
            Self::BadFraction { .. } => crate::code::Code::BadSplitFraction,
            Self::NoRoomForTrain { .. } => crate::code::Code::BadSplitFraction,
            Self::TooFew { .. } => crate::code::Code::SplitTooSmall,
        }
    }
}

/// Shuffles `examples` with a seeded Fisher–Yates and cuts them: the first round(eval·n) go to
/// eval, the next round(test·n) to test, the rest (in shuffled order) to train. Rounding is half
/// away from zero (`f64::round`).
pub fn split(
    mut examples: Vec<Example>,
    eval: f64,
    test: f64,
    seed: u64,
) -> Result<Splits, SplitError> {
    for (which, value) in [("eval", eval), ("test", test)] {
        if !(0.0..1.0).contains(&value) {
            return Err(SplitError::BadFraction { which, value });
        }
    }
    if eval + test >= 1.0 {
        return Err(SplitError::NoRoomForTrain {
            eval,
            test,
            sum: eval + test,
        });
    }
    let n = examples.len();
    let n_eval = (eval * n as f64).round() as usize;
    let n_test = (test * n as f64).round() as usize;
    if n_eval + n_test >= n {
        return Err(SplitError::TooFew {
            n,
            eval: n_eval,
            test: n_test,
        });
    }
    shuffle(&mut examples, &mut SplitMix64::new(seed));
    let train = examples.split_off(n_eval + n_test);
    let test_part = examples.split_off(n_eval);
    Ok(Splits {
        train,
        eval: examples,
        test: test_part,
    })
}

/// A uniform index in `0..n` (`n > 0`), by the multiply-shift method (bias below 2⁻⁴⁰ for the
/// sizes here).
pub(crate) fn below(rng: &mut SplitMix64, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// Fisher–Yates, from the back.
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i + 1);
        items.swap(i, j);
    }
}
