//! Rust launchers, one per kernel, written once for both devices ([`crate::device::Gpu`]).
//! Same names and argument order as `kernels/<op>.cu` and `src/reference/<op>.rs`.

pub mod adamw;
pub mod embedding;
pub mod gradnorm;
pub mod layernorm;
pub mod attention;
pub mod matmul;
pub mod gelu;
pub mod residual;
pub mod dropout;

/// Threads per block of the elementwise kernels (gelu, residual, dropout).
pub(crate) const ELEMENTWISE_THREADS: u32 = 256;

/// Grid for a grid-stride elementwise kernel over `n` elements: one thread per element,
/// capped at 4096 blocks (enough to fill any current GPU; the kernels loop beyond).
pub(crate) fn elementwise_grid(n: usize) -> usize {
    crate::device::ceil_div(n, ELEMENTWISE_THREADS as usize).clamp(1, 4096)
}
pub mod loss;
pub mod meanpool;
pub mod steptotals;
