//! Launchers for `kernels/gelu.cu`; reference: `crate::reference::gelu` (tanh form).

use super::{elementwise_grid, ELEMENTWISE_THREADS};
use crate::device::{Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

/// out (N)  <-  inp (N)   (N = any number of elements, e.g. B * T * F).
pub fn gelu_forward(gpu: &Gpu, out: &impl DeviceSlice<f32>, inp: &impl DeviceSlice<f32>) -> Result<()> {
    let n = inp.len();
    ensure!(out.len() == n, "gelu_forward: out has {} elements, inp {n}", out.len());
    if n == 0 {
        return Ok(());
    }
    let args: [Arg; 3] = [out.arg(), inp.arg(), n.into()];
    gpu.launch("gelu_forward", elementwise_grid(n), ELEMENTWISE_THREADS, 0, &args)
}

/// dinp (N) =  <-  dout (N), inp (N).
pub fn gelu_backward(
    gpu: &Gpu,
    dinp: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    inp: &impl DeviceSlice<f32>,
) -> Result<()> {
    let n = inp.len();
    ensure!(dinp.len() == n && dout.len() == n, "gelu_backward: dinp, dout, inp must have the same length ({n})");
    if n == 0 {
        return Ok(());
    }
    let args: [Arg; 4] = [dinp.arg(), dout.arg(), inp.arg(), n.into()];
    gpu.launch("gelu_backward", elementwise_grid(n), ELEMENTWISE_THREADS, 0, &args)
}
