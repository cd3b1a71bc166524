//! Statistics for the experiment table: summaries, confidence intervals, and a
//! significance test between the two losses (the paper drew conclusions from 5 runs
//! without one).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// min / mean / median / max, the sample standard deviation and a 95% t interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub mean: f64,
    pub median: f64,
    pub max: f64,
    pub std: f64,
    /// Half-width of the 95% confidence interval of the mean (t distribution, n-1 dof);
    /// NaN with fewer than two values.
    pub ci95: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Summary {
        assert!(!values.is_empty(), "summary of no values");
        let n = values.len();
        let mut sorted = values.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let mean = values.iter().sum::<f64>() / n as f64;
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
        };
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            f64::NAN
        };
        let std = var.sqrt();
        let ci95 = if n > 1 { t_quantile(0.975, (n - 1) as f64) * std / (n as f64).sqrt() } else { f64::NAN };
        Summary { n, min: sorted[0], mean, median, max: sorted[n - 1], std, ci95 }
    }

    pub fn spread(&self) -> f64 {
        self.max - self.min
    }
}

fn t_quantile(p: f64, dof: f64) -> f64 {
    StudentsT::new(0.0, 1.0, dof).expect("positive degrees of freedom").inverse_cdf(p)
}

/// Welch's two-sample t test (unequal variances): the statistic, its degrees of
/// freedom and the two-sided p-value. None when either sample has fewer than two
/// values or both have zero variance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WelchTest {
    pub t: f64,
    pub dof: f64,
    pub p_two_sided: f64,
}

pub fn welch_t_test(a: &[f64], b: &[f64]) -> Option<WelchTest> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (sa, sb) = (Summary::of(a), Summary::of(b));
    let (va, vb) = (sa.std.powi(2) / a.len() as f64, sb.std.powi(2) / b.len() as f64);
    if va + vb == 0.0 {
        return None;
    }
    let t = (sa.mean - sb.mean) / (va + vb).sqrt();
    let dof = (va + vb).powi(2)
        / (va.powi(2) / (a.len() - 1) as f64 + vb.powi(2) / (b.len() - 1) as f64);
    let dist = StudentsT::new(0.0, 1.0, dof).ok()?;
    let p_two_sided = 2.0 * (1.0 - dist.cdf(t.abs()));
    Some(WelchTest { t, dof, p_two_sided })
}

/// Area under the ROC curve of scores `p` (higher: more likely positive) for labels `y`
/// (1 positive, 0 negative), as the Mann-Whitney U statistic over the number of
/// (positive, negative) pairs: the probability that a random positive review scores
/// above a random negative one, ties counting one half (mid-ranks). None without both a
/// positive and a negative review.
pub fn roc_auc(p: &[f32], y: &[u8]) -> Option<f64> {
    assert_eq!(p.len(), y.len(), "roc_auc: one label per score");
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let (mut rank_sum_pos, mut n_pos) = (0.0f64, 0usize);
    let mut i = 0;
    while i < order.len() {
        // a run of equal scores gets the mean of its 1-based ranks i+1 ..= j
        let mut j = i + 1;
        while j < order.len() && p[order[j]] == p[order[i]] {
            j += 1;
        }
        let mid_rank = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            if y[k] == 1 {
                rank_sum_pos += mid_rank;
                n_pos += 1;
            }
        }
        i = j;
    }
    let n_neg = p.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Number of equal-width probability bins of the calibration measures.
pub const CALIBRATION_BINS: usize = 15;

/// One bin of a reliability diagram: the reviews whose predicted probability of the
/// positive class falls in `[i / bins, (i + 1) / bins)` (the last bin includes 1).
/// Sums rather than means, so that bins of several runs add up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    pub count: usize,
    /// Sum of the predicted probabilities of the positive class.
    pub sum_prob: f64,
    /// Number of positive reviews.
    pub positives: usize,
}

/// Calibration of the predicted probability of the positive class: equal-width bins
/// and the expected calibration error, ECE = sum over bins of
/// (count / N) * |mean predicted probability - fraction positive|.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub bins: Vec<CalibrationBin>,
}

impl Calibration {
    /// Bin the probabilities `p` of labels `y` into `bins` equal-width bins over [0, 1].
    pub fn of(p: &[f32], y: &[u8], bins: usize) -> Calibration {
        assert_eq!(p.len(), y.len(), "calibration: one label per probability");
        assert!(bins > 0, "calibration needs at least one bin");
        let mut out = vec![CalibrationBin::default(); bins];
        for (&pi, &yi) in p.iter().zip(y) {
            let pi = (pi as f64).clamp(0.0, 1.0);
            let b = &mut out[((pi * bins as f64) as usize).min(bins - 1)];
            b.count += 1;
            b.sum_prob += pi;
            b.positives += usize::from(yi == 1);
        }
        Calibration { bins: out }
    }

