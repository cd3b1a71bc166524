//! The two classification losses, from logits, numerically stable.
//! Kernels: `kernels/loss.cu`; launchers: `src/ops/loss.rs`.
//!
//! Softmax cross-entropy (K logits): loss_b = logsumexp(z_b) - z_b[y_b].
//! Sigmoid BCE (1 logit z): loss_b = max(z,0) - z y + log1p(exp(-|z|)).
//! The forward passes write per-review losses and probabilities and return the mean loss;
//! the backward passes write the gradient of the *mean* loss: (softmax - onehot) / B,
//! resp. (sigmoid(z) - y) / B.

use super::Float;

/// losses (B), probs (B, K)  <-  logits (B, K), labels (B) in 0..K. Returns the mean loss.
pub fn softmax_ce_forward<T: Float>(
    losses: &mut [T],
    probs: &mut [T],
    logits: &[T],
    labels: &[u8],
    b: usize,
    k: usize,
) -> T {
    assert_eq!(logits.len(), b * k);
    assert_eq!(probs.len(), b * k);
    assert_eq!(losses.len(), b);
    let mut total = T::zero();
    for bi in 0..b {
        let z = &logits[bi * k..(bi + 1) * k];
        let maxv = z.iter().copied().fold(T::neg_infinity(), T::max);
        let sum: T = z.iter().map(|&x| (x - maxv).exp()).sum();
        let lse = maxv + sum.ln();
        let y = labels[bi] as usize;
        assert!(y < k, "label {y} out of range for {k} classes");
        for (p, &x) in probs[bi * k..(bi + 1) * k].iter_mut().zip(z) {
            *p = (x - lse).exp();
        }
        losses[bi] = lse - z[y];
        total += losses[bi];
    }
    if b == 0 { T::zero() } else { total / T::of(b as f64) }
}

/// dlogits (B, K) =  <-  probs (B, K), labels (B): gradient of the mean loss.
pub fn softmax_ce_backward<T: Float>(dlogits: &mut [T], probs: &[T], labels: &[u8], b: usize, k: usize) {
    assert_eq!(dlogits.len(), b * k);
    let inv_b = T::one() / T::of(b.max(1) as f64);
    for bi in 0..b {
        for j in 0..k {
            let onehot = if labels[bi] as usize == j { T::one() } else { T::zero() };
            dlogits[bi * k + j] = (probs[bi * k + j] - onehot) * inv_b;
        }
    }
}

/// losses (B), probs (B) = sigmoid(z)  <-  logits (B), labels (B) in {0,1}. Returns the mean.
pub fn sigmoid_bce_forward<T: Float>(losses: &mut [T], probs: &mut [T], logits: &[T], labels: &[u8], b: usize) -> T {
    assert_eq!(logits.len(), b);
    let mut total = T::zero();
    for bi in 0..b {
        let z = logits[bi];
        let y = T::of(labels[bi] as f64);
        let e = (-z.abs()).exp(); // in (0, 1]: never overflows
        losses[bi] = z.max(T::zero()) - z * y + e.ln_1p();
        probs[bi] = if z >= T::zero() { T::one() / (T::one() + e) } else { e / (T::one() + e) };
        total += losses[bi];
    }
    if b == 0 { T::zero() } else { total / T::of(b as f64) }
}

/// dlogits (B) =  <-  probs (B), labels (B): gradient of the mean loss.
pub fn sigmoid_bce_backward<T: Float>(dlogits: &mut [T], probs: &[T], labels: &[u8], b: usize) {
    let inv_b = T::one() / T::of(b.max(1) as f64);
    for bi in 0..b {
        dlogits[bi] = (probs[bi] - T::of(labels[bi] as f64)) * inv_b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    #[test]
    fn softmax_ce_backward_matches_finite_differences() {
        for &(b, k) in &[(1usize, 2usize), (5, 2), (4, 7)] {
            let mut rng = SplitMix64::new((b * k) as u64);
            let logits = rng.normal_vec(b * k, 3.0);
            let labels: Vec<u8> = (0..b).map(|_| rng.below(k as u64) as u8).collect();
            let run = |z: &[f64]| {
                let (mut l, mut p) = (vec![0.0; b], vec![0.0; b * k]);
                let mean = softmax_ce_forward(&mut l, &mut p, z, &labels, b, k);
                (mean, p)
            };
            let (_, probs) = run(&logits);
            let mut dl = vec![1.0; b * k];
            softmax_ce_backward(&mut dl, &probs, &labels, b, k);
            let report = check_op_gradient(|a| vec![run(&a[0]).0], &[logits], &[1.0], &[dl]);
            println!("softmax_ce B={b} K={k}: {report} (tol 1e-6)");
            assert!(report.max_rel_err < 1e-6, "softmax_ce: {report}");
        }
    }

    #[test]
    fn sigmoid_bce_backward_matches_finite_differences() {
        for &b in &[1usize, 6, 11] {
            let mut rng = SplitMix64::new(b as u64 + 50);
            let logits = rng.normal_vec(b, 3.0);
            let labels: Vec<u8> = (0..b).map(|_| rng.below(2) as u8).collect();
            let run = |z: &[f64]| {
                let (mut l, mut p) = (vec![0.0; b], vec![0.0; b]);
                let mean = sigmoid_bce_forward(&mut l, &mut p, z, &labels, b);
                (mean, p)
            };
            let (_, probs) = run(&logits);
            let mut dl = vec![1.0; b];
            sigmoid_bce_backward(&mut dl, &probs, &labels, b);
            let report = check_op_gradient(|a| vec![run(&a[0]).0], &[logits], &[1.0], &[dl]);
            println!("sigmoid_bce B={b}: {report} (tol 1e-6)");
            assert!(report.max_rel_err < 1e-6, "sigmoid_bce: {report}");
        }
    }

    #[test]
    fn losses_are_stable_at_extreme_logits() {
        let (mut l, mut p) = ([0.0f32; 2], [0.0f32; 4]);
        softmax_ce_forward(&mut l, &mut p, &[1000.0, -1000.0, -1000.0, 1000.0], &[1, 1], 2, 2);
        assert!((l[0] - 2000.0).abs() < 1e-3 && l[1] == 0.0, "{l:?}");
        let (mut l, mut p) = ([0.0f32; 2], [0.0f32; 2]);
        sigmoid_bce_forward(&mut l, &mut p, &[1000.0, -1000.0], &[0, 0], 2);
        assert!((l[0] - 1000.0).abs() < 1e-3 && l[1] == 0.0 && p[0] == 1.0 && p[1] == 0.0, "{l:?} {p:?}");
    }

    #[test]
    fn ce_with_logits_a_b_equals_bce_with_b_minus_a() {
        let mut rng = SplitMix64::new(77);
        for _ in 0..100 {
            let (a, bb) = (rng.normal(5.0), rng.normal(5.0));
            let y = rng.below(2) as u8;
            let (mut l1, mut p1) = ([0.0], [0.0; 2]);
            softmax_ce_forward(&mut l1, &mut p1, &[a, bb], &[y], 1, 2);
            let (mut l2, mut p2) = ([0.0], [0.0]);
            sigmoid_bce_forward(&mut l2, &mut p2, &[bb - a], &[y], 1);
            assert!((p1[1] - p2[0]).abs() < 1e-12, "prob {} vs {}", p1[1], p2[0]);
            assert!((l1[0] - l2[0]).abs() < 1e-12, "loss {} vs {}", l1[0], l2[0]);
        }
    }
}
