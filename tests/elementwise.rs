//! gelu, residual and dropout kernels vs the f64 CPU reference, on emu (both fiber orders)
//! and on cuda when present. Tolerance: relative error 1e-5 (floor 1e-2 of the tensor's
//! largest |value|, see common) for every tensor; dropout masks must match exactly.
mod common;

use common::{devices, max_rel_err, to_f32, to_f64};
use cudaenc::device::Gpu;
use cudaenc::ops::{dropout, gelu, residual};
use cudaenc::reference;
use cudaenc::rng::SplitMix64;

const TOL: f64 = 1e-5;
/// Element counts: 1; not a multiple of 32; one review's (T, C) = 512 x 384 and
/// (T, F) = 512 x 1536; and more than the grid cap (4096 blocks x 256) so the
/// grid-stride loop runs twice.
const SIZES: &[usize] = &[1, 33, 17_219, 512 * 384, 512 * 1536, 4096 * 256 + 4099];

fn check(failures: &mut Vec<String>, what: &str, dev: &str, got: &[f32], want: &[f64]) {
    let (e, i) = max_rel_err(got, want);
    let n = got.len();
    println!("  {dev:<22} N={n:<8} {what:<18} max rel err {e:.2e} tol {TOL:.0e} (at {i}: got {} want {})", got[i], want[i]);
    if e.is_nan() || e > TOL {
        failures.push(format!("{dev} N={n} {what}: max rel err {e:.2e} > {TOL:.0e}"));
    }
}

fn inputs(n: usize, seed: u64, count: usize) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed * 7919 + n as u64);
    (0..count).map(|_| to_f32(&rng.normal_vec(n, 2.0))).collect()
}

fn gelu_case(gpu: &Gpu, n: usize, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let v = inputs(n, 1, 2);
    let (inp, dout) = (&v[0], &v[1]);
    let (mut out_r, mut dinp_r) = (vec![0.0; n], vec![0.0; n]);
    reference::gelu::gelu_forward(&mut out_r, &to_f64(inp));
    reference::gelu::gelu_backward(&mut dinp_r, &to_f64(dout), &to_f64(inp));
    let (d_inp, d_dout) = (gpu.upload(inp)?, gpu.upload(dout)?);
    let (d_out, d_dinp) = (gpu.upload(&vec![f32::NAN; n])?, gpu.upload(&vec![f32::NAN; n])?);
    gelu::gelu_forward(gpu, &d_out, &d_inp)?;
    gelu::gelu_backward(gpu, &d_dinp, &d_dout, &d_inp)?;
    let dev = gpu.name();
    check(failures, "gelu out", &dev, &gpu.download(&d_out)?, &out_r);
    check(failures, "gelu dinp", &dev, &gpu.download(&d_dinp)?, &dinp_r);
    Ok(())
}

fn residual_case(gpu: &Gpu, n: usize, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let v = inputs(n, 2, 5);
    let (a, b, dout, da0, db0) = (&v[0], &v[1], &v[2], &v[3], &v[4]);
    let mut out_r = vec![0.0; n];
    reference::residual::residual_forward(&mut out_r, &to_f64(a), &to_f64(b));
    let (mut da_r, mut db_r) = (to_f64(da0), to_f64(db0)); // both accumulate: start non-zero
    reference::residual::residual_backward(&mut da_r, &mut db_r, &to_f64(dout));
    let (d_a, d_b, d_dout) = (gpu.upload(a)?, gpu.upload(b)?, gpu.upload(dout)?);
    let d_out = gpu.upload(&vec![f32::NAN; n])?;
    let (d_da, d_db) = (gpu.upload(da0)?, gpu.upload(db0)?);
    residual::residual_forward(gpu, &d_out, &d_a, &d_b)?;
    residual::residual_backward(gpu, &d_da, &d_db, &d_dout)?;
    let dev = gpu.name();
    check(failures, "residual out", &dev, &gpu.download(&d_out)?, &out_r);
    check(failures, "residual dinp1", &dev, &gpu.download(&d_da)?, &da_r);
    check(failures, "residual dinp2", &dev, &gpu.download(&d_db)?, &db_r);
    Ok(())
}

