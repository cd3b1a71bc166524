//! Launchers for `kernels/layernorm.cu`; reference: `crate::reference::layernorm`.

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

/// Threads per block: a multiple of 32 covering C, at most 256 (wider rows loop).
fn block_size(c: usize) -> u32 {
    (ceil_div(c.max(1), 32) * 32).min(256) as u32
}

/// out (N, C), mean (N), rstd (N)  <-  inp (N, C), weight (C), bias (C).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    gpu: &Gpu,
    out: &impl DeviceSlice<f32>,
    mean: &impl DeviceSlice<f32>,
    rstd: &impl DeviceSlice<f32>,
    inp: &impl DeviceSlice<f32>,
    weight: &impl DeviceSlice<f32>,
    bias: &impl DeviceSlice<f32>,
    n: usize,
    c: usize,
) -> Result<()> {
    ensure!(inp.len() == n * c && out.len() == n * c, "layernorm_forward: inp/out must be N*C = {}", n * c);
    ensure!(mean.len() == n && rstd.len() == n && weight.len() == c && bias.len() == c, "layernorm_forward: shapes");
    if n == 0 {
        return Ok(());
    }
    let args: [Arg; 8] = [out.arg(), mean.arg(), rstd.arg(), inp.arg(), weight.arg(), bias.arg(), n.into(), c.into()];
    gpu.launch("layernorm_forward", n, block_size(c), 0, &args)
}

/// dinp (N, C) +=, dweight (C) +=, dbias (C) +=  <-  dout, inp, weight, mean, rstd.
/// Deterministic: bit-identical on reruns.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    gpu: &Gpu,
    dinp: &impl DeviceSlice<f32>,
    dweight: &impl DeviceSlice<f32>,
    dbias: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    inp: &impl DeviceSlice<f32>,
    weight: &impl DeviceSlice<f32>,
    mean: &impl DeviceSlice<f32>,
    rstd: &impl DeviceSlice<f32>,
    n: usize,
    c: usize,
) -> Result<()> {
    ensure!(dinp.len() == n * c && dout.len() == n * c && inp.len() == n * c, "layernorm_backward: (N, C) tensors");
    ensure!(dweight.len() == c && dbias.len() == c && weight.len() == c, "layernorm_backward: (C) tensors");
    ensure!(mean.len() == n && rstd.len() == n, "layernorm_backward: (N) tensors");
    if n == 0 || c == 0 {
        return Ok(());
    }
    let grid = n + ceil_div(c, 32); // N row blocks, then one block per 32 columns
    let args: [Arg; 10] = [
        dinp.arg(), dweight.arg(), dbias.arg(), dout.arg(), inp.arg(), weight.arg(), mean.arg(), rstd.arg(), n.into(), c.into(),
    ];
    gpu.launch("layernorm_backward", grid, block_size(c), 0, &args)
}
