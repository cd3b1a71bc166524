//! `cudaenc info`: what this build and this machine can run.
use crate::device::{cuda, emu, ptx, Gpu};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also list every kernel registered in the emulator
    #[arg(long)]
    pub kernels: bool,
    /// Load every PTX module on the GPU (with the JIT's error log) and list each kernel's
    /// registers, local memory, static shared memory and max threads per block; fails
    /// (non-zero exit) when there is no usable CUDA device or a module does not load
    #[arg(long)]
    pub load: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    println!("cudaenc {}", env!("CARGO_PKG_VERSION"));
    match ptx::NVCC {
        Some(nvcc) => {
            println!("nvcc:       {nvcc} ({})", ptx::NVCC_VERSION);
            let names: Vec<&str> = ptx::PTX_MODULES.iter().map(|(n, _)| *n).collect();
            println!("PTX:        {} ({} modules: {})", ptx::PTX_ARCH, names.len(), names.join(", "));
        }
        None => println!("nvcc:       none at build time: no PTX embedded (run scripts/install-cuda-toolchain, then rebuild)"),
    }
    match cuda::unavailable_reason() {
        Some(why) => println!("cuda:       unavailable: {why}"),
        None => match Gpu::cuda(0) {
            Ok(g) => println!("cuda:       {}", g.name()),
            Err(e) => println!("cuda:       driver present, device 0 unusable: {e:#}"),
        },
    }
    let kernels = emu::kernel_names();
    println!(
        "emu:        ok: {} kernels, {} worker threads, {}",
        kernels.len(),
        emu::worker_threads(),
        emu::flavor()
    );
    if args.kernels {
        for k in kernels {
            println!("  {k}");
        }
    }
    if args.load {
        load_modules()?;
    }
    Ok(())
}

/// `--load`: every module through the driver's JIT, then one row per kernel.
fn load_modules() -> anyhow::Result<()> {
    if let Some(why) = cuda::unavailable_reason() {
        anyhow::bail!("--load: no GPU: {why}");
    }
    let gpu = Gpu::cuda(0)?;
    let (kernels, logs) = gpu.load_all_modules()?.expect("a cuda device");
    println!("loaded {} PTX modules, {} kernels on {}", logs.len(), kernels.len(), gpu.name());
    println!("{:<12} {:<40} {:>5} {:>11} {:>13} {:>11}", "module", "kernel", "regs", "local B", "static smem B", "max thr/blk");
    for k in &kernels {
        println!(
            "{:<12} {:<40} {:>5} {:>11} {:>13} {:>11}",
            k.module, k.name, k.registers, k.local_bytes, k.static_shared_bytes, k.max_threads_per_block
        );
    }
    let spills: Vec<&str> = kernels.iter().filter(|k| k.local_bytes > 0).map(|k| k.name.as_str()).collect();
    if !spills.is_empty() {
        println!("local memory (spills or stack) in: {}", spills.join(", "));
    }
    for (m, log) in logs {
        if !log.is_empty() {
            println!("JIT info log, module {m}:\n{log}");
        }
    }
    Ok(())
}
