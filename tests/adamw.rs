//! adamw_update kernel vs the f64 reference over several steps, on emu (both fiber
//! orders) and on cuda when present. Each step starts the reference from the device's
//! state (f32 values widened), so errors do not compound: params, m, v within relative
//! error 1e-5 per step. Reruns are bit-identical.
//!
//! adamw_update_tensors (the whole parameter buffer in one launch, per-tensor weight decay
//! from a table, the clip factor computed on the device from the gradient norm) is
//! bit-identical to adamw_update launched per tensor with the host's clip factor, within
//! 1e-5 of the f64 reference of the same name, and a non-finite norm changes nothing.
mod common;

use common::{devices, max_rel_err, to_f32, to_f64};
use cudaenc::device::Gpu;
use cudaenc::ops::adamw::{adamw_schedule, adamw_table, adamw_update, adamw_update_tensors};
use cudaenc::reference::adamw as reference;
use cudaenc::reference::gradnorm::clip_scale;
use cudaenc::rng::SplitMix64;

const TOL: f64 = 1e-5;
/// N = 1; not a multiple of 32; a few blocks; more than the 4096 x 256 threads of the
/// grid (the grid-stride loop runs twice).
const SIZES: &[usize] = &[1, 33, 1000, 1_100_003];
const STEPS: u64 = 3;

/// (lr, weight decay, grad scale): decay on and clipping active; no decay and no clipping.
const SETTINGS: &[(f32, f32, f32)] = &[(1e-3, 0.1, 0.37), (3e-2, 0.0, 1.0)];

fn run(gpu: &Gpu, n: usize, (lr, wd, gs): (f32, f32, f32)) -> anyhow::Result<f64> {
    let dev = gpu.name();
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut rng = SplitMix64::new(n as u64 + (wd * 100.0) as u64);
    let p0 = to_f32(&rng.normal_vec(n, 1.0));
    let d_p = gpu.upload(&p0)?;
    let d_m = gpu.zeros::<f32>(n)?;
    let d_v = gpu.zeros::<f32>(n)?;
    let d_g = gpu.zeros::<f32>(n)?;
    let mut worst = 0.0f64;
    for t in 1..=STEPS {
        // gradients of mixed scale, some exactly zero
        let g: Vec<f32> = rng.normal_vec(n, 1.0).iter().enumerate().map(|(i, &x)| if i % 7 == 3 { 0.0 } else { (x * 10f64.powi((i % 5) as i32 - 2)) as f32 }).collect();
        gpu.write(&d_g, &g)?;
        let (mut p, mut m, mut v) = (to_f64(&gpu.download(&d_p)?), to_f64(&gpu.download(&d_m)?), to_f64(&gpu.download(&d_v)?));
        reference::adamw_update(&mut p, &mut m, &mut v, &to_f64(&g), lr, b1, b2, eps, wd, gs, t);
        adamw_update(gpu, &d_p, &d_m, &d_v, &d_g, lr, b1, b2, eps, wd, gs, t)?;
        for (name, got, want) in [("params", gpu.download(&d_p)?, &p), ("m", gpu.download(&d_m)?, &m), ("v", gpu.download(&d_v)?, &v)] {
            let (e, i) = max_rel_err(&got, want);
            println!("  {dev:<22} N={n:<8} wd={wd} gs={gs} t={t} {name:<6} max rel err {e:.2e} (at {i}: got {} want {})", got[i], want[i]);
            worst = worst.max(e);
        }
    }
    // determinism: the same step from the same state again
    let (p, m, v) = (gpu.download(&d_p)?, gpu.download(&d_m)?, gpu.download(&d_v)?);
    let mut outs = Vec::new();
    for _ in 0..2 {
        gpu.write(&d_p, &p)?;
        gpu.write(&d_m, &m)?;
        gpu.write(&d_v, &v)?;
        adamw_update(gpu, &d_p, &d_m, &d_v, &d_g, lr, b1, b2, eps, wd, gs, STEPS + 1)?;
        outs.push((gpu.download(&d_p)?, gpu.download(&d_m)?, gpu.download(&d_v)?));
    }
    anyhow::ensure!(outs[0] == outs[1], "{dev}: AdamW differs on rerun");
    Ok(worst)
}

