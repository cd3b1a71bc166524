//! Statistics of a data set: token lengths, reviews per movie, movies shared between splits.

use super::dataset::{Dataset, ReviewSet};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Token-length summary. Percentiles are nearest-rank: `p`-th percentile is the smallest
/// length `x` with at least `p`% of reviews `<= x`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LengthStats {
    pub n: usize,
    pub total: usize,
    pub mean: f64,
    pub min: usize,
    pub p10: usize,
    pub p25: usize,
    pub median: usize,
    pub p75: usize,
    pub p90: usize,
    pub p95: usize,
    pub p99: usize,
    pub max: usize,
    /// Fraction of reviews longer than 256, 512, 1024 tokens.
    pub over_256: f64,
    pub over_512: f64,
    pub over_1024: f64,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn length_stats(lens: &[usize]) -> LengthStats {
    let mut s = lens.to_vec();
    s.sort_unstable();
    let n = s.len();
    let total: usize = s.iter().sum();
    let frac = |t: usize| if n == 0 { 0.0 } else { s.iter().filter(|&&l| l > t).count() as f64 / n as f64 };
    LengthStats {
        n,
        total,
        mean: if n == 0 { 0.0 } else { total as f64 / n as f64 },
        min: s.first().copied().unwrap_or(0),
        p10: percentile(&s, 10.0),
        p25: percentile(&s, 25.0),
        median: percentile(&s, 50.0),
        p75: percentile(&s, 75.0),
        p90: percentile(&s, 90.0),
        p95: percentile(&s, 95.0),
        p99: percentile(&s, 99.0),
        max: s.last().copied().unwrap_or(0),
        over_256: frac(256),
        over_512: frac(512),
        over_1024: frac(1024),
    }
}

/// Token lengths of a set (untruncated).
pub fn lengths(set: &ReviewSet) -> Vec<usize> {
    set.reviews.iter().map(|r| r.len as usize).collect()
}

/// A text histogram: bins of `width` tokens up to `limit`, then one bin for the rest.
pub fn histogram(lens: &[usize], width: usize, limit: usize, bar_width: usize) -> String {
    let width = width.max(1);
    let nbins = limit.div_ceil(width) + 1;
    let mut counts = vec![0usize; nbins];
    for &l in lens {
        counts[(l / width).min(nbins - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    let n = lens.len().max(1);
    let mut out = String::new();
    for (i, &c) in counts.iter().enumerate() {
        let label = if i + 1 == nbins { format!("{:>5}+     ", i * width) } else { format!("{:>5}-{:<5}", i * width, (i + 1) * width - 1) };
        let bar = "#".repeat((c * bar_width).div_ceil(top).min(bar_width));
        let _ = writeln!(out, "{label} {c:>6} {:>5.1}% {bar}", 100.0 * c as f64 / n as f64);
    }
    out
}

/// Reviews per movie, and movies shared between the splits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MovieStats {
    pub train_movies: usize,
    pub test_movies: usize,
    pub train_max_per_movie: usize,
    pub test_max_per_movie: usize,
    /// Movies with more than 30 reviews in one split.
    pub over_30: usize,
    /// Movie indices present in both splits.
    pub shared: Vec<u32>,
    /// Reviews (train + test) of the shared movies.
    pub shared_reviews: (usize, usize),
}

pub fn movie_stats(ds: &Dataset) -> MovieStats {
    let count = |set: &ReviewSet| {
        let mut m: HashMap<u32, usize> = HashMap::new();
        for r in &set.reviews {
            *m.entry(r.movie).or_default() += 1;
        }
        m
    };
    let tr = count(&ds.train);
    let te = count(&ds.test);
    let trs: HashSet<u32> = tr.keys().copied().collect();
    let mut shared: Vec<u32> = te.keys().copied().filter(|m| trs.contains(m)).collect();
    shared.sort_unstable();
    let shared_reviews = (shared.iter().map(|m| tr[m]).sum(), shared.iter().map(|m| te[m]).sum());
    MovieStats {
        train_movies: tr.len(),
        test_movies: te.len(),
        train_max_per_movie: tr.values().copied().max().unwrap_or(0),
        test_max_per_movie: te.values().copied().max().unwrap_or(0),
        over_30: tr.values().chain(te.values()).filter(|&&c| c > 30).count(),
        shared,
        shared_reviews,
    }
}
