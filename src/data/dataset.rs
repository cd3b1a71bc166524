//! The tokenized data set: one shared token buffer, reviews as ranges into it.

use super::read::{Part, RawCorpus, ReadReport};
use super::tokenize;
use crate::rng::SplitMix64;
use anyhow::{bail, Result};
use std::sync::Arc;

/// One tokenized review: a range of the shared token buffer and its metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Review {
    /// First token in [`ReviewSet::tokens`].
    pub start: usize,
    /// Number of tokens (>= 1).
    pub len: u32,
    /// 1 positive, 0 negative.
    pub label: u8,
    /// 1..=10.
    pub rating: u8,
    /// Id within its split and label folder.
    pub id: u32,
    /// Index into [`Dataset::movies`].
    pub movie: u32,
}

/// An ordered set of reviews over a shared (immutable) token buffer. Shuffling and
/// sampling reorder the review list only; the tokens are never copied.
#[derive(Clone, Debug, Default)]
pub struct ReviewSet {
    pub tokens: Arc<[u32]>,
    pub reviews: Vec<Review>,
}

impl ReviewSet {
    pub fn len(&self) -> usize {
        self.reviews.len()
    }
    pub fn is_empty(&self) -> bool {
        self.reviews.is_empty()
    }
    /// The tokens of review `i` (untruncated).
    pub fn tokens_of(&self, i: usize) -> &[u32] {
        let r = &self.reviews[i];
        &self.tokens[r.start..r.start + r.len as usize]
    }
    pub fn labels(&self) -> Vec<u8> {
        self.reviews.iter().map(|r| r.label).collect()
    }
    pub fn total_tokens(&self) -> usize {
        self.reviews.iter().map(|r| r.len as usize).sum()
    }
    /// The same reviews in a seeded random order (Fisher-Yates with SplitMix64).
    pub fn shuffled(&self, seed: u64) -> ReviewSet {
        let mut reviews = self.reviews.clone();
        shuffle(&mut reviews, &mut SplitMix64::new(seed));
        ReviewSet { tokens: self.tokens.clone(), reviews }
    }
    /// `n` reviews drawn without replacement by `seed` (all of them, shuffled, if `n >= len`).
    pub fn sample(&self, n: usize, seed: u64) -> ReviewSet {
        let mut reviews = self.reviews.clone();
        let mut rng = SplitMix64::new(seed);
        let n = n.min(reviews.len());
        // Partial Fisher-Yates: the first n positions are a uniform sample.
        for i in 0..n {
            let j = i + rng.below((reviews.len() - i) as u64) as usize;
            reviews.swap(i, j);
        }
        reviews.truncate(n);
        ReviewSet { tokens: self.tokens.clone(), reviews }
    }
    /// The same reviews, each reduced to its distinct token ids in order of first
    /// occurrence ([`distinct_ids`], `--dedup`): the model has no positions, so this
    /// changes only how often an id counts in the mean over a review. Reviews keep their
    /// order and metadata; the result has its own token buffer.
    pub fn distinct(&self) -> ReviewSet {
        let mut tokens = Vec::with_capacity(self.tokens.len());
        let mut reviews = self.reviews.clone();
        for (i, r) in reviews.iter_mut().enumerate() {
            let start = tokens.len();
            tokens.extend(distinct_ids(self.tokens_of(i)));
            (r.start, r.len) = (start, (tokens.len() - start) as u32);
        }
        ReviewSet { tokens: tokens.into(), reviews }
    }
}

/// `ids` without repeats, in order of first occurrence (`--dedup`; [`ReviewSet::distinct`]).
pub fn distinct_ids(ids: &[u32]) -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().copied().filter(|&id| seen.insert(id)).collect()
}

/// Seeded in-place Fisher-Yates shuffle.
pub fn shuffle<T>(v: &mut [T], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Where the data came from and how it was loaded.
#[derive(Clone, Debug, Default)]
pub struct DatasetInfo {
    /// Human-readable source (path).
    pub source: String,
    /// SHA-256 (hex) of the archive, or `dir:<fingerprint>` for a directory.
    pub checksum: String,
    pub report: ReadReport,
    /// Loaded from the token cache.
    pub from_cache: bool,
}

/// Both splits, tokenized; reviews in (label, id) order within each split.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub train: ReviewSet,
    pub test: ReviewSet,
    /// Movie URLs; [`Review::movie`] indexes this (the same movie has the same index in
    /// both splits).
    pub movies: Vec<String>,
    pub info: DatasetInfo,
}

