//! Launchers for `kernels/matmul.cu`; reference: `crate::reference::matmul`.
//! Tiled SGEMM (64x64 tiles, 256 threads); deterministic (no atomics, fixed sum order).
//! The backward's weight gradients use a deterministic split-K over the N rows (see
//! [`matmul_backward_chunks`] and the top of `kernels/matmul.cu`), with a caller-owned
//! scratch buffer of [`matmul_backward_scratch_len`] floats.

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

/// Threads per block of both kernels (16 x 16, each 4 x 4 outputs).
const THREADS: u32 = 256;
/// Output tile of one block (rows x columns).
const TILE: usize = 64;

/// Split-K target: about this many dweight blocks (~3x the 132 SMs of an H100; a fixed
/// number, never read off the device, so results do not depend on the GPU).
const SPLITK_TARGET_BLOCKS: usize = 384;
/// Split-K: at least this many rows per chunk (16 k-steps of a tile), so a partial tile's
/// write and re-read stay small next to its loads; N below 2x this is never split.
pub const SPLITK_MIN_ROWS: usize = 256;
/// Split-K: at most this many chunks (bounds the scratch buffer).
pub const SPLITK_MAX_CHUNKS: usize = 32;

/// Number of chunks S the backward splits the N rows into for dweight/dbias, and the
/// rows per chunk (chunk s: rows `s*len .. min((s+1)*len, N)`). A function of the shapes
/// only: S = min(ceil(384 / tiles), floor(N / 256), 32), at least 1, tiles =
/// ceil(OC/64)*ceil(IC/64). Non-decreasing in N, so scratch sized at the largest N
/// covers every smaller batch. At N = 16384: 384x384 -> 11, 1152x384 -> 4,
/// 1536x384 and 384x1536 -> 3.
pub fn matmul_backward_chunks(n: usize, ic: usize, oc: usize) -> (usize, usize) {
    let tiles = ceil_div(oc, TILE) * ceil_div(ic, TILE);
    let s = ceil_div(SPLITK_TARGET_BLOCKS, tiles.max(1)).min(n / SPLITK_MIN_ROWS).clamp(1, SPLITK_MAX_CHUNKS);
    (s, ceil_div(n, s))
}

/// Floats of scratch [`matmul_backward`] needs at these shapes: S slabs of OC*IC + OC
/// partial sums when it splits N (S > 1), else 0 (any buffer will do, even empty).
pub fn matmul_backward_scratch_len(n: usize, ic: usize, oc: usize) -> usize {
    match matmul_backward_chunks(n, ic, oc) {
        (1, _) => 0,
        (s, _) => s * (oc * ic + oc),
    }
}

/// A null `float*` for an absent bias.
fn opt_arg(x: Option<&impl DeviceSlice<f32>>) -> Arg {
    x.map_or(Arg::Ptr(0), |b| b.arg())
}

/// out (N, OC)  <-  inp (N, IC), weight (OC, IC), bias (OC) or none.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    gpu: &Gpu,
    out: &impl DeviceSlice<f32>,
    inp: &impl DeviceSlice<f32>,
    weight: &impl DeviceSlice<f32>,
    bias: Option<&impl DeviceSlice<f32>>,
    n: usize,
    ic: usize,
    oc: usize,
) -> Result<()> {
    ensure!(out.len() == n * oc && inp.len() == n * ic, "matmul_forward: out must be N*OC, inp N*IC (N={n} IC={ic} OC={oc})");
    ensure!(weight.len() == oc * ic, "matmul_forward: weight must be OC*IC = {}", oc * ic);
    ensure!(bias.is_none_or(|b| b.len() == oc), "matmul_forward: bias must be OC = {oc}");
    if n == 0 || oc == 0 {
        return Ok(());
    }
    let grid = ceil_div(n, TILE) * ceil_div(oc, TILE);
    let args: [Arg; 7] = [out.arg(), inp.arg(), weight.arg(), opt_arg(bias), n.into(), ic.into(), oc.into()];
    gpu.launch("matmul_forward", grid, THREADS, 0, &args)
}

/// dinp (N, IC) =, dweight (OC, IC) +=, dbias (OC) +=  <-  dout (N, OC), inp, weight.
/// `scratch`: at least [`matmul_backward_scratch_len`]`(n, ic, oc)` floats of workspace
/// (contents ignored and clobbered). One launch computes dinp and the weight gradients,
/// or their per-chunk partials plus a second launch (`matmul_backward_reduce`) that adds
/// the partials in chunk order; bit-identical on reruns.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    gpu: &Gpu,
    dinp: &impl DeviceSlice<f32>,
    dweight: &impl DeviceSlice<f32>,
    dbias: Option<&impl DeviceSlice<f32>>,
    scratch: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    inp: &impl DeviceSlice<f32>,
    weight: &impl DeviceSlice<f32>,
    n: usize,
    ic: usize,
    oc: usize,
) -> Result<()> {
    ensure!(dinp.len() == n * ic && inp.len() == n * ic, "matmul_backward: dinp/inp must be N*IC (N={n} IC={ic})");
    ensure!(dout.len() == n * oc, "matmul_backward: dout must be N*OC (N={n} OC={oc})");
    ensure!(dweight.len() == oc * ic && weight.len() == oc * ic, "matmul_backward: dweight/weight must be OC*IC");
    ensure!(dbias.is_none_or(|b| b.len() == oc), "matmul_backward: dbias must be OC = {oc}");
    let need = matmul_backward_scratch_len(n, ic, oc);
    ensure!(scratch.len() >= need, "matmul_backward: scratch of {} floats, N={n} IC={ic} OC={oc} needs {need}", scratch.len());
    if ic == 0 && dbias.is_none() {
        return Ok(());
    }
    let (chunks, chunk_len) = matmul_backward_chunks(n, ic, oc);
    // dweight tiles x chunks, then dbias column blocks x chunks, then dinp tiles (see the kernel)
    let tiles_ic = ceil_div(ic, TILE);
    let blocks = (ceil_div(oc, TILE) * tiles_ic + dbias.map_or(0, |_| ceil_div(oc, 32))) * chunks + ceil_div(n, TILE) * tiles_ic;
    if blocks == 0 {
        return Ok(());
    }
    let args: [Arg; 12] = [
        dinp.arg(), dweight.arg(), opt_arg(dbias), scratch.arg(), dout.arg(), inp.arg(), weight.arg(),
        n.into(), ic.into(), oc.into(), chunks.into(), chunk_len.into(),
    ];
    gpu.launch("matmul_backward", blocks, THREADS, 0, &args)?;
    if chunks == 1 {
        return Ok(());
    }
    let slab = oc * ic + oc;
    let args: [Arg; 6] = [dweight.arg(), opt_arg(dbias), scratch.arg(), ic.into(), oc.into(), chunks.into()];
    gpu.launch("matmul_backward_reduce", ceil_div(slab, THREADS as usize), THREADS, 0, &args)
}
