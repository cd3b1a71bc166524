//! Launcher for `kernels/adamw.cu`; reference: `crate::reference::adamw`.

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

const BLOCK: u32 = 256;
/// At most this many blocks; larger tensors loop (grid stride).
const MAX_BLOCKS: usize = 4096;

/// params (N), m (N), v (N) updated in place  <-  grads (N). `t` is the 1-based step;
/// `grad_scale` the clip factor; `weight_decay` 0 for tensors without decay.
/// Elementwise, so reruns are bit-identical.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    gpu: &Gpu,
    params: &impl DeviceSlice<f32>,
    m: &impl DeviceSlice<f32>,
    v: &impl DeviceSlice<f32>,
    grads: &impl DeviceSlice<f32>,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    grad_scale: f32,
    t: u64,
) -> Result<()> {
    ensure!(t >= 1, "adamw_update: AdamW steps are 1-based");
    let n = grads.len();
    ensure!(params.len() == n && m.len() == n && v.len() == n, "adamw_update: params/m/v/grads lengths differ");
    if n == 0 {
        return Ok(());
    }
    // bias corrections exactly as the reference computes them, rounded to f32
    let (bc1, bc2) = crate::reference::adamw::adamw_bias_corrections(beta1, beta2, t);
    let (bc1, bc2) = (bc1 as f32, bc2 as f32);
    let args: [Arg; 13] = [
        params.arg(), m.arg(), v.arg(), grads.arg(), lr.into(), beta1.into(), beta2.into(), bc1.into(), bc2.into(),
        eps.into(), weight_decay.into(), grad_scale.into(), n.into(),
    ];
    gpu.launch("adamw_update", ceil_div(n, BLOCK as usize).min(MAX_BLOCKS), BLOCK, 0, &args)
}

/// What `adamw_update_tensors` reads from device memory for step `t` (1-based):
/// `[lr, bc1, bc2]` with the bias corrections computed exactly as the reference does and
/// rounded to f32 (as [`adamw_update`] passes them).
pub fn adamw_schedule(lr: f32, beta1: f32, beta2: f32, t: u64) -> Result<[f32; 3]> {
    ensure!(t >= 1, "AdamW steps are 1-based");
    let (bc1, bc2) = crate::reference::adamw::adamw_bias_corrections(beta1, beta2, t);
    Ok([lr, bc1 as f32, bc2 as f32])
}

/// Entries of the per-tensor table of `adamw_update_tensors` (ADAMW_MAX_TENSORS in
/// `kernels/adamw.cu`).
pub const ADAMW_MAX_TENSORS: usize = 64;

/// The per-tensor table of `adamw_update_tensors` for tensors of the given
/// (size, decays) in buffer order: `ends` (cumulative sizes) and `decay` (1 or 0).
pub fn adamw_table(tensors: impl IntoIterator<Item = (usize, bool)>) -> (Vec<u32>, Vec<u32>) {
    let (mut ends, mut decay, mut end) = (Vec::new(), Vec::new(), 0usize);
    for (size, d) in tensors {
        end += size;
        ends.push(end as u32);
        decay.push(d as u32);
    }
    (ends, decay)
}

/// AdamW over a whole buffer of tensors in one launch: tensor k covers elements
/// [ends[k-1], ends[k]) and decays with `weight_decay` if decay[k] != 0 (the table of
/// [`adamw_table`], uploaded once). The clip factor is computed on the device from the
/// global gradient norm `norm` (1 element, as `ops::gradnorm::global_norm` leaves it) and
/// `max_norm` exactly as `reference::gradnorm::clip_scale` does (max_norm <= 0: none);
/// a non-finite norm leaves params, m and v untouched. The step's learning rate and bias
/// corrections are read from device memory, `sched` = [`adamw_schedule`] (written with
/// the batch, so a captured step replays with the next step's). Otherwise the same
/// arithmetic as [`adamw_update`] per tensor with that clip factor: bit-identical to it. `ends` must
/// ascend and end at N (checked by the caller that built it; the kernel stays in bounds
/// regardless: the last tensor takes any rest). No host synchronization.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update_tensors(
    gpu: &Gpu,
    params: &impl DeviceSlice<f32>,
    m: &impl DeviceSlice<f32>,
    v: &impl DeviceSlice<f32>,
    grads: &impl DeviceSlice<f32>,
    ends: &impl DeviceSlice<u32>,
    decay: &impl DeviceSlice<u32>,
    norm: &impl DeviceSlice<f32>,
    max_norm: f32,
    sched: &impl DeviceSlice<f32>,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
) -> Result<()> {
    ensure!(sched.len() == 3, "adamw_update_tensors: sched must be [lr, bc1, bc2] (see adamw_schedule)");
    let n = grads.len();
    ensure!(params.len() == n && m.len() == n && v.len() == n, "adamw_update_tensors: params/m/v/grads lengths differ");
    ensure!(norm.len() == 1, "adamw_update_tensors: norm must have 1 element");
    let k = ends.len();
    ensure!(
        decay.len() == k && (1..=ADAMW_MAX_TENSORS).contains(&k),
        "adamw_update_tensors: the table must have 1 to {ADAMW_MAX_TENSORS} tensors (ends and decay the same length)"
    );
    if n == 0 {
        return Ok(());
    }
    let args: [Arg; 15] = [
        params.arg(), m.arg(), v.arg(), grads.arg(), ends.arg(), decay.arg(), k.into(), norm.arg(), max_norm.into(),
        sched.arg(), beta1.into(), beta2.into(), eps.into(), weight_decay.into(), n.into(),
    ];
    gpu.launch("adamw_update_tensors", ceil_div(n, BLOCK as usize).min(MAX_BLOCKS), BLOCK, 0, &args)
}