fn dropout_case(gpu: &Gpu, n: usize, p: f32, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let seed = 0x5EED_0000_0000_0000u64 ^ (n as u64 * 31 + (p * 100.0) as u64);
    let v = inputs(n, 3, 2);
    let (inp, dout) = (&v[0], &v[1]); // normal samples: never exactly 0, so 0 out means dropped
    let (mut out_r, mut dinp_r) = (vec![0.0; n], vec![0.0; n]);
    reference::dropout::dropout_forward(&mut out_r, &to_f64(inp), seed, p);
    reference::dropout::dropout_backward(&mut dinp_r, &to_f64(dout), seed, p);
    let (d_inp, d_dout) = (gpu.upload(inp)?, gpu.upload(dout)?);
    let (d_out, d_dinp) = (gpu.upload(&vec![f32::NAN; n])?, gpu.upload(&vec![f32::NAN; n])?);
    let d_seed = gpu.upload(&[seed])?; // the kernels read the seed from device memory
    dropout::dropout_forward(gpu, &d_out, &d_inp, &d_seed, p)?;
    dropout::dropout_backward(gpu, &d_dinp, &d_dout, &d_seed, p)?;
    let (out, dinp) = (gpu.download(&d_out)?, gpu.download(&d_dinp)?);
    let dev = gpu.name();
    // masks: exactly the reference's, forward and backward
    let keep: Vec<bool> = (0..n).map(|i| reference::dropout::dropout_keep(seed, i, p)).collect();
    for (what, got) in [("forward", &out), ("backward", &dinp)] {
        let bad = (0..n).filter(|&i| (got[i] != 0.0) != keep[i]).count();
        let kept = keep.iter().filter(|&&k| k).count();
        println!("  {dev:<22} N={n:<8} dropout p={p} {what} mask: {bad} of {n} differ (kept {kept})");
        if bad != 0 {
            failures.push(format!("{dev} N={n} p={p}: dropout {what} mask differs at {bad} elements"));
        }
    }
    check(failures, &format!("dropout p={p} out"), &dev, &out, &out_r);
    check(failures, &format!("dropout p={p} dinp"), &dev, &dinp, &dinp_r);
    Ok(())
}

#[test]
fn elementwise_kernels_match_f64_reference() {
    let mut failures = Vec::new();
    for gpu in devices("elementwise") {
        for &n in SIZES {
            let r = gelu_case(&gpu, n, &mut failures)
                .and_then(|_| residual_case(&gpu, n, &mut failures))
                .and_then(|_| [0.0, 0.1, 0.5].iter().try_for_each(|&p| dropout_case(&gpu, n, p, &mut failures)));
            if let Err(e) = r {
                failures.push(format!("{} N={n}: {e:#}", gpu.name()));
            }
        }
    }
    assert!(failures.is_empty(), "elementwise failures:\n{}", failures.join("\n"));
}

#[test]
fn elementwise_wrong_lengths_are_errors() {
    let gpu = Gpu::emu();
    let (a, b) = (gpu.zeros::<f32>(3).unwrap(), gpu.zeros::<f32>(4).unwrap());
    assert!(gelu::gelu_forward(&gpu, &a, &b).is_err());
    assert!(residual::residual_forward(&gpu, &a, &a, &b).is_err());
    let (seed, two) = (gpu.upload(&[1u64]).unwrap(), gpu.upload(&[1u64, 2]).unwrap());
    assert!(dropout::dropout_forward(&gpu, &a, &b, &seed, 0.1).is_err());
    assert!(dropout::dropout_forward(&gpu, &a, &a, &seed, 1.0).is_err(), "p = 1 must be refused");
    assert!(dropout::dropout_forward(&gpu, &a, &a, &two, 0.1).is_err(), "the seed is one u64");
    assert!(dropout::dropout_forward(&gpu, &a, &a, &seed, 0.1).is_ok());
}