#[test]
fn adamw_matches_f64_reference() {
    let mut failures = Vec::new();
    for gpu in devices("adamw") {
        for &n in SIZES {
            for &s in SETTINGS {
                match run(&gpu, n, s) {
                    Ok(e) if e <= TOL => {}
                    Ok(e) => failures.push(format!("{} N={n} {s:?}: max rel err {e:.2e} > {TOL:.0e}", gpu.name())),
                    Err(e) => failures.push(format!("{} N={n} {s:?}: {e:#}", gpu.name())),
                }
            }
        }
    }
    assert!(failures.is_empty(), "adamw failures:\n{}", failures.join("\n"));
}

#[test]
fn adamw_rejects_bad_arguments() {
    let gpu = common::emu();
    let a = gpu.zeros::<f32>(4).unwrap();
    let b = gpu.zeros::<f32>(3).unwrap();
    assert!(adamw_update(&gpu, &a, &a, &a, &b, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0, 1).is_err());
    assert!(adamw_update(&gpu, &a, &a, &a, &a, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0, 0).is_err(), "step 0");
}

/// Tensors of awkward sizes (1, not a multiple of 32, an empty one, one that spans more
/// than the 4096 x 256 threads of the grid, so a thread's grid-stride loop crosses tensor
/// boundaries), decay on and off.
const TENSORS: &[(usize, bool)] = &[(1, true), (33, false), (0, true), (1000, true), (1_048_600, false), (77, true)];

#[test]
fn adamw_update_tensors_is_bit_identical_to_per_tensor_launches() {
    let (lr, b1, b2, eps, wd) = (1e-3f32, 0.9f32, 0.999f32, 1e-8f32, 0.1f32);
    // (norm, max_norm) per step: clipping active, inactive, off (max_norm 0)
    let clips = [(2.7f32, 1.0f32), (0.3, 1.0), (5.0, 0.0)];
    let n: usize = TENSORS.iter().map(|t| t.0).sum();
    let (ends, decay) = adamw_table(TENSORS.iter().copied());
    let mut rng = SplitMix64::new(11);
    let p0 = to_f32(&rng.normal_vec(n, 1.0));
    let mut failures = Vec::new();
    for gpu in devices("adamw_update_tensors") {
        let dev = gpu.name();
        let run = || -> anyhow::Result<()> {
            let (d_ends, d_decay) = (gpu.upload(&ends)?, gpu.upload(&decay)?);
            // one: the fused launch; each: adamw_update per tensor
            let (one, each) = ([gpu.upload(&p0)?, gpu.zeros(n)?, gpu.zeros(n)?], [gpu.upload(&p0)?, gpu.zeros(n)?, gpu.zeros(n)?]);
            let (d_g, d_norm, d_sched) = (gpu.zeros::<f32>(n)?, gpu.zeros::<f32>(1)?, gpu.zeros::<f32>(3)?);
            let mut rng = SplitMix64::new(12);
            for (t, &(norm, max_norm)) in (1u64..).zip(&clips) {
                let g = to_f32(&rng.normal_vec(n, 1.0));
                gpu.write(&d_g, &g)?;
                gpu.write(&d_norm, &[norm])?;
                // the step's lr and bias corrections, read from the same device memory every
                // step (as a replayed CUDA graph reads them); lr changes from step to step
                let lr = lr * (1.0 + 0.5 * t as f32);
                gpu.write(&d_sched, &adamw_schedule(lr, b1, b2, t)?)?;
                let gs = clip_scale(norm, max_norm);
                let (mut p, mut m, mut v) = (to_f64(&gpu.download(&one[0])?), to_f64(&gpu.download(&one[1])?), to_f64(&gpu.download(&one[2])?));
                reference::adamw_update_tensors(&mut p, &mut m, &mut v, &to_f64(&g), &ends, &decay, norm, max_norm, lr, b1, b2, eps, wd, t);
                adamw_update_tensors(&gpu, &one[0], &one[1], &one[2], &d_g, &d_ends, &d_decay, &d_norm, max_norm, &d_sched, b1, b2, eps, wd)?;
                let mut start = 0;
                for &(size, d) in TENSORS {
                    let [p, m, v] = [0, 1, 2].map(|k| each[k].view(start, size));
                    let wd = if d { wd } else { 0.0 };
                    adamw_update(&gpu, &p, &m, &v, &d_g.view(start, size), lr, b1, b2, eps, wd, gs, t)?;
                    start += size;
                }
                for (k, name, want) in [(0, "params", &p), (1, "m", &m), (2, "v", &v)] {
                    let (got, per_tensor) = (gpu.download(&one[k])?, gpu.download(&each[k])?);
                    let differ = got.iter().zip(&per_tensor).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                    let (e, i) = max_rel_err(&got, want);
                    println!("  {dev:<22} t={t} clip {gs} {name:<6} {differ} elements differ from per-tensor launches; max rel err vs f64 {e:.2e} (at {i})");
                    anyhow::ensure!(differ == 0, "t={t} {name}: {differ} elements differ from per-tensor launches");
                    anyhow::ensure!(e <= TOL, "t={t} {name}: max rel err {e:.2e} > {TOL:.0e}");
                }
            }
            // a non-finite norm: nothing changes
            let before = [gpu.download(&one[0])?, gpu.download(&one[1])?, gpu.download(&one[2])?];
            gpu.write(&d_norm, &[f32::NAN])?;
            gpu.write(&d_sched, &adamw_schedule(lr, b1, b2, 9)?)?;
            adamw_update_tensors(&gpu, &one[0], &one[1], &one[2], &d_g, &d_ends, &d_decay, &d_norm, 1.0, &d_sched, b1, b2, eps, wd)?;
            for (k, b) in before.iter().enumerate() {
                anyhow::ensure!(gpu.download(&one[k])? == *b, "a NaN norm changed buffer {k}");
            }
            Ok(())
        };
        if let Err(e) = run() {
            failures.push(format!("{dev}: {e:#}"));
        }
    }
    assert!(failures.is_empty(), "adamw_update_tensors failures:\n{}", failures.join("\n"));
}

