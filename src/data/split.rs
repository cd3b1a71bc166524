//! The paper's protocol (train shuffled by seed, validation sampled by its own seed from the
//! test split) and truncation to a maximum length.

use super::dataset::{Dataset, ReviewSet};

/// Train, validation and the whole test split.
#[derive(Clone, Debug)]
pub struct PaperSplit {
    /// All train reviews, shuffled by `seed`.
    pub train: ReviewSet,
    /// `val_size` reviews of the test split, drawn by `val_seed` (independent of `seed`).
    pub val: ReviewSet,
    /// The whole test split (in (label, id) order).
    pub test: ReviewSet,
}

/// The paper's split: 25,000 train reviews shuffled by `seed`; `val_size` (2,500)
/// validation reviews drawn without replacement from the test split by `val_seed`.
/// The validation sample depends only on `val_seed` and the data, so it stays the same
/// across runs with different `seed`s.
pub fn paper_split(ds: &Dataset, seed: u64, val_size: usize, val_seed: u64) -> PaperSplit {
    PaperSplit {
        train: ds.train.shuffled(seed),
        val: ds.test.sample(val_size, val_seed),
        test: ds.test.clone(),
    }
}

/// Which tokens to keep when a review is longer than the maximum length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TruncatePolicy {
    /// The first `max_len` tokens.
    #[default]
    Head,
    /// The last `max_len` tokens.
    Tail,
    /// The first `max_len / 4` and the last `max_len - max_len / 4` tokens (Sun et al.
    /// 2019, "How to fine-tune BERT for text classification": head 128 + tail 382 of 512).
    HeadTail,
}

impl std::str::FromStr for TruncatePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "head" => Ok(TruncatePolicy::Head),
            "tail" => Ok(TruncatePolicy::Tail),
            "head-tail" | "headtail" | "head+tail" => Ok(TruncatePolicy::HeadTail),
            _ => Err(format!("unknown truncation policy '{s}' (head, tail, head-tail)")),
        }
    }
}

impl std::fmt::Display for TruncatePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TruncatePolicy::Head => "head",
            TruncatePolicy::Tail => "tail",
            TruncatePolicy::HeadTail => "head-tail",
        })
    }
}

/// Truncation to at most `max_len` tokens (`max_len == 0`: no truncation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncate {
    pub max_len: usize,
    pub policy: TruncatePolicy,
}

impl Truncate {
    pub fn new(max_len: usize, policy: TruncatePolicy) -> Truncate {
        Truncate { max_len, policy }
    }
    /// No truncation.
    pub fn none() -> Truncate {
        Truncate { max_len: 0, policy: TruncatePolicy::Head }
    }
    /// Length after truncation of a review of `n` tokens.
    pub fn len(&self, n: usize) -> usize {
        if self.max_len == 0 {
            n
        } else {
            n.min(self.max_len)
        }
    }
    /// The kept tokens as two pieces, to be concatenated (the second is empty unless
    /// head-tail truncation applies).
    pub fn apply<'a>(&self, t: &'a [u32]) -> (&'a [u32], &'a [u32]) {
        let n = t.len();
        if self.max_len == 0 || n <= self.max_len {
            return (t, &[]);
        }
        let m = self.max_len;
        match self.policy {
            TruncatePolicy::Head => (&t[..m], &[]),
            TruncatePolicy::Tail => (&t[n - m..], &[]),
            TruncatePolicy::HeadTail => {
                let head = m / 4;
                (&t[..head], &t[n - (m - head)..])
            }
        }
    }
    /// The kept tokens, copied.
    pub fn to_vec(&self, t: &[u32]) -> Vec<u32> {
        let (a, b) = self.apply(t);
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        v
    }
}
