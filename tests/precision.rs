//! The model with its linear layers on the tensor cores (`--precision tf32|bf16`):
//!
//! - one full training step (forward with dropout, backward, global norm, clip, AdamW) in
//!   each precision against the f64 CPU reference step (tests/train_step.rs's config and
//!   batch), on emu (both fiber orders) and on cuda when present;
//! - reruns bit-identical in each precision;
//! - the cpu device refusing a tensor-core precision.
//!
//! Tolerances of the step, with u = 2^-11 (TF32) or 2^-8 (bf16), the unit roundoff of a
//! rounded input. Each linear layer's output is off by at most ~2u of sum |a||b| (see
//! tests/matmul_tc.rs), which for these random-signed sums is a few times the result's
//! own scale; a gradient goes through up to 8 of them (2 layers, forward and backward)
//! and the non-linear ops between pass relative errors on at about their size. So:
//! - loss, gradient norm, predicted probabilities: relative error <= 16u;
//! - each gradient tensor: max |error| <= 64u x the tensor's largest |value| (element-wise
//!   relative error is meaningless for elements near 0: rounding noise);
//! - the AdamW update itself, from the device's own gradients: 1e-4 relative, as in fp32
//!   (AdamW, master weights and moments are f32 in every precision);
//! - updated parameters end to end, for elements whose reference gradient is at least
//!   128u of the tensor's largest (there the gradient's sign is certain, and AdamW's first
//!   step moves by about lr * sign(g)): 1e-4 relative. The number excluded is printed.
mod common;

use common::{devices, max_rel_err, rel_err, to_f64};
use cudaenc::cli::setup::Device;
use cudaenc::config::{Loss, ModelConfig, OptimConfig, Precision};
use cudaenc::device::Gpu;
use cudaenc::model::{init_params, Batch, GpuEngine, ParamLayout};
use cudaenc::reference::adamw::adamw_update;
use cudaenc::reference::gradnorm::{clip_scale, global_norm};
use cudaenc::reference::model::{DropoutSeeds, Model};
use cudaenc::rng::SplitMix64;
use cudaenc::train::engine::Engine;

/// tests/train_step.rs's config: C = 24, 4 heads of 6, 2 layers, dropout on.
fn config(loss: Loss, precision: Precision) -> ModelConfig {
    ModelConfig { vocab: 37, d_model: 24, n_layer: 2, n_head: 4, d_ff: 96, max_len: 9, dropout: 0.1, loss, precision }
}

fn batch(lens: &[u32], seed: u64) -> Batch {
    let mut rng = SplitMix64::new(seed);
    let t = *lens.iter().max().unwrap() as usize;
    let mut ids = vec![0u32; lens.len() * t];
    for (b, &l) in lens.iter().enumerate() {
        for i in 0..l as usize {
            ids[b * t + i] = 1 + rng.below(36) as u32;
        }
    }
    let labels = (0..lens.len()).map(|i| (i % 2) as u8).collect();
    Batch { ids, lens: lens.to_vec(), labels, batch_size: lens.len(), seq_len: t }
}

/// |got - want| / max|want| over a tensor.
fn err_of_max(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-30);
    got.iter().zip(want).map(|(&g, &w)| if g.is_finite() { (g as f64 - w).abs() } else { f64::INFINITY }).fold(0.0, f64::max) / scale
}

