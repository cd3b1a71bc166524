//! `cudaenc bench`: kernel microbenchmarks at the model's shapes, or (`--step`) whole
//! training steps at a preset's shape (see `crate::bench`).
use crate::bench;
use crate::cli::setup::Preset;
use crate::config::{Loss, ModelConfig, Precision};
use crate::device::{DeviceKind, Gpu};
use anyhow::bail;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to run: cuda (timings), emu (reduced shapes, one run each: proves the cases
    /// run), auto (cuda if present, else emu)
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    /// Only cases whose name contains this (the copy and SGEMM references always run)
    #[arg(long)]
    pub filter: Option<String>,
    /// Timed repeats per case on cuda (the median is reported)
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
    /// Time whole training steps (GpuEngine::train_step on synthetic batches) instead of
    /// kernels. On emu: one step of a tiny model, to prove it runs
    #[arg(long)]
    pub step: bool,
    /// --step: the presets to time (repeatable; default gpu and nanogpt)
    #[arg(long, value_enum)]
    pub preset: Vec<Preset>,
    /// --step: sequence lengths T (repeatable; default 256 and 512)
    #[arg(long)]
    pub seq_len: Vec<usize>,
    /// --step: reviews per batch B
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// --step: timed steps per shape (after 3 untimed)
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// --step: the head and loss
    #[arg(long, value_enum, default_value = "ce")]
    pub loss: Loss,
    /// --step: vocabulary size (cl100k_base's by default)
    #[arg(long, default_value_t = 100_277)]
    pub vocab: usize,
    /// --step: precision of the linear layers (the kernel rows cover every precision)
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
    /// --step: capture the step as a CUDA graph and replay it (as `train --cuda-graphs`);
    /// the rows are labelled `<preset>-<precision>-graphs`
    #[arg(long)]
    pub cuda_graphs: bool,
}

fn open(kind: DeviceKind) -> anyhow::Result<Gpu> {
    Ok(match kind {
        DeviceKind::Cuda => Gpu::cuda(0)?,
        DeviceKind::Emu => Gpu::emu(),
        DeviceKind::Auto => Gpu::cuda(0).unwrap_or_else(|e| {
            eprintln!("cudaenc bench: no usable CUDA device ({e:#}); running on emu");
            Gpu::emu()
        }),
        DeviceKind::Cpu => bail!("bench times the CUDA kernels: use --device cuda or emu"),
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let gpu = open(args.device)?;
    if !args.step {
        bench::run(&gpu, args.filter.as_deref(), args.repeats, None)?;
        return Ok(());
    }
    let device = gpu.name();
    let mut results = Vec::new();
    if !gpu.is_cuda() {
        // emu: a tiny model, one step: proves the step bench runs, times nothing
        let cfg = ModelConfig { vocab: 1000, d_model: 32, n_layer: 1, n_head: 2, d_ff: 64, max_len: 16, dropout: 0.1, loss: args.loss, precision: args.precision };
        let label = if args.cuda_graphs { "tiny(emu)-graphs" } else { "tiny(emu)" };
        // with graphs: step 1 direct, 2 captured, 3 replayed
        let (steps, warmup) = if args.cuda_graphs { (1, 2) } else { (1, 0) };
        results.push(bench::step_bench(gpu, label, &cfg, 2, 16, steps, warmup, args.cuda_graphs)?);
    } else {
        drop(gpu); // each shape opens the device anew and frees its model when done
        let presets = if args.preset.is_empty() { vec![Preset::Gpu, Preset::Nanogpt] } else { args.preset.clone() };
        let lens = if args.seq_len.is_empty() { vec![256, 512] } else { args.seq_len.clone() };
        for &p in &presets {
            for &t in &lens {
                let cfg = ModelConfig { precision: args.precision, ..bench::preset_model(p, args.vocab, t, args.loss) };
                let label = match (args.precision, args.cuda_graphs) {
                    (Precision::Fp32, false) => format!("{p:?}").to_lowercase(),
                    (prec, false) => format!("{p:?}-{prec}").to_lowercase(),
                    (prec, true) => format!("{p:?}-{prec}-graphs").to_lowercase(),
                };
                let r = bench::step_bench(open(args.device)?, &label, &cfg, args.batch_size, t, args.steps, 3, args.cuda_graphs)?;
                eprintln!("step bench {label} B={} T={t}: {:.2} ms/step", args.batch_size, r.ms_median);
                results.push(r);
            }
        }
    }
    bench::print_steps(&device, &results)
}
