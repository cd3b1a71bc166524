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

/// out (N, C) = dropout(wte[ids]): [`embedding_forward`] and
/// [`crate::ops::dropout::dropout_forward`] (same mask over the flat (N, C) tensor, same
/// scale; `seed` one u64 of device memory, not read when p <= 0) in one launch, one pass:
/// the same bits as the two launches. Ids must be < V (as for `embedding_forward`).
pub fn embedding_dropout_forward(
    gpu: &Gpu,
    out: &impl DeviceSlice<f32>,
    ids: &impl DeviceSlice<u32>,
    wte: &impl DeviceSlice<f32>,
    seed: &impl DeviceSlice<u64>,
    p: f32,
    n: usize,
    c: usize,
) -> Result<()> {
    let what = "embedding_dropout_forward";
    ensure!(out.len() == n * c && ids.len() == n, "{what}: out must be N*C, ids N (N={n}, C={c})");
    ensure!(c > 0 && wte.len() % c == 0 && !wte.is_empty(), "{what}: wte must be (V, C), C={c}");
    ensure!(seed.len() == 1, "{what}: the seed is one u64 of device memory");
    ensure!(p < 1.0 && !p.is_nan(), "{what}: p = {p} must be below 1");
    if n == 0 {
        return Ok(());
    }
    let v = wte.len() / c;
    let scale = super::dropout::dropout_scale(p);
    let args: [Arg; 9] = [out.arg(), ids.arg(), wte.arg(), seed.arg(), p.into(), scale.into(), n.into(), c.into(), v.into()];
    gpu.launch(what, super::elementwise_grid(n * c), super::ELEMENTWISE_THREADS, 0, &args)
}

/// At most this many blocks for [`embedding_backward`]; more distinct ids loop.
pub const EMBEDDING_BACKWARD_MAX_BLOCKS: usize = 2048;

/// dwte (V, C) +=  <-  dout (N, C), ids (N), with the summation order the host built by
/// [`crate::reference::embedding::embedding_backward_order`]: `pos` the M <= N valid
/// positions stably sorted by id (padded positions left out), `starts` where each of the
/// U distinct ids' run begins in `pos`, and `um` = [U, M] (2 u32). `pos` and `starts` may
/// be longer than M and U (the model passes capacity-sized parts); the kernel reads U and
/// M from device memory and its grid depends only on `starts.len()`, so the same launch
/// serves every batch of one shape (a captured CUDA graph replays it). The caller that
/// packed them guarantees U <= starts.len() and M <= pos.len(); see [`embedding_order_parts`].
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
    um: &impl DeviceSlice<u32>,
    n: usize,
    c: usize,
) -> Result<()> {
    ensure!(dout.len() == n * c && ids.len() == n && pos.len() <= n, "embedding_backward: dout N*C, ids N, pos at most N (N={n}, C={c})");
    ensure!(c > 0 && dwte.len() % c == 0, "embedding_backward: dwte must be (V, C), C={c}");
    ensure!(starts.len() <= pos.len(), "embedding_backward: starts longer than pos");
    ensure!(um.len() == 2, "embedding_backward: um must be [U, M]");
    if starts.is_empty() {
        return Ok(());
    }
    let grid = starts.len().min(EMBEDDING_BACKWARD_MAX_BLOCKS);
    let block = (ceil_div(c, 32) * 32).min(BLOCK as usize) as u32;
    let args: [Arg; 7] = [dwte.arg(), dout.arg(), ids.arg(), pos.arg(), starts.arg(), um.arg(), c.into()];
    gpu.launch("embedding_backward", grid, block, 0, &args)
}

/// The backward order of `ids` laid out (B, T) with valid lengths `lens`, as the three
/// parts [`embedding_backward`] reads, each padded with zeros to `cap` entries when `cap`
/// is given (the model's fixed, shape-sized parts; `cap` >= M): (pos, starts, [U, M]).
pub fn embedding_order_parts(ids: &[u32], lens: &[u32], t: usize, cap: Option<usize>) -> Result<(Vec<u32>, Vec<u32>, [u32; 2])> {
    let (mut pos, mut starts) = crate::reference::embedding::embedding_backward_order(ids, lens, t);
    let um = [starts.len() as u32, pos.len() as u32];
    if let Some(cap) = cap {
        ensure!(pos.len() <= cap, "embedding order: {} valid positions, capacity {cap}", pos.len());
        pos.resize(cap, 0);
        starts.resize(cap, 0);
    }
    Ok((pos, starts, um))
}

/// The backward summation order for `ids` laid out (B, T) with valid lengths `lens`,
/// uploaded: (pos (M), starts (U), [U, M]).
pub fn upload_embedding_order(gpu: &Gpu, ids: &[u32], lens: &[u32], t: usize) -> Result<(Buf<u32>, Buf<u32>, Buf<u32>)> {
    let (pos, starts, um) = embedding_order_parts(ids, lens, t, None)?;
    Ok((gpu.upload(&pos)?, gpu.upload(&starts)?, gpu.upload(&um)?))
}