    /// The bins of several calibrations (same bin count) added up: the pooled diagram.
    pub fn pooled<'a>(all: impl IntoIterator<Item = &'a Calibration>) -> Option<Calibration> {
        let mut out: Option<Calibration> = None;
        for c in all {
            match &mut out {
                None => out = Some(c.clone()),
                Some(o) => {
                    assert_eq!(o.bins.len(), c.bins.len(), "pooling calibrations with different bins");
                    for (a, b) in o.bins.iter_mut().zip(&c.bins) {
                        a.count += b.count;
                        a.sum_prob += b.sum_prob;
                        a.positives += b.positives;
                    }
                }
            }
        }
        out
    }

    /// Expected calibration error (0 to 1; 0 for no reviews).
    pub fn ece(&self) -> f64 {
        let n: usize = self.bins.iter().map(|b| b.count).sum();
        if n == 0 {
            return 0.0;
        }
        self.bins
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.sum_prob - b.positives as f64).abs() / n as f64)
            .sum()
    }

    /// Per non-empty bin: (bin centre, mean predicted probability, fraction positive, count).
    pub fn points(&self) -> Vec<(f64, f64, f64, usize)> {
        let w = 1.0 / self.bins.len() as f64;
        self.bins
            .iter()
            .enumerate()
            .filter(|(_, b)| b.count > 0)
            .map(|(i, b)| ((i as f64 + 0.5) * w, b.sum_prob / b.count as f64, b.positives as f64 / b.count as f64, b.count))
            .collect()
    }
}

/// How good the predicted probabilities of one set are beyond accuracy (measured on the
/// last epoch): ROC-AUC and calibration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbQuality {
    /// None when the set has only one class.
    pub auc: Option<f64>,
    /// Expected calibration error of p(positive), [`CALIBRATION_BINS`] bins.
    pub ece: f64,
    pub calibration: Calibration,
}

