//! `cudaenc bench`: kernel microbenchmarks at the model's shapes (see `crate::bench`).
use crate::bench;
use crate::device::{DeviceKind, Gpu};
use anyhow::bail;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to run: cuda (timings), emu (reduced shapes, one run each: proves the cases
    /// run), auto (cuda if present, else emu)
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    /// Only cases whose name contains this (the copy reference always runs)
    #[arg(long)]
    pub filter: Option<String>,
    /// Timed repeats per case on cuda (the median is reported)
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let gpu = match args.device {
        DeviceKind::Cuda => Gpu::cuda(0)?,
        DeviceKind::Emu => Gpu::emu(),
        DeviceKind::Auto => Gpu::cuda(0).unwrap_or_else(|e| {
            eprintln!("cudaenc bench: no usable CUDA device ({e:#}); running on emu");
            Gpu::emu()
        }),
        DeviceKind::Cpu => bail!("bench times the CUDA kernels: use --device cuda or emu"),
    };
    bench::run(&gpu, args.filter.as_deref(), args.repeats, None)?;
    Ok(())
}
