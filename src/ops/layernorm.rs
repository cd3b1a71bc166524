//! Launchers for `kernels/layernorm.cu` (layer norm, and the dropout + residual add before
//! it fused in); reference: `crate::reference::layernorm`.

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use crate::ops::dropout::dropout_scale;
use anyhow::{ensure, Result};

/// Row split of dweight/dbias: about this many column-chunk blocks (~3x the 132 SMs of
/// an H100; fixed, never read off the device, so results do not depend on the GPU).
const SPLIT_TARGET_BLOCKS: usize = 384;
/// At least this many rows per chunk; N below 2x this is never split.
pub const SPLIT_MIN_ROWS: usize = 256;
/// At most this many chunks.
pub const SPLIT_MAX_CHUNKS: usize = 32;

/// Number of row chunks S for the backward's dweight/dbias and the rows per chunk (chunk
/// s: rows `s*len .. min((s+1)*len, N)`). Shapes only: S = min(ceil(384 / ceil(C/32)),
/// floor(N / 256), 32), at least 1; non-decreasing in N. C = 384, N = 16384: S = 32
/// chunks of 512 rows (384 column blocks instead of 12).
pub fn layernorm_backward_chunks(n: usize, c: usize) -> (usize, usize) {
    let s = ceil_div(SPLIT_TARGET_BLOCKS, ceil_div(c, 32).max(1)).min(n / SPLIT_MIN_ROWS).clamp(1, SPLIT_MAX_CHUNKS);
    (s, ceil_div(n, s))
}

/// Floats of scratch [`layernorm_backward`] needs: S x 2C partial sums when it splits the
/// rows (S > 1), else 0.
pub fn layernorm_backward_scratch_len(n: usize, c: usize) -> usize {
    match layernorm_backward_chunks(n, c) {
        (1, _) => 0,
        (s, _) => s * 2 * c,
    }
}

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

/// The most C [`residual_layernorm_forward`] takes: its row of C floats in dynamic shared
/// memory must fit the 227 KiB a block may have (sm_80/89/90).
pub const RESIDUAL_LAYERNORM_MAX_C: usize = 227 * 1024 / 4;

/// res (N, C), ln (N, C), mean (N), rstd (N)  <-  x (N, C), branch (N, C), weight (C), bias (C):
/// `res = x + dropout(branch)` (the mask and scale of [`crate::ops::dropout::dropout_forward`]
/// over the flat (N, C) tensor with `seed` (1 u64 of device memory) and `p`; p <= 0: no dropout), then
/// `ln = layernorm(res)` as [`layernorm_forward`]. One launch, one pass over memory; the
/// same values, bit for bit, as dropout_forward + residual_forward + layernorm_forward.
#[allow(clippy::too_many_arguments)]
pub fn residual_layernorm_forward(
    gpu: &Gpu,
    res: &impl DeviceSlice<f32>,
    ln: &impl DeviceSlice<f32>,
    mean: &impl DeviceSlice<f32>,
    rstd: &impl DeviceSlice<f32>,
    x: &impl DeviceSlice<f32>,
    branch: &impl DeviceSlice<f32>,
    weight: &impl DeviceSlice<f32>,
    bias: &impl DeviceSlice<f32>,
    seed: &impl DeviceSlice<u64>,
    p: f32,
    n: usize,
    c: usize,
) -> Result<()> {
    let what = "residual_layernorm_forward";
    ensure!(seed.len() == 1, "{what}: the seed is one u64 of device memory");
    ensure!(
        [res.len(), ln.len(), x.len(), branch.len()].iter().all(|&l| l == n * c),
        "{what}: res, ln, x and branch must be N*C = {}",
        n * c
    );
    ensure!(mean.len() == n && rstd.len() == n && weight.len() == c && bias.len() == c, "{what}: shapes");
    ensure!((1..=RESIDUAL_LAYERNORM_MAX_C).contains(&c), "{what}: C = {c} must be 1..={RESIDUAL_LAYERNORM_MAX_C}");
    ensure!(p < 1.0 && !p.is_nan(), "{what}: p = {p} must be below 1");
    if n == 0 {
        return Ok(());
    }
    let args: [Arg; 13] = [
        res.arg(), ln.arg(), mean.arg(), rstd.arg(), x.arg(), branch.arg(), weight.arg(), bias.arg(),
        seed.arg(), p.into(), dropout_scale(p).into(), n.into(), c.into(),
    ];
    gpu.launch(what, n, block_size(c), (4 * c) as u32, &args)
}

