//! Launchers for `kernels/attention.cu`; reference: `crate::reference::attention`.

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

/// Warps (= queries or keys) per block, rows per staged chunk, largest head size: as in
/// `kernels/attention.cu` (ATT_WARPS, ATT_CHUNK, ATT_MAX_HS).
const WARPS: usize = 8;
const CHUNK: usize = 32;
const MAX_HS: usize = 128;
/// Dynamic shared memory a kernel may use without opting in (48 KiB on every CUDA GPU).
const MAX_SHARED: usize = 48 * 1024;

fn stride(hs: usize) -> usize {
    hs | 1
}

#[allow(clippy::too_many_arguments)]
fn check_shapes(what: &str, qkv: usize, att: usize, lens: usize, b: usize, t: usize, c: usize, nh: usize) -> Result<usize> {
    ensure!(nh > 0 && c % nh == 0, "{what}: C = {c} must be a multiple of NH = {nh}");
    let hs = c / nh;
    ensure!(hs <= MAX_HS, "{what}: head size {hs} > {MAX_HS}");
    ensure!(qkv == b * t * 3 * c, "{what}: qkv must be B*T*3C = {}", b * t * 3 * c);
    ensure!(att == b * nh * t * t, "{what}: att must be B*NH*T*T = {}", b * nh * t * t);
    ensure!(lens == b, "{what}: lens must have B = {b} entries");
    Ok(hs)
}

fn shared_bytes(what: &str, floats: usize) -> Result<u32> {
    let bytes = floats * 4;
    ensure!(bytes <= MAX_SHARED, "{what}: needs {bytes} bytes of shared memory (> {MAX_SHARED}); T too long");
    Ok(bytes as u32)
}

/// out (B,T,C), att (B,NH,T,T) saved probabilities  <-  qkv (B,T,3C), lens (B).
/// Padded query rows of out and att are 0; len 0 gives zeros. Deterministic.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    gpu: &Gpu,
    out: &impl DeviceSlice<f32>,
    att: &impl DeviceSlice<f32>,
    qkv: &impl DeviceSlice<f32>,
    lens: &impl DeviceSlice<u32>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    let hs = check_shapes("attention_forward", qkv.len(), att.len(), lens.len(), b, t, c, nh)?;
    ensure!(out.len() == b * t * c, "attention_forward: out must be B*T*C = {}", b * t * c);
    if b == 0 || t == 0 || c == 0 {
        return Ok(());
    }
    let shared = shared_bytes("attention_forward", WARPS * hs + CHUNK * stride(hs) + WARPS * t)?;
    let grid = (ceil_div(t, WARPS) as u32, nh as u32, b as u32);
    let args: [Arg; 8] = [out.arg(), att.arg(), qkv.arg(), lens.arg(), b.into(), t.into(), c.into(), nh.into()];
    gpu.launch("attention_forward", grid, (WARPS * 32) as u32, shared, &args)
}

/// dqkv (B,T,3C) =  <-  dout (B,T,C), qkv (B,T,3C), att (B,NH,T,T), lens (B).
/// Overwrites dqkv (padded positions get 0). Three launches (delta, dk/dv, dq), no atomics:
/// bit-identical on reruns.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &Gpu,
    dqkv: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    qkv: &impl DeviceSlice<f32>,
    att: &impl DeviceSlice<f32>,
    lens: &impl DeviceSlice<u32>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    let hs = check_shapes("attention_backward", qkv.len(), att.len(), lens.len(), b, t, c, nh)?;
    ensure!(dqkv.len() == b * t * 3 * c, "attention_backward: dqkv must be B*T*3C = {}", b * t * 3 * c);
    ensure!(dout.len() == b * t * c, "attention_backward: dout must be B*T*C = {}", b * t * c);
    if b == 0 || t == 0 || c == 0 {
        return Ok(());
    }
    let s = stride(hs);
    let shared_dkv = shared_bytes("attention_backward", 2 * CHUNK * s + CHUNK + WARPS * hs + 2 * WARPS * CHUNK)?;
    let shared_dq = shared_bytes("attention_backward", 2 * CHUNK * s + WARPS * hs + WARPS * CHUNK)?;
    let grid = (ceil_div(t, WARPS) as u32, nh as u32, b as u32);
    let block = (WARPS * 32) as u32;
    let args: [Arg; 9] =
        [dqkv.arg(), dout.arg(), qkv.arg(), att.arg(), lens.arg(), b.into(), t.into(), c.into(), nh.into()];
    gpu.launch("attention_backward_delta", grid, block, 0, &args)?;
    gpu.launch("attention_backward_dkv", grid, block, shared_dkv, &args)?;
    gpu.launch("attention_backward_dq", grid, block, shared_dq, &args)
}
