//! Launchers for `kernels/gradnorm.cu`; reference: `crate::reference::gradnorm`.
//! The clip factor is `reference::gradnorm::clip_scale(norm, max_norm)` on the host (the
//! norm goes to the host anyway for the step statistics).

use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use anyhow::{ensure, Result};

const BLOCK: u32 = 256;
/// Most partial sums pass 1 writes; the scratch buffer needs this many (or
/// [`global_norm_blocks`] for a given N).
pub const GLOBAL_NORM_MAX_BLOCKS: usize = 1024;
/// Elements per thread before pass 1 uses another block.
const PER_THREAD: usize = 8;

/// Blocks of pass 1 (= partial sums written) for N elements: a function of N only.
pub fn global_norm_blocks(n: usize) -> usize {
    ceil_div(n, BLOCK as usize * PER_THREAD).clamp(1, GLOBAL_NORM_MAX_BLOCKS)
}

/// out (1) = sqrt(sum of grads^2)  <-  grads (N); `scratch` holds at least
/// `global_norm_blocks(N)` floats. Two passes, fixed order: bit-identical on reruns.
pub fn global_norm(gpu: &Gpu, out: &impl DeviceSlice<f32>, scratch: &impl DeviceSlice<f32>, grads: &impl DeviceSlice<f32>) -> Result<()> {
    let n = grads.len();
    let g = global_norm_blocks(n);
    ensure!(out.len() == 1, "global_norm: out holds one float");
    ensure!(scratch.len() >= g, "global_norm: scratch needs {g} floats for N={n}, has {}", scratch.len());
    let args: [Arg; 3] = [scratch.arg(), grads.arg(), n.into()];
    gpu.launch("global_norm_partial", g, BLOCK, 0, &args)?;
    let args: [Arg; 3] = [out.arg(), scratch.arg(), g.into()];
    gpu.launch("global_norm_final", 1u32, BLOCK, 0, &args)
}
