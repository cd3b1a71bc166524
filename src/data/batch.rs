//! Length-bucketed batches: little compute is spent on padding.
//!
//! Training order for one epoch (seeded, SplitMix64): shuffle the reviews; cut them into
//! chunks of `bucket_chunk` batches' worth; sort each chunk by (truncated) length; cut each
//! chunk into batches (at most `batch_size` reviews and, if set, at most `max_tokens`
//! padded positions B x T); shuffle the order of all batches. Evaluation: all reviews
//! sorted by length, cut the same way, no shuffling.

use super::dataset::{shuffle, ReviewSet};
use super::split::Truncate;
use crate::model::Batch;
use crate::rng::{derive_seed, SplitMix64};

/// How to cut reviews into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most reviews per batch.
    pub batch_size: usize,
    /// Most padded positions (B x T) per batch; `None`: no token budget.
    pub max_tokens: Option<usize>,
    /// Truncation applied to every review.
    pub truncate: Truncate,
    /// Sort by length within chunks of this many batches (0 or 1: no bucketing).
    pub bucket_chunk: usize,
    /// Round each batch's T up to a multiple of this (0 or 1: T is the longest review), so
    /// that batch shapes repeat (`--cuda-graphs` replays one captured step per shape). The
    /// token budget counts the rounded T.
    pub pad_multiple: usize,
}

impl BatchConfig {
    /// `batch_size` reviews per batch, buckets of 100 batches, no token budget.
    pub fn new(batch_size: usize, truncate: Truncate) -> BatchConfig {
        BatchConfig { batch_size: batch_size.max(1), max_tokens: None, truncate, bucket_chunk: 100, pad_multiple: 0 }
    }

    /// T for a batch whose longest review has `len` tokens: at least 1, rounded up to
    /// `pad_multiple`.
    pub fn seq_len(&self, len: usize) -> usize {
        len.max(1).next_multiple_of(self.pad_multiple.max(1))
    }
}

/// An epoch's (or an evaluation's) batches as lists of review indices into a [`ReviewSet`].
#[derive(Clone, Debug, Default)]
pub struct BatchPlan {
    /// Indices into the set's `reviews`, one list per batch.
    pub batches: Vec<Vec<u32>>,
    /// Padded length T of each batch (longest truncated review in it).
    pub seq_lens: Vec<usize>,
    pub truncate: Option<Truncate>,
    valid: usize,
    padded: usize,
}

impl BatchPlan {
    /// The training batches of epoch `epoch` under run seed `seed`.
    pub fn train(set: &ReviewSet, cfg: &BatchConfig, seed: u64, epoch: u64) -> BatchPlan {
        let mut rng = SplitMix64::new(derive_seed(seed, epoch, 0xDA7A));
        let mut order: Vec<u32> = (0..set.len() as u32).collect();
        shuffle(&mut order, &mut rng);
        let lens: Vec<usize> = set.reviews.iter().map(|r| cfg.truncate.len(r.len as usize)).collect();
        let mut batches = Vec::new();
        if cfg.bucket_chunk <= 1 {
            cut(&order, &lens, cfg, &mut batches);
        } else {
            let chunk = cfg.bucket_chunk * cfg.batch_size.max(1);
            for c in order.chunks(chunk) {
                let mut c = c.to_vec();
                c.sort_by_key(|&i| lens[i as usize]); // stable: ties keep the shuffled order
                cut(&c, &lens, cfg, &mut batches);
            }
            shuffle(&mut batches, &mut rng);
        }
        BatchPlan::finish(batches, &lens, cfg)
    }

    /// Evaluation batches: every review once, sorted by length (shortest first).
    pub fn eval(set: &ReviewSet, cfg: &BatchConfig) -> BatchPlan {
        let lens: Vec<usize> = set.reviews.iter().map(|r| cfg.truncate.len(r.len as usize)).collect();
        let mut order: Vec<u32> = (0..set.len() as u32).collect();
        order.sort_by_key(|&i| lens[i as usize]);
        let mut batches = Vec::new();
        cut(&order, &lens, cfg, &mut batches);
        BatchPlan::finish(batches, &lens, cfg)
    }

    /// Batches in the given order without any sorting (for comparison: plain batching).
    pub fn unsorted(set: &ReviewSet, cfg: &BatchConfig, seed: u64) -> BatchPlan {
        let plain = BatchConfig { bucket_chunk: 0, ..*cfg };
        BatchPlan::train(set, &plain, seed, 0)
    }

    fn finish(batches: Vec<Vec<u32>>, lens: &[usize], cfg: &BatchConfig) -> BatchPlan {
        let truncate = cfg.truncate;
        let seq_lens: Vec<usize> =
            batches.iter().map(|b| cfg.seq_len(b.iter().map(|&i| lens[i as usize]).max().unwrap_or(0))).collect();
        let valid = batches.iter().flatten().map(|&i| lens[i as usize]).sum();
        let padded = batches.iter().zip(&seq_lens).map(|(b, &t)| b.len() * t).sum();
        BatchPlan { batches, seq_lens, truncate: Some(truncate), valid, padded }
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
    /// Valid (unpadded) tokens over all batches.
    pub fn valid_tokens(&self) -> usize {
        self.valid
    }
    /// B x T positions over all batches.
    pub fn padded_tokens(&self) -> usize {
        self.padded
    }
    /// Fraction of all B x T positions that are padding.
    pub fn padding_fraction(&self) -> f64 {
        if self.padded == 0 {
            0.0
        } else {
            1.0 - self.valid as f64 / self.padded as f64
        }
    }

    /// Build batch `i` (padded with id 0, valid lengths in `lens`).
    pub fn batch(&self, set: &ReviewSet, i: usize) -> Batch {
        let idx = &self.batches[i];
        let t = self.seq_lens[i];
        let tr = self.truncate.unwrap_or(Truncate::none());
        let mut ids = vec![0u32; idx.len() * t];
        let mut lens = Vec::with_capacity(idx.len());
        let mut labels = Vec::with_capacity(idx.len());
        for (b, &r) in idx.iter().enumerate() {
            let (a, c) = tr.apply(set.tokens_of(r as usize));
            let row = &mut ids[b * t..];
            row[..a.len()].copy_from_slice(a);
            row[a.len()..a.len() + c.len()].copy_from_slice(c);
            lens.push((a.len() + c.len()) as u32);
            labels.push(set.reviews[r as usize].label);
        }
        Batch { ids, lens, labels, batch_size: idx.len(), seq_len: t }
    }

    /// All batches in order.
    pub fn iter<'a>(&'a self, set: &'a ReviewSet) -> impl Iterator<Item = Batch> + 'a {
        (0..self.len()).map(move |i| self.batch(set, i))
    }
}

/// Cut `order` (already in the wanted order) into batches respecting the size and the
/// token budget. A review alone over the budget still gets its own batch.
fn cut(order: &[u32], lens: &[usize], cfg: &BatchConfig, out: &mut Vec<Vec<u32>>) {
    let bs = cfg.batch_size.max(1);
    let mut cur: Vec<u32> = Vec::with_capacity(bs);
    let mut cur_t = 0usize;
    for &i in order {
        let l = cfg.seq_len(lens[i as usize]);
        let t = cur_t.max(l);
        let over_budget = cfg.max_tokens.is_some_and(|m| (cur.len() + 1) * t > m);
        if !cur.is_empty() && (cur.len() == bs || over_budget) {
            out.push(std::mem::take(&mut cur));
            cur_t = 0;
        }
        cur_t = cur_t.max(l);
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
}
