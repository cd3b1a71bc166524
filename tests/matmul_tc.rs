//! The tensor-core linear layers (`matmul_forward_prec` / `matmul_backward_prec` in TF32 and
//! bf16) against the f64 CPU reference, on the emulator (both fiber orders) and on a GPU
//! when present, at real and awkward shapes, with bit-identical reruns.
//!
//! Tolerances, per output element y = sum_k a_k b_k (+ f32 terms: bias, the previous dweight),
//! as an error relative to S = sum_k |a_k| |b_k| (+ |those f32 terms|), with u = 2^-11 (TF32) or
//! 2^-8 (bf16), the unit roundoff of a rounded input, and `r` the number of f32 roundings
//! along the sum (one per mma of 8 (TF32) or 16 (bf16) values of k, one per split-K chunk,
//! the bias or accumulate add):
//!
//! 1. against the reference on the *unrounded* f32 inputs: each product of two rounded
//!    inputs is off by at most (2u + u^2) |a_k b_k|, so |err| <= (2u + u^2 + r 2^-22) S
//!    (2^-22: 4x the f32 unit roundoff, room for hardware that truncates inside an mma);
//! 2. against the reference on the inputs rounded as the kernels round them (exact products):
//!    only the accumulation is left, |err| <= r 2^-22 S. This one catches a lost or doubled
//!    k term, a wrong fragment index or a missing barrier even where (1) is loose (bf16).
//!
//! dbias is an f32 column sum in every precision: the fp32 test's tolerance
//! (max(1e-5, 3e-6 sqrt(N)) relative, tests/matmul.rs).
//!
//! Removed barriers, a shifted lane index and unrounded TF32 staging in the tensor-core GEMM
//! were tried and are caught: docs/kernels.md, Mutation checks.
mod common;

use common::{devices, max_rel_err, to_f32, to_f64};
use cudaenc::device::{Buf, Gpu};
use cudaenc::ops::matmul::{matmul_backward_chunks, matmul_backward_prec, matmul_backward_scratch_len, matmul_forward_prec, Precision};
use cudaenc::reference::matmul as reference;
use cudaenc::rng::SplitMix64;

/// (N, IC, OC, bias). Real shapes at a small token count (the `gpu` preset's qkv and FFN,
/// the `nanogpt` FFN projection with K = 1536, a 2-class head), then awkward ones: N = 1,
/// sizes off the 64 tile and the 16/8 mma tile, no bias, and split-K over N (3 chunks of
/// 334 rows; 4 of 256 without a bias).
const SHAPES: &[(usize, usize, usize, bool)] = &[
    (96, 256, 768, true),
    (64, 256, 1024, true),
    (40, 1536, 384, true),
    (64, 384, 2, true),
    (1, 1, 1, true),
    (1, 33, 67, true),
    (257, 131, 67, true),
    (130, 67, 33, false),
    (3, 131, 129, true),
    (65, 64, 65, false),
    (1000, 33, 67, true),
    (1024, 24, 40, false),
];

/// Per-element check: |got - want| <= tol * mag; returns the worst ratio.
fn check(what: &str, tag: &str, got: &[f32], want: &[f64], mag: &[f64], tol: f64) -> Result<f64, String> {
    let mut worst = 0.0f64;
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let e = if g.is_finite() { (g as f64 - w).abs() / m.max(1e-30) } else { f64::INFINITY };
        if e > tol {
            return Err(format!("{tag} {what}[{i}] = {g}, want {w}: error {e:.2e} of sum|a||b|, tol {tol:.1e}"));
        }
        worst = worst.max(e);
    }
    Ok(worst)
}

struct Case {
    inp: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    dout: Vec<f32>,
    dw0: Vec<f32>,
    db0: Vec<f32>,
}

