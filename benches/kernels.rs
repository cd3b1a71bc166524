//! `cargo bench [-- FILTER]`: the kernel microbenchmarks of `cudaenc::bench` on the GPU
//! when one is usable, else on the emulator (reduced shapes, one run per case).
use cudaenc::device::Gpu;

fn main() -> anyhow::Result<()> {
    // cargo passes `--bench`; the first other argument, if any, filters the cases
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let gpu = Gpu::cuda_if_present().unwrap_or_else(|why| {
        eprintln!("kernels bench: no CUDA device ({why}); running on emu");
        Gpu::emu()
    });
    cudaenc::bench::run(&gpu, filter.as_deref(), 20, None)?;
    Ok(())
}
