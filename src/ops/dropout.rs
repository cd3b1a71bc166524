//! Launchers for `kernels/dropout.cu`; reference: `crate::reference::dropout`.
//! Element `idx` is kept iff `rng::dropout_uniform(seed, idx) >= p`: the kernel's mask
//! equals the reference's bit for bit. p <= 0 is the identity. The seed is device memory
//! (one u64, read by the kernel; not read when p <= 0), so a captured CUDA graph of the
//! step replays with whatever seed the next step wrote there.

use super::{elementwise_grid, ELEMENTWISE_THREADS};
use crate::device::{Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

/// The kept values' scale, rounded from f64 exactly as the f32 reference does (also what
/// the kernels that fuse a dropout are given: layer norm's, the embedding's).
pub(crate) fn dropout_scale(p: f32) -> f32 {
    if p <= 0.0 { 1.0 } else { (1.0 / (1.0 - p as f64)) as f32 }
}

fn launch(gpu: &Gpu, name: &str, out: &impl DeviceSlice<f32>, inp: &impl DeviceSlice<f32>, seed: &impl DeviceSlice<u64>, p: f32) -> Result<()> {
    let n = inp.len();
    ensure!(out.len() == n, "{name}: output has {} elements, input {n}", out.len());
    ensure!(seed.len() == 1, "{name}: the seed is one u64 of device memory");
    ensure!(p < 1.0 && !p.is_nan(), "{name}: p = {p} must be below 1");
    if n == 0 {
        return Ok(());
    }
    let args: [Arg; 6] = [out.arg(), inp.arg(), seed.arg(), p.into(), dropout_scale(p).into(), n.into()];
    gpu.launch(name, elementwise_grid(n), ELEMENTWISE_THREADS, 0, &args)
}

/// out (N)  <-  inp (N), the mask of `seed` (1 element).
pub fn dropout_forward(gpu: &Gpu, out: &impl DeviceSlice<f32>, inp: &impl DeviceSlice<f32>, seed: &impl DeviceSlice<u64>, p: f32) -> Result<()> {
    launch(gpu, "dropout_forward", out, inp, seed, p)
}

/// dinp (N) =  <-  dout (N): the same mask and scale as the forward pass.
pub fn dropout_backward(gpu: &Gpu, dinp: &impl DeviceSlice<f32>, dout: &impl DeviceSlice<f32>, seed: &impl DeviceSlice<u64>, p: f32) -> Result<()> {
    launch(gpu, "dropout_backward", dinp, dout, seed, p)
}