/// The reference (f64) on `inputs` rounded by `round`: out, dinp, dweight (with dw0
/// added) and their magnitudes S (the same sums of |terms|).
#[allow(clippy::type_complexity)]
fn reference_on(c: &Case, round: impl Fn(f32) -> f32, n: usize, ic: usize, oc: usize, with_bias: bool) -> [Vec<f64>; 6] {
    let r = |v: &[f32]| v.iter().map(|&x| round(x) as f64).collect::<Vec<f64>>();
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
    let (inp, weight, dout) = (r(&c.inp), r(&c.weight), r(&c.dout));
    let bias = to_f64(&c.bias);
    let zero_b = vec![0.0; oc];
    let mut out = vec![0.0; n * oc];
    reference::matmul_forward(&mut out, &inp, &weight, with_bias.then_some(&bias[..]), n, ic, oc);
    let mut out_mag = vec![0.0; n * oc];
    let bias_abs = abs(&bias);
    reference::matmul_forward(&mut out_mag, &abs(&inp), &abs(&weight), with_bias.then_some(&bias_abs[..]), n, ic, oc);
    let (mut dinp, mut dw, mut db) = (vec![0.0; n * ic], to_f64(&c.dw0), vec![0.0; oc]);
    reference::matmul_backward(&mut dinp, &mut dw, Some(&mut db[..]), &dout, &inp, &weight, n, ic, oc);
    let (mut dinp_mag, mut dw_mag, mut db_mag) = (vec![0.0; n * ic], abs(&to_f64(&c.dw0)), zero_b);
    reference::matmul_backward(&mut dinp_mag, &mut dw_mag, Some(&mut db_mag[..]), &abs(&dout), &abs(&inp), &abs(&weight), n, ic, oc);
    [out, out_mag, dinp, dinp_mag, dw, dw_mag]
}

