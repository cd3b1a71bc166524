//! Launchers for `kernels/matmul.cu`; reference: `crate::reference::matmul`.
//! Tiled SGEMM (64x64 tiles, 256 threads); deterministic (no atomics, fixed sum order).
//! The backward's weight gradients use a deterministic split-K over the N rows (see
//! [`matmul_backward_chunks`] and the top of `kernels/matmul.cu`), with a caller-owned
//! scratch buffer of [`matmul_backward_scratch_len`] floats.
//!
//! [`Precision`]: the same launchers run the products in fp32 (the SIMT kernels above,
//! `matmul_forward` / `matmul_backward`) or on the tensor cores, TF32 or bf16 inputs with
//! f32 accumulation (`matmul_{forward,backward}_{tf32,bf16}`): [`matmul_forward_prec`],
//! [`matmul_backward_prec`]. Same tiles, blocks and split-K rule in every precision.

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use anyhow::{bail, ensure, Result};

/// Input precision of the linear layers' products. Accumulation, master weights,
/// gradients and AdamW are f32 in every precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 inputs, f32 FMAs (the SIMT kernels).
    #[default]
    Fp32,
    /// Tensor cores, inputs rounded to TF32 (10 mantissa bits, nearest, ties away).
    Tf32,
    /// Tensor cores, inputs rounded to bf16 (7 mantissa bits, nearest, ties to even).
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Tf32, Precision::Bf16];

    /// The flag / config spelling: `fp32`, `tf32`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Result<Precision> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => bail!("unknown precision '{s}' (expected fp32, tf32 or bf16)"),
        }
    }

    /// Mantissa bits of the products' inputs (23, 10, 7): the unit roundoff of an input
    /// is 2^-(bits+1).
    pub fn mantissa_bits(self) -> u32 {
        match self {
            Precision::Fp32 => 23,
            Precision::Tf32 => 10,
            Precision::Bf16 => 7,
        }
    }

    /// `x` rounded as the kernels round a product's inputs (`round_tf32` / `round_bf16`
    /// in `kernels/cudaenc.cuh`); identity for fp32.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::Fp32 => x,
            Precision::Tf32 => round_tf32(x),
            Precision::Bf16 => round_bf16(x),
        }
    }

    /// The kernel-name suffix.
    fn suffix(self) -> &'static str {
        match self {
            Precision::Fp32 => "",
            Precision::Tf32 => "_tf32",
            Precision::Bf16 => "_bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `x` to TF32 as `cvt.rna.tf32.f32`: 10 mantissa bits, nearest, ties away from zero;
/// infinities and NaN unchanged, overflow to infinity.
pub fn round_tf32(x: f32) -> f32 {
    let u = x.to_bits();
    if u & 0x7f80_0000 == 0x7f80_0000 {
        return x;
    }
    f32::from_bits(u.wrapping_add(0x1000) & 0xffff_e000)
}

/// `x` to bf16 as `cvt.rn.bf16x2.f32`: 7 mantissa bits, nearest, ties to even;
/// infinities unchanged, NaN stays NaN, overflow to infinity.
pub fn round_bf16(x: f32) -> f32 {
    let u = x.to_bits();
    if u & 0x7f80_0000 == 0x7f80_0000 {
        return if u & 0x007f_ffff != 0 { f32::from_bits(u | 0x0040_0000) } else { x };
    }
    f32::from_bits(u.wrapping_add(0x7fff + ((u >> 16) & 1)) & 0xffff_0000)
}

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

/// out (N, OC)  <-  inp (N, IC), weight (OC, IC), bias (OC) or none; fp32.
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
    matmul_forward_prec(gpu, Precision::Fp32, out, inp, weight, bias, n, ic, oc)
}

/// [`matmul_forward`] with the product's inputs in precision `prec`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_prec(
    gpu: &Gpu,
    prec: Precision,
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
    gpu.launch(&format!("matmul_forward{}", prec.suffix()), grid, THREADS, 0, &args)
}

/// dinp (N, IC) =, dweight (OC, IC) +=, dbias (OC) +=  <-  dout (N, OC), inp, weight.
/// `scratch`: at least [`matmul_backward_scratch_len`]`(n, ic, oc)` floats of workspace
/// (contents ignored and clobbered). One launch computes dinp and the weight gradients,
/// or their per-chunk partials plus a second launch (`matmul_backward_reduce`) that adds
/// the partials in chunk order; bit-identical on reruns. fp32.
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
    matmul_backward_prec(gpu, Precision::Fp32, dinp, dweight, dbias, scratch, dout, inp, weight, n, ic, oc)
}

/// [`matmul_backward`] with the products' inputs (dinp and dweight) in precision `prec`;
/// dbias and the split-K reduction are f32 sums in every precision.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_prec(
    gpu: &Gpu,
    prec: Precision,
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
    gpu.launch(&format!("matmul_backward{}", prec.suffix()), blocks, THREADS, 0, &args)?;
    if chunks == 1 {
        return Ok(());
    }
    let slab = oc * ic + oc;
    let args: [Arg; 6] = [dweight.arg(), opt_arg(dbias), scratch.arg(), ic.into(), oc.into(), chunks.into()];
    gpu.launch("matmul_backward_reduce", ceil_div(slab, THREADS as usize), THREADS, 0, &args)
}
