//! residual_layernorm_forward (dropout + residual add + layer norm in one kernel) and
//! residual_layernorm_backward (layer norm backward + dropout backward in one pass) vs the
//! f64 CPU reference, on emu (both fiber orders) and on cuda when present.
//!
//! Tolerance: relative error 1e-5 (floor 1e-2 of the tensor's largest |value|, see
//! common), as tests/layernorm.rs. res is x plus the rounded, scaled branch: two f32
//! roundings of values about 1 to 3, absolute error near 1e-7, largest relative to the
//! floor where x and the branch cancel (measured 1.2e-6 on emu). ln/mean/rstd are
//! layernorm_forward's f32 sums over one row of at most 1500 values (measured 2.0e-6).
//! Exact checks: the dropped elements are exactly the reference's (res == x there), the
//! outputs equal the three unfused launches (dropout_forward, residual_forward,
//! layernorm_forward) bit for bit, as the kernel does the same arithmetic in the same
//! order, and a rerun is bit-identical.
//!
//! Mutation check (done by hand on the emulator, then reverted): removing the barrier
//! that ends `block_reduce_sum` (the kernel calls it twice on one shared scratch: mean, then
//! variance) and shifting the kernel's index (`row_res[i + 1]` in the variance loop; the
//! dropout counter `base + i + 1`) each make this test fail. Backward, likewise: removing
//! the barrier before the column blocks sum their warps' partials (dweight/dbias then differ
//! between runs), the backward's dropout counter `base + i + 1`, and dbranch computed from
//! the wrong gradient each fail `residual_layernorm_backward_matches_f64_reference`.
//! Backward tolerances: dres and dbranch 1e-5 (measured 3.5e-6), dweight/dbias f32 sums
//! over N rows `max(1e-5, 6e-7 sqrt(N))` as tests/layernorm.rs (measured 1.1e-5 of 1.5e-5
//! at N = 600, the 2-chunk split).
mod common;

use common::{devices, max_rel_err, to_f32, to_f64};
use cudaenc::device::Gpu;
use cudaenc::ops::dropout::{dropout_backward, dropout_forward};
use cudaenc::ops::layernorm::{
    layernorm_backward, layernorm_backward_chunks, layernorm_backward_scratch_len, layernorm_forward, residual_layernorm_backward,
    residual_layernorm_forward, RESIDUAL_LAYERNORM_MAX_C,
};
use cudaenc::ops::residual::residual_forward;
use cudaenc::reference::dropout::dropout_keep;
use cudaenc::reference::layernorm as reference;
use cudaenc::rng::SplitMix64;

