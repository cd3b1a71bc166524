//! Launchers for `kernels/residual.cu`; reference: `crate::reference::residual`.

use super::{elementwise_grid, ELEMENTWISE_THREADS};
use crate::device::{Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

/// out (N)  <-  inp1 (N), inp2 (N).
pub fn residual_forward(
    gpu: &Gpu,
    out: &impl DeviceSlice<f32>,
    inp1: &impl DeviceSlice<f32>,
    inp2: &impl DeviceSlice<f32>,
) -> Result<()> {
    let n = out.len();
    ensure!(inp1.len() == n && inp2.len() == n, "residual_forward: out, inp1, inp2 must have the same length ({n})");
    if n == 0 {
        return Ok(());
    }
    let args: [Arg; 4] = [out.arg(), inp1.arg(), inp2.arg(), n.into()];
    gpu.launch("residual_forward", elementwise_grid(n), ELEMENTWISE_THREADS, 0, &args)
}

/// dinp1 (N) +=, dinp2 (N) +=  <-  dout (N). Both accumulate (residual-stream rule).
pub fn residual_backward(
    gpu: &Gpu,
    dinp1: &impl DeviceSlice<f32>,
    dinp2: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
) -> Result<()> {
    let n = dout.len();
    ensure!(dinp1.len() == n && dinp2.len() == n, "residual_backward: dinp1, dinp2, dout must have the same length ({n})");
    if n == 0 {
        return Ok(());
    }
    let args: [Arg; 4] = [dinp1.arg(), dinp2.arg(), dout.arg(), n.into()];
    gpu.launch("residual_backward", elementwise_grid(n), ELEMENTWISE_THREADS, 0, &args)
}
