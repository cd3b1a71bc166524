//! The real GPU behind [`super::Gpu`], through cudarc 0.19: the embedded PTX, loaded
//! lazily per module, launched with cuLaunchKernel on one stream. Argument lists are
//! checked against the `.param` list of the PTX `.entry` before every launch.

use super::{ptx, Arg, Dim3};
use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

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
    functions: Mutex<HashMap<String, CudaFunction>>,
    modules: Mutex<HashMap<&'static str, Arc<cudarc::driver::CudaModule>>>,
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
    pub(crate) fn new(ordinal: usize) -> Result<Self> {
        if let Some(why) = unavailable_reason() {
            bail!("cuda: {why}");
        }
        if ptx::PTX_MODULES.is_empty() {
            return Err(no_ptx_error());
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| anyhow!("cuda: cannot open device {ordinal}: {e:?}"))?;
        let stream = ctx.default_stream();
        let mut entries = HashMap::new();
        for (m, text) in ptx::PTX_MODULES {
            parse_entries(m, text, &mut entries);
        }
        Ok(Cuda { ctx, stream, entries, functions: Mutex::new(HashMap::new()), modules: Mutex::new(HashMap::new()) })
    }

    pub(crate) fn name(&self) -> String {
        let cc = self.ctx.compute_capability().map(|(a, b)| format!(" (sm_{a}{b})")).unwrap_or_default();
        format!("{}{}", self.ctx.name().unwrap_or_else(|_| "CUDA device".into()), cc)
    }

    fn function(&self, name: &str, module: &'static str) -> Result<CudaFunction> {
        let mut fns = self.functions.lock().unwrap();
        if let Some(f) = fns.get(name) {
            return Ok(f.clone());
        }
        let mut mods = self.modules.lock().unwrap();
        let m = match mods.get(module) {
            Some(m) => m.clone(),
            None => {
                let text = ptx::PTX_MODULES.iter().find(|(n, _)| *n == module).unwrap().1;
                let m = self
                    .ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(text))
                    .map_err(|e| anyhow!("cuda: loading PTX module '{module}' ({}): {e:?}", ptx::PTX_ARCH))?;
                mods.insert(module, m.clone());
                m
            }
        };
        let f = m.load_function(name).map_err(|e| anyhow!("kernel '{name}': {e:?}"))?;
        fns.insert(name.to_string(), f.clone());
        Ok(f)
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
            f.set_attribute(MAX_DYN, shared as i32)
                .map_err(|e| anyhow!("kernel '{name}': {shared} bytes of dynamic shared memory refused: {e:?}"))?;
        }
        let mut vals: Vec<u64> = args.iter().map(Arg::bits).collect();
        let mut ptrs: Vec<*mut c_void> = vals.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
        unsafe {
            result::launch_kernel(
                f.cu_function(),
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

    pub(crate) fn dtoh(&self, dst: &mut [u8], addr: u64) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| anyhow!("cuda: {e:?}"))?;
        unsafe { result::memcpy_dtoh_async(dst, addr, self.stream.cu_stream()) }.map_err(|e| anyhow!("cuda: download: {e:?}"))?;
        self.synchronize()
    }

    pub(crate) fn memset_zero(&self, addr: u64, bytes: usize) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| anyhow!("cuda: {e:?}"))?;
        unsafe { result::memset_d8_async(addr, 0, bytes, self.stream.cu_stream()) }.map_err(|e| anyhow!("cuda: memset: {e:?}"))
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().context("cuda: synchronize (an earlier kernel may have failed)")
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