const TOL: f64 = 1e-5;
/// (N, C, p): C = 1; one row (N = 1); C not a multiple of 32; C = 257 just over the
/// 256-thread block (threads hold one or two values); C = 1500 (six per thread); the
/// model's C = 384; p = 0 (no dropout) and p > 0, including p = 0.5.
const CASES: &[(usize, usize, f32)] =
    &[(1, 1, 0.0), (3, 1, 0.5), (1, 384, 0.1), (4, 33, 0.0), (3, 33, 0.5), (5, 257, 0.1), (2, 1500, 0.3), (7, 384, 0.1)];

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The worst error over the four outputs as a multiple of TOL (<= 1 passes); errors for
/// every exact check that fails.
fn run_case(gpu: &Gpu, n: usize, c: usize, p: f32) -> anyhow::Result<f64> {
    let mut rng = SplitMix64::new(7000 * n as u64 + c as u64);
    let seed = 0xD0D0_0000_0000_0000u64 ^ (n * 131 + c) as u64;
    // f32 inputs; the reference runs in f64 on exactly these values
    let x = to_f32(&rng.normal_vec(n * c, 1.0));
    let branch = to_f32(&rng.normal_vec(n * c, 1.0)); // never exactly 0: dropped <=> res == x
    let weight = to_f32(&rng.normal_vec(c, 1.0));
    let bias = to_f32(&rng.normal_vec(c, 1.0));

    let (mut res_r, mut ln_r) = (vec![0.0; n * c], vec![0.0; n * c]);
    let (mut mean_r, mut rstd_r) = (vec![0.0; n], vec![0.0; n]);
    reference::residual_layernorm_forward(
        &mut res_r, &mut ln_r, &mut mean_r, &mut rstd_r, &to_f64(&x), &to_f64(&branch), &to_f64(&weight), &to_f64(&bias), seed, p, n, c,
    );

    let (d_x, d_branch, d_w, d_b) = (gpu.upload(&x)?, gpu.upload(&branch)?, gpu.upload(&weight)?, gpu.upload(&bias)?);
    let d_seed = gpu.upload(&[seed])?; // the kernels read the seed from device memory
    // NaN-filled outputs: every element must be written
    let nan = |len: usize| gpu.upload(&vec![f32::NAN; len]);
    let (d_res, d_ln, d_mean, d_rstd) = (nan(n * c)?, nan(n * c)?, nan(n)?, nan(n)?);
    residual_layernorm_forward(gpu, &d_res, &d_ln, &d_mean, &d_rstd, &d_x, &d_branch, &d_w, &d_b, &d_seed, p, n, c)?;
    let got = [gpu.download(&d_res)?, gpu.download(&d_ln)?, gpu.download(&d_mean)?, gpu.download(&d_rstd)?];
    let dev = gpu.name();
    let mut worst = 0.0f64;
    for (what, g, want) in [("res", &got[0], &res_r), ("ln", &got[1], &ln_r), ("mean", &got[2], &mean_r), ("rstd", &got[3], &rstd_r)] {
        let (e, i) = max_rel_err(g, want);
        println!("  {dev:<22} N={n:<3} C={c:<5} p={p:<4} {what:<5} max rel err {e:.2e} tol {TOL:.0e} (at {i}: got {} want {})", g[i], want[i]);
        worst = worst.max(if e.is_nan() { f64::INFINITY } else { e / TOL });
    }

    // the dropout mask: exactly the reference's
    let dropped = (0..n * c).filter(|&i| !dropout_keep(seed, i, p)).collect::<Vec<_>>();
    let wrong = dropped.iter().filter(|&&i| got[0][i] != x[i]).count();
    anyhow::ensure!(wrong == 0, "{dev}: {wrong} of {} dropped elements are not res == x", dropped.len());
    if p > 0.0 && n * c >= 100 {
        anyhow::ensure!(!dropped.is_empty(), "{dev}: p = {p} over {} elements dropped nothing", n * c);
    }

    // the three unfused launches give the same bits
    let (branch_drop, res_u, ln_u, mean_u, rstd_u) = (nan(n * c)?, nan(n * c)?, nan(n * c)?, nan(n)?, nan(n)?);
    dropout_forward(gpu, &branch_drop, &d_branch, &d_seed, p)?;
    residual_forward(gpu, &res_u, &d_x, &branch_drop)?;
    layernorm_forward(gpu, &ln_u, &mean_u, &rstd_u, &res_u, &d_w, &d_b, n, c)?;
    let unfused = [gpu.download(&res_u)?, gpu.download(&ln_u)?, gpu.download(&mean_u)?, gpu.download(&rstd_u)?];
    for (what, f, u) in [("res", &got[0], &unfused[0]), ("ln", &got[1], &unfused[1]), ("mean", &got[2], &unfused[2]), ("rstd", &got[3], &unfused[3])] {
        anyhow::ensure!(same_bits(f, u), "{dev}: {what} differs from the unfused launches");
    }

    // determinism: a rerun into fresh NaN buffers is bit-identical
    let (r2, l2, m2, s2) = (nan(n * c)?, nan(n * c)?, nan(n)?, nan(n)?);
    residual_layernorm_forward(gpu, &r2, &l2, &m2, &s2, &d_x, &d_branch, &d_w, &d_b, &d_seed, p, n, c)?;
    let again = [gpu.download(&r2)?, gpu.download(&l2)?, gpu.download(&m2)?, gpu.download(&s2)?];
    anyhow::ensure!(got.iter().zip(&again).all(|(a, b)| same_bits(a, b)), "{dev}: rerun differs");
    Ok(worst)
}

#[test]
fn residual_layernorm_matches_f64_reference() {
    let mut failures = Vec::new();
    for gpu in devices("residual_layernorm") {
        for &(n, c, p) in CASES {
            match run_case(&gpu, n, c, p) {
                Ok(r) if r <= 1.0 => {}
                Ok(r) => failures.push(format!("{} N={n} C={c} p={p}: max rel err {r:.2} x its tolerance", gpu.name())),
                Err(e) => failures.push(format!("{} N={n} C={c} p={p}: {e:#}", gpu.name())),
            }
        }
    }
    assert!(failures.is_empty(), "residual_layernorm failures:\n{}", failures.join("\n"));
}

