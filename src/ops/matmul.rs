//! Launchers for `kernels/matmul.cu`; reference: `crate::reference::matmul`.
//! Tiled SGEMM (64x64 tiles, 256 threads); deterministic (no atomics, fixed sum order).

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

/// Threads per block of both kernels (16 x 16, each 4 x 4 outputs).
const THREADS: u32 = 256;
/// Output tile of one block (rows x columns).
const TILE: usize = 64;

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
/// One launch computes all three; bit-identical on reruns.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    gpu: &Gpu,
    dinp: &impl DeviceSlice<f32>,
    dweight: &impl DeviceSlice<f32>,
    dbias: Option<&impl DeviceSlice<f32>>,
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
    if ic == 0 && dbias.is_none() {
        return Ok(());
    }
    // dweight tiles, then dbias column blocks, then dinp tiles (see the kernel)
    let tiles_ic = ceil_div(ic, TILE);
    let blocks = ceil_div(oc, TILE) * tiles_ic + dbias.map_or(0, |_| ceil_div(oc, 32)) + ceil_div(n, TILE) * tiles_ic;
    if blocks == 0 {
        return Ok(());
    }
    let args: [Arg; 9] =
        [dinp.arg(), dweight.arg(), opt_arg(dbias), dout.arg(), inp.arg(), weight.arg(), n.into(), ic.into(), oc.into()];
    gpu.launch("matmul_backward", blocks, THREADS, 0, &args)
}