impl Dataset {
    pub fn part(&self, p: Part) -> &ReviewSet {
        match p {
            Part::Train => &self.train,
            Part::Test => &self.test,
        }
    }

    /// Tokenize a read corpus (all cores, one encoder per worker).
    pub fn tokenize(raw: RawCorpus, info: DatasetInfo) -> Result<Dataset> {
        let texts: Vec<&str> = raw.reviews.iter().map(|r| r.text.as_str()).collect();
        let toks = tokenize::encode_all(&texts);
        let mut parts = Vec::with_capacity(raw.reviews.len());
        let mut lens = Vec::with_capacity(raw.reviews.len());
        for (r, t) in raw.reviews.iter().zip(&toks) {
            if t.is_empty() {
                bail!("{} review {} tokenized to nothing", r.part.name(), r.id);
            }
            parts.push((r.part, r.label, r.rating, r.id, r.movie));
            lens.push(t.len() as u32);
        }
        let mut tokens = Vec::with_capacity(lens.iter().map(|&l| l as usize).sum());
        for t in &toks {
            tokens.extend_from_slice(t);
        }
        drop(toks);
        Ok(Dataset::assemble(tokens, &parts, &lens, raw.movies, DatasetInfo { report: raw.report, ..info }))
    }

    /// Build from a flat token buffer and per-review metadata (tokens of review `i` follow
    /// those of review `i-1`). Used by the tokenizer and the cache loader.
    pub(crate) fn assemble(
        tokens: Vec<u32>,
        meta: &[(Part, u8, u8, u32, u32)],
        lens: &[u32],
        movies: Vec<String>,
        info: DatasetInfo,
    ) -> Dataset {
        let tokens: Arc<[u32]> = tokens.into();
        let mut train = ReviewSet { tokens: tokens.clone(), reviews: Vec::new() };
        let mut test = ReviewSet { tokens, reviews: Vec::new() };
        let mut start = 0usize;
        for (&(part, label, rating, id, movie), &len) in meta.iter().zip(lens) {
            let r = Review { start, len, label, rating, id, movie };
            start += len as usize;
            match part {
                Part::Train => train.reviews.push(r),
                Part::Test => test.reviews.push(r),
            }
        }
        Dataset { train, test, movies, info }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keeps_first_occurrences_in_order_and_the_metadata() {
        let texts: [&[u32]; 4] = [&[5, 9, 5, 5, 7, 9], &[3], &[8, 8, 8], &[1, 2, 3, 2, 1, 4]];
        let mut tokens = Vec::new();
        let mut reviews = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let r = Review { start: tokens.len(), len: t.len() as u32, label: (i % 2) as u8, rating: 7, id: 10 + i as u32, movie: 3 * i as u32 };
            reviews.push(r);
            tokens.extend_from_slice(t);
        }
        // a shuffled view of the shared buffer, as the train split is
        let set = ReviewSet { tokens: tokens.into(), reviews }.shuffled(4);
        let d = set.distinct();
        assert_eq!(d.len(), set.len());
        let want = |t: &[u32]| -> Vec<u32> {
            match t {
                [5, 9, 5, 5, 7, 9] => vec![5, 9, 7],
                [3] => vec![3],
                [8, 8, 8] => vec![8],
                _ => vec![1, 2, 3, 4],
            }
        };
        for i in 0..set.len() {
            assert_eq!(d.tokens_of(i), want(set.tokens_of(i)).as_slice(), "review {i}");
            assert_eq!(distinct_ids(set.tokens_of(i)), d.tokens_of(i), "review {i}: the text path agrees");
            let (a, b) = (set.reviews[i], d.reviews[i]);
            assert_eq!((a.label, a.rating, a.id, a.movie), (b.label, b.rating, b.id, b.movie), "review {i}: metadata kept");
        }
        assert_eq!(d.total_tokens(), 3 + 1 + 1 + 4);
        assert!(distinct_ids(&[]).is_empty());
    }
}