/// Backward (N, C, p): as the forward's, plus N = 600, C = 33 whose dweight/dbias rows
/// split into 2 chunks (the layernorm_backward_reduce path).
const BACKWARD_CASES: &[(usize, usize, f32)] = &[(1, 1, 0.0), (3, 1, 0.5), (4, 33, 0.0), (5, 257, 0.1), (2, 1500, 0.3), (600, 33, 0.1)];

/// Tolerance of dweight/dbias, f32 sums over the N rows: tests/layernorm.rs's
/// `max(1e-5, 6e-7 * sqrt(N))`.
fn tol_sum(n: usize) -> f64 {
    (6e-7 * (n as f64).sqrt()).max(TOL)
}

/// residual_layernorm_backward vs the f64 reference (dres and dbranch TOL, dweight/dbias
/// tol_sum), bit-equal to layernorm_backward + dropout_backward, bit-identical rerun.
/// Returns the worst error as a multiple of its tolerance.
fn run_backward_case(gpu: &Gpu, n: usize, c: usize, p: f32) -> anyhow::Result<f64> {
    let mut rng = SplitMix64::new(9000 * n as u64 + c as u64);
    let seed = 0xBACC_0000_0000_0000u64 ^ (n * 131 + c) as u64;
    let res = to_f32(&rng.normal_vec(n * c, 1.0)); // the forward's res
    let weight = to_f32(&rng.normal_vec(c, 1.0));
    let dout = to_f32(&rng.normal_vec(n * c, 1.0)); // dln
    // accumulated into: start non-zero
    let (dres0, dw0, db0) = (to_f32(&rng.normal_vec(n * c, 1.0)), to_f32(&rng.normal_vec(c, 1.0)), to_f32(&rng.normal_vec(c, 1.0)));
    // mean and rstd of res as the forward computes them (in f32, as training saves them)
    let (mut ln, mut mean, mut rstd) = (vec![0.0f32; n * c], vec![0.0f32; n], vec![0.0f32; n]);
    reference::layernorm_forward(&mut ln, &mut mean, &mut rstd, &res, &weight, &weight, n, c);

    let (mut dres_r, mut dbranch_r, mut dw_r, mut db_r) = (to_f64(&dres0), vec![0.0; n * c], to_f64(&dw0), to_f64(&db0));
    reference::residual_layernorm_backward(
        &mut dres_r, &mut dbranch_r, &mut dw_r, &mut db_r, &to_f64(&dout), &to_f64(&res), &to_f64(&weight), &to_f64(&mean), &to_f64(&rstd), seed, p, n, c,
    );

    let (d_res, d_w, d_dout, d_mean, d_rstd) = (gpu.upload(&res)?, gpu.upload(&weight)?, gpu.upload(&dout)?, gpu.upload(&mean)?, gpu.upload(&rstd)?);
    let d_seed = gpu.upload(&[seed])?; // the kernels read the seed from device memory
    let scratch_len = layernorm_backward_scratch_len(n, c);
    // NaN-filled scratch of exactly the helper's length and NaN dbranch: all must be written first
    let nan = |len: usize| gpu.upload(&vec![f32::NAN; len]);
    let run = |fused: bool| -> anyhow::Result<[Vec<f32>; 4]> {
        let (d_dres, d_dw, d_db, d_dbranch, d_scratch) = (gpu.upload(&dres0)?, gpu.upload(&dw0)?, gpu.upload(&db0)?, nan(n * c)?, nan(scratch_len)?);
        if fused {
            residual_layernorm_backward(gpu, &d_dres, &d_dbranch, &d_dw, &d_db, &d_scratch, &d_dout, &d_res, &d_w, &d_mean, &d_rstd, &d_seed, p, n, c)?;
        } else {
            layernorm_backward(gpu, &d_dres, &d_dw, &d_db, &d_scratch, &d_dout, &d_res, &d_w, &d_mean, &d_rstd, n, c)?;
            dropout_backward(gpu, &d_dbranch, &d_dres, &d_seed, p)?;
        }
        Ok([gpu.download(&d_dres)?, gpu.download(&d_dbranch)?, gpu.download(&d_dw)?, gpu.download(&d_db)?])
    };
    let got = run(true)?;
    let dev = gpu.name();
    let names = ["dres", "dbranch", "dweight", "dbias"];
    let mut worst = 0.0f64;
    let chunks = layernorm_backward_chunks(n, c).0;
    for (k, want) in [&dres_r, &dbranch_r, &dw_r, &db_r].into_iter().enumerate() {
        let tol = if k < 2 { TOL } else { tol_sum(n) };
        let (e, i) = max_rel_err(&got[k], want);
        println!("  {dev:<22} N={n:<3} C={c:<5} p={p:<4} S={chunks} {:<7} max rel err {e:.2e} tol {tol:.1e} (at {i}: got {} want {})", names[k], got[k][i], want[i]);
        worst = worst.max(if e.is_nan() { f64::INFINITY } else { e / tol });
    }
    let unfused = run(false)?;
    for k in 0..4 {
        anyhow::ensure!(same_bits(&got[k], &unfused[k]), "{dev}: {} differs from layernorm_backward + dropout_backward", names[k]);
    }
    anyhow::ensure!(got.iter().zip(&run(true)?).all(|(a, b)| same_bits(a, b)), "{dev}: backward rerun differs");
    Ok(worst)
}

