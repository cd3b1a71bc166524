//! softmax_ce / sigmoid_bce forward+backward and accuracy_count kernels vs the f64 CPU
//! reference, on emu (both fiber orders) and on cuda when present.
//! Tolerance: relative error 1e-5 (floor 1e-2 of the tensor's largest |value|) for losses,
//! probs, dlogits and the mean loss, and 1e-5 for each loss relative to itself; the
//! accuracy count is exact. dlogits: 3e-5, because p - onehot cancels for a confident
//! review, and the backward only sees p rounded to f32 (the API passes probs, not logits):
//! p's half-ulp near 1 alone is 3e-6 of the floor, and the emulator reaches 8.4e-6; a GPU's
//! expf differs from the host's by a few ulp. Logits: N(0, 3), and
//! extreme ones (+-100, +-1e4 mixed with 0 and small values), which must stay finite.
//! Every case runs without smoothing and with label / target smoothing (SMOOTHING).
mod common;

use common::{devices, max_rel_err, rel_err, to_f32, to_f64};
use cudaenc::device::Gpu;
use cudaenc::ops::loss::{accuracy_count, sigmoid_bce_backward, sigmoid_bce_forward, softmax_ce_backward, softmax_ce_forward};
use cudaenc::reference::engine::predicted_label;
use cudaenc::reference::loss as reference;
use cudaenc::rng::SplitMix64;

const TOL: f64 = 1e-5;
const TOL_GRAD: f64 = 3e-5;
const EXTREMES: [f64; 8] = [100.0, -100.0, 1e4, -1e4, 0.0, 0.5, -3.0, 1e4];

/// (B, K) for CE (K = 1 for BCE): one review, the training batch, odd sizes, K > 2.
const CE_SHAPES: &[(usize, usize)] = &[(1, 2), (64, 2), (257, 2), (5, 7), (300, 3)];
const BCE_SHAPES: &[usize] = &[1, 64, 257, 1000];
/// Label smoothing (CE) / target smoothing (BCE) values tested: off, typical, large.
const SMOOTHING: [f32; 3] = [0.0, 0.1, 0.45];

/// Accuracy as the trainer counts it: `predicted_label` on the positive-class probability
/// for K = 1 (BCE) and K = 2 (CE); argmax, first of equals, for K > 2.
fn accuracy_ref(probs: &[f32], labels: &[u8], b: usize, k: usize) -> u32 {
    (0..b)
        .filter(|&i| {
            let p = &probs[i * k..(i + 1) * k];
            let pred = match k {
                1 => predicted_label(p[0]),
                2 => predicted_label(p[1]),
                _ => (1..k).fold(0, |m, j| if p[j] > p[m] { j } else { m }) as u8,
            };
            pred == labels[i]
        })
        .count() as u32
}

fn logits(rng: &mut SplitMix64, n: usize, extreme: bool) -> Vec<f32> {
    if extreme {
        (0..n).map(|_| EXTREMES[rng.below(EXTREMES.len() as u64) as usize] as f32).collect()
    } else {
        to_f32(&rng.normal_vec(n, 3.0))
    }
}

fn compare(fails: &mut Vec<String>, ctx: &str, what: &str, got: &[f32], want: &[f64]) {
    let tol = if what == "dlogits" { TOL_GRAD } else { TOL };
    if got.iter().any(|x| !x.is_finite()) {
        fails.push(format!("{ctx}: {what} has inf/NaN"));
    }
    let (e, i) = max_rel_err(got, want);
    println!("  {ctx:<40} {what:<7} max rel err {e:.2e} (tol {tol:.0e}; at {i}: got {} want {})", got[i], want[i]);
    if e > tol || e.is_nan() {
        fails.push(format!("{ctx}: {what} max rel err {e:.2e} > {tol:.0e}"));
    }
}

/// Losses are >= 0: each must be right relative to itself (floor 1e-20), so the tiny loss
/// of a confident review cannot hide under the tensor-scale floor of `compare`.
fn compare_each(fails: &mut Vec<String>, ctx: &str, got: &[f32], want: &[f64]) {
    let (e, i) = got.iter().zip(want).enumerate().fold((0.0f64, 0), |(m, mi), (i, (&g, &w))| {
        let e = rel_err(g as f64, w, 1e-20);
        if e > m || e.is_nan() { (e, i) } else { (m, mi) }
    });
    println!("  {ctx:<40} losses  max elementwise rel err {e:.2e} (tol {TOL:.0e}; at {i}: got {} want {})", got[i], want[i]);
    if !(e <= TOL) {
        fails.push(format!("{ctx}: a loss has rel err {e:.2e} > {TOL:.0e}"));
    }
}

