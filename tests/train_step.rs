//! One full training step of the kernel model (`GpuEngine`: forward with dropout,
//! backward, global norm, clip, AdamW) against the same step of the f64 CPU reference
//! (`reference::model::Model<f64>` + `gradnorm` + `adamw`), for CE and BCE, on a small
//! config with padding (a review of length 0 included) and dropout on (the masks are
//! the same function of (seed, index) on both sides). On emu (both fiber orders) and on
//! cuda when present.
//!
//! Tolerances (relative, with the floor of `common::max_rel_err`): loss 1e-5; gradient
//! norm 1e-5; every gradient tensor, m and v 1e-4; predicted probabilities (no dropout)
//! 1e-5; updated parameters 1e-4, checked two ways:
//! - `param`: every element, vs f64 AdamW applied to the device's own gradients and
//!   clip factor (the update itself, isolated);
//! - `param e2e`: vs the f64 reference step, except elements whose reference gradient is
//!   below 1e-5 of the tensor's largest: AdamW's first step moves a parameter by about
//!   lr * sign(g), so where g is at rounding-noise level (e.g. the key bias, whose exact
//!   gradient is 0: softmax ignores a shift shared by all keys) the sign, and with it
//!   the step, is noise in any precision. The number excluded is printed.
//! Plus: two runs of several steps are bit-identical (losses, norms, parameters,
//! moments) on the same device.
mod common;

use common::{devices, max_rel_err, rel_err, to_f64};
use cudaenc::config::{Loss, ModelConfig, OptimConfig};
use cudaenc::device::Gpu;
use cudaenc::model::{init_params, Batch, GpuEngine, ParamLayout};
use cudaenc::reference::adamw::adamw_update;
use cudaenc::reference::gradnorm::{clip_scale, global_norm};
use cudaenc::reference::model::{DropoutSeeds, Model};
use cudaenc::rng::SplitMix64;
use cudaenc::train::engine::Engine;

const TOL_LOSS: f64 = 1e-5;
const TOL_TENSOR: f64 = 1e-4;

/// C = 24 (not a multiple of 32), 4 heads of 6, 2 layers, dropout on.
fn config(loss: Loss) -> ModelConfig {
    ModelConfig { vocab: 37, d_model: 24, n_layer: 2, n_head: 4, d_ff: 96, max_len: 9, dropout: 0.1, loss, precision: Default::default() }
}

/// B reviews of the given lengths, padded to the longest; ids repeat (vocabulary 37),
/// padding positions hold id 0.
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

struct RefStep {
    loss: f64,
    grads: Vec<f64>,
    norm: f64,
    params: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    probs_eval: Vec<f64>,
}

/// The reference step in f64, from the same f32 parameters.
fn reference_step(cfg: &ModelConfig, o: &OptimConfig, p0: &[f32], b: &Batch, lr: f32, run_seed: u64, step: u64) -> RefStep {
    let layout = ParamLayout::new(cfg);
    let mut params = to_f64(p0);
    let mut model = Model::<f64>::new(cfg);
    let seeds = DropoutSeeds::for_step(run_seed, step, cfg.n_layer);
    model.zero_grad();
    let loss = model.forward(&params, b, Some(&seeds));
    model.backward(&params, b);
    let grads = model.grads.clone();
    let norm = global_norm(&grads);
    let scale = clip_scale(norm as f32, o.grad_clip);
    let (mut m, mut v) = (vec![0.0; layout.total], vec![0.0; layout.total]);
    for t in &layout.tensors {
        let wd = if t.decay { o.weight_decay } else { 0.0 };
        let r = t.range();
        let (pp, mm, vv) = (&mut params[r.clone()], &mut m[r.clone()], &mut v[r.clone()]);
        adamw_update(pp, mm, vv, &grads[r], lr, o.beta1, o.beta2, o.eps, wd, scale, step);
    }
    model.forward(&params, b, None);
    RefStep { loss, grads, norm, params, m, v, probs_eval: model.positive_probs() }
}