#[test]
fn residual_layernorm_backward_matches_f64_reference() {
    let mut failures = Vec::new();
    for gpu in devices("residual_layernorm_backward") {
        for &(n, c, p) in BACKWARD_CASES {
            match run_backward_case(&gpu, n, c, p) {
                Ok(r) if r <= 1.0 => {}
                Ok(r) => failures.push(format!("{} N={n} C={c} p={p}: max rel err {r:.2} x its tolerance", gpu.name())),
                Err(e) => failures.push(format!("{} N={n} C={c} p={p}: {e:#}", gpu.name())),
            }
        }
    }
    assert!(failures.is_empty(), "residual_layernorm_backward failures:\n{}", failures.join("\n"));
}

/// Bad shapes and p are errors naming the kernel, before any launch; N = 0 is a no-op.
#[test]
fn residual_layernorm_bad_arguments_are_errors() {
    let gpu = Gpu::emu();
    let z = |len: usize| gpu.zeros::<f32>(len).unwrap();
    let (n, c) = (3, 5);
    let (nc, r) = (z(n * c), z(n));
    let (seed, seeds2) = (gpu.upload(&[1u64]).unwrap(), gpu.upload(&[1u64, 2]).unwrap());
    let call = |res: &_, x: &_, c: usize, p: f32| residual_layernorm_forward(&gpu, res, &nc, &r, &r, x, &nc, &z(c), &z(c), &seed, p, n, c);
    let short = z(n * c - 1);
    for (why, e) in [
        ("short res", call(&short, &nc, c, 0.1)),
        ("short x", call(&nc, &short, c, 0.1)),
        ("p = 1", call(&nc, &nc, c, 1.0)),
        ("p NaN", call(&nc, &nc, c, f32::NAN)),
        ("two seeds", residual_layernorm_forward(&gpu, &nc, &nc, &r, &r, &nc, &nc, &z(c), &z(c), &seeds2, 0.1, n, c)),
    ] {
        let msg = format!("{:#}", e.expect_err(why));
        assert!(msg.contains("residual_layernorm_forward"), "{why}: {msg}");
    }
    // the backward: a short dbranch or dres, p >= 1
    let s = z(layernorm_backward_scratch_len(n, c));
    let (w, wc) = (z(c), z(c));
    for (why, e) in [
        ("short dbranch", residual_layernorm_backward(&gpu, &nc, &short, &w, &wc, &s, &nc, &nc, &w, &r, &r, &seed, 0.1, n, c)),
        ("short dres", residual_layernorm_backward(&gpu, &short, &nc, &w, &wc, &s, &nc, &nc, &w, &r, &r, &seed, 0.1, n, c)),
        ("p = 1", residual_layernorm_backward(&gpu, &nc, &nc, &w, &wc, &s, &nc, &nc, &w, &r, &r, &seed, 1.0, n, c)),
        ("two seeds", residual_layernorm_backward(&gpu, &nc, &nc, &w, &wc, &s, &nc, &nc, &w, &r, &r, &seeds2, 0.1, n, c)),
    ] {
        let msg = format!("{:#}", e.expect_err(why));
        assert!(msg.contains("residual_layernorm_backward"), "{why}: {msg}");
    }
    let wide = RESIDUAL_LAYERNORM_MAX_C + 1;
    let (big, row) = (z(wide), z(1));
    let e = residual_layernorm_forward(&gpu, &big, &big, &row, &row, &big, &big, &big, &big, &seed, 0.1, 1, wide).expect_err("C too wide");
    assert!(format!("{e:#}").contains("C = "), "{e:#}");
    let empty = z(0);
    residual_layernorm_forward(&gpu, &empty, &empty, &empty, &empty, &empty, &empty, &z(c), &z(c), &seed, 0.1, 0, c).expect("N = 0 is a no-op");
}