impl ProbQuality {
    pub fn of(p: &[f32], y: &[u8]) -> ProbQuality {
        let calibration = Calibration::of(p, y, CALIBRATION_BINS);
        ProbQuality { auc: roc_auc(p, y), ece: calibration.ece(), calibration }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn summary_of_known_values() {
        let s = Summary::of(&[86.52, 85.48, 86.32, 86.0, 86.18]);
        assert_relative_eq!(s.min, 85.48);
        assert_relative_eq!(s.max, 86.52);
        assert_relative_eq!(s.median, 86.18);
        assert_relative_eq!(s.mean, 86.1, epsilon = 1e-12);
        // sample std by hand: deviations .42 -.62 .22 -.10 .08 -> sum sq .6256 / 4
        assert_relative_eq!(s.std, (0.6256f64 / 4.0).sqrt(), epsilon = 1e-12);
        // t(0.975, 4) = 2.776445105
        assert_relative_eq!(s.ci95, 2.776445105 * s.std / 5f64.sqrt(), epsilon = 1e-8);
        assert_relative_eq!(Summary::of(&[1.0, 2.0, 3.0, 4.0]).median, 2.5);
    }

    #[test]
    fn welch_matches_a_hand_computed_case() {
        // a: mean 2, var 1; b: mean 5, var 2.5 -> t = -3 / sqrt(1/3 + 2.5/3)
        let a = [1.0, 2.0, 3.0];
        let b = [3.0, 4.0, 5.0, 6.0, 7.0];
        let w = welch_t_test(&a, &b).unwrap();
        let (va, vb): (f64, f64) = (1.0 / 3.0, 2.5 / 5.0);
        assert_relative_eq!(w.t, -3.0 / (va + vb).sqrt(), epsilon = 1e-12);
        let dof = (va + vb).powi(2) / (va * va / 2.0 + vb * vb / 4.0);
        assert_relative_eq!(w.dof, dof, epsilon = 1e-12);
        assert!(w.p_two_sided > 0.0 && w.p_two_sided < 0.05, "{w:?}");
        // identical samples: t = 0, p = 1
        let same = welch_t_test(&a, &a).unwrap();
        assert_relative_eq!(same.t, 0.0);
        assert_relative_eq!(same.p_two_sided, 1.0, epsilon = 1e-12);
        assert!(welch_t_test(&[1.0], &a).is_none());
    }

    #[test]
    fn auc_counts_pairs_and_ties_by_hand() {
        // positives 0.9, 0.5, 0.5; negatives 0.5, 0.1.
        // pairs (pos > neg = 1, tie = 1/2): 0.9: vs 0.5 -> 1, vs 0.1 -> 1; each 0.5: vs 0.5
        // -> 1/2, vs 0.1 -> 1. Sum 2 + 1.5 + 1.5 = 5 of 3 x 2 = 6 pairs.
        let p = [0.5f32, 0.9, 0.1, 0.5, 0.5];
        let y = [1u8, 1, 0, 0, 1];
        assert_relative_eq!(roc_auc(&p, &y).unwrap(), 5.0 / 6.0, epsilon = 1e-12);
        // perfect, inverted, all tied
        assert_relative_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1]).unwrap(), 1.0);
        assert_relative_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[0, 0, 1, 1]).unwrap(), 0.0);
        assert_relative_eq!(roc_auc(&[0.3; 4], &[0, 1, 0, 1]).unwrap(), 0.5);
        assert!(roc_auc(&[0.2, 0.7], &[1, 1]).is_none(), "one class: no AUC");
    }

    #[test]
    fn auc_equals_the_direct_pair_count_on_random_scores() {
        let mut rng = crate::rng::SplitMix64::new(5);
        // scores on a coarse grid so that there are many ties
        let p: Vec<f32> = (0..301).map(|_| rng.below(20) as f32 / 20.0).collect();
        let y: Vec<u8> = (0..301).map(|_| rng.below(2) as u8).collect();
        let (mut wins, mut pairs) = (0.0f64, 0.0f64);
        for (i, &yi) in y.iter().enumerate() {
            for (j, &yj) in y.iter().enumerate() {
                if yi == 1 && yj == 0 {
                    pairs += 1.0;
                    wins += if p[i] > p[j] { 1.0 } else if p[i] == p[j] { 0.5 } else { 0.0 };
                }
            }
        }
        assert_relative_eq!(roc_auc(&p, &y).unwrap(), wins / pairs, epsilon = 1e-12);
    }

    #[test]
    fn ece_of_a_small_example_by_hand() {
        // 15 bins of width 1/15. p = 0.05, 0.05 (bin 0, labels 0, 1): mean 0.05, fraction
        // 0.5 -> |0.05 - 0.5| = 0.45, weight 2/5. p = 0.95, 0.99, 1.0 (bin 14, labels 1, 1,
        // 0): mean 0.98, fraction 2/3 -> 0.31333.., weight 3/5.
        let p = [0.05f32, 0.05, 0.95, 0.99, 1.0];
        let y = [0u8, 1, 1, 1, 0];
        let c = Calibration::of(&p, &y, CALIBRATION_BINS);
        assert_eq!(c.bins.len(), 15);
        assert_eq!((c.bins[0].count, c.bins[0].positives, c.bins[14].count, c.bins[14].positives), (2, 1, 3, 2));
        assert_eq!(c.bins.iter().map(|b| b.count).sum::<usize>(), 5);
        let mean14 = (0.95f32 as f64 + 0.99f32 as f64 + 1.0) / 3.0;
        let expected = 0.4 * (0.05f32 as f64 - 0.5).abs() + 0.6 * (mean14 - 2.0 / 3.0).abs();
        assert_relative_eq!(c.ece(), expected, epsilon = 1e-12);
        assert_relative_eq!(expected, 0.4 * 0.45 + 0.6 * (0.98 - 2.0 / 3.0), epsilon = 1e-6);
        // a bin edge: 1/15 goes to bin 1, just below it to bin 0
        let e = Calibration::of(&[1.0 / 15.0, 0.0666], &[0, 0], 15);
        assert_eq!((e.bins[0].count, e.bins[1].count), (1, 1));
        // perfectly calibrated bins: ECE 0; pooled bins add up
        let perfect = Calibration::of(&[0.5, 0.5, 0.0, 1.0], &[0, 1, 0, 1], 15);
        assert_relative_eq!(perfect.ece(), 0.0);
        let pooled = Calibration::pooled([&c, &perfect]).unwrap();
        assert_eq!(pooled.bins[14].count, 4);
        assert_eq!(pooled.bins[0].positives, 1);
        let q = ProbQuality::of(&p, &y);
        assert_relative_eq!(q.ece, expected, epsilon = 1e-12);
        assert!(q.auc.is_some());
    }
}
