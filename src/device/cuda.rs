//! The real GPU behind [`super::Gpu`], through cudarc 0.19: the embedded PTX, loaded
//! lazily per module (with the JIT's error log, so a module the driver cannot load says
//! why), launched with cuLaunchKernel on one stream. Argument lists are checked against
//! the `.param` list of the PTX `.entry` before every launch. A process opens each device
//! once ([`Cuda::shared`]): every `Gpu` handle on it shares the context, stream and modules.

use super::{ptx, Arg, Dim3};
use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr, PinnedHostSlice};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex, OnceLock};

/// One kernel parameter as the PTX declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtxParam {
    pub bytes: usize,
    pub float: bool,
}

/// `.entry` name -> (module, parameters), from the `.param` lines of PTX text.
pub fn parse_entries(module: &'static str, text: &str, into: &mut HashMap<String, (&'static str, Vec<PtxParam>)>) {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let l = line.trim();
        let Some(rest) = l.strip_prefix(".visible .entry ").or_else(|| l.strip_prefix(".entry ")) else {
            continue;
        };
        let name = rest.split('(').next().unwrap_or("").trim().to_string();
        let mut params = Vec::new();
        let mut header = rest.to_string();
        while !header.contains(')') {
            match lines.next() {
                Some(l) => {
                    header.push(' ');
                    header.push_str(l.trim());
                }
                None => break,
            }
        }
        for p in header.split(".param").skip(1) {
            let ty = p.split_whitespace().find(|t| {
                matches!(*t, ".u8" | ".s8" | ".b8" | ".u16" | ".s16" | ".b16" | ".u32" | ".s32" | ".b32" | ".f32" | ".u64" | ".s64" | ".b64" | ".f64")
            });
            let Some(ty) = ty else { continue };
            let bytes = ty[2..].parse::<usize>().unwrap_or(0) / 8;
            params.push(PtxParam { bytes, float: ty.starts_with(".f") });
        }
        into.insert(name, (module, params));
    }
}

/// Check an argument list against a PTX parameter list; the error names the kernel.
pub fn check_args(name: &str, params: &[PtxParam], args: &[Arg]) -> Result<()> {
    if params.len() != args.len() {
        bail!("kernel '{name}': launched with {} arguments, it takes {}", args.len(), params.len());
    }
    for (i, (p, a)) in params.iter().zip(args).enumerate() {
        let float = a.kind() == b'f';
        if p.bytes != a.size() || p.float != float {
            bail!(
                "kernel '{name}': argument {i} is {a:?} ({} bytes), the PTX parameter is a {}-byte {}",
                a.size(),
                p.bytes,
                if p.float { "float" } else { "integer/pointer" }
            );
        }
    }
    Ok(())
}

pub(crate) struct Cuda {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    entries: HashMap<String, (&'static str, Vec<PtxParam>)>,
    functions: Mutex<HashMap<String, Function>>,
    modules: Mutex<HashMap<&'static str, Arc<Module>>>,
    /// The last kernel enqueued: a fault surfaces at a later synchronize, which names it.
    last_launch: Mutex<String>,
}

/// A loaded PTX module (unloaded on drop). cudarc's `CudaModule` cannot be built from a
/// module loaded with JIT options, so the raw handle is kept here.
struct Module {
    raw: sys::CUmodule,
    ctx: Arc<CudaContext>,
    /// The JIT's info log (verbose: registers and spills per kernel).
    info_log: String,
}
// SAFETY: a CUmodule handle may be used from any thread once its context is current.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}
impl Drop for Module {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        let _ = unsafe { result::module::unload(self.raw) };
    }
}

/// A kernel of a loaded module (the module is kept alive with it).
#[derive(Clone)]
struct Function {
    raw: sys::CUfunction,
    _module: Arc<Module>,
}
// SAFETY: as for Module.
unsafe impl Send for Function {}
unsafe impl Sync for Function {}

