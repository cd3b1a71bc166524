//! Launchers for `kernels/meanpool.cu`; reference: `crate::reference::meanpool`.

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

/// Threads per block: a multiple of 32 covering C, at most 256 (wider rows use more blocks).
fn block_size(c: usize) -> u32 {
    (ceil_div(c.max(1), 32) * 32).min(256) as u32
}

/// out (B, C)  <-  inp (B, T, C), lens (B): mean over the valid tokens; len 0 gives 0.
pub fn meanpool_forward(
    gpu: &Gpu,
    out: &impl DeviceSlice<f32>,
    inp: &impl DeviceSlice<f32>,
    lens: &impl DeviceSlice<u32>,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    ensure!(out.len() == b * c, "meanpool_forward: out must be B*C = {}", b * c);
    ensure!(inp.len() == b * t * c, "meanpool_forward: inp must be B*T*C = {}", b * t * c);
    ensure!(lens.len() == b, "meanpool_forward: lens must have B = {b} entries");
    if b == 0 || c == 0 {
        return Ok(());
    }
    let bs = block_size(c);
    let grid = (ceil_div(c, bs as usize) as u32, b as u32);
    let args: [Arg; 6] = [out.arg(), inp.arg(), lens.arg(), b.into(), t.into(), c.into()];
    gpu.launch("meanpool_forward", grid, bs, 0, &args)
}

/// dinp (B, T, C) =  <-  dout (B, C), lens (B). Padded rows get exactly 0.
pub fn meanpool_backward(
    gpu: &Gpu,
    dinp: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    lens: &impl DeviceSlice<u32>,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    ensure!(dinp.len() == b * t * c, "meanpool_backward: dinp must be B*T*C = {}", b * t * c);
    ensure!(dout.len() == b * c, "meanpool_backward: dout must be B*C = {}", b * c);
    ensure!(lens.len() == b, "meanpool_backward: lens must have B = {b} entries");
    if b == 0 || t == 0 || c == 0 {
        return Ok(());
    }
    let bs = block_size(c);
    let grid = (ceil_div(c, bs as usize) as u32, t as u32, b as u32);
    let args: [Arg; 6] = [dinp.arg(), dout.arg(), lens.arg(), b.into(), t.into(), c.into()];
    gpu.launch("meanpool_backward", grid, bs, 0, &args)
}
