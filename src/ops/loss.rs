//! Launchers for `kernels/loss.cu`; reference: `crate::reference::loss`.
//!
//! The forward launchers return the mean loss like the reference: they download the
//! per-review losses (so they wait for the launches so far) and sum them in review order
//! in f32, exactly as the reference's f32 path does: deterministic.

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

const BLOCK: usize = 256;

/// Label / target smoothing must be in [0, 1).
fn check_smoothing(op: &str, eps: f32) -> Result<()> {
    ensure!((0.0..1.0).contains(&eps), "{op}: smoothing must be in [0, 1), got {eps}");
    Ok(())
}

fn mean_of(gpu: &Gpu, losses: &impl DeviceSlice<f32>, b: usize) -> Result<f32> {
    if b == 0 {
        return Ok(0.0);
    }
    let host = gpu.download(losses)?;
    let mut total = 0.0f32;
    for l in host {
        total += l;
    }
    Ok(total / b as f32)
}

/// losses (B), probs (B, K)  <-  logits (B, K), labels (B) in 0..K, label smoothing
/// `eps` in [0, 1) (target (1 - eps) onehot + eps / K). Returns the mean loss.
/// A label >= K gives a NaN loss (the reference panics).
#[allow(clippy::too_many_arguments)] // the kernel's arguments, in its order
pub fn softmax_ce_forward(
    gpu: &Gpu,
    losses: &impl DeviceSlice<f32>,
    probs: &impl DeviceSlice<f32>,
    logits: &impl DeviceSlice<f32>,
    labels: &impl DeviceSlice<u8>,
    b: usize,
    k: usize,
    eps: f32,
) -> Result<f32> {
    softmax_ce_forward_launch(gpu, losses, probs, logits, labels, b, k, eps)?;
    mean_of(gpu, losses, b)
}

/// `softmax_ce_forward` without the mean: launch only (no download, no synchronization).
#[allow(clippy::too_many_arguments)] // the kernel's arguments, in its order
pub fn softmax_ce_forward_launch(
    gpu: &Gpu,
    losses: &impl DeviceSlice<f32>,
    probs: &impl DeviceSlice<f32>,
    logits: &impl DeviceSlice<f32>,
    labels: &impl DeviceSlice<u8>,
    b: usize,
    k: usize,
    eps: f32,
) -> Result<()> {
    check_smoothing("softmax_ce_forward", eps)?;
    ensure!(logits.len() == b * k && probs.len() == b * k, "softmax_ce_forward: logits/probs must be B*K = {}", b * k);
    ensure!(losses.len() == b && labels.len() == b, "softmax_ce_forward: losses/labels must have B = {b} entries");
    ensure!(k >= 1, "softmax_ce_forward: K must be >= 1");
    if b == 0 {
        return Ok(());
    }
    let args: [Arg; 7] = [losses.arg(), probs.arg(), logits.arg(), labels.arg(), b.into(), k.into(), eps.into()];
    gpu.launch("softmax_ce_forward", ceil_div(b, BLOCK), BLOCK as u32, 0, &args)
}

/// The mean of per-review losses (B) as the forward launchers return it: downloaded
/// (waits for the device), summed in review order in f32.
pub fn mean_loss(gpu: &Gpu, losses: &impl DeviceSlice<f32>, b: usize) -> Result<f32> {
    mean_of(gpu, losses, b)
}

/// dlogits (B, K) =  <-  probs (B, K), labels (B), label smoothing `eps`: gradient of the
/// mean loss, (probs - target) / B.
pub fn softmax_ce_backward(
    gpu: &Gpu,
    dlogits: &impl DeviceSlice<f32>,
    probs: &impl DeviceSlice<f32>,
    labels: &impl DeviceSlice<u8>,
    b: usize,
    k: usize,
    eps: f32,
) -> Result<()> {
    check_smoothing("softmax_ce_backward", eps)?;
    ensure!(dlogits.len() == b * k && probs.len() == b * k, "softmax_ce_backward: dlogits/probs must be B*K = {}", b * k);
    ensure!(labels.len() == b, "softmax_ce_backward: labels must have B = {b} entries");
    if b == 0 {
        return Ok(());
    }
    let args: [Arg; 6] = [dlogits.arg(), probs.arg(), labels.arg(), b.into(), k.into(), eps.into()];
    gpu.launch("softmax_ce_backward", ceil_div(b, BLOCK), BLOCK as u32, 0, &args)
}