fn check_step(gpu: Gpu, loss: Loss) -> anyhow::Result<Vec<String>> {
    let cfg = config(loss);
    let layout = ParamLayout::new(&cfg);
    let dev = gpu.name();
    let b = batch(&[9, 5, 1, 0, 7], 11);
    let (init_seed, run_seed, lr) = (5, 77, 1e-3f32);
    let p0 = init_params(&cfg, init_seed);
    // clip active: max norm at half the reference norm (found with clipping off)
    let probe = reference_step(&cfg, &OptimConfig { grad_clip: 0.0, ..Default::default() }, &p0, &b, lr, run_seed, 1);
    let optim = OptimConfig { grad_clip: (probe.norm * 0.5) as f32, ..Default::default() };
    let r = reference_step(&cfg, &optim, &p0, &b, lr, run_seed, 1);

    let mut e = GpuEngine::new(gpu, &cfg, &optim, init_seed, run_seed)?;
    let stats = e.train_step(&b, lr, 1)?;
    let mut fails = Vec::new();
    let mut scalar = |what: &str, got: f32, want: f64, tol: f64| {
        let err = rel_err(got as f64, want, 1e-12);
        println!("  {dev:<16} {:<3} {what:<14} got {got:.8e} want {want:.8e} rel err {err:.2e} (tol {tol:.0e})", loss.name());
        if !(err <= tol) {
            fails.push(format!("{dev} {} {what}: rel err {err:.2e} > {tol:.0e}", loss.name()));
        }
    };
    scalar("loss", stats.loss, r.loss, TOL_LOSS);
    scalar("grad_norm", stats.grad_norm, r.norm, TOL_LOSS);
    let (grads, params) = (e.grads()?, e.params()?);
    let (m, v) = e.optimizer_state()?;
    // the update alone: f64 AdamW from p0 on the device's gradients and clip factor
    let scale = clip_scale(stats.grad_norm, optim.grad_clip);
    let mut p_upd = to_f64(&p0);
    for t in &layout.tensors {
        let wd = if t.decay { optim.weight_decay } else { 0.0 };
        let r = t.range();
        let (mut mm, mut vv) = (vec![0.0; t.size], vec![0.0; t.size]);
        adamw_update(&mut p_upd[r.clone()], &mut mm, &mut vv, &to_f64(&grads[r]), lr, optim.beta1, optim.beta2, optim.eps, wd, scale, 1);
    }
    let mut worst = [0.0f64; 5];
    for t in &layout.tensors {
        let rg = t.range();
        // end to end, well-conditioned elements only (see the top of the file)
        let gmax = r.grads[rg.clone()].iter().fold(0.0f64, |a, g| a.max(g.abs()));
        let keep: Vec<usize> = rg.clone().filter(|&i| r.grads[i].abs() >= 1e-5 * gmax).collect();
        let e2e_got: Vec<f32> = keep.iter().map(|&i| params[i]).collect();
        let e2e_want: Vec<f64> = keep.iter().map(|&i| r.params[i]).collect();
        let e2e = if keep.is_empty() { (0.0, 0) } else { max_rel_err(&e2e_got, &e2e_want) };
        let errs = [
            max_rel_err(&grads[rg.clone()], &r.grads[rg.clone()]),
            max_rel_err(&params[rg.clone()], &p_upd[rg.clone()]),
            e2e,
            max_rel_err(&m[rg.clone()], &r.m[rg.clone()]),
            max_rel_err(&v[rg.clone()], &r.v[rg.clone()]),
        ];
        println!(
            "  {dev:<16} {:<3} {:<12} grad {:.2e}  param {:.2e}  param e2e {:.2e} ({} of {} excluded)  m {:.2e}  v {:.2e}",
            loss.name(), t.name, errs[0].0, errs[1].0, errs[2].0, t.size - keep.len(), t.size, errs[3].0, errs[4].0
        );
        for (k, (what, (err, at))) in ["grad", "param", "param e2e", "m", "v"].iter().zip(errs).enumerate() {
            worst[k] = worst[k].max(err);
            if !(err <= TOL_TENSOR) {
                fails.push(format!("{dev} {} {} {what}: rel err {err:.2e} > {TOL_TENSOR:.0e} at {at}", loss.name(), t.name));
            }
        }
    }
    println!(
        "  {dev:<16} {:<3} worst: grad {:.2e} param {:.2e} param e2e {:.2e} m {:.2e} v {:.2e} (tol {TOL_TENSOR:.0e})",
        loss.name(), worst[0], worst[1], worst[2], worst[3], worst[4]
    );
    let probs = e.predict(&b)?;
    let (err, _) = max_rel_err(&probs, &r.probs_eval);
    println!("  {dev:<16} {:<3} predict probs  max rel err {err:.2e} (tol {TOL_LOSS:.0e})", loss.name());
    if !(err <= TOL_LOSS) {
        fails.push(format!("{dev} {} predict: rel err {err:.2e}", loss.name()));
    }
    Ok(fails)
}

