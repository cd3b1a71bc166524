//! layernorm_forward / layernorm_backward kernels vs the f64 CPU reference, on emu
//! (both fiber orders) and on cuda when present. Tolerance: relative error 1e-5, except
//! for dweight/dbias, f32 sums over the N rows, whose rounding grows like sqrt(N):
//! `max(1e-5, 6e-7 * sqrt(N))`, 1e-5 up to N = 277 (every shape without a row split),
//! 1.9e-5 at N = 1000, 3.8e-5 at N = 4099 (measured 1.5e-5 and 1.6e-5 split, 7.9e-6 and
//! 9.1e-6 with the old single-chunk order: either order sits at that level).
//! Determinism (bit-identical reruns), including the row-split dweight/dbias path
//! (several chunks, see `layernorm_backward_chunks`).
mod common;

use common::{devices, max_rel_err, to_f32, to_f64, small_if_asked};
use cudaenc::device::Gpu;
use cudaenc::ops::layernorm::{layernorm_backward, layernorm_backward_chunks, layernorm_backward_scratch_len, layernorm_forward};
use cudaenc::reference::layernorm as reference;
use cudaenc::rng::SplitMix64;

const TOL: f64 = 1e-5;
/// (N, C): C = 1; not a multiple of 32; wider than a block (256); many rows; then rows
/// split into chunks: 3 of 334 rows, 16 of 257 (the last 244), 32 of 257 (C = 1).
const SHAPES: &[(usize, usize)] =
    &[(1, 1), (3, 1), (2, 33), (5, 384), (3, 1500), (257, 64), (257, 100), (1000, 64), (4099, 33), (8200, 1)];

/// Tolerance of dweight/dbias, sums of N terms (see the top of the file).
fn tol_sum(n: usize) -> f64 {
    (6e-7 * (n as f64).sqrt()).max(TOL)
}

/// The error relative to `tol` (<= 1 passes).
fn check(what: &str, dev: &str, n: usize, c: usize, got: &[f32], want: &[f64], tol: f64) -> f64 {
    let (e, i) = max_rel_err(got, want);
    println!("  {dev:<22} N={n:<4} C={c:<5} {what:<8} max rel err {e:.2e} tol {tol:.1e} (at {i}: got {} want {})", got[i], want[i]);
    e / tol
}

/// The worst error over the tensors as a multiple of each one's tolerance.
fn run_shape(gpu: &Gpu, n: usize, c: usize) -> anyhow::Result<f64> {
    let mut rng = SplitMix64::new(1000 * n as u64 + c as u64);
    // f32 inputs; the reference runs in f64 on exactly these values
    let inp = to_f32(&rng.normal_vec(n * c, 1.0));
    let weight = to_f32(&rng.normal_vec(c, 1.0));
    let bias = to_f32(&rng.normal_vec(c, 1.0));
    let dout = to_f32(&rng.normal_vec(n * c, 1.0));
    let dinp0 = to_f32(&rng.normal_vec(n * c, 1.0)); // accumulates: start non-zero
    let dw0 = to_f32(&rng.normal_vec(c, 1.0));
    let db0 = to_f32(&rng.normal_vec(c, 1.0));

    let (mut out_r, mut mean_r, mut rstd_r) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    reference::layernorm_forward(&mut out_r, &mut mean_r, &mut rstd_r, &to_f64(&inp), &to_f64(&weight), &to_f64(&bias), n, c);
    let (mut dinp_r, mut dw_r, mut db_r) = (to_f64(&dinp0), to_f64(&dw0), to_f64(&db0));
    reference::layernorm_backward(
        &mut dinp_r, &mut dw_r, &mut db_r, &to_f64(&dout), &to_f64(&inp), &to_f64(&weight), &mean_r, &rstd_r, n, c,
    );

    let d_inp = gpu.upload(&inp)?;
    let d_w = gpu.upload(&weight)?;
    let d_b = gpu.upload(&bias)?;
    let d_out = gpu.zeros::<f32>(n * c)?;
    let d_mean = gpu.zeros::<f32>(n)?;
    let d_rstd = gpu.zeros::<f32>(n)?;
    layernorm_forward(gpu, &d_out, &d_mean, &d_rstd, &d_inp, &d_w, &d_b, n, c)?;
    let dev = gpu.name();
    let mut worst = 0.0f64;
    worst = worst.max(check("out", &dev, n, c, &gpu.download(&d_out)?, &out_r, TOL));
    worst = worst.max(check("mean", &dev, n, c, &gpu.download(&d_mean)?, &mean_r, TOL));
    worst = worst.max(check("rstd", &dev, n, c, &gpu.download(&d_rstd)?, &rstd_r, TOL));

    // backward from the kernel's own mean/rstd (as training does)
    let d_dout = gpu.upload(&dout)?;
    let d_dinp = gpu.upload(&dinp0)?;
    let d_dw = gpu.upload(&dw0)?;
    let d_db = gpu.upload(&db0)?;
    // exactly the helper's length, NaN-filled: the kernel must not read what it did not write
    let scratch_len = layernorm_backward_scratch_len(n, c);
    let d_scratch = gpu.upload(&vec![f32::NAN; scratch_len])?;
    println!("  {dev:<22} N={n:<4} C={c:<5} row chunks {:?}, scratch {scratch_len}", layernorm_backward_chunks(n, c));
    layernorm_backward(gpu, &d_dinp, &d_dw, &d_db, &d_scratch, &d_dout, &d_inp, &d_w, &d_mean, &d_rstd, n, c)?;
    let (dinp, dw, db) = (gpu.download(&d_dinp)?, gpu.download(&d_dw)?, gpu.download(&d_db)?);
    worst = worst.max(check("dinp", &dev, n, c, &dinp, &dinp_r, TOL));
    worst = worst.max(check("dweight", &dev, n, c, &dw, &dw_r, tol_sum(n)));
    worst = worst.max(check("dbias", &dev, n, c, &db, &db_r, tol_sum(n)));

    // determinism: a rerun from the same starting values is bit-identical
    gpu.write(&d_dinp, &dinp0)?;
    gpu.write(&d_dw, &dw0)?;
    gpu.write(&d_db, &db0)?;
    gpu.write(&d_scratch, &vec![f32::NAN; scratch_len])?;
    layernorm_backward(gpu, &d_dinp, &d_dw, &d_db, &d_scratch, &d_dout, &d_inp, &d_w, &d_mean, &d_rstd, n, c)?;
    anyhow::ensure!(gpu.download(&d_dinp)? == dinp, "{dev}: dinp differs on rerun");
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    anyhow::ensure!(same(&gpu.download(&d_dw)?, &dw) && same(&gpu.download(&d_db)?, &db), "{dev}: dweight/dbias differ on rerun");
    Ok(worst)
}

