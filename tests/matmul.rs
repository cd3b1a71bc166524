//! matmul_forward / matmul_backward kernels vs the f64 CPU reference, on emu (both fiber
//! orders) and on cuda when present; determinism of the backward (bit-identical reruns),
//! including the split-K path (several row chunks, see `matmul_backward_chunks`).
//!
//! Tolerance per tensor (relative error, floor 1e-2 of the tensor's largest |value|, see
//! common): `tol(K) = max(1e-5, 3e-6 * sqrt(K))`, K = the length of the sum behind each
//! element (out: IC, dinp: OC, dweight and dbias: N). Every element is an f32 sum of K
//! products of O(1) values; its rounding error grows like sqrt(K) * 6e-8 times the
//! partial sums, so a fixed 1e-5 cannot hold for K = 1536 (measured 4.8e-5 there, with
//! the sum in any order). K = 1 gives 1e-5; K = 384 gives 5.9e-5; K = 1536 gives 1.2e-4.
mod common;

use common::{devices, max_rel_err, to_f32, to_f64, small_if_asked};
use cudaenc::device::{Buf, Gpu};
use cudaenc::ops::matmul::{matmul_backward, matmul_backward_chunks, matmul_backward_scratch_len, matmul_forward};
use cudaenc::reference::matmul as reference;
use cudaenc::rng::SplitMix64;

/// Tolerance for an f32 sum of `k` terms (see the top of the file).
fn tol(k: usize) -> f64 {
    (3e-6 * (k as f64).sqrt()).max(1e-5)
}

/// (N, IC, OC, bias). The model's real shapes (one review of 512 tokens at C = 384:
/// qkv, attn proj, fc, fc proj; the heads at batch 64), then awkward ones: N = 1,
/// sizes that are not multiples of 32 or of the 64 tile, one past a tile, no bias.
const SHAPES: &[(usize, usize, usize, bool)] = &[
    (512, 384, 1152, true),
    (512, 384, 384, true),
    (512, 384, 1536, true),
    (512, 1536, 384, true),
    (64, 384, 2, true),
    (64, 384, 1, true),
    (1, 1, 1, true),
    (1, 33, 67, true),
    (257, 131, 67, true),
    (257, 67, 33, false),
    (3, 131, 129, true),
    (65, 64, 65, false),
    // split-K over N with small IC/OC (fast on the emulator): 3 chunks of 334 rows, 16
    // chunks of 257 (the last one 244), 4 chunks of 256 rows (a full tile) without a bias
    (1000, 33, 67, true),
    (4099, 17, 5, true),
    (1024, 64, 64, false),
];

fn check(what: &str, dev: &str, shape: (usize, usize, usize), got: &[f32], want: &[f64], tol: f64) -> Result<(), String> {
    let (e, i) = max_rel_err(got, want);
    let (n, ic, oc) = shape;
    println!(
        "  {dev:<22} N={n:<4} IC={ic:<5} OC={oc:<5} {what:<8} max rel err {e:.2e} tol {tol:.1e} (at {i}: got {} want {})",
        got[i], want[i]
    );
    if e <= tol { Ok(()) } else { Err(format!("{dev} N={n} IC={ic} OC={oc} {what}: max rel err {e:.2e} > {tol:.1e}")) }
}

