//! Launchers for `kernels/attention.cu`; reference: `crate::reference::attention`.

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use crate::ops::matmul::Precision;
use anyhow::{ensure, Result};

/// Warps (= queries or keys) per block, rows per staged chunk, largest head size: as in
/// `kernels/attention.cu` (ATT_WARPS, ATT_CHUNK, ATT_MAX_HS).
const WARPS: usize = 8;
const CHUNK: usize = 32;
const MAX_HS: usize = 128;

fn stride(hs: usize) -> usize {
    hs | 1
}

#[allow(clippy::too_many_arguments)]
fn check_shapes(what: &str, qkv: usize, lse: usize, lens: usize, b: usize, t: usize, c: usize, nh: usize) -> Result<usize> {
    ensure!(nh > 0 && c % nh == 0, "{what}: C = {c} must be a multiple of NH = {nh}");
    let hs = c / nh;
    ensure!(hs <= MAX_HS, "{what}: head size {hs} > {MAX_HS}");
    ensure!(qkv == b * t * 3 * c, "{what}: qkv must be B*T*3C = {}", b * t * 3 * c);
    ensure!(lse == b * nh * t, "{what}: lse must be B*NH*T = {}", b * nh * t);
    ensure!(lens == b, "{what}: lens must have B = {b} entries");
    Ok(hs)
}

/// Dynamic shared memory of a launch: a few row chunks of HS <= MAX_HS, independent of T;
/// at most 43.5 KiB (the dk/dv kernel at HS = 128), under the 48 KiB any kernel may use
/// without opting in.
fn shared_bytes(floats: usize) -> u32 {
    (floats * 4) as u32
}

/// out (B,T,C), lse (B,NH,T) log-sum-exp of each query's scaled scores  <-  qkv (B,T,3C),
/// lens (B). Fused: no (T,T) matrix. Padded query rows of out are 0, their lse 0; len 0
/// gives zeros. Deterministic.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    gpu: &Gpu,
    out: &impl DeviceSlice<f32>,
    lse: &impl DeviceSlice<f32>,
    qkv: &impl DeviceSlice<f32>,
    lens: &impl DeviceSlice<u32>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    let hs = check_shapes("attention_forward", qkv.len(), lse.len(), lens.len(), b, t, c, nh)?;
    ensure!(out.len() == b * t * c, "attention_forward: out must be B*T*C = {}", b * t * c);
    if b == 0 || t == 0 || c == 0 {
        return Ok(());
    }
    let shared = shared_bytes(WARPS * hs + 2 * CHUNK * stride(hs) + WARPS * CHUNK);
    let grid = (ceil_div(t, WARPS) as u32, nh as u32, b as u32);
    let args: [Arg; 8] = [out.arg(), lse.arg(), qkv.arg(), lens.arg(), b.into(), t.into(), c.into(), nh.into()];
    gpu.launch("attention_forward", grid, (WARPS * 32) as u32, shared, &args)
}

/// Queries per block of the tensor-core forward (4 warps of 16), keys per staged chunk
/// and the stride of its per-warp p tile: as `kernels/attention.cu` (ATT_TC_*).
const TC_QUERIES: usize = 64;
const TC_KC: usize = 32;
const TC_PS: usize = 33;

/// [`attention_forward`] in a precision: fp32 is that kernel; tf32 and bf16 compute
/// S = Q K^T and O = P V on the tensor cores (`attention_forward_tf32` / `_bf16`: q, k,
/// v and p rounded to the precision, f32 accumulation, softmax statistics in f32), the
/// same outputs to the precision's rounding. Deterministic.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_prec(
    gpu: &Gpu,
    prec: Precision,
    out: &impl DeviceSlice<f32>,
    lse: &impl DeviceSlice<f32>,
    qkv: &impl DeviceSlice<f32>,
    lens: &impl DeviceSlice<u32>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    let name = match prec {
        Precision::Fp32 => return attention_forward(gpu, out, lse, qkv, lens, b, t, c, nh),
        Precision::Tf32 => "attention_forward_tf32",
        Precision::Bf16 => "attention_forward_bf16",
    };
    let hs = check_shapes(name, qkv.len(), lse.len(), lens.len(), b, t, c, nh)?;
    ensure!(out.len() == b * t * c, "{name}: out must be B*T*C = {}", b * t * c);
    if b == 0 || t == 0 || c == 0 {
        return Ok(());
    }
    let k = if prec == Precision::Bf16 { 16 } else { 8 };
    let sp = ceil_div(hs, k) * k + 1;
    // at HS = 128: about 74 KiB in bf16 (the cuda launcher opts in above 48 KiB)
    let shared = shared_bytes(TC_QUERIES * sp + 2 * TC_KC * sp + TC_QUERIES * TC_PS);
    let grid = (ceil_div(t, TC_QUERIES) as u32, nh as u32, b as u32);
    let args: [Arg; 8] = [out.arg(), lse.arg(), qkv.arg(), lens.arg(), b.into(), t.into(), c.into(), nh.into()];
    gpu.launch(name, grid, (TC_QUERIES / 16 * 32) as u32, shared, &args)
}

