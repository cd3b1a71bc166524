//! The two classification losses, from logits, numerically stable, with optional label
//! smoothing (CE) / target smoothing (BCE) `eps` in [0, 1).
//! Kernels: `kernels/loss.cu`; launchers: `src/ops/loss.rs`.
//!
//! Softmax cross-entropy (K logits), target q = (1 - eps) onehot(y) + eps / K:
//! loss_b = sum_j q_j (logsumexp(z_b) - z_b[j]) = (1 - eps)(lse - z[y]) + eps (lse - mean z).
//! Sigmoid BCE (1 logit z), target t = (1 - eps) y + eps / 2:
//! loss_b = max(z,0) - z t + log1p(exp(-|z|)).
//! The forward passes write per-review losses and probabilities and return the mean loss;
//! the backward passes write the gradient of the *mean* loss: (softmax - q) / B,
//! resp. (sigmoid(z) - t) / B. With eps = 0 these are the unsmoothed losses.

use super::Float;

/// losses (B), probs (B, K)  <-  logits (B, K), labels (B) in 0..K, smoothing `eps`.
/// Returns the mean loss.
pub fn softmax_ce_forward<T: Float>(
    losses: &mut [T],
    probs: &mut [T],
    logits: &[T],
    labels: &[u8],
    b: usize,
    k: usize,
    eps: f64,
) -> T {
    assert_eq!(logits.len(), b * k);
    assert_eq!(probs.len(), b * k);
    assert_eq!(losses.len(), b);
    assert!((0.0..1.0).contains(&eps), "smoothing {eps} is not in [0, 1)");
    let eps = T::of(eps);
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
        let mean_z = z.iter().copied().sum::<T>() / T::of(k as f64);
        losses[bi] = (T::one() - eps) * (lse - z[y]) + eps * (lse - mean_z);
        total += losses[bi];
    }
    if b == 0 { T::zero() } else { total / T::of(b as f64) }
}

/// dlogits (B, K) =  <-  probs (B, K), labels (B), smoothing `eps`: gradient of the mean loss.
pub fn softmax_ce_backward<T: Float>(dlogits: &mut [T], probs: &[T], labels: &[u8], b: usize, k: usize, eps: f64) {
    assert_eq!(dlogits.len(), b * k);
    let inv_b = T::one() / T::of(b.max(1) as f64);
    let off = T::of(eps / k as f64);
    let on = T::of(1.0 - eps + eps / k as f64);
    for bi in 0..b {
        for j in 0..k {
            let target = if labels[bi] as usize == j { on } else { off };
            dlogits[bi * k + j] = (probs[bi * k + j] - target) * inv_b;
        }
    }
}

/// The BCE target of label `y` under target smoothing `eps`: (1 - eps) y + eps / 2.
fn bce_target<T: Float>(y: u8, eps: f64) -> T {
    T::of((1.0 - eps) * y as f64 + 0.5 * eps)
}

/// losses (B), probs (B) = sigmoid(z)  <-  logits (B), labels (B) in {0,1}, smoothing `eps`.
/// Returns the mean.
pub fn sigmoid_bce_forward<T: Float>(losses: &mut [T], probs: &mut [T], logits: &[T], labels: &[u8], b: usize, eps: f64) -> T {
    assert_eq!(logits.len(), b);
    assert!((0.0..1.0).contains(&eps), "smoothing {eps} is not in [0, 1)");
    let mut total = T::zero();
    for bi in 0..b {
        let z = logits[bi];
        let t: T = bce_target(labels[bi], eps);
        let e = (-z.abs()).exp(); // in (0, 1]: never overflows
        losses[bi] = z.max(T::zero()) - z * t + e.ln_1p();
        probs[bi] = if z >= T::zero() { T::one() / (T::one() + e) } else { e / (T::one() + e) };
        total += losses[bi];
    }
    if b == 0 { T::zero() } else { total / T::of(b as f64) }
}