fn run_shape(gpu: &Gpu, prec: Precision, n: usize, ic: usize, oc: usize, with_bias: bool) -> anyhow::Result<Vec<String>> {
    let mut rng = SplitMix64::new((n * 1_000_003 + ic * 1009 + oc) as u64);
    let c = Case {
        inp: to_f32(&rng.normal_vec(n * ic, 1.0)),
        weight: to_f32(&rng.normal_vec(oc * ic, 1.0)),
        bias: to_f32(&rng.normal_vec(oc, 1.0)),
        dout: to_f32(&rng.normal_vec(n * oc, 1.0)),
        dw0: to_f32(&rng.normal_vec(oc * ic, 1.0)),
        db0: to_f32(&rng.normal_vec(oc, 1.0)),
    };
    let dev = gpu.name();
    let tag = format!("{dev} {prec} N={n} IC={ic} OC={oc}");
    let mut failures = Vec::new();

    // the kernels
    let d_inp = gpu.upload(&c.inp)?;
    let d_w = gpu.upload(&c.weight)?;
    let d_b = gpu.upload(&c.bias)?;
    let d_out = gpu.upload(&vec![f32::NAN; n * oc])?;
    matmul_forward_prec(gpu, prec, &d_out, &d_inp, &d_w, with_bias.then_some(&d_b), n, ic, oc)?;
    let out = gpu.download(&d_out)?;
    let d_dout = gpu.upload(&c.dout)?;
    let d_dinp = gpu.upload(&vec![f32::NAN; n * ic])?;
    let d_dw = gpu.upload(&c.dw0)?;
    let d_db = gpu.upload(&c.db0)?;
    let dbias: Option<&Buf<f32>> = with_bias.then_some(&d_db);
    let scratch_len = matmul_backward_scratch_len(n, ic, oc);
    let d_scratch = gpu.upload(&vec![f32::NAN; scratch_len])?;
    matmul_backward_prec(gpu, prec, &d_dinp, &d_dw, dbias, &d_scratch, &d_dout, &d_inp, &d_w, n, ic, oc)?;
    let (dinp, dw, db) = (gpu.download(&d_dinp)?, gpu.download(&d_dw)?, gpu.download(&d_db)?);

    // tolerances: f32 roundings along each sum (one per mma, per chunk, plus the last add)
    let kstep = if prec == Precision::Bf16 { 16 } else { 8 };
    let (chunks, chunk_len) = matmul_backward_chunks(n, ic, oc);
    let r_out = (ic.div_ceil(kstep) + 2) as f64;
    let r_dinp = (oc.div_ceil(kstep) + 2) as f64;
    let r_dw = (chunks * chunk_len.div_ceil(kstep) + chunks + 2) as f64;
    let u = 2f64.powi(-(prec.mantissa_bits() as i32 + 1));
    let acc = 2f64.powi(-22);

    let raw = reference_on(&c, |x| x, n, ic, oc, with_bias);
    let rounded = reference_on(&c, |x| prec.round(x), n, ic, oc, with_bias);
    let outs: [(&str, &[f32], usize, f64); 3] = [("out", &out, 0, r_out), ("dinp", &dinp, 2, r_dinp), ("dweight", &dw, 4, r_dw)];
    for (what, got, i, r) in outs {
        let tol_raw = 2.0 * u + u * u + r * acc;
        let tol_rounded = r * acc;
        match (check(what, &tag, got, &raw[i], &raw[i + 1], tol_raw), check(what, &tag, got, &rounded[i], &rounded[i + 1], tol_rounded)) {
            (Ok(a), Ok(b)) => println!(
                "  {tag:<40} {what:<8} error/S vs unrounded {a:.2e} (tol {tol_raw:.1e}), vs rounded inputs {b:.2e} (tol {tol_rounded:.1e})"
            ),
            (a, b) => failures.extend(a.err().into_iter().chain(b.err())),
        }
    }
    if with_bias {
        let mut db_r = to_f64(&c.db0);
        let mut scratch_w = vec![0.0; oc * ic];
        let mut scratch_i = vec![0.0; n * ic];
        reference::matmul_backward(&mut scratch_i, &mut scratch_w, Some(&mut db_r[..]), &to_f64(&c.dout), &to_f64(&c.inp), &to_f64(&c.weight), n, ic, oc);
        let (e, i) = max_rel_err(&db, &db_r);
        let tol = (3e-6 * (n as f64).sqrt()).max(1e-5);
        if e > tol {
            failures.push(format!("{tag} dbias[{i}]: rel err {e:.2e} > {tol:.1e}"));
        }
    } else if db != c.db0 {
        failures.push(format!("{tag}: dbias written although absent"));
    }

    // bit-identical reruns (forward and backward) from the same starting values
    gpu.write(&d_out, &vec![f32::NAN; n * oc])?;
    matmul_forward_prec(gpu, prec, &d_out, &d_inp, &d_w, with_bias.then_some(&d_b), n, ic, oc)?;
    gpu.write(&d_dinp, &vec![f32::NAN; n * ic])?;
    gpu.write(&d_dw, &c.dw0)?;
    gpu.write(&d_db, &c.db0)?;
    gpu.write(&d_scratch, &vec![f32::NAN; scratch_len])?;
    matmul_backward_prec(gpu, prec, &d_dinp, &d_dw, dbias, &d_scratch, &d_dout, &d_inp, &d_w, n, ic, oc)?;
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    if !same(&gpu.download(&d_out)?, &out) || !same(&gpu.download(&d_dinp)?, &dinp) || !same(&gpu.download(&d_dw)?, &dw) || !same(&gpu.download(&d_db)?, &db) {
        failures.push(format!("{tag}: differs on rerun"));
    }
    Ok(failures)
}

fn run_all(prec: Precision) {
    let mut failures = Vec::new();
    for gpu in devices(&format!("matmul {prec}")) {
        for &(n, ic, oc, bias) in SHAPES {
            match run_shape(&gpu, prec, n, ic, oc, bias) {
                Ok(f) => failures.extend(f),
                Err(e) => failures.push(format!("{} {prec} N={n} IC={ic} OC={oc}: {e:#}", gpu.name())),
            }
        }
    }
    assert!(failures.is_empty(), "matmul {prec} failures:\n{}", failures.join("\n"));
}

#[test]
fn matmul_tf32_matches_f64_reference_and_is_deterministic() {
    run_all(Precision::Tf32);
}

#[test]
fn matmul_bf16_matches_f64_reference_and_is_deterministic() {
    run_all(Precision::Bf16);
}

#[test]
fn precision_names_round_trip() {
    for p in Precision::ALL {
        assert_eq!(Precision::parse(p.name()).unwrap(), p);
    }
    let e = Precision::parse("fp16").expect_err("fp16 is not offered");
    assert!(format!("{e:#}").contains("fp32, tf32 or bf16"), "{e:#}");
}
