//! The host emulator behind [`super::Gpu`]: kernels/*.cu compiled for the CPU with the
//! shim in kernels/emu/, launched through one C entry point shaped like cuLaunchKernel.

use super::{Arg, Dim3, EmuOrder};
use anyhow::{bail, Result};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ffi::{c_char, c_int, c_void, CStr, CString};

extern "C" {
    fn cudaenc_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: usize,
        args: *mut *mut c_void,
        nargs: usize,
        arg_sizes: *const usize,
        arg_kinds: *const c_char,
        order: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn cudaenc_emu_kernel_count() -> usize;
    fn cudaenc_emu_kernel_name(i: usize) -> *const c_char;
    fn cudaenc_emu_worker_threads() -> c_int;
    fn cudaenc_emu_flavor() -> *const c_char;
}

/// Alignment of emulator allocations, like cudaMalloc's.
const ALIGN: usize = 256;

/// Host memory standing in for device memory: zeroed, 256-byte aligned.
pub(crate) struct HostMem {
    ptr: *mut u8,
    layout: Layout,
}

// The memory is only reached through the Gpu API and synchronous launches.
unsafe impl Send for HostMem {}
unsafe impl Sync for HostMem {}

impl HostMem {
    pub(crate) fn zeroed(bytes: usize) -> Result<Self> {
        let layout = Layout::from_size_align(bytes.max(1), ALIGN)?;
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("emu: out of host memory allocating {bytes} bytes");
        }
        Ok(HostMem { ptr, layout })
    }
    pub(crate) fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for HostMem {
    fn drop(&mut self) {
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

pub(crate) fn launch(name: &str, grid: Dim3, block: Dim3, shared: u32, args: &[Arg], order: EmuOrder) -> Result<()> {
    let cname = CString::new(name)?;
    let mut vals: Vec<u64> = args.iter().map(Arg::bits).collect();
    let mut ptrs: Vec<*mut c_void> = vals.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
    let sizes: Vec<usize> = args.iter().map(Arg::size).collect();
    let kinds: Vec<c_char> = args.iter().map(|a| a.kind() as c_char).collect();
    let mut err = vec![0 as c_char; 2048];
    let (g, b) = ([grid.0, grid.1, grid.2], [block.0, block.1, block.2]);
    // little-endian: a 4-byte argument is the low half of its u64 slot
    let rc = unsafe {
        cudaenc_emu_launch(
            cname.as_ptr(),
            g.as_ptr(),
            b.as_ptr(),
            shared as usize,
            ptrs.as_mut_ptr(),
            args.len(),
            sizes.as_ptr(),
            kinds.as_ptr(),
            order as c_int,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
        bail!("emu: {msg}");
    }
    Ok(())
}

/// Names of every kernel registered in the emulator, sorted.
pub fn kernel_names() -> Vec<String> {
    let n = unsafe { cudaenc_emu_kernel_count() };
    (0..n)
        .map(|i| unsafe { CStr::from_ptr(cudaenc_emu_kernel_name(i)) }.to_string_lossy().into_owned())
        .collect()
}

/// Worker threads of the emulator's pool (starts the pool).
pub fn worker_threads() -> usize {
    unsafe { cudaenc_emu_worker_threads() as usize }
}

/// How the emulator was built: the context switch, and whether ASan is on.
pub fn flavor() -> String {
    unsafe { CStr::from_ptr(cudaenc_emu_flavor()) }.to_string_lossy().into_owned()
}