/// Load PTX text with the JIT's error and info logs; a failure carries the error log.
fn load_ptx(ctx: &Arc<CudaContext>, name: &str, text: &str) -> Result<Module> {
    const LOG: usize = 16 * 1024;
    use sys::CUjit_option_enum::*;
    ctx.bind_to_thread().map_err(|e| anyhow!("cuda: {e:?}"))?;
    let src = CString::new(text).map_err(|_| anyhow!("cuda: PTX module '{name}' contains a NUL byte"))?;
    let mut err_log = vec![0u8; LOG];
    let mut info_log = vec![0u8; LOG];
    let mut opts = [
        CU_JIT_ERROR_LOG_BUFFER,
        CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        CU_JIT_INFO_LOG_BUFFER,
        CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
        CU_JIT_LOG_VERBOSE,
    ];
    // size options are passed by value in the pointer slot (and overwritten with the bytes written)
    let mut vals: [*mut c_void; 5] = [
        err_log.as_mut_ptr() as *mut c_void,
        LOG as *mut c_void,
        info_log.as_mut_ptr() as *mut c_void,
        LOG as *mut c_void,
        1usize as *mut c_void,
    ];
    let mut raw = std::mem::MaybeUninit::uninit();
    let rc = unsafe {
        sys::cuModuleLoadDataEx(raw.as_mut_ptr(), src.as_ptr() as *const c_void, opts.len() as u32, opts.as_mut_ptr(), vals.as_mut_ptr())
    };
    let text_of = |buf: &[u8]| String::from_utf8_lossy(buf.split(|&b| b == 0).next().unwrap_or(&[])).trim().to_string();
    if rc != sys::CUresult::CUDA_SUCCESS {
        let log = text_of(&err_log);
        bail!(
            "cuda: the driver cannot load PTX module '{name}' ({}, built by nvcc {}): {rc:?}{}",
            ptx::PTX_ARCH,
            ptx::NVCC_VERSION,
            if log.is_empty() { String::new() } else { format!("\nJIT error log:\n{log}") }
        );
    }
    Ok(Module { raw: unsafe { raw.assume_init() }, ctx: ctx.clone(), info_log: text_of(&info_log) })
}

/// What the driver reports for one kernel after loading its module (`cudaenc info --load`).
#[derive(Clone, Debug)]
pub struct KernelInfo {
    pub module: &'static str,
    pub name: String,
    pub registers: i32,
    pub local_bytes: i32,
    pub static_shared_bytes: i32,
    pub max_threads_per_block: i32,
}

/// The devices this process has opened, by ordinal: one context, stream and module set each.
static OPENED: OnceLock<Mutex<HashMap<usize, Arc<Cuda>>>> = OnceLock::new();

/// An instantiated CUDA graph, launched on the stream it was captured on.
pub(crate) struct Graph(cudarc::driver::CudaGraph);

impl Graph {
    pub(crate) fn launch(&self) -> Result<()> {
        self.0.launch().map_err(|e| anyhow!("cuda: graph launch failed: {e:?}"))
    }
}

/// Device memory: the allocation and its address.
pub(crate) struct DevMem {
    _slice: CudaSlice<u8>,
    addr: u64,
}
impl DevMem {
    pub(crate) fn addr(&self) -> u64 {
        self.addr
    }
}

/// Page-locked host memory for staged uploads (`super::staging`), with an event recorded
/// after each copy out of it, so that it is not overwritten while that copy may still run.
pub(crate) struct Pinned {
    host: PinnedHostSlice<u8>,
    copied: CudaEvent,
}

