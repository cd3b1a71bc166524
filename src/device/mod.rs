//! One device API over the real GPU (`cuda`, through cudarc) and the host emulator
//! (`emu`): buffers, copies and one checked launch path that every op uses, so an op's
//! launcher is written once and runs on both.
//!
//! ```no_run
//! # use cudaenc::device::{Gpu, Arg};
//! # fn f(gpu: &Gpu) -> anyhow::Result<()> {
//! let x = gpu.upload(&[1.0f32, 2.0, 3.0])?;
//! let y = gpu.zeros::<f32>(3)?;
//! gpu.launch("my_kernel", 1u32, 32u32, 0, &[y.arg(), x.arg(), 3usize.into()])?;
//! let host: Vec<f32> = gpu.download(&y)?;
//! # Ok(()) }
//! ```

pub mod cuda;
pub mod emu;
mod graph;
mod staging;

pub use graph::{GraphOp, StepGraph};
pub use staging::{Packing, Staging, PART_ALIGN};

use anyhow::{bail, Result};
use bytemuck::Pod;
use std::marker::PhantomData;

/// What build.rs embedded: the nvcc it used, the PTX arch and every module's PTX.
pub mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// `--device`: where the compute runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// cuda if a driver and a device are present, else cpu (with a notice)
    Auto,
    /// the real GPU (PTX through the CUDA driver)
    Cuda,
    /// the same kernels on the CPU, through the host emulator (slow; for tests)
    Emu,
    /// the plain Rust CPU reference
    Cpu,
}

/// Order in which the emulator runs the fibers (CUDA threads) of a block. Running tests
/// under both orders exposes missing barriers that one order hides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmuOrder {
    Forward = 0,
    Reverse = 1,
}

impl EmuOrder {
    /// `CUDAENC_EMU_ORDER=reverse` selects Reverse; anything else (or unset) Forward.
    pub fn from_env() -> Self {
        match std::env::var("CUDAENC_EMU_ORDER").as_deref() {
            Ok("reverse") | Ok("rev") | Ok("1") => EmuOrder::Reverse,
            _ => EmuOrder::Forward,
        }
    }
}

/// A kernel argument: a value passed to the kernel exactly as the `.cu` parameter.
/// Pointers come from [`Buf::arg`] / [`View::arg`]; numbers convert with `.into()`
/// (`usize` becomes an `int`, the type of every size parameter).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// a device address (`float*`, `const int*`, ...)
    Ptr(u64),
    I32(i32),
    U32(u32),
    F32(f32),
    U64(u64),
}

impl Arg {
    /// Size of the parameter in bytes.
    pub fn size(&self) -> usize {
        match self {
            Arg::Ptr(_) | Arg::U64(_) => 8,
            _ => 4,
        }
    }
    /// 'p' pointer, 'f' float, 'i' integer (the emulator registry's kinds).
    pub fn kind(&self) -> u8 {
        match self {
            Arg::Ptr(_) => b'p',
            Arg::F32(_) => b'f',
            _ => b'i',
        }
    }
    /// The value's bytes in the low bytes of a u64 (little-endian).
    pub(crate) fn bits(&self) -> u64 {
        match *self {
            Arg::Ptr(v) | Arg::U64(v) => v,
            Arg::I32(v) => v as u32 as u64,
            Arg::U32(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
        }
    }
}

impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Arg::I32(v)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::U32(v)
    }
}
impl From<f32> for Arg {
    fn from(v: f32) -> Self {
        Arg::F32(v)
    }
}
impl From<u64> for Arg {
    fn from(v: u64) -> Self {
        Arg::U64(v)
    }
}
impl From<usize> for Arg {
    /// Sizes are `int` in kernels. Panics above i32::MAX (no kernel takes such a size).
    fn from(v: usize) -> Self {
        Arg::I32(i32::try_from(v).expect("size does not fit a kernel's int parameter"))
    }
}

/// Grid or block dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3(pub u32, pub u32, pub u32);
impl From<u32> for Dim3 {
    fn from(x: u32) -> Self {
        Dim3(x, 1, 1)
    }
}
impl From<usize> for Dim3 {
    fn from(x: usize) -> Self {
        Dim3(u32::try_from(x).expect("grid/block dimension overflows u32"), 1, 1)
    }
}
impl From<(u32, u32)> for Dim3 {
    fn from((x, y): (u32, u32)) -> Self {
        Dim3(x, y, 1)
    }
}
impl From<(u32, u32, u32)> for Dim3 {
    fn from((x, y, z): (u32, u32, u32)) -> Self {
        Dim3(x, y, z)
    }
}

