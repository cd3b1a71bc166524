//! Train-step throughput of the `cpu` device on real IMDB batches, and the same batches
//! dumped for `benches/pytorch_cpu.py` so both sides time identical work.
//!
//! cargo run --release --example cpu_bench -- DATA [STEPS] [--subset N] [--max-len T] [--dump FILE] [--repeats R]
//!
//! DATA: the IMDB archive (or directory). The batches are the first STEPS (default 40)
//! training batches of epoch 1 of `cudaenc train --preset cpu --seed 1` (BCE), so they
//! have that run's length distribution; with `--subset N`, of
//! `cudaenc train --preset cpu --seed 1 --train-subset N` (STEPS 0: all of them).
//! `--max-len T` (default 512) truncates reviews to T tokens (head); 4096 keeps every
//! review whole, as the `cpu` preset now does. Two warm-up steps, then R repeats (default 3) of STEPS steps each; prints valid
//! tokens per second per repeat and their median.

use anyhow::{Context, Result};
use cudaenc::cli::setup::{self, DataArgs, Preset};
use cudaenc::config::{Loss, OptimConfig};
use cudaenc::data::TruncatePolicy;
use cudaenc::model::Batch;
use cudaenc::reference::engine::CpuEngine;
use cudaenc::train::engine::Engine;
use std::io::Write;
use std::time::Instant;

/// File layout (little endian): u32 count, then per batch u32 B, u32 T, B*T u32 ids,
/// B u32 lens, B u8 labels.
fn dump(batches: &[Batch], path: &str) -> Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(&(batches.len() as u32).to_le_bytes());
    for b in batches {
        out.extend_from_slice(&(b.batch_size as u32).to_le_bytes());
        out.extend_from_slice(&(b.seq_len as u32).to_le_bytes());
        b.ids.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        b.lens.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        out.extend_from_slice(&b.labels);
    }
    std::fs::File::create(path)?.write_all(&out).with_context(|| format!("writing {path}"))
}

/// println! that ignores a closed pipe (`| head`) instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = args.first().context("usage: cpu_bench DATA [STEPS] [--dump FILE] [--repeats R]")?.clone();
    let steps: usize = args.get(1).filter(|s| !s.starts_with("--")).map(|s| s.parse()).transpose()?.unwrap_or(40);
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let repeats: usize = flag("--repeats").map(|s| s.parse()).transpose()?.unwrap_or(3);

    let seed = 1;
    let train_subset: Option<usize> = flag("--subset").map(|s| s.parse()).transpose()?;
    let data_args = DataArgs { data: Some(data), val_size: None, val_seed: None, truncate: TruncatePolicy::Head, train_subset, full_test: false, holdout: None, compact_vocab: false, min_count: 1, dedup: false };
    let loaded = setup::load_data(&data_args, seed)?;
    // The shape and step that benches/pytorch_cpu.py mirrors (the cpu preset before
    // issue 12 retuned it): dropout 0.1, lr 1e-3, no smoothing, head-truncated at --max-len tokens.
    let max_len: usize = flag("--max-len").map(|s| s.parse()).transpose()?.unwrap_or(512);
    let h = setup::Hyper { dropout: 0.1, token_drop: 0.0, type_drop: 0.0, max_len, lr: 1e-3, label_smoothing: 0.0, ..Preset::Cpu.hyper() };
    let run = setup::run_data(&loaded, &h, TruncatePolicy::Head, seed);
    let steps = if steps == 0 { usize::MAX } else { steps };
    let batches: Vec<Batch> = (run.train)(1).into_iter().take(steps).collect();
    let tokens: usize = batches.iter().map(|b| b.valid_tokens()).sum();
    let padded: usize = batches.iter().map(|b| b.batch_size * b.seq_len).sum();
    say!("{} batches, {tokens} valid tokens, {padded} padded positions", batches.len());
    if let Some(path) = flag("--dump") {
        dump(&batches, &path)?;
        say!("dumped to {path}");
    }

    let cfg = setup::model_config(&h, loaded.vocab, Loss::Bce)?;
    let optim = OptimConfig { weight_decay: h.weight_decay, grad_clip: h.grad_clip, ..OptimConfig::default() };
    let mut engine = CpuEngine::new(&cfg, &optim, seed, seed)?;
    let mut step = 1u64;
    for b in batches.iter().take(2) {
        engine.train_step(b, h.lr, step)?;
        step += 1;
    }
    let mut rates = Vec::new();
    for r in 0..repeats {
        let t0 = Instant::now();
        let mut loss = 0.0;
        for b in &batches {
            loss = engine.train_step(b, h.lr, step)?.loss;
            step += 1;
        }
        let secs = t0.elapsed().as_secs_f64();
        rates.push(tokens as f64 / secs);
        say!("repeat {r}: {secs:.2}s, {:.0} tok/s (last loss {loss:.4})", tokens as f64 / secs);
    }
    if rates.is_empty() {
        return Ok(());
    }
    rates.sort_by(f64::total_cmp);
    say!("median {:.0} tok/s over {repeats} repeats (threads: rayon {})", rates[rates.len() / 2], rayon::current_num_threads());
    Ok(())
}