impl Pinned {
    pub(crate) fn len(&self) -> usize {
        self.host.len()
    }
    /// Wait on the host until the last copy out of this memory has finished; true if it
    /// had not yet (the wait was real).
    pub(crate) fn wait_for_copy(&self) -> Result<bool> {
        self.copied.context().bind_to_thread().map_err(|e| anyhow!("cuda: {e:?}"))?;
        let pending = !self.copied.try_is_complete().map_err(|e| anyhow!("cuda: staging event: {e:?}"))?;
        if pending {
            self.copied.synchronize().map_err(|e| anyhow!("cuda: staging event: {e:?}"))?;
        }
        Ok(pending)
    }
    /// The memory, for packing; call [`Pinned::wait_for_copy`] first.
    pub(crate) fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        // cudarc's own event of the slice is never recorded (we record `copied`): no wait
        self.host.as_mut_slice().map_err(|e| anyhow!("cuda: pinned memory: {e:?}"))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // the memory is freed right after this: its last copy must have finished
        let _ = self.copied.synchronize();
    }
}

/// Why there is no usable CUDA device, or None when there is one (does not panic).
pub fn unavailable_reason() -> Option<String> {
    if !unsafe { sys::is_culib_present() } {
        return Some("no CUDA driver library (libcuda.so) found".into());
    }
    match CudaContext::device_count() {
        Ok(0) => Some("the CUDA driver reports no device".into()),
        Ok(_) => None,
        Err(e) => Some(format!("the CUDA driver reports {e:?}")),
    }
}

pub(crate) fn no_ptx_error() -> anyhow::Error {
    anyhow!(
        "this cudaenc was built without PTX (no nvcc found at build time). Run \
         scripts/install-cuda-toolchain (or set NVCC / CUDA_HOME to a CUDA toolkit), then rebuild with cargo"
    )
}

impl Cuda {
    /// Device `ordinal`, opened on the first call and shared by every later one (a process
    /// creates its CUDA context, stream and modules once).
    pub(crate) fn shared(ordinal: usize) -> Result<Arc<Cuda>> {
        let mut opened = OPENED.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = opened.get(&ordinal) {
            return Ok(c.clone());
        }
        let c = Arc::new(Cuda::new(ordinal)?);
        opened.insert(ordinal, c.clone());
        Ok(c)
    }

    fn new(ordinal: usize) -> Result<Self> {
        if let Some(why) = unavailable_reason() {
            bail!("cuda: {why}");
        }
        if ptx::PTX_MODULES.is_empty() {
            return Err(no_ptx_error());
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| anyhow!("cuda: cannot open device {ordinal}: {e:?}"))?;
        // a stream of our own, not the legacy default stream: CUDA cannot capture a graph
        // on the default stream (`Gpu::capture`); every operation goes to this one stream
        let stream = ctx.new_stream().map_err(|e| anyhow!("cuda: cannot create a stream on device {ordinal}: {e:?}"))?;
        let mut entries = HashMap::new();
        for (m, text) in ptx::PTX_MODULES {
            parse_entries(m, text, &mut entries);
        }
        Ok(Cuda {
            ctx,
            stream,
            entries,
            functions: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            last_launch: Mutex::new(String::new()),
        })
    }

    pub(crate) fn name(&self) -> String {
        let cc = self.ctx.compute_capability().map(|(a, b)| format!(" (sm_{a}{b})")).unwrap_or_default();
        format!("{}{}", self.ctx.name().unwrap_or_else(|_| "CUDA device".into()), cc)
    }

    fn module(&self, module: &'static str) -> Result<Arc<Module>> {
        let mut mods = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = mods.get(module) {
            return Ok(m.clone());
        }
        let text = ptx::PTX_MODULES.iter().find(|(n, _)| *n == module).ok_or_else(|| anyhow!("cuda: no PTX module '{module}'"))?.1;
        let m = Arc::new(load_ptx(&self.ctx, module, text)?);
        mods.insert(module, m.clone());
        Ok(m)
    }