#[test]
fn train_step_matches_f64_reference() {
    let mut failures = Vec::new();
    for loss in [Loss::Ce, Loss::Bce] {
        for gpu in devices("train_step") {
            let name = gpu.name();
            match check_step(gpu, loss) {
                Ok(f) => failures.extend(f),
                Err(e) => failures.push(format!("{name} {}: {e:#}", loss.name())),
            }
        }
    }
    assert!(failures.is_empty(), "train step failures:\n{}", failures.join("\n"));
}

/// Several steps, batches of different shapes (the activations grow on the third and
/// the fifth, which is long enough for the split-K reductions),
/// run twice from the same seeds: every statistic and every parameter and moment
/// bit-identical.
#[test]
fn training_is_bit_identical_across_runs() {
    for loss in [Loss::Ce, Loss::Bce] {
        let cfg = config(loss);
        // the last batch has N = 6 x 100 = 600 rows (2 chunks): the split-K weight-gradient paths
        let batches = [
            batch(&[6, 2, 0], 1),
            batch(&[3, 4, 1, 2], 2),
            batch(&[9, 9, 5, 1, 7, 3], 3),
            batch(&[2], 4),
            batch(&[100, 90, 80, 70, 60, 50], 5),
        ];
        let run = |gpu: Gpu| -> anyhow::Result<(Vec<[u32; 2]>, Vec<u32>, Vec<u32>, Vec<u32>)> {
            let mut e = GpuEngine::new(gpu, &cfg, &OptimConfig::default(), 3, 9)?;
            let mut stats = Vec::new();
            for (i, b) in batches.iter().enumerate() {
                let s = e.train_step(b, 1e-2, i as u64 + 1)?;
                stats.push([s.loss.to_bits(), s.grad_norm.to_bits()]);
            }
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<u32>>();
            let (m, v) = e.optimizer_state()?;
            Ok((stats, bits(e.params()?), bits(m), bits(v)))
        };
        for gpu in devices("train_step determinism") {
            let name = gpu.name();
            let is_cuda = gpu.is_cuda();
            let first = run(gpu).unwrap();
            let second = run(if is_cuda { Gpu::cuda(0).unwrap() } else { Gpu::emu() }).unwrap();
            println!("  {name:<16} {}: losses {:?}", loss.name(), first.0.iter().map(|s| f32::from_bits(s[0])).collect::<Vec<_>>());
            assert_eq!(first.0, second.0, "{name} {}: losses / norms differ between runs", loss.name());
            assert!(first.1 == second.1 && first.2 == second.2 && first.3 == second.3, "{name} {}: weights or moments differ", loss.name());
        }
    }
}