/// losses (B), probs (B) = sigmoid(z)  <-  logits (B), labels (B) in {0,1}, target
/// smoothing `eps` in [0, 1) (target (1 - eps) y + eps / 2). Returns the mean.
pub fn sigmoid_bce_forward(
    gpu: &Gpu,
    losses: &impl DeviceSlice<f32>,
    probs: &impl DeviceSlice<f32>,
    logits: &impl DeviceSlice<f32>,
    labels: &impl DeviceSlice<u8>,
    b: usize,
    eps: f32,
) -> Result<f32> {
    sigmoid_bce_forward_launch(gpu, losses, probs, logits, labels, b, eps)?;
    mean_of(gpu, losses, b)
}

/// `sigmoid_bce_forward` without the mean: launch only (no download, no synchronization).
pub fn sigmoid_bce_forward_launch(
    gpu: &Gpu,
    losses: &impl DeviceSlice<f32>,
    probs: &impl DeviceSlice<f32>,
    logits: &impl DeviceSlice<f32>,
    labels: &impl DeviceSlice<u8>,
    b: usize,
    eps: f32,
) -> Result<()> {
    check_smoothing("sigmoid_bce_forward", eps)?;
    ensure!(
        logits.len() == b && probs.len() == b && losses.len() == b && labels.len() == b,
        "sigmoid_bce_forward: losses/probs/logits/labels must have B = {b} entries"
    );
    if b == 0 {
        return Ok(());
    }
    let args: [Arg; 6] = [losses.arg(), probs.arg(), logits.arg(), labels.arg(), b.into(), eps.into()];
    gpu.launch("sigmoid_bce_forward", ceil_div(b, BLOCK), BLOCK as u32, 0, &args)
}

/// dlogits (B) =  <-  probs (B), labels (B), target smoothing `eps`: gradient of the mean
/// loss, (probs - target) / B.
pub fn sigmoid_bce_backward(
    gpu: &Gpu,
    dlogits: &impl DeviceSlice<f32>,
    probs: &impl DeviceSlice<f32>,
    labels: &impl DeviceSlice<u8>,
    b: usize,
    eps: f32,
) -> Result<()> {
    check_smoothing("sigmoid_bce_backward", eps)?;
    ensure!(
        dlogits.len() == b && probs.len() == b && labels.len() == b,
        "sigmoid_bce_backward: dlogits/probs/labels must have B = {b} entries"
    );
    if b == 0 {
        return Ok(());
    }
    let args: [Arg; 5] = [dlogits.arg(), probs.arg(), labels.arg(), b.into(), eps.into()];
    gpu.launch("sigmoid_bce_backward", ceil_div(b, BLOCK), BLOCK as u32, 0, &args)
}

/// count (1) = number of reviews whose predicted class equals the label  <-  probs (B, K),
/// labels (B). Prediction as `reference::engine::predicted_label` on the positive-class
/// probability: K = 1 (BCE) `p > 0.5`, K = 2 (CE) `probs[b,1] > 0.5`; K > 2 argmax (first
/// of equals). No reference function: tests/loss.rs holds one. Overwrites `count`.
pub fn accuracy_count(
    gpu: &Gpu,
    count: &impl DeviceSlice<u32>,
    probs: &impl DeviceSlice<f32>,
    labels: &impl DeviceSlice<u8>,
    b: usize,
    k: usize,
) -> Result<()> {
    ensure!(count.len() == 1, "accuracy_count: count must have 1 element");
    ensure!(k >= 1 && probs.len() == b * k && labels.len() == b, "accuracy_count: probs (B*K = {}) / labels (B = {b})", b * k);
    let args: [Arg; 5] = [count.arg(), probs.arg(), labels.arg(), b.into(), k.into()];
    gpu.launch("accuracy_count", 1u32, BLOCK as u32, 0, &args)
}
