//! Vocabulary compaction (`--compact-vocab`, `--min-count K`): the token ids seen at
//! least K times in the training part keep a row of the embedding each; every other id
//! (never seen in training, or rarer than K) shares row 0. The embedding table shrinks
//! from cl100k's 100,277 rows to the ids the model can learn anything about, and an id
//! unseen in training no longer reads an untrained random row at evaluation.
//!
//! The map is built at data-loading time from the training reviews only (after
//! `--holdout` and `--train-subset`), written to the run's `config.json`, and applied by
//! `eval` and `predict` from there, so they see the ids the model was trained on.

use super::dataset::ReviewSet;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Kept ids, ascending: id `kept[i]` is row `i + 1`; any other id is row 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VocabMap {
    /// An id is kept when it occurs at least this many times in the training reviews.
    pub min_count: u32,
    pub kept: Vec<u32>,
}

impl VocabMap {
    /// The ids occurring at least `min_count` (>= 1) times in the reviews of `train`
    /// (whole reviews, before truncation).
    pub fn build(train: &ReviewSet, min_count: u32) -> VocabMap {
        let min_count = min_count.max(1);
        let mut counts: Vec<u32> = Vec::new();
        for i in 0..train.len() {
            for &id in train.tokens_of(i) {
                let id = id as usize;
                if id >= counts.len() {
                    counts.resize(id + 1, 0);
                }
                counts[id] = counts[id].saturating_add(1);
            }
        }
        let kept = counts.iter().enumerate().filter(|(_, &n)| n >= min_count).map(|(id, _)| id as u32).collect();
        VocabMap { min_count, kept }
    }

    /// Rows of the compacted embedding: the kept ids plus the shared row 0.
    pub fn size(&self) -> usize {
        self.kept.len() + 1
    }

    /// The row of token id `id`.
    pub fn map(&self, id: u32) -> u32 {
        self.kept.binary_search(&id).map(|i| i as u32 + 1).unwrap_or(0)
    }

    /// The token id of row `row`; None for the shared row 0 (and rows past the end).
    pub fn original(&self, row: u32) -> Option<u32> {
        (row as usize).checked_sub(1).and_then(|i| self.kept.get(i).copied())
    }

    /// The same reviews over remapped tokens. Sets that share a token buffer (train,
    /// validation and test of one data set) keep sharing one remapped buffer.
    pub fn apply(&self, sets: &mut [&mut ReviewSet]) {
        let table_len = self.kept.last().map_or(0, |&m| m as usize + 1);
        let table: Vec<u32> = (0..table_len as u32).map(|id| self.map(id)).collect();
        // (a buffer seen before, its remapped copy)
        type Remapped = (Arc<[u32]>, Arc<[u32]>);
        let mut done: Vec<Remapped> = Vec::new();
        for set in sets.iter_mut() {
            let mapped = match done.iter().find(|(old, _)| Arc::ptr_eq(old, &set.tokens)) {
                Some((_, new)) => new.clone(),
                None => {
                    let new: Arc<[u32]> =
                        set.tokens.iter().map(|&id| table.get(id as usize).copied().unwrap_or(0)).collect();
                    done.push((set.tokens.clone(), new.clone()));
                    new
                }
            };
            set.tokens = mapped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Review;

    fn set(reviews: &[&[u32]]) -> ReviewSet {
        let mut tokens = Vec::new();
        let mut out = Vec::new();
        for (i, r) in reviews.iter().enumerate() {
            out.push(Review { start: tokens.len(), len: r.len() as u32, label: (i % 2) as u8, rating: 1, id: i as u32, movie: i as u32 });
            tokens.extend_from_slice(r);
        }
        ReviewSet { tokens: tokens.into(), reviews: out }
    }

    #[test]
    fn round_trip_and_shared_row() {
        let train = set(&[&[5, 9, 5, 100_000], &[9, 7]]);
        let m = VocabMap::build(&train, 1);
        assert_eq!(m.kept, vec![5, 7, 9, 100_000]);
        assert_eq!(m.size(), 5);
        for &id in &m.kept {
            let row = m.map(id);
            assert!(row >= 1 && (row as usize) < m.size());
            assert_eq!(m.original(row), Some(id), "round trip of {id}");
        }
        for unseen in [0u32, 6, 8, 99_999, 100_276] {
            assert_eq!(m.map(unseen), 0, "{unseen} shares row 0");
        }
        assert_eq!(m.original(0), None);
        assert_eq!(m.original(5), None);
        // rows keep the id order
        assert_eq!([5, 7, 9, 100_000].map(|id| m.map(id)), [1, 2, 3, 4]);
        // min count 2: only 5 and 9 occur twice
        let m2 = VocabMap::build(&train, 2);
        assert_eq!(m2.kept, vec![5, 9]);
        assert_eq!((m2.map(7), m2.map(9)), (0, 2));
    }

    #[test]
    fn apply_remaps_every_set_and_keeps_sharing() {
        let train = set(&[&[5, 9, 5], &[9, 7], &[11]]);
        let mut rest = train.clone();
        rest.reviews.truncate(2); // shares the token buffer
        let mut other = set(&[&[3, 5, 200_000]]); // its own buffer, ids unseen in training
        let mut learn = ReviewSet { tokens: train.tokens.clone(), reviews: train.reviews[..2].to_vec() };
        let m = VocabMap::build(&learn, 1);
        let before: Vec<Vec<u32>> = (0..3).map(|i| train.tokens_of(i).to_vec()).collect();
        m.apply(&mut [&mut learn, &mut rest, &mut other]);
        assert!(Arc::ptr_eq(&learn.tokens, &rest.tokens), "one remapped buffer for sets that shared one");
        assert_eq!(learn.tokens_of(0), &[1, 3, 1]);
        assert_eq!(learn.tokens_of(1), &[3, 2]);
        assert_eq!(other.tokens_of(0), &[0, 1, 0]);
        assert_eq!(learn.reviews, train.reviews[..2], "lengths, labels and order unchanged");
        for (i, orig) in before.iter().enumerate().take(2) {
            let back: Vec<u32> = learn.tokens_of(i).iter().map(|&r| m.original(r).unwrap()).collect();
            assert_eq!(&back, orig, "review {i} maps back");
        }
        // id 11 is only in review 2, which was not in the training part: row 0
        let mut all = train.clone();
        m.apply(&mut [&mut all]);
        assert_eq!(all.tokens_of(2), &[0]);
    }
}