/// ceil(a / b), for grid sizes.
pub fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

enum Mem {
    Emu(emu::HostMem),
    Cuda(cuda::DevMem),
}

/// A device buffer of `len` elements of `T`, zeroed on allocation. Freed on drop.
pub struct Buf<T: Pod> {
    mem: Mem,
    len: usize,
    _t: PhantomData<T>,
}

/// A window of `len` elements of a buffer, at an element offset (e.g. one named
/// parameter inside the flat parameter buffer). Borrows the buffer.
#[derive(Clone, Copy)]
pub struct View<'a, T: Pod> {
    addr: u64,
    len: usize,
    _t: PhantomData<&'a T>,
}

/// Device memory of `T`: a whole [`Buf`] or a [`View`].
pub trait DeviceSlice<T: Pod> {
    fn addr(&self) -> u64;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The kernel argument pointing at the first element.
    fn arg(&self) -> Arg {
        Arg::Ptr(self.addr())
    }
}

impl<T: Pod> DeviceSlice<T> for Buf<T> {
    fn addr(&self) -> u64 {
        match &self.mem {
            Mem::Emu(m) => m.addr(),
            Mem::Cuda(m) => m.addr(),
        }
    }
    fn len(&self) -> usize {
        self.len
    }
}
impl<T: Pod> DeviceSlice<T> for View<'_, T> {
    fn addr(&self) -> u64 {
        self.addr
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl<T: Pod> Buf<T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The kernel argument pointing at this buffer.
    pub fn arg(&self) -> Arg {
        DeviceSlice::arg(self)
    }
    /// Elements `offset .. offset + len`. Panics when out of range (a layout bug).
    pub fn view(&self, offset: usize, len: usize) -> View<'_, T> {
        assert!(offset + len <= self.len, "view {offset}+{len} out of a buffer of {}", self.len);
        View { addr: self.addr() + (offset * std::mem::size_of::<T>()) as u64, len, _t: PhantomData }
    }
}

impl<'a, T: Pod> View<'a, T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn arg(&self) -> Arg {
        Arg::Ptr(self.addr)
    }
    /// A sub-window of this view.
    pub fn view(&self, offset: usize, len: usize) -> View<'a, T> {
        assert!(offset + len <= self.len, "view {offset}+{len} out of a view of {}", self.len);
        View { addr: self.addr + (offset * std::mem::size_of::<T>()) as u64, len, _t: PhantomData }
    }
}

#[derive(Clone)]
enum Backend {
    Emu(EmuOrder),
    Cuda(std::sync::Arc<cuda::Cuda>),
}

/// A device that runs the kernels of `kernels/*.cu`: the real GPU or the emulator.
/// Launches go in order (one stream); downloads wait for them. Clones (and every
/// `Gpu::cuda` of the same ordinal in one process) share the CUDA context and stream.
#[derive(Clone)]
pub struct Gpu {
    backend: Backend,
    /// Emu only, inside [`Gpu::capture`]: launches and memsets are recorded here instead
    /// of run (as a CUDA stream capture records them), anything else is refused.
    recorder: Option<std::sync::Arc<std::sync::Mutex<Vec<GraphOp>>>>,
}

impl Gpu {
    /// The host emulator, fiber order from `CUDAENC_EMU_ORDER` (default forward).
    pub fn emu() -> Gpu {
        Gpu { backend: Backend::Emu(EmuOrder::from_env()), recorder: None }
    }
    /// The host emulator with an explicit fiber order.
    pub fn emu_with_order(order: EmuOrder) -> Gpu {
        Gpu { backend: Backend::Emu(order), recorder: None }
    }
    /// The real GPU `ordinal`. Errors (never panics) without a driver, device or PTX.
    /// The context is created on the first call and shared by every later handle.
    pub fn cuda(ordinal: usize) -> Result<Gpu> {
        Ok(Gpu { backend: Backend::Cuda(cuda::Cuda::shared(ordinal)?), recorder: None })
    }
    /// Open `kind`: Some(gpu) for cuda and emu, None for cpu. Auto picks cuda when a
    /// driver, a device and PTX are present, else cpu with a one-line notice on stderr.
    pub fn open(kind: DeviceKind) -> Result<Option<Gpu>> {
        match kind {
            DeviceKind::Cuda => Gpu::cuda(0).map(Some),
            DeviceKind::Emu => Ok(Some(Gpu::emu())),
            DeviceKind::Cpu => Ok(None),
            DeviceKind::Auto => match Gpu::cuda(0) {
                Ok(g) => Ok(Some(g)),
                Err(e) => {
                    eprintln!("cudaenc: no usable CUDA device ({e:#}); using --device cpu");
                    Ok(None)
                }
            },
        }
    }
    /// A real GPU if one is usable, else None with the reason (for tests that skip).
    pub fn cuda_if_present() -> std::result::Result<Gpu, String> {
        if let Some(why) = cuda::unavailable_reason() {
            return Err(why);
        }
        Gpu::cuda(0).map_err(|e| format!("{e:#}"))
    }

