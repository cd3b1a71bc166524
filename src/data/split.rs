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

/// A movie-disjoint held-out part of the train split, used as the validation set for
/// model selection (`--holdout N`) so that the test split is only measured.
///
/// The train reviews are grouped by movie (from the archive's `urls_{pos,neg}.txt`,
/// [`super::Review::movie`]); the movies are shuffled by `seed` and taken whole, in that
/// order, until the held-out part has at least `n` reviews. So no movie has reviews on
/// both sides, and the size exceeds `n` by less than the largest movie's review count
/// (IMDB has at most 30 reviews per movie). Returns (rest, held out), each in the order
/// of `train`. Errors if nothing would be left to train on.
pub fn movie_holdout(train: &ReviewSet, n: usize, seed: u64) -> anyhow::Result<(ReviewSet, ReviewSet)> {
    use std::collections::BTreeMap;
    anyhow::ensure!(n > 0, "--holdout must be at least 1 review");
    let mut by_movie: BTreeMap<u32, usize> = BTreeMap::new();
    for r in &train.reviews {
        *by_movie.entry(r.movie).or_default() += 1;
    }
    let mut movies: Vec<(u32, usize)> = by_movie.into_iter().collect();
    super::dataset::shuffle(&mut movies, &mut crate::rng::SplitMix64::new(seed));
    let mut held = std::collections::HashSet::new();
    let mut count = 0usize;
    for &(movie, reviews) in &movies {
        if count >= n {
            break;
        }
        held.insert(movie);
        count += reviews;
    }
    anyhow::ensure!(
        count < train.len(),
        "--holdout {n} takes all {} training reviews ({} movies): nothing is left to train on",
        train.len(),
        movies.len()
    );
    let (out, rest): (Vec<_>, Vec<_>) = train.reviews.iter().partition(|r| held.contains(&r.movie));
    let set = |reviews| ReviewSet { tokens: train.tokens.clone(), reviews };
    Ok((set(rest), set(out)))
}

/// Like [`paper_split`], but the validation set is a movie-disjoint held-out part of
/// the train split ([`movie_holdout`], drawn by `holdout_seed`, the same for every run);
/// the rest of the train split is shuffled by `seed`. The test split is untouched.
pub fn holdout_split(ds: &Dataset, seed: u64, holdout: usize, holdout_seed: u64) -> anyhow::Result<PaperSplit> {
    let (rest, val) = movie_holdout(&ds.train, holdout, holdout_seed)?;
    Ok(PaperSplit { train: rest.shuffled(seed), val, test: ds.test.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Review;
    use std::collections::HashSet;
    use std::sync::Arc;

    /// `movies` movies with 1..=max_per reviews each (varied), one token per review.
    fn by_movie(movies: u32, max_per: u32) -> ReviewSet {
        let mut reviews = Vec::new();
        for m in 0..movies {
            for j in 0..1 + (m * 7 + 3) % max_per {
                let i = reviews.len();
                reviews.push(Review { start: i, len: 1, label: (j % 2) as u8, rating: 1, id: i as u32, movie: m });
            }
        }
        let tokens: Arc<[u32]> = (0..reviews.len() as u32).collect::<Vec<_>>().into();
        ReviewSet { tokens, reviews }
    }

    #[test]
    fn holdout_is_movie_disjoint_and_about_n_reviews() {
        let train = by_movie(300, 30);
        for (n, seed) in [(1usize, 0u64), (100, 1), (500, 2), (1000, 3)] {
            let (rest, out) = movie_holdout(&train, n, seed).unwrap();
            assert_eq!(rest.len() + out.len(), train.len(), "every review on exactly one side");
            let movies = |s: &ReviewSet| s.reviews.iter().map(|r| r.movie).collect::<HashSet<_>>();
            assert!(movies(&rest).is_disjoint(&movies(&out)), "a movie on both sides (n {n})");
            let ids: HashSet<u32> = rest.reviews.iter().chain(&out.reviews).map(|r| r.id).collect();
            assert_eq!(ids.len(), train.len(), "no review duplicated or lost");
            // whole movies: at least n, and less than n + the largest movie (30)
            assert!(out.len() >= n && out.len() < n + 30, "n {n}: held out {}", out.len());
            assert_eq!(movie_holdout(&train, n, seed).unwrap().1.reviews, out.reviews, "seeded");
        }
        let a = movie_holdout(&train, 500, 1).unwrap().1;
        let b = movie_holdout(&train, 500, 2).unwrap().1;
        assert_ne!(a.reviews, b.reviews, "another seed draws other movies");
    }

    #[test]
    fn holdout_that_leaves_nothing_is_an_error() {
        let train = by_movie(10, 5);
        let e = movie_holdout(&train, train.len(), 0).unwrap_err().to_string();
        assert!(e.contains("nothing is left"), "{e}");
        assert!(movie_holdout(&train, 0, 0).is_err());
    }
}
