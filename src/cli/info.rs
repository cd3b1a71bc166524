//! `cudaenc info`: what this build and this machine can run.
use crate::device::{cuda, emu, ptx, Gpu};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also list every kernel registered in the emulator
    #[arg(long)]
    pub kernels: bool,
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
    Ok(())
}