#[test]
fn adamw_update_tensors_rejects_bad_tables() {
    let gpu = common::emu();
    let a = gpu.zeros::<f32>(4).unwrap();
    let (ends, two) = (gpu.upload(&[4u32]).unwrap(), gpu.upload(&[1u32, 1]).unwrap());
    let none = gpu.zeros::<u32>(0).unwrap();
    let many = gpu.zeros::<u32>(65).unwrap();
    let norm = gpu.zeros::<f32>(1).unwrap();
    let sched = gpu.upload(&adamw_schedule(1e-3, 0.9, 0.999, 1).unwrap()).unwrap();
    let h = (1.0, &sched, 0.9, 0.999, 1e-8, 0.0); // max_norm, [lr, bc1, bc2], betas, eps, weight decay
    assert!(adamw_update_tensors(&gpu, &a, &a, &a, &a, &ends, &two, &norm, h.0, h.1, h.2, h.3, h.4, h.5).is_err(), "lengths differ");
    assert!(adamw_update_tensors(&gpu, &a, &a, &a, &a, &none, &none, &norm, h.0, h.1, h.2, h.3, h.4, h.5).is_err(), "empty table");
    assert!(adamw_update_tensors(&gpu, &a, &a, &a, &a, &many, &many, &norm, h.0, h.1, h.2, h.3, h.4, h.5).is_err(), "65 tensors");
    assert!(adamw_schedule(1e-3, 0.9, 0.999, 0).is_err(), "step 0");
    assert!(adamw_update_tensors(&gpu, &a, &a, &a, &a, &ends, &ends, &norm, h.0, &a, h.2, h.3, h.4, h.5).is_err(), "sched of 4");
    assert!(adamw_update_tensors(&gpu, &a, &a, &a, &a, &ends, &ends, &a, h.0, h.1, h.2, h.3, h.4, h.5).is_err(), "norm of 4");
    assert!(adamw_update_tensors(&gpu, &a, &a, &a, &a, &ends, &ends, &norm, h.0, h.1, h.2, h.3, h.4, h.5).is_ok(), "valid");
}