fn check_mean(fails: &mut Vec<String>, ctx: &str, got: f32, want: f64) {
    let e = rel_err(got as f64, want, 1e-6);
    println!("  {ctx:<40} mean    rel err {e:.2e} (got {got} want {want})");
    if !(e <= TOL) {
        fails.push(format!("{ctx}: mean loss rel err {e:.2e} > {TOL:.0e}"));
    }
}

fn run_ce(gpu: &Gpu, b: usize, k: usize, extreme: bool, eps: f32) -> anyhow::Result<Vec<String>> {
    let mut rng = SplitMix64::new(13 * b as u64 + k as u64 + extreme as u64);
    let z = logits(&mut rng, b * k, extreme);
    let labels: Vec<u8> = (0..b).map(|_| rng.below(k as u64) as u8).collect();
    let (mut l_r, mut p_r, mut d_r) = (vec![0.0; b], vec![0.0; b * k], vec![0.0; b * k]);
    let mean_r = reference::softmax_ce_forward(&mut l_r, &mut p_r, &to_f64(&z), &labels, b, k, eps as f64);
    reference::softmax_ce_backward(&mut d_r, &p_r, &labels, b, k, eps as f64);

    let (d_z, d_y) = (gpu.upload(&z)?, gpu.upload(&labels)?);
    let d_l = gpu.upload(&vec![f32::NAN; b])?;
    let d_p = gpu.upload(&vec![f32::NAN; b * k])?;
    let d_d = gpu.upload(&vec![f32::NAN; b * k])?;
    let mean = softmax_ce_forward(gpu, &d_l, &d_p, &d_z, &d_y, b, k, eps)?;
    softmax_ce_backward(gpu, &d_d, &d_p, &d_y, b, k, eps)?;
    let ctx = format!("{} CE B={b} K={k} eps={eps}{}", gpu.name(), if extreme { " extreme" } else { "" });
    let mut fails = Vec::new();
    let probs = gpu.download(&d_p)?;
    compare(&mut fails, &ctx, "losses", &gpu.download(&d_l)?, &l_r);
    compare_each(&mut fails, &ctx, &gpu.download(&d_l)?, &l_r);
    compare(&mut fails, &ctx, "probs", &probs, &p_r);
    compare(&mut fails, &ctx, "dlogits", &gpu.download(&d_d)?, &d_r);
    check_mean(&mut fails, &ctx, mean, mean_r);
    if softmax_ce_forward(gpu, &d_l, &d_p, &d_z, &d_y, b, k, eps)?.to_bits() != mean.to_bits() {
        fails.push(format!("{ctx}: mean loss differs on rerun"));
    }
    check_accuracy(gpu, &mut fails, &ctx, &probs, &d_p, &d_y, &labels, b, k)?;
    Ok(fails)
}

fn run_bce(gpu: &Gpu, b: usize, extreme: bool, eps: f32) -> anyhow::Result<Vec<String>> {
    let mut rng = SplitMix64::new(17 * b as u64 + extreme as u64);
    let z = logits(&mut rng, b, extreme);
    let labels: Vec<u8> = (0..b).map(|_| rng.below(2) as u8).collect();
    let (mut l_r, mut p_r, mut d_r) = (vec![0.0; b], vec![0.0; b], vec![0.0; b]);
    let mean_r = reference::sigmoid_bce_forward(&mut l_r, &mut p_r, &to_f64(&z), &labels, b, eps as f64);
    reference::sigmoid_bce_backward(&mut d_r, &p_r, &labels, b, eps as f64);

    let (d_z, d_y) = (gpu.upload(&z)?, gpu.upload(&labels)?);
    let d_l = gpu.upload(&vec![f32::NAN; b])?;
    let d_p = gpu.upload(&vec![f32::NAN; b])?;
    let d_d = gpu.upload(&vec![f32::NAN; b])?;
    let mean = sigmoid_bce_forward(gpu, &d_l, &d_p, &d_z, &d_y, b, eps)?;
    sigmoid_bce_backward(gpu, &d_d, &d_p, &d_y, b, eps)?;
    let ctx = format!("{} BCE B={b} eps={eps}{}", gpu.name(), if extreme { " extreme" } else { "" });
    let mut fails = Vec::new();
    let probs = gpu.download(&d_p)?;
    compare(&mut fails, &ctx, "losses", &gpu.download(&d_l)?, &l_r);
    compare_each(&mut fails, &ctx, &gpu.download(&d_l)?, &l_r);
    compare(&mut fails, &ctx, "probs", &probs, &p_r);
    compare(&mut fails, &ctx, "dlogits", &gpu.download(&d_d)?, &d_r);
    check_mean(&mut fails, &ctx, mean, mean_r);
    check_accuracy(gpu, &mut fails, &ctx, &probs, &d_p, &d_y, &labels, b, 1)?;
    Ok(fails)
}