fn run_shape(gpu: &Gpu, n: usize, ic: usize, oc: usize, with_bias: bool) -> anyhow::Result<Vec<String>> {
    let mut rng = SplitMix64::new((n * 1_000_003 + ic * 1009 + oc) as u64);
    // f32 inputs; the reference runs in f64 on exactly these values
    let inp = to_f32(&rng.normal_vec(n * ic, 1.0));
    let weight = to_f32(&rng.normal_vec(oc * ic, 1.0));
    let bias = to_f32(&rng.normal_vec(oc, 1.0));
    let dout = to_f32(&rng.normal_vec(n * oc, 1.0));
    let dinp0 = vec![f32::NAN; n * ic]; // overwritten: start with garbage
    let dw0 = to_f32(&rng.normal_vec(oc * ic, 1.0)); // accumulates: start non-zero
    let db0 = to_f32(&rng.normal_vec(oc, 1.0));

    let bias64 = to_f64(&bias);
    let mut out_r = vec![0.0; n * oc];
    reference::matmul_forward(&mut out_r, &to_f64(&inp), &to_f64(&weight), with_bias.then_some(&bias64[..]), n, ic, oc);
    let (mut dinp_r, mut dw_r, mut db_r) = (vec![0.0; n * ic], to_f64(&dw0), to_f64(&db0));
    reference::matmul_backward(
        &mut dinp_r, &mut dw_r, with_bias.then_some(&mut db_r[..]), &to_f64(&dout), &to_f64(&inp), &to_f64(&weight), n, ic, oc,
    );

    let dev = gpu.name();
    let shape = (n, ic, oc);
    let mut failures = Vec::new();
    let mut record = |r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(e)
        }
    };
    let d_inp = gpu.upload(&inp)?;
    let d_w = gpu.upload(&weight)?;
    let d_b = gpu.upload(&bias)?;
    let d_out = gpu.upload(&vec![f32::NAN; n * oc])?; // overwritten
    matmul_forward(gpu, &d_out, &d_inp, &d_w, with_bias.then_some(&d_b), n, ic, oc)?;
    record(check("out", &dev, shape, &gpu.download(&d_out)?, &out_r, tol(ic)));

    let d_dout = gpu.upload(&dout)?;
    let d_dinp = gpu.upload(&dinp0)?;
    let d_dw = gpu.upload(&dw0)?;
    let d_db = gpu.upload(&db0)?;
    let dbias: Option<&Buf<f32>> = with_bias.then_some(&d_db);
    // scratch exactly as long as the helper says, starting as NaN: the kernel must not read
    // what it did not write
    let scratch_len = matmul_backward_scratch_len(n, ic, oc);
    let d_scratch = gpu.upload(&vec![f32::NAN; scratch_len])?;
    matmul_backward(gpu, &d_dinp, &d_dw, dbias, &d_scratch, &d_dout, &d_inp, &d_w, n, ic, oc)?;
    let (dinp, dw, db) = (gpu.download(&d_dinp)?, gpu.download(&d_dw)?, gpu.download(&d_db)?);
    println!("  {dev:<22} N={n:<4} IC={ic:<5} OC={oc:<5} split-K chunks {:?}, scratch {scratch_len}", matmul_backward_chunks(n, ic, oc));
    record(check("dinp", &dev, shape, &dinp, &dinp_r, tol(oc)));
    record(check("dweight", &dev, shape, &dw, &dw_r, tol(n)));
    if with_bias {
        record(check("dbias", &dev, shape, &db, &db_r, tol(n)));
    } else if db != db0 {
        failures.push(format!("{dev} N={n} IC={ic} OC={oc}: dbias written although absent"));
    }

    // determinism: a rerun from the same starting values is bit-identical
    gpu.write(&d_dinp, &dinp0)?;
    gpu.write(&d_dw, &dw0)?;
    gpu.write(&d_db, &db0)?;
    gpu.write(&d_scratch, &vec![f32::NAN; scratch_len])?;
    matmul_backward(gpu, &d_dinp, &d_dw, dbias, &d_scratch, &d_dout, &d_inp, &d_w, n, ic, oc)?;
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    if !same(&gpu.download(&d_dinp)?, &dinp) || !same(&gpu.download(&d_dw)?, &dw) || !same(&gpu.download(&d_db)?, &db) {
        failures.push(format!("{dev} N={n} IC={ic} OC={oc}: backward differs on rerun"));
    }
    Ok(failures)
}

