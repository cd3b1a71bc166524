//! Statistics for the experiment table: summaries, confidence intervals, and a
//! significance test between the two losses (the paper drew conclusions from 5 runs
//! without one).

use serde::Serialize;
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
}
