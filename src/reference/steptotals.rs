//! Training statistics summed over steps, as `kernels/steptotals.cu` sums them on the
//! device (launcher: `src/ops/steptotals.rs`); slot layout: `train::engine::StepTotals`.

use crate::train::engine::STEP_TOTALS_SLOTS;

/// totals (slots) += this step's statistics <- losses (B), probs (B, K), labels (B), the
/// gradient norm, `step`: steps += 1; reviews += B; loss += mean * B with mean the f32
/// sum of the losses in review order / B (as `ops::loss` computes the mean loss); correct
/// += reviews whose p(positive) > 0.5 matches the label (p = probs[b] for K = 1,
/// probs[b*2+1] for K = 2); the first step whose mean or norm is not finite is recorded
/// with both.
#[allow(clippy::too_many_arguments)]
pub fn step_totals_add(totals: &mut [f64], losses: &[f32], probs: &[f32], labels: &[u8], norm: f32, b: usize, k: usize, step: u64) {
    assert_eq!(totals.len(), STEP_TOTALS_SLOTS);
    assert!(k == 1 || k == 2);
    let mut sum = 0.0f32;
    let mut correct = 0usize;
    for i in 0..b {
        sum += losses[i];
        let p = if k == 1 { probs[i] } else { probs[i * k + 1] };
        correct += ((p > 0.5) as u8 == labels[i]) as usize;
    }
    let mean = if b > 0 { sum / b as f32 } else { 0.0 };
    totals[0] += 1.0;
    totals[1] += b as f64;
    totals[2] += mean as f64 * b as f64;
    totals[3] += correct as f64;
    if totals[4] == 0.0 && !(mean.is_finite() && norm.is_finite()) {
        totals[4] = step as f64;
        totals[5] = mean as f64;
        totals[6] = norm as f64;
    }
}