    /// cuda: load every embedded PTX module with the JIT's error log and read each
    /// kernel's attributes (`cudaenc info --load`); the JIT info log per module. Emu: None.
    pub fn load_all_modules(&self) -> Result<Option<(Vec<cuda::KernelInfo>, Vec<(&'static str, String)>)>> {
        match &self.backend {
            Backend::Emu(_) => Ok(None),
            Backend::Cuda(c) => c.load_all().map(Some),
        }
    }

    /// cuda: the raw handle of the one stream every operation of this device goes to, for
    /// a library call that must run in order with our launches and events (cuBLAS in the
    /// benchmarks); None on emu.
    pub fn cuda_stream(&self) -> Option<cudarc::driver::sys::CUstream> {
        match &self.backend {
            Backend::Emu(_) => None,
            Backend::Cuda(c) => Some(c.stream.cu_stream()),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self.backend, Backend::Cuda(_))
    }
    /// "emu (forward)" or the GPU's name.
    pub fn name(&self) -> String {
        match &self.backend {
            Backend::Emu(o) => format!("emu ({})", if *o == EmuOrder::Forward { "forward" } else { "reverse" }),
            Backend::Cuda(c) => c.name(),
        }
    }
    /// Change the emulator's fiber order (no effect on cuda).
    pub fn set_emu_order(&mut self, order: EmuOrder) {
        if let Backend::Emu(o) = &mut self.backend {
            *o = order;
        }
    }

    /// A zeroed buffer of `n` elements.
    pub fn zeros<T: Pod>(&self, n: usize) -> Result<Buf<T>> {
        self.not_capturing("an allocation")?;
        let bytes = n * std::mem::size_of::<T>();
        let mem = match &self.backend {
            Backend::Emu(_) => Mem::Emu(emu::HostMem::zeroed(bytes)?),
            Backend::Cuda(c) => Mem::Cuda(c.alloc_zeroed(bytes)?),
        };
        Ok(Buf { mem, len: n, _t: PhantomData })
    }
    /// A new buffer holding a copy of `host`.
    pub fn upload<T: Pod>(&self, host: &[T]) -> Result<Buf<T>> {
        let b = self.zeros::<T>(host.len())?;
        self.write(&b, host)?;
        Ok(b)
    }
    /// Copy `host` into existing device memory of the same length.
    pub fn write<T: Pod>(&self, dst: &impl DeviceSlice<T>, host: &[T]) -> Result<()> {
        self.not_capturing("a host-to-device copy")?;
        if dst.len() != host.len() {
            bail!("write: {} elements into device memory of {}", host.len(), dst.len());
        }
        let bytes: &[u8] = bytemuck::cast_slice(host);
        match &self.backend {
            Backend::Emu(_) => unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.addr() as *mut u8, bytes.len());
                Ok(())
            },
            Backend::Cuda(c) => c.htod(dst.addr(), bytes),
        }
    }
    /// Wait for the launches so far, then copy device memory to a new Vec.
    pub fn download<T: Pod>(&self, src: &impl DeviceSlice<T>) -> Result<Vec<T>> {
        self.not_capturing("a download")?;
        let mut v = vec![T::zeroed(); src.len()];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
        match &self.backend {
            Backend::Emu(_) => unsafe {
                std::ptr::copy_nonoverlapping(src.addr() as *const u8, bytes.as_mut_ptr(), bytes.len());
            },
            Backend::Cuda(c) => c.dtoh(bytes, src.addr())?,
        }
        Ok(v)
    }
    /// Set device memory to zero (in launch order).
    pub fn zero<T: Pod>(&self, dst: &impl DeviceSlice<T>) -> Result<()> {
        self.zero_bytes(dst.addr(), dst.len() * std::mem::size_of::<T>())
    }

    /// Set `bytes` bytes of device memory at `addr` to zero (in launch order).
    fn zero_bytes(&self, addr: u64, bytes: usize) -> Result<()> {
        if let Some(rec) = &self.recorder {
            rec.lock().unwrap_or_else(|p| p.into_inner()).push(GraphOp::Zero { addr, bytes });
            return Ok(());
        }
        match &self.backend {
            Backend::Emu(_) => unsafe {
                std::ptr::write_bytes(addr as *mut u8, 0, bytes);
                Ok(())
            },
            Backend::Cuda(c) => c.memset_zero(addr, bytes),
        }
    }

    /// Launch kernel `name` (as in kernels/*.cu) with the argument list checked against
    /// the kernel's parameters: count, sizes, and float vs integer/pointer. A mismatch,
    /// an unknown kernel or (emu) a barrier/shuffle error is an `Err` naming the kernel.
    /// On emu the launch has finished when this returns; on cuda it is enqueued.
    pub fn launch(&self, name: &str, grid: impl Into<Dim3>, block: impl Into<Dim3>, shared_bytes: u32, args: &[Arg]) -> Result<()> {
        let (grid, block) = (grid.into(), block.into());
        if let Some(rec) = &self.recorder {
            if !emu::kernel_names().iter().any(|k| k == name) {
                bail!("kernel '{name}': no such kernel in the emulator");
            }
            let op = GraphOp::Launch { name: name.to_string(), grid, block, shared_bytes, args: args.to_vec() };
            rec.lock().unwrap_or_else(|p| p.into_inner()).push(op);
            return Ok(());
        }
        match &self.backend {
            Backend::Emu(order) => emu::launch(name, grid, block, shared_bytes, args, *order),
            Backend::Cuda(c) => c.launch(name, grid, block, shared_bytes, args),
        }
    }

    /// Wait until every launch so far has finished (reports asynchronous kernel errors).
    pub fn synchronize(&self) -> Result<()> {
        self.not_capturing("a synchronize")?;
        match &self.backend {
            Backend::Emu(_) => Ok(()),
            Backend::Cuda(c) => c.synchronize(),
        }
    }

    /// An error while [`Gpu::capture`] records (emu): only launches and memsets may be
    /// captured, as in a CUDA stream capture.
    fn not_capturing(&self, what: &str) -> Result<()> {
        if self.recorder.is_some() {
            bail!("{what} inside a captured step: only launches and memsets can be captured");
        }
        Ok(())
    }

    /// Capture the launches and memsets `f` enqueues on the `Gpu` it is given into a
    /// [`StepGraph`], without running them; [`StepGraph::launch`] then runs them all, as
    /// often as wanted, with the arguments they had (addresses, sizes, grids): whatever
    /// must change between replays has to be in device memory. cuda: a stream capture
    /// (cudarc's `begin_capture` / `end_capture`, relaxed mode) instantiated as a CUDA
    /// graph. emu: the operations recorded in order and replayed one by one, so the emulator
    /// checks the same property the GPU relies on. Allocations, copies, downloads and
    /// synchronizes inside `f` are errors on emu (and break the capture on cuda).
    pub fn capture(&self, f: impl FnOnce(&Gpu) -> Result<()>) -> Result<StepGraph> {
        anyhow::ensure!(self.recorder.is_none(), "capture inside a capture");
        match &self.backend {
            Backend::Emu(_) => {
                let rec = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
                let g = Gpu { backend: self.backend.clone(), recorder: Some(rec.clone()) };
                f(&g)?;
                drop(g);
                let ops = std::mem::take(&mut *rec.lock().unwrap_or_else(|p| p.into_inner()));
                Ok(StepGraph::emu(ops))
            }
            Backend::Cuda(c) => Ok(StepGraph::cuda(c.capture(|| f(self))?)),
        }
    }

    /// Run a captured graph once (in launch order, after everything enqueued before).
    pub fn launch_graph(&self, graph: &StepGraph) -> Result<()> {
        self.not_capturing("a graph launch")?;
        graph.launch_on(self)
    }

    /// Milliseconds the work enqueued by `f` takes: CUDA events on cuda, the wall clock on emu.
    pub fn time_ms(&self, f: impl FnOnce() -> Result<()>) -> Result<f64> {
        match &self.backend {
            Backend::Emu(_) => {
                let t = std::time::Instant::now();
                f()?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            }
            Backend::Cuda(c) => c.time_ms(f),
        }
    }
}