/// dinp (N, C) +=, dweight (C) +=, dbias (C) +=  <-  dout, inp, weight, mean, rstd.
/// `scratch`: at least [`layernorm_backward_scratch_len`]`(n, c)` floats of workspace
/// (clobbered). When the rows are split, a second launch adds the per-chunk partials in
/// chunk order. Deterministic: bit-identical on reruns.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    gpu: &Gpu,
    dinp: &impl DeviceSlice<f32>,
    dweight: &impl DeviceSlice<f32>,
    dbias: &impl DeviceSlice<f32>,
    scratch: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    inp: &impl DeviceSlice<f32>,
    weight: &impl DeviceSlice<f32>,
    mean: &impl DeviceSlice<f32>,
    rstd: &impl DeviceSlice<f32>,
    n: usize,
    c: usize,
) -> Result<()> {
    ensure!(dinp.len() == n * c, "layernorm_backward: (N, C) tensors");
    backward_launch(gpu, "layernorm_backward", &[dinp.arg()], dweight, dbias, scratch, dout, inp, weight, mean, rstd, &[], n, c)
}

/// The backward of [`residual_layernorm_forward`]'s dropout fused into the layer norm's:
/// dres (N, C) +=, dweight (C) +=, dbias (C) += as [`layernorm_backward`] (dres is the
/// residual stream's gradient, `inp` the forward's `res`), then dbranch (N, C) =
/// `dropout_backward(dres)` with `seed` (1 u64 of device memory) and `p` (the forward's), in the same pass
/// over dres. The same values, bit for bit, as layernorm_backward + dropout_backward.
#[allow(clippy::too_many_arguments)]
pub fn residual_layernorm_backward(
    gpu: &Gpu,
    dres: &impl DeviceSlice<f32>,
    dbranch: &impl DeviceSlice<f32>,
    dweight: &impl DeviceSlice<f32>,
    dbias: &impl DeviceSlice<f32>,
    scratch: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    inp: &impl DeviceSlice<f32>,
    weight: &impl DeviceSlice<f32>,
    mean: &impl DeviceSlice<f32>,
    rstd: &impl DeviceSlice<f32>,
    seed: &impl DeviceSlice<u64>,
    p: f32,
    n: usize,
    c: usize,
) -> Result<()> {
    let what = "residual_layernorm_backward";
    ensure!(dres.len() == n * c && dbranch.len() == n * c, "{what}: dres and dbranch must be N*C = {}", n * c);
    ensure!(seed.len() == 1, "{what}: the seed is one u64 of device memory");
    ensure!(p < 1.0 && !p.is_nan(), "{what}: p = {p} must be below 1");
    let dropout: [Arg; 3] = [seed.arg(), p.into(), dropout_scale(p).into()];
    backward_launch(gpu, what, &[dres.arg(), dbranch.arg()], dweight, dbias, scratch, dout, inp, weight, mean, rstd, &dropout, n, c)
}


/// Launch `name` (layernorm_backward or residual_layernorm_backward) with its leading
/// gradient outputs `grads` (dinp, or dres and dbranch) and the dropout arguments (none,
/// or seed, p, scale) before the sizes; then layernorm_backward_reduce if the rows split.
#[allow(clippy::too_many_arguments)]
fn backward_launch(
    gpu: &Gpu,
    name: &str,
    grads: &[Arg],
    dweight: &impl DeviceSlice<f32>,
    dbias: &impl DeviceSlice<f32>,
    scratch: &impl DeviceSlice<f32>,
    dout: &impl DeviceSlice<f32>,
    inp: &impl DeviceSlice<f32>,
    weight: &impl DeviceSlice<f32>,
    mean: &impl DeviceSlice<f32>,
    rstd: &impl DeviceSlice<f32>,
    dropout: &[Arg],
    n: usize,
    c: usize,
) -> Result<()> {
    ensure!(dout.len() == n * c && inp.len() == n * c, "{name}: (N, C) tensors");
    ensure!(dweight.len() == c && dbias.len() == c && weight.len() == c, "{name}: (C) tensors");
    ensure!(mean.len() == n && rstd.len() == n, "{name}: (N) tensors");
    let need = layernorm_backward_scratch_len(n, c);
    ensure!(scratch.len() >= need, "{name}: scratch of {} floats, N={n} C={c} needs {need}", scratch.len());
    if n == 0 || c == 0 {
        return Ok(());
    }
    let (chunks, chunk_len) = layernorm_backward_chunks(n, c);
    let grid = ceil_div(c, 32) * chunks + n; // column-chunk blocks, then N row blocks
    let mut args: Vec<Arg> = grads.to_vec();
    args.extend([dweight.arg(), dbias.arg(), scratch.arg(), dout.arg(), inp.arg(), weight.arg(), mean.arg(), rstd.arg()]);
    args.extend_from_slice(dropout);
    args.extend::<[Arg; 4]>([n.into(), c.into(), chunks.into(), chunk_len.into()]);
    gpu.launch(name, grid, block_size(c), 0, &args)?;
    if chunks == 1 {
        return Ok(());
    }
    let args: [Arg; 5] = [dweight.arg(), dbias.arg(), scratch.arg(), c.into(), chunks.into()];
    gpu.launch("layernorm_backward_reduce", ceil_div(2 * c, 256), 256u32, 0, &args)
}