fn check_step(gpu: Gpu, loss: Loss, prec: Precision) -> anyhow::Result<Vec<String>> {
    let cfg = config(loss, prec);
    let layout = ParamLayout::new(&cfg);
    let dev = format!("{} {prec} {}", gpu.name(), loss.name());
    let b = batch(&[9, 5, 1, 0, 7], 11);
    let (init_seed, run_seed, lr) = (5, 77, 1e-3f32);
    let p0 = init_params(&cfg, init_seed);

    // the f64 reference step (no clipping needed to exercise the path: clip at half the norm)
    let mut model = Model::<f64>::new(&cfg);
    let seeds = DropoutSeeds::for_step(run_seed, 1, cfg.n_layer);
    let mut params_r = to_f64(&p0);
    model.zero_grad();
    let loss_r = model.forward(&params_r, &b, Some(&seeds));
    model.backward(&params_r, &b);
    let grads_r = model.grads.clone();
    let norm_r = global_norm(&grads_r);
    let optim = OptimConfig { grad_clip: (norm_r * 0.5) as f32, ..Default::default() };
    let scale_r = clip_scale(norm_r as f32, optim.grad_clip);
    for t in &layout.tensors {
        let wd = if t.decay { optim.weight_decay } else { 0.0 };
        let r = t.range();
        let (mut m, mut v) = (vec![0.0; t.size], vec![0.0; t.size]);
        adamw_update(&mut params_r[r.clone()], &mut m, &mut v, &grads_r[r], lr, optim.beta1, optim.beta2, optim.eps, wd, scale_r, 1);
    }
    model.forward(&params_r, &b, None);
    let probs_r = model.positive_probs();

    let mut e = GpuEngine::new(gpu, &cfg, &optim, init_seed, run_seed)?;
    let stats = e.train_step(&b, lr, 1)?;
    let u = 2f64.powi(-(prec.mantissa_bits() as i32 + 1));
    let mut fails = Vec::new();
    let mut verdict = |what: String, err: f64, tol: f64| {
        println!("  {dev:<28} {what:<28} error {err:.2e} (tol {tol:.1e})");
        if !(err <= tol) {
            fails.push(format!("{dev} {what}: error {err:.2e} > {tol:.1e}"));
        }
    };
    verdict("loss".into(), rel_err(stats.loss as f64, loss_r, 1e-12), 16.0 * u);
    verdict("grad_norm".into(), rel_err(stats.grad_norm as f64, norm_r, 1e-12), 16.0 * u);
    let (grads, params) = (e.grads()?, e.params()?);
    let scale = clip_scale(stats.grad_norm, optim.grad_clip);
    for t in &layout.tensors {
        let rg = t.range();
        verdict(format!("{} grad", t.name), err_of_max(&grads[rg.clone()], &grads_r[rg.clone()]), 64.0 * u);
        // AdamW alone on the device's gradients: f32 as in fp32
        let wd = if t.decay { optim.weight_decay } else { 0.0 };
        let (mut p_upd, mut mm, mut vv) = (to_f64(&p0[rg.clone()]), vec![0.0; t.size], vec![0.0; t.size]);
        adamw_update(&mut p_upd, &mut mm, &mut vv, &to_f64(&grads[rg.clone()]), lr, optim.beta1, optim.beta2, optim.eps, wd, scale, 1);
        verdict(format!("{} param (update)", t.name), max_rel_err(&params[rg.clone()], &p_upd).0, 1e-4);
        let gmax = grads_r[rg.clone()].iter().fold(0.0f64, |a, g| a.max(g.abs()));
        let keep: Vec<usize> = rg.clone().filter(|&i| grads_r[i].abs() >= 128.0 * u * gmax).collect();
        if !keep.is_empty() {
            let got: Vec<f32> = keep.iter().map(|&i| params[i]).collect();
            let want: Vec<f64> = keep.iter().map(|&i| params_r[i]).collect();
            verdict(format!("{} param e2e ({} excl.)", t.name, t.size - keep.len()), max_rel_err(&got, &want).0, 1e-4);
        }
    }
    let probs = e.predict(&b)?;
    let perr = probs.iter().zip(&probs_r).map(|(&g, &w)| rel_err(g as f64, w, 1e-12)).fold(0.0, f64::max);
    verdict("predict probs".into(), perr, 16.0 * u);
    Ok(fails)
}

#[test]
fn train_step_in_each_precision_matches_f64_reference() {
    let mut failures = Vec::new();
    for prec in [Precision::Tf32, Precision::Bf16] {
        for loss in [Loss::Ce, Loss::Bce] {
            for gpu in devices("precision train_step") {
                let name = gpu.name();
                match check_step(gpu, loss, prec) {
                    Ok(f) => failures.extend(f),
                    Err(e) => failures.push(format!("{name} {prec} {}: {e:#}", loss.name())),
                }
            }
        }
    }
    assert!(failures.is_empty(), "train step failures:\n{}", failures.join("\n"));
}

/// Three steps (the last one long enough for split-K), twice: bit-identical in each precision.
#[test]
fn tensor_core_training_is_bit_identical_across_runs() {
    let batches = [batch(&[6, 2, 0], 1), batch(&[9, 9, 5, 1, 7, 3], 3), batch(&[100, 90, 80, 70, 60, 50], 5)];
    for prec in [Precision::Tf32, Precision::Bf16] {
        let cfg = config(Loss::Ce, prec);
        let run = |gpu: Gpu| -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
            let mut e = GpuEngine::new(gpu, &cfg, &OptimConfig::default(), 3, 9)?;
            let mut stats = Vec::new();
            for (i, b) in batches.iter().enumerate() {
                let s = e.train_step(b, 1e-2, i as u64 + 1)?;
                stats.extend([s.loss.to_bits(), s.grad_norm.to_bits()]);
            }
            Ok((stats, e.params()?.into_iter().map(f32::to_bits).collect()))
        };
        for gpu in devices("precision determinism") {
            let name = gpu.name();
            let again = if gpu.is_cuda() { Gpu::cuda(0).unwrap() } else { Gpu::emu() };
            let (a, b) = (run(gpu).unwrap(), run(again).unwrap());
            assert!(a == b, "{name} {prec}: two runs differ");
        }
    }
}

/// The cpu device is the f64/f32 reference: it refuses a tensor-core precision with a
/// clear error instead of silently training in fp32.
#[test]
fn cpu_device_refuses_tensor_core_precisions() {
    let cfg = config(Loss::Ce, Precision::Bf16);
    let e = Device::Cpu.engine(&cfg, &OptimConfig::default(), 1, false).err().expect("bf16 on the cpu device must fail");
    assert!(format!("{e:#}").contains("--device cuda"), "{e:#}");
}
