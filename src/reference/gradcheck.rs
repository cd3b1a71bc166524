//! Central finite differences in f64, for checking every backward pass.
//!
//! An op `f(inputs) -> out` is checked through the scalar L = sum(out * probe), whose
//! gradient with respect to each input is exactly the backward pass with `dout = probe`.

use std::fmt;

pub use crate::rng::SplitMix64;

/// The worst disagreement between an analytic gradient and finite differences.
#[derive(Clone, Debug, Default)]
pub struct GradReport {
    pub checked: usize,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    /// (input index, element index) of the worst relative error
    pub worst: (usize, usize),
}

impl fmt::Display for GradReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entries, max abs err {:.3e}, max rel err {:.3e} (input {}, element {})",
            self.checked, self.max_abs_err, self.max_rel_err, self.worst.0, self.worst.1
        )
    }
}

/// Relative error with a floor, so that gradients near zero are judged absolutely.
pub fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-3)
}

/// Check `analytic[i]` = d/d inputs[i] of sum(f(inputs) * probe) at every element,
/// by central differences with step 1e-5 (error O(h^2) ~ 1e-10 relative).
pub fn check_op_gradient(
    f: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    inputs: &[Vec<f64>],
    probe: &[f64],
    analytic: &[Vec<f64>],
) -> GradReport {
    let all: Vec<(usize, usize)> = inputs
        .iter()
        .enumerate()
        .flat_map(|(a, v)| (0..v.len()).map(move |i| (a, i)))
        .collect();
    check_op_gradient_at(f, inputs, probe, analytic, &all)
}

/// Like [`check_op_gradient`], at the listed (input, element) pairs only.
pub fn check_op_gradient_at(
    f: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    inputs: &[Vec<f64>],
    probe: &[f64],
    analytic: &[Vec<f64>],
    at: &[(usize, usize)],
) -> GradReport {
    let h = 1e-5;
    let loss = |args: &[Vec<f64>]| -> f64 {
        let out = f(args);
        assert_eq!(out.len(), probe.len(), "probe must match the op's output");
        out.iter().zip(probe).map(|(o, p)| o * p).sum()
    };
    let mut args = inputs.to_vec();
    let mut report = GradReport::default();
    for &(a, i) in at {
        let x = args[a][i];
        args[a][i] = x + h;
        let lp = loss(&args);
        args[a][i] = x - h;
        let lm = loss(&args);
        args[a][i] = x;
        let numeric = (lp - lm) / (2.0 * h);
        let got = analytic[a][i];
        let abs = (numeric - got).abs();
        let rel = rel_err(numeric, got);
        report.checked += 1;
        report.max_abs_err = report.max_abs_err.max(abs);
        if rel > report.max_rel_err {
            report.max_rel_err = rel;
            report.worst = (a, i);
        }
    }
    report
}