    fn function(&self, name: &str, module: &'static str) -> Result<Function> {
        if let Some(f) = self.functions.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(f.clone());
        }
        let m = self.module(module)?;
        let cname = CString::new(name).map_err(|_| anyhow!("kernel '{name}': bad name"))?;
        let raw = unsafe { result::module::get_function(m.raw, cname) }
            .map_err(|e| anyhow!("kernel '{name}': not found in loaded module '{module}': {e:?}"))?;
        let f = Function { raw, _module: m };
        self.functions.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// Load every embedded module (each with the JIT's error log) and read each kernel's
    /// registers, local memory, static shared memory and max threads per block. Returns
    /// the kernels, and per module the JIT info log; the first module that fails to load
    /// is an error carrying its log.
    pub(crate) fn load_all(&self) -> Result<(Vec<KernelInfo>, Vec<(&'static str, String)>)> {
        use sys::CUfunction_attribute_enum::*;
        let mut kernels = Vec::new();
        let mut logs = Vec::new();
        let mut names: Vec<(&String, &'static str)> = self.entries.iter().map(|(k, (m, _))| (k, *m)).collect();
        names.sort_by_key(|(k, m)| (*m, k.as_str()));
        for (m, _) in ptx::PTX_MODULES {
            logs.push((*m, self.module(m)?.info_log.clone()));
        }
        for (name, module) in names {
            let f = self.function(name, module)?;
            let attr = |a| unsafe { result::function::get_function_attribute(f.raw, a) }.map_err(|e| anyhow!("kernel '{name}': attribute {a:?}: {e:?}"));
            kernels.push(KernelInfo {
                module,
                name: name.clone(),
                registers: attr(CU_FUNC_ATTRIBUTE_NUM_REGS)?,
                local_bytes: attr(CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
                static_shared_bytes: attr(CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?,
                max_threads_per_block: attr(CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            });
        }
        Ok((kernels, logs))
    }

    pub(crate) fn launch(&self, name: &str, grid: Dim3, block: Dim3, shared: u32, args: &[Arg]) -> Result<()> {
        let (module, params) =
            self.entries.get(name).ok_or_else(|| anyhow!("kernel '{name}': no such kernel in the embedded PTX"))?;
        check_args(name, params, args)?;
        let f = self.function(name, module)?;
        self.ctx.bind_to_thread().map_err(|e| anyhow!("cuda: {e:?}"))?;
        if shared > 48 * 1024 {
            // above 48 KiB a kernel must opt in to dynamic shared memory (Volta and later)
            use cudarc::driver::sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as MAX_DYN;
            unsafe { result::function::set_function_attribute(f.raw, MAX_DYN, shared as i32) }
                .map_err(|e| anyhow!("kernel '{name}': {shared} bytes of dynamic shared memory refused: {e:?}"))?;
        }
        {
            let mut last = self.last_launch.lock().unwrap_or_else(|p| p.into_inner());
            last.clear();
            last.push_str(name);
        }
        let mut vals: Vec<u64> = args.iter().map(Arg::bits).collect();
        let mut ptrs: Vec<*mut c_void> = vals.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
        unsafe {
            result::launch_kernel(
                f.raw,
                (grid.0, grid.1, grid.2),
                (block.0, block.1, block.2),
                shared,
                self.stream.cu_stream(),
                &mut ptrs,
            )
        }
        .map_err(|e| anyhow!("kernel '{name}': launch failed: {e:?}"))
    }

    pub(crate) fn alloc_zeroed(&self, bytes: usize) -> Result<DevMem> {
        let slice = self.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(|e| anyhow!("cuda: alloc {bytes} bytes: {e:?}"))?;
        let addr = {
            let (p, _sync) = slice.device_ptr(&self.stream);
            p
        };
        Ok(DevMem { _slice: slice, addr })
    }

    pub(crate) fn htod(&self, addr: u64, src: &[u8]) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| anyhow!("cuda: {e:?}"))?;
        unsafe { result::memcpy_htod_async(addr, src, self.stream.cu_stream()) }.map_err(|e| anyhow!("cuda: upload: {e:?}"))?;
        self.synchronize() // the host slice may go away right after
    }

    /// Page-locked host memory of `bytes` (plain, not write-combined: no GPU has measured
    /// whether write-combining helps these small uploads).
    pub(crate) fn alloc_pinned(&self, bytes: usize) -> Result<Pinned> {
        let fail = |e| anyhow!("cuda: cannot allocate {bytes} bytes of page-locked host memory: {e:?}");
        // SAFETY: the memory is uninitialized; the staging code writes every byte it copies
        let host = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(bytes.max(1), 0) }.map_err(fail)?;
        let copied = self.ctx.new_event(None).map_err(fail)?;
        Ok(Pinned { host, copied })
    }

    /// Enqueue one copy of the first `bytes` of `src` to device address `dst` and record
    /// `src`'s event after it. No host wait: `src` must not be written until
    /// [`Pinned::wait_for_copy`] says the copy is done.
    pub(crate) fn htod_pinned(&self, dst: u64, src: &mut Pinned, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(|e| anyhow!("cuda: {e:?}"))?;
        let host = &src.as_mut_slice()?[..bytes];
        // SAFETY: `host` is page-locked and stays alive (and unwritten) until `copied`
        // completes: the staging code waits on it before writing or freeing the memory.
        unsafe { result::memcpy_htod_async(dst, host, self.stream.cu_stream()) }.map_err(|e| anyhow!("cuda: staged upload: {e:?}"))?;
        src.copied.record(&self.stream).map_err(|e| anyhow!("cuda: staging event: {e:?}"))
    }

    pub(crate) fn dtoh(&self, dst: &mut [u8], addr: u64) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| anyhow!("cuda: {e:?}"))?;
        unsafe { result::memcpy_dtoh_async(dst, addr, self.stream.cu_stream()) }.map_err(|e| anyhow!("cuda: download: {e:?}"))?;
        self.synchronize()
    }

