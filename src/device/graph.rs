//! A captured sequence of device operations, replayed as a whole: a CUDA graph on cuda,
//! the recorded list on the emulator (see [`super::Gpu::capture`]).
//!
//! The training step is captured once per batch shape and replayed for every later batch
//! of that shape (`model::GpuEngine` with `--cuda-graphs`): one graph launch instead of
//! about 15 + 12 L kernel launches. A replay repeats every argument bit of the capture, so
//! what changes between steps (the batch, dropout seeds, learning rate, step number, the
//! embedding backward's U and M) is read by the kernels from device memory that the
//! batch upload rewrites at the same address.

use super::{Arg, Dim3, Gpu};
use anyhow::Result;

/// One captured operation.
#[derive(Clone, Debug, PartialEq)]
pub enum GraphOp {
    /// A kernel launch with its argument values.
    Launch { name: String, grid: Dim3, block: Dim3, shared_bytes: u32, args: Vec<Arg> },
    /// A memset to zero of `bytes` bytes at `addr`.
    Zero { addr: u64, bytes: usize },
}

enum Inner {
    Emu(Vec<GraphOp>),
    Cuda(super::cuda::Graph),
}

/// A captured step (see [`super::Gpu::capture`]); replay with [`super::Gpu::launch_graph`].
pub struct StepGraph {
    inner: Inner,
}

impl StepGraph {
    pub(super) fn emu(ops: Vec<GraphOp>) -> StepGraph {
        StepGraph { inner: Inner::Emu(ops) }
    }
    pub(super) fn cuda(g: super::cuda::Graph) -> StepGraph {
        StepGraph { inner: Inner::Cuda(g) }
    }

    /// The recorded operations (emu), in order; None for a CUDA graph.
    pub fn ops(&self) -> Option<&[GraphOp]> {
        match &self.inner {
            Inner::Emu(ops) => Some(ops),
            Inner::Cuda(_) => None,
        }
    }

    pub(super) fn launch_on(&self, gpu: &Gpu) -> Result<()> {
        match &self.inner {
            Inner::Emu(ops) => {
                for op in ops {
                    match op {
                        GraphOp::Launch { name, grid, block, shared_bytes, args } => {
                            gpu.launch(name, *grid, *block, *shared_bytes, args)?
                        }
                        GraphOp::Zero { addr, bytes } => gpu.zero_bytes(*addr, *bytes)?,
                    }
                }
                Ok(())
            }
            Inner::Cuda(g) => g.launch(),
        }
    }
}