#[test]
fn matmul_matches_f64_reference_and_is_deterministic() {
    let mut failures = Vec::new();
    for gpu in devices("matmul") {
        for &&(n, ic, oc, bias) in &small_if_asked("matmul", SHAPES, |s| s.0 * s.1 * s.2, 4_000_000) {
            match run_shape(&gpu, n, ic, oc, bias) {
                Ok(f) => failures.extend(f),
                Err(e) => failures.push(format!("{} N={n} IC={ic} OC={oc}: {e:#}", gpu.name())),
            }
        }
    }
    assert!(failures.is_empty(), "matmul failures:\n{}", failures.join("\n"));
}

/// The chunking depends on the shapes only: one chunk for small N, blocks ~2-4x an H100's
/// 132 SMs at the model's shapes (N = 16384), chunks covering N exactly once.
#[test]
fn matmul_backward_chunking() {
    for (n, ic, oc) in [(1, 1, 1), (257, 131, 67), (511, 384, 384), (64, 384, 2)] {
        assert_eq!(matmul_backward_chunks(n, ic, oc).0, 1, "N={n} IC={ic} OC={oc}");
        assert_eq!(matmul_backward_scratch_len(n, ic, oc), 0);
    }
    for (ic, oc, want) in [(384, 384, 11), (384, 1152, 4), (384, 1536, 3), (1536, 384, 3)] {
        let (s, len) = matmul_backward_chunks(16384, ic, oc);
        let blocks = s * oc.div_ceil(64) * ic.div_ceil(64);
        println!("N=16384 IC={ic} OC={oc}: {s} chunks of {len} rows, {blocks} dweight blocks");
        assert_eq!(s, want, "IC={ic} OC={oc}");
        assert!((264..=528).contains(&blocks), "IC={ic} OC={oc}: {blocks} dweight blocks");
    }
    for n in [0, 1, 255, 256, 511, 512, 1000, 4099, 16384, 100_000] {
        for (ic, oc) in [(1, 1), (17, 5), (384, 384), (1536, 384)] {
            let (s, len) = matmul_backward_chunks(n, ic, oc);
            assert!(s * len >= n && (s - 1) * len < n.max(1), "N={n} IC={ic} OC={oc}: {s} x {len}");
            // non-decreasing in N, so scratch sized at the largest N serves smaller ones
            assert!(matmul_backward_scratch_len(n + 1, ic, oc) >= matmul_backward_scratch_len(n, ic, oc));
        }
    }
}

#[test]
fn matmul_backward_short_scratch_is_an_error() {
    let gpu = Gpu::emu();
    let (n, ic, oc) = (1000, 8, 8);
    let need = matmul_backward_scratch_len(n, ic, oc);
    assert!(need > 0);
    let (dinp, inp, dout) = (gpu.zeros::<f32>(n * ic).unwrap(), gpu.zeros::<f32>(n * ic).unwrap(), gpu.zeros::<f32>(n * oc).unwrap());
    let (dw, w, db) = (gpu.zeros::<f32>(oc * ic).unwrap(), gpu.zeros::<f32>(oc * ic).unwrap(), gpu.zeros::<f32>(oc).unwrap());
    let short = gpu.zeros::<f32>(need - 1).unwrap();
    let e = matmul_backward(&gpu, &dinp, &dw, Some(&db), &short, &dout, &inp, &w, n, ic, oc).expect_err("short scratch");
    assert!(format!("{e:#}").contains("scratch"), "{e:#}");
}

#[test]
fn matmul_wrong_shapes_are_errors() {
    let gpu = Gpu::emu();
    let (a, w) = (gpu.zeros::<f32>(6).unwrap(), gpu.zeros::<f32>(6).unwrap());
    let out = gpu.zeros::<f32>(5).unwrap();
    let none: Option<&Buf<f32>> = None;
    let e = matmul_forward(&gpu, &out, &a, &w, none, 2, 3, 2).expect_err("out of 5 for N*OC = 4 must fail");
    assert!(format!("{e:#}").contains("matmul_forward"), "{e:#}");
}