/// dlogits (B) =  <-  probs (B), labels (B), smoothing `eps`: gradient of the mean loss.
pub fn sigmoid_bce_backward<T: Float>(dlogits: &mut [T], probs: &[T], labels: &[u8], b: usize, eps: f64) {
    let inv_b = T::one() / T::of(b.max(1) as f64);
    for bi in 0..b {
        dlogits[bi] = (probs[bi] - bce_target::<T>(labels[bi], eps)) * inv_b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    #[test]
    fn softmax_ce_backward_matches_finite_differences() {
        for &(b, k, eps) in &[(1usize, 2usize, 0.0), (5, 2, 0.0), (4, 7, 0.0), (5, 2, 0.1), (3, 7, 0.3)] {
            let mut rng = SplitMix64::new((b * k) as u64);
            let logits = rng.normal_vec(b * k, 3.0);
            let labels: Vec<u8> = (0..b).map(|_| rng.below(k as u64) as u8).collect();
            let run = |z: &[f64]| {
                let (mut l, mut p) = (vec![0.0; b], vec![0.0; b * k]);
                let mean = softmax_ce_forward(&mut l, &mut p, z, &labels, b, k, eps);
                (mean, p)
            };
            let (_, probs) = run(&logits);
            let mut dl = vec![1.0; b * k];
            softmax_ce_backward(&mut dl, &probs, &labels, b, k, eps);
            let report = check_op_gradient(|a| vec![run(&a[0]).0], &[logits], &[1.0], &[dl]);
            println!("softmax_ce B={b} K={k} eps={eps}: {report} (tol 1e-6)");
            assert!(report.max_rel_err < 1e-6, "softmax_ce: {report}");
        }
    }

    #[test]
    fn sigmoid_bce_backward_matches_finite_differences() {
        for &(b, eps) in &[(1usize, 0.0), (6, 0.0), (11, 0.0), (6, 0.1), (11, 0.4)] {
            let mut rng = SplitMix64::new(b as u64 + 50);
            let logits = rng.normal_vec(b, 3.0);
            let labels: Vec<u8> = (0..b).map(|_| rng.below(2) as u8).collect();
            let run = |z: &[f64]| {
                let (mut l, mut p) = (vec![0.0; b], vec![0.0; b]);
                let mean = sigmoid_bce_forward(&mut l, &mut p, z, &labels, b, eps);
                (mean, p)
            };
            let (_, probs) = run(&logits);
            let mut dl = vec![1.0; b];
            sigmoid_bce_backward(&mut dl, &probs, &labels, b, eps);
            let report = check_op_gradient(|a| vec![run(&a[0]).0], &[logits], &[1.0], &[dl]);
            println!("sigmoid_bce B={b} eps={eps}: {report} (tol 1e-6)");
            assert!(report.max_rel_err < 1e-6, "sigmoid_bce: {report}");
        }
    }

    #[test]
    fn losses_are_stable_at_extreme_logits() {
        let (mut l, mut p) = ([0.0f32; 2], [0.0f32; 4]);
        softmax_ce_forward(&mut l, &mut p, &[1000.0, -1000.0, -1000.0, 1000.0], &[1, 1], 2, 2, 0.0);
        assert!((l[0] - 2000.0).abs() < 1e-3 && l[1] == 0.0, "{l:?}");
        let (mut l, mut p) = ([0.0f32; 2], [0.0f32; 2]);
        sigmoid_bce_forward(&mut l, &mut p, &[1000.0, -1000.0], &[0, 0], 2, 0.0);
        assert!((l[0] - 1000.0).abs() < 1e-3 && l[1] == 0.0 && p[0] == 1.0 && p[1] == 0.0, "{l:?} {p:?}");
    }

    #[test]
    fn ce_with_logits_a_b_equals_bce_with_b_minus_a() {
        let mut rng = SplitMix64::new(77);
        for _ in 0..100 {
            let (a, bb) = (rng.normal(5.0), rng.normal(5.0));
            let y = rng.below(2) as u8;
            let (mut l1, mut p1) = ([0.0], [0.0; 2]);
            softmax_ce_forward(&mut l1, &mut p1, &[a, bb], &[y], 1, 2, 0.0);
            let (mut l2, mut p2) = ([0.0], [0.0]);
            sigmoid_bce_forward(&mut l2, &mut p2, &[bb - a], &[y], 1, 0.0);
            assert!((p1[1] - p2[0]).abs() < 1e-12, "prob {} vs {}", p1[1], p2[0]);
            assert!((l1[0] - l2[0]).abs() < 1e-12, "loss {} vs {}", l1[0], l2[0]);
        }
    }

    #[test]
    fn smoothed_losses_by_hand() {
        // CE, K = 2, logits (0, ln 3): softmax (1/4, 3/4), lse = ln 4. Label 1, eps 0.2:
        // q = (0.1, 0.9); loss = 0.1 (ln 4 - 0) + 0.9 (ln 4 - ln 3).
        let (mut l, mut p) = ([0.0f64], [0.0f64; 2]);
        softmax_ce_forward(&mut l, &mut p, &[0.0, 3f64.ln()], &[1], 1, 2, 0.2);
        let expect = 0.1 * 4f64.ln() + 0.9 * (4f64.ln() - 3f64.ln());
        assert!((l[0] - expect).abs() < 1e-14, "{} vs {expect}", l[0]);
        let mut d = [0.0f64; 2];
        softmax_ce_backward(&mut d, &p, &[1], 1, 2, 0.2);
        assert!((d[0] - 0.15).abs() < 1e-14 && (d[1] + 0.15).abs() < 1e-14, "{d:?}");
        // BCE, z = ln 3 (p = 3/4), y = 1, eps 0.2: t = 0.9; loss = -(0.9 ln(3/4) + 0.1 ln(1/4)).
        let (mut l, mut p) = ([0.0f64], [0.0f64]);
        sigmoid_bce_forward(&mut l, &mut p, &[3f64.ln()], &[1], 1, 0.2);
        let expect = -(0.9 * 0.75f64.ln() + 0.1 * 0.25f64.ln());
        assert!((l[0] - expect).abs() < 1e-14, "{} vs {expect}", l[0]);
        let mut d = [0.0f64];
        sigmoid_bce_backward(&mut d, &p, &[1], 1, 0.2);
        assert!((d[0] - (0.75 - 0.9)).abs() < 1e-14, "{d:?}");
        // the minimum of the smoothed loss is at the smoothed target, not at certainty
        sigmoid_bce_backward(&mut d, &[0.9], &[1], 1, 0.2);
        assert!(d[0].abs() < 1e-15);
    }
}
