//! Launcher for `kernels/steptotals.cu`; reference: `crate::reference::steptotals`.

use crate::device::{Arg, DeviceSlice, Gpu};
use crate::train::engine::STEP_TOTALS_SLOTS;
use anyhow::{ensure, Result};

/// totals (the slots of `train::engine::StepTotals`, f64) += this step's statistics
/// <- losses (B), probs (B, K) of the forward, labels (B), the gradient norm (1), and the
/// step number `step` (1 u64 of device memory, written with the batch).
/// K is 1 (BCE) or 2 (CE). One launch, no download: the host reads the totals back when
/// it chooses (`StepTotals::from_slots`).
#[allow(clippy::too_many_arguments)]
pub fn step_totals_add(
    gpu: &Gpu,
    totals: &impl DeviceSlice<f64>,
    losses: &impl DeviceSlice<f32>,
    probs: &impl DeviceSlice<f32>,
    labels: &impl DeviceSlice<u8>,
    norm: &impl DeviceSlice<f32>,
    b: usize,
    k: usize,
    step: &impl DeviceSlice<u64>,
) -> Result<()> {
    ensure!(totals.len() == STEP_TOTALS_SLOTS, "step_totals_add: totals must have {STEP_TOTALS_SLOTS} slots");
    ensure!(k == 1 || k == 2, "step_totals_add: K must be 1 or 2");
    ensure!(losses.len() == b && labels.len() == b && probs.len() == b * k, "step_totals_add: losses/labels (B = {b}), probs (B*K)");
    ensure!(norm.len() == 1 && step.len() == 1, "step_totals_add: norm and step must have 1 element");
    let args: [Arg; 8] = [totals.arg(), losses.arg(), probs.arg(), labels.arg(), norm.arg(), b.into(), k.into(), step.arg()];
    gpu.launch("step_totals_add", 1u32, 32u32, 0, &args)
}