#[test]
fn layernorm_matches_f64_reference() {
    let mut failures = Vec::new();
    for gpu in devices("layernorm") {
        for &&(n, c) in &small_if_asked("layernorm", SHAPES, |s| s.0 * s.1, 300_000) {
            match run_shape(&gpu, n, c) {
                Ok(r) if r <= 1.0 => {}
                Ok(r) => failures.push(format!("{} N={n} C={c}: max rel err {r:.2} x its tolerance", gpu.name())),
                Err(e) => failures.push(format!("{} N={n} C={c}: {e:#}", gpu.name())),
            }
        }
    }
    assert!(failures.is_empty(), "layernorm failures:\n{}", failures.join("\n"));
}

/// Shapes only: one chunk for small N, C = 384 at N = 16384 gets 32 chunks of 512 rows
/// (384 column blocks instead of 12); chunks cover N exactly once; scratch monotone in N.
#[test]
fn layernorm_backward_chunking() {
    for (n, c) in [(1, 1), (257, 100), (511, 384)] {
        assert_eq!(layernorm_backward_chunks(n, c).0, 1, "N={n} C={c}");
        assert_eq!(layernorm_backward_scratch_len(n, c), 0);
    }
    assert_eq!(layernorm_backward_chunks(16384, 384), (32, 512));
    for n in [0, 1, 255, 256, 511, 512, 1000, 4099, 16384, 100_000] {
        for c in [1, 33, 384, 1500] {
            let (s, len) = layernorm_backward_chunks(n, c);
            assert!(s * len >= n && (s - 1) * len < n.max(1), "N={n} C={c}: {s} x {len}");
            assert!(layernorm_backward_scratch_len(n + 1, c) >= layernorm_backward_scratch_len(n, c));
        }
    }
    let gpu = Gpu::emu();
    let (n, c) = (1000, 8);
    let z = |len: usize| gpu.zeros::<f32>(len).unwrap();
    let (x, v, r) = (z(n * c), z(c), z(n));
    let short = z(layernorm_backward_scratch_len(n, c) - 1);
    let e = layernorm_backward(&gpu, &x, &v, &v, &short, &x, &x, &v, &r, &r, n, c).expect_err("short scratch");
    assert!(format!("{e:#}").contains("scratch"), "{e:#}");
}

#[test]
fn layernorm_wrong_arguments_are_errors_naming_the_kernel() {
    for gpu in devices("layernorm arg check") {
        let x = gpu.zeros::<f32>(4).unwrap();
        // one argument short
        let e = gpu.launch("layernorm_forward", 1u32, 32u32, 0, &[x.arg(), x.arg(), x.arg(), x.arg(), x.arg(), x.arg(), 1i32.into()]);
        let msg = format!("{:#}", e.expect_err("7 arguments to an 8-parameter kernel must fail"));
        println!("{}: {msg}", gpu.name());
        assert!(msg.contains("layernorm_forward"), "error must name the kernel: {msg}");
        // a float where an int goes
        let e = gpu.launch("layernorm_forward", 1u32, 32u32, 0, &[x.arg(), x.arg(), x.arg(), x.arg(), x.arg(), x.arg(), 1i32.into(), 4.0f32.into()]);
        let msg = format!("{:#}", e.expect_err("f32 for int must fail"));
        assert!(msg.contains("layernorm_forward") && msg.contains("argument 7"), "{msg}");
        // an unknown kernel
        let e = gpu.launch("layernorm_sideways", 1u32, 32u32, 0, &[]);
        let msg = format!("{:#}", e.expect_err("unknown kernel must fail"));
        assert!(msg.contains("layernorm_sideways"), "{msg}");
    }
}