/// dqkv (B,T,3C)  <-  dout (B,T,C), qkv (B,T,3C), out (B,T,C) and lse (B,NH,T) of the
/// forward, lens (B). Overwrites dqkv (padded positions get 0). Three launches (delta,
/// dk/dv, dq), no atomics: bit-identical on reruns.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &Gpu,
    dqkv: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    qkv: &impl DeviceSlice<f32>,
    out: &impl DeviceSlice<f32>,
    lse: &impl DeviceSlice<f32>,
    lens: &impl DeviceSlice<u32>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    attention_backward_prec(gpu, Precision::Fp32, dqkv, dout, qkv, out, lse, lens, b, t, c, nh)
}

/// The backward of [`attention_forward_prec`]: fp32 the three f32 kernels; tf32 and bf16
/// D_i = dout_i . out_i in f32 over dout rounded to the precision (`attention_backward_delta`,
/// as the tensor-core kernels see dout), then dk, dv and dq on the
/// tensor cores (`attention_backward_dkv_{tf32,bf16}`, `attention_backward_dq_*`: q, k,
/// v, dout and the probabilities rounded to the precision, f32 accumulation). No atomics:
/// bit-identical reruns.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_prec(
    gpu: &Gpu,
    prec: Precision,
    dqkv: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    qkv: &impl DeviceSlice<f32>,
    out: &impl DeviceSlice<f32>,
    lse: &impl DeviceSlice<f32>,
    lens: &impl DeviceSlice<u32>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    let hs = check_shapes("attention_backward", qkv.len(), lse.len(), lens.len(), b, t, c, nh)?;
    ensure!(dqkv.len() == b * t * 3 * c, "attention_backward: dqkv must be B*T*3C = {}", b * t * 3 * c);
    ensure!(dout.len() == b * t * c, "attention_backward: dout must be B*T*C = {}", b * t * c);
    ensure!(out.len() == b * t * c, "attention_backward: out must be B*T*C = {}", b * t * c);
    if b == 0 || t == 0 || c == 0 {
        return Ok(());
    }
    let grid = (ceil_div(t, WARPS) as u32, nh as u32, b as u32);
    let block = (WARPS * 32) as u32;
    let sizes: [Arg; 4] = [b.into(), t.into(), c.into(), nh.into()];
    // the delta kernel's mode (how it reads dout) and the tensor-core pair, if any
    let (mode, tc): (i32, _) = match prec {
        Precision::Fp32 => (0, None),
        Precision::Tf32 => (1, Some(("attention_backward_dkv_tf32", "attention_backward_dq_tf32", 8))),
        Precision::Bf16 => (2, Some(("attention_backward_dkv_bf16", "attention_backward_dq_bf16", 16))),
    };
    let delta: [Arg; 9] = [dqkv.arg(), dout.arg(), out.arg(), lens.arg(), sizes[0], sizes[1], sizes[2], sizes[3], mode.into()];
    gpu.launch("attention_backward_delta", grid, block, 0, &delta)?;
    if let Some((dkv, dq, k)) = tc {
        // tensor cores: 4 warps of 16 keys (or queries) a block
        let sp = ceil_div(hs, k) * k + 1;
        let shared_dq = shared_bytes(2 * TC_QUERIES * sp + 2 * TC_KC * sp + TC_QUERIES * TC_PS);
        let shared_dkv = shared_bytes(2 * TC_QUERIES * sp + 2 * TC_KC * sp + 2 * TC_KC + 2 * TC_QUERIES * TC_PS);
        let grid = (ceil_div(t, TC_QUERIES) as u32, nh as u32, b as u32);
        let block = (TC_QUERIES / 16 * 32) as u32;
        let args: [Arg; 9] = [dqkv.arg(), dout.arg(), qkv.arg(), lse.arg(), lens.arg(), sizes[0], sizes[1], sizes[2], sizes[3]];
        gpu.launch(dkv, grid, block, shared_dkv, &args)?;
        return gpu.launch(dq, grid, block, shared_dq, &args);
    }
    let s = stride(hs);
    let shared_dkv = shared_bytes(2 * CHUNK * s + 2 * CHUNK + 2 * WARPS * hs + 2 * WARPS * CHUNK);
    let shared_dq = shared_bytes(2 * CHUNK * s + 2 * WARPS * hs + WARPS * CHUNK);
    let args: [Arg; 9] =
        [dqkv.arg(), dout.arg(), qkv.arg(), lse.arg(), lens.arg(), sizes[0], sizes[1], sizes[2], sizes[3]];
    gpu.launch("attention_backward_dkv", grid, block, shared_dkv, &args)?;
    gpu.launch("attention_backward_dq", grid, block, shared_dq, &args)
}