    pub(crate) fn memset_zero(&self, addr: u64, bytes: usize) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| anyhow!("cuda: {e:?}"))?;
        unsafe { result::memset_d8_async(addr, 0, bytes, self.stream.cu_stream()) }.map_err(|e| anyhow!("cuda: memset: {e:?}"))
    }

    /// Capture what `f` enqueues on the stream into an instantiated CUDA graph (relaxed
    /// mode: the kernels' modules may load during the capture). The capture is ended even
    /// when `f` fails, so the stream is usable afterwards.
    pub(crate) fn capture(&self, f: impl FnOnce() -> Result<()>) -> Result<Graph> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(|e| anyhow!("cuda: cannot begin a graph capture: {e:?}"))?;
        let body = f();
        let ended = self.stream.end_capture(CUgraphInstantiate_flags(0));
        body.context("cuda: while capturing a graph")?;
        match ended.map_err(|e| anyhow!("cuda: graph capture failed: {e:?}"))? {
            Some(graph) => Ok(Graph(graph)),
            None => bail!("cuda: the graph capture recorded nothing"),
        }
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().with_context(|| {
            let last = self.last_launch.lock().unwrap_or_else(|p| p.into_inner()).clone();
            format!(
                "cuda: synchronize: an earlier kernel failed (the last one enqueued was '{last}'; \
                 with CUDA_LAUNCH_BLOCKING=1 the failing launch itself reports its kernel)"
            )
        })
    }

    /// Milliseconds of GPU time spent on the work `f` enqueues (CUDA events).
    pub(crate) fn time_ms(&self, f: impl FnOnce() -> Result<()>) -> Result<f64> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT); // the default disables timing
        let start = self.ctx.new_event(flags).map_err(|e| anyhow!("cuda: event: {e:?}"))?;
        let end = self.ctx.new_event(flags).map_err(|e| anyhow!("cuda: event: {e:?}"))?;
        start.record(&self.stream).map_err(|e| anyhow!("cuda: event: {e:?}"))?;
        f()?;
        end.record(&self.stream).map_err(|e| anyhow!("cuda: event: {e:?}"))?;
        end.synchronize().map_err(|e| anyhow!("cuda: event: {e:?}"))?;
        Ok(start.elapsed_ms(&end).map_err(|e| anyhow!("cuda: event: {e:?}"))? as f64)
    }
}
