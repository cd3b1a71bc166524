//! Launchers for `kernels/embedding.cu`; reference: `crate::reference::embedding`.

use crate::device::{ceil_div, Arg, Buf, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

const BLOCK: u32 = 256;

/// out (N, C)  <-  ids (N), wte (V, C). Ids must be < V (checked by the caller that owns
/// the host ids; the kernel writes 0 for an id out of range instead of reading past wte).
pub fn embedding_forward(
    gpu: &Gpu,
    out: &impl DeviceSlice<f32>,
    ids: &impl DeviceSlice<u32>,
    wte: &impl DeviceSlice<f32>,
    n: usize,
    c: usize,
) -> Result<()> {
    ensure!(out.len() == n * c && ids.len() == n, "embedding_forward: out must be N*C, ids N (N={n}, C={c})");
    ensure!(c > 0 && wte.len() % c == 0 && !wte.is_empty(), "embedding_forward: wte must be (V, C), C={c}");
    if n == 0 {
        return Ok(());
    }
    let v = wte.len() / c;
    let args: [Arg; 6] = [out.arg(), ids.arg(), wte.arg(), n.into(), c.into(), v.into()];
    gpu.launch("embedding_forward", ceil_div(n * c, BLOCK as usize), BLOCK, 0, &args)
}

/// dwte (V, C) +=  <-  dout (N, C), ids (N), with the summation order the host built by
/// [`crate::reference::embedding::embedding_backward_order`]: `pos` (M <= N) the valid
/// positions stably sorted by id (padded positions left out), `starts` (U) where each
/// distinct id's run begins in `pos`.
/// Deterministic: one block per distinct id adds its rows in increasing position order
/// (the reference's order), no atomics; reruns are bit-identical.
#[allow(clippy::too_many_arguments)]
pub fn embedding_backward(
    gpu: &Gpu,
    dwte: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    ids: &impl DeviceSlice<u32>,
    pos: &impl DeviceSlice<u32>,
    starts: &impl DeviceSlice<u32>,
    n: usize,
    c: usize,
) -> Result<()> {
    let m = pos.len();
    ensure!(dout.len() == n * c && ids.len() == n && m <= n, "embedding_backward: dout N*C, ids N, pos at most N (N={n}, C={c})");
    ensure!(c > 0 && dwte.len() % c == 0, "embedding_backward: dwte must be (V, C), C={c}");
    ensure!(starts.len() <= m && (m == 0) == starts.is_empty(), "embedding_backward: starts must have 1..=M entries (M={m})");
    if m == 0 {
        return Ok(());
    }
    let u = starts.len();
    let block = (ceil_div(c, 32) * 32).min(BLOCK as usize) as u32;
    let args: [Arg; 8] = [dwte.arg(), dout.arg(), ids.arg(), pos.arg(), starts.arg(), u.into(), m.into(), c.into()];
    gpu.launch("embedding_backward", u, block, 0, &args)
}

/// The backward summation order for `ids` laid out (B, T) with valid lengths `lens`,
/// uploaded: (pos (M), starts (U)).
pub fn upload_embedding_order(gpu: &Gpu, ids: &[u32], lens: &[u32], t: usize) -> Result<(Buf<u32>, Buf<u32>)> {
    let (pos, starts) = crate::reference::embedding::embedding_backward_order(ids, lens, t);
    Ok((gpu.upload(&pos)?, gpu.upload(&starts)?))
}
