//! adamw_update kernel vs the f64 reference over several steps, on emu (both fiber
//! orders) and on cuda when present. Each step starts the reference from the device's
//! state (f32 values widened), so errors do not compound: params, m, v within relative
//! error 1e-5 per step. Reruns are bit-identical.
mod common;

use common::{devices, max_rel_err, to_f32, to_f64};
use cudaenc::device::Gpu;
use cudaenc::ops::adamw::adamw_update;
use cudaenc::reference::adamw as reference;
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