#[allow(clippy::too_many_arguments)]
fn check_accuracy(
    gpu: &Gpu,
    fails: &mut Vec<String>,
    ctx: &str,
    probs: &[f32],
    d_p: &cudaenc::device::Buf<f32>,
    d_y: &cudaenc::device::Buf<u8>,
    labels: &[u8],
    b: usize,
    k: usize,
) -> anyhow::Result<()> {
    let count = gpu.upload(&[u32::MAX])?;
    accuracy_count(gpu, &count, d_p, d_y, b, k)?;
    let (got, want) = (gpu.download(&count)?[0], accuracy_ref(probs, labels, b, k));
    println!("  {ctx:<40} correct {got} (want {want})");
    if got != want {
        fails.push(format!("{ctx}: accuracy_count {got} != {want}"));
    }
    Ok(())
}

#[test]
fn losses_match_f64_reference() {
    let mut failures = Vec::new();
    for gpu in devices("loss") {
        for (extreme, eps) in [false, true].into_iter().flat_map(|x| SMOOTHING.map(|e| (x, e))) {
            for &(b, k) in CE_SHAPES {
                match run_ce(&gpu, b, k, extreme, eps) {
                    Ok(f) => failures.extend(f),
                    Err(e) => failures.push(format!("{} CE B={b} K={k} eps={eps}: {e:#}", gpu.name())),
                }
            }
            for &b in BCE_SHAPES {
                match run_bce(&gpu, b, extreme, eps) {
                    Ok(f) => failures.extend(f),
                    Err(e) => failures.push(format!("{} BCE B={b} eps={eps}: {e:#}", gpu.name())),
                }
            }
        }
    }
    assert!(failures.is_empty(), "loss failures:\n{}", failures.join("\n"));
}

#[test]
fn accuracy_count_at_the_decision_boundary() {
    // p exactly 0.5 is predicted negative (predicted_label: p > 0.5), as the trainer counts
    for gpu in devices("accuracy_count") {
        let probs = [0.5f32, 0.5, 0.50000006, 0.49999997, 1.0, 0.0];
        let labels = [0u8, 1, 1, 0, 1, 1];
        let (d_p, d_y) = (gpu.upload(&probs).unwrap(), gpu.upload(&labels).unwrap());
        let count = gpu.zeros::<u32>(1).unwrap();
        accuracy_count(&gpu, &count, &d_p, &d_y, 6, 1).unwrap();
        assert_eq!(gpu.download(&count).unwrap()[0], 4, "{}", gpu.name());
        // CE layout (B, 2): the positive class is column 1
        let probs2 = [0.5f32, 0.5, 0.3, 0.7, 0.9, 0.1];
        let d_p2 = gpu.upload(&probs2).unwrap();
        accuracy_count(&gpu, &count, &d_p2, &gpu.upload(&[0u8, 1, 1]).unwrap(), 3, 2).unwrap();
        assert_eq!(gpu.download(&count).unwrap()[0], 2, "{}", gpu.name());
        // B = 0 writes 0
        accuracy_count(&gpu, &count, &gpu.zeros::<f32>(0).unwrap(), &gpu.zeros::<u8>(0).unwrap(), 0, 2).unwrap();
        assert_eq!(gpu.download(&count).unwrap()[0], 0);
    }
}

#[test]
fn out_of_range_label_gives_nan_loss() {
    let gpu = Gpu::emu();
    let (l, p) = (gpu.zeros::<f32>(1).unwrap(), gpu.zeros::<f32>(2).unwrap());
    let mean = softmax_ce_forward(&gpu, &l, &p, &gpu.upload(&[1.0f32, 2.0]).unwrap(), &gpu.upload(&[2u8]).unwrap(), 1, 2, 0.0).unwrap();
    assert!(mean.is_nan());
}

#[test]
fn smoothing_outside_0_1_is_refused() {
    let gpu = Gpu::emu();
    let (l, p, z, y) = (gpu.zeros::<f32>(1).unwrap(), gpu.zeros::<f32>(1).unwrap(), gpu.zeros::<f32>(1).unwrap(), gpu.zeros::<u8>(1).unwrap());
    for eps in [1.0f32, -0.1, f32::NAN] {
        let e = sigmoid_bce_forward(&gpu, &l, &p, &z, &y, 1, eps).unwrap_err();
        assert!(format!("{e:#}").contains("smoothing"), "{e:#}");
        assert!(sigmoid_bce_backward(&gpu, &l, &p, &y, 1, eps).is_err());
    }
}
