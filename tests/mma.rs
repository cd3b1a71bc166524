//! The tensor-core wrappers of `kernels/cudaenc.cuh` on their own (the test kernels
//! `test_mma_tf32`, `test_mma_bf16`, `test_round_tf32_bf16` in `kernels/testing.cu`), on the
//! emulator in both fiber orders and on a GPU when present:
//!
//! - the rounding helpers, bit for bit, against `Precision::round` (Rust), which is itself
//!   checked against hand-worked ties and against the `half` crate's bf16 conversion;
//! - `mma_m16n8k8_tf32` and `mma_m16n8k16_bf16` against a plain f64 product of the rounded
//!   inputs at awkward shapes (M, N, K not multiples of 16, 8, 8/16), each lane loading its
//!   fragment at the PTX ISA's positions. The products of rounded inputs are exact, so the
//!   only error is the f32 accumulation: one rounding per mma (ceil(K/8) or ceil(K/16)
//!   of them) plus the hardware's internal sum, bounded here by
//!   `(mmas + 2) * 2^-22 * sum_k |a_ik| |b_kj|` (4x the f32 unit roundoff per rounding, for
//!   hardware that truncates). A wrong fragment index moves whole products to the wrong
//!   output: an error of the order of the values themselves, orders of magnitude above it.
//!   Tried in each wrapper's host twin, caught in both fiber orders (docs/kernels.md,
//!   Mutation checks).
mod common;

use common::devices;
use cudaenc::device::Gpu;
use cudaenc::ops::matmul::{round_bf16, round_tf32, Precision};
use cudaenc::rng::SplitMix64;

#[test]
fn rounding_matches_hand_worked_values_and_the_half_crate() {
    let one = 1.0f32;
    let ulp = |bits: i32| 2f32.powi(-bits);
    // TF32: 10 mantissa bits, ties away from zero
    assert_eq!(round_tf32(one + ulp(11)), one + ulp(10), "tie rounds away");
    assert_eq!(round_tf32(-(one + ulp(11))), -(one + ulp(10)), "tie rounds away (negative)");
    assert_eq!(round_tf32(one + ulp(11) - ulp(23)), one, "below the tie");
    assert_eq!(round_tf32(one + 3.0 * ulp(11)), one + 2.0 * ulp(10), "tie above an odd mantissa: away");
    assert_eq!(round_tf32(f32::MAX), f32::INFINITY, "overflow");
    assert!(round_tf32(f32::NAN).is_nan());
    assert_eq!(round_tf32(f32::NEG_INFINITY), f32::NEG_INFINITY);
    // bf16: 7 mantissa bits, ties to even
    assert_eq!(round_bf16(one + ulp(8)), one, "tie to even (down)");
    assert_eq!(round_bf16(one + 3.0 * ulp(8)), one + ulp(6), "tie to even (up)");
    assert_eq!(round_bf16(one + ulp(8) + ulp(23)), one + ulp(7), "above the tie");
    assert_eq!(round_bf16(f32::MAX), f32::INFINITY, "overflow");
    assert!(round_bf16(f32::NAN).is_nan());
    let mut rng = SplitMix64::new(7);
    for i in 0..100_000 {
        let x = f32::from_bits(rng.next_u64() as u32);
        if !x.is_finite() {
            continue;
        }
        let h = half::bf16::from_f32(x).to_f32();
        assert_eq!(round_bf16(x).to_bits(), h.to_bits(), "bf16 of {x:e} (#{i})");
        // tf32: the nearest of the two neighbours with 10 mantissa bits, ties away
        let t = round_tf32(x);
        assert_eq!(t.to_bits() & 0x1fff, 0, "tf32 of {x:e} keeps low bits");
        let lo = f32::from_bits(x.to_bits() & 0xffff_e000);
        let hi = f32::from_bits((x.to_bits() & 0xffff_e000) + 0x2000);
        let (dl, dh) = ((x as f64 - lo as f64).abs(), (hi as f64 - x as f64).abs());
        let want = if dl < dh { lo } else { hi };
        assert_eq!(t.to_bits(), want.to_bits(), "tf32 of {x:e}");
    }
}

/// Special and random values through the kernels' helpers == the Rust ones, bit for bit.
#[test]
fn kernel_rounding_matches_rust() {
    let mut xs: Vec<f32> = vec![
        0.0, -0.0, 1.0, 1.0 + 2f32.powi(-11), 1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8), -1.5, f32::MAX,
        f32::MIN, f32::MIN_POSITIVE, 1e-40, -3e-39, f32::INFINITY, f32::NEG_INFINITY, f32::NAN,
    ];
    let mut rng = SplitMix64::new(11);
    xs.extend((0..4000).map(|_| f32::from_bits(rng.next_u64() as u32)));
    let n = xs.len();
    for gpu in devices("mma rounding") {
        let d_x = gpu.upload(&xs).unwrap();
        let d_out = gpu.zeros::<f32>(2 * n).unwrap();
        gpu.launch("test_round_tf32_bf16", n.div_ceil(128), 128u32, 0, &[d_out.arg(), d_x.arg(), n.into()]).unwrap();
        let out = gpu.download(&d_out).unwrap();
        for (i, &x) in xs.iter().enumerate() {
            for (p, got) in [(Precision::Tf32, out[i]), (Precision::Bf16, out[n + i])] {
                let want = p.round(x);
                let ok = if want.is_nan() { got.is_nan() } else { got.to_bits() == want.to_bits() };
                assert!(ok, "{}: {p} of {x:e} ({:#010x}): kernel {got:e}, Rust {want:e}", gpu.name(), x.to_bits());
            }
        }
    }
}

/// (M, N, K): one exact mma tile, then awkward shapes (partial tiles in every dimension).
const SHAPES: &[(usize, usize, usize)] = &[(16, 8, 16), (19, 13, 21), (33, 7, 40), (5, 17, 3), (48, 24, 47)];

fn check_mma(gpu: &Gpu, prec: Precision, m: usize, n: usize, k: usize) -> Result<(), String> {
    let mut rng = SplitMix64::new((m * 10_007 + n * 101 + k) as u64);
    let a: Vec<f32> = rng.normal_vec(m * k, 1.0).iter().map(|&x| x as f32).collect();
    let b: Vec<f32> = rng.normal_vec(k * n, 1.0).iter().map(|&x| x as f32).collect();
    let (kernel, kstep) = match prec {
        Precision::Tf32 => ("test_mma_tf32", 8),
        Precision::Bf16 => ("test_mma_bf16", 16),
        Precision::Fp32 => unreachable!(),
    };
    let run = || -> anyhow::Result<Vec<f32>> {
        let (d_a, d_b) = (gpu.upload(&a)?, gpu.upload(&b)?);
        let d_c = gpu.upload(&vec![f32::NAN; m * n])?;
        let blocks = m.div_ceil(16) * n.div_ceil(8);
        gpu.launch(kernel, blocks, 32u32, 0, &[d_c.arg(), d_a.arg(), d_b.arg(), m.into(), n.into(), k.into()])?;
        gpu.download(&d_c)
    };
    let got = run().map_err(|e| format!("{e:#}"))?;
    let mmas = k.div_ceil(kstep) as f64;
    let tol = (mmas + 2.0) * 2f64.powi(-22);
    let mut worst = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let (mut want, mut mag) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = prec.round(a[i * k + kk]) as f64 * prec.round(b[kk * n + j]) as f64;
                want += p;
                mag += p.abs();
            }
            let g = got[i * n + j] as f64;
            let e = if g.is_finite() { (g - want).abs() / mag.max(f64::MIN_POSITIVE) } else { f64::INFINITY };
            worst = worst.max(e);
            if e > tol {
                return Err(format!(
                    "{} {prec} M={m} N={n} K={k}: C[{i}][{j}] = {g}, want {want} (error {e:.2e} of sum|a||b|, tol {tol:.1e})",
                    gpu.name()
                ));
            }
        }
    }
    println!("  {:<22} {prec} M={m:<3} N={n:<3} K={k:<3} max error {worst:.2e} of sum|a||b| (tol {tol:.1e})", gpu.name());
    let again = run().map_err(|e| format!("{e:#}"))?;
    if again.iter().zip(&got).any(|(x, y)| x.to_bits() != y.to_bits()) {
        return Err(format!("{} {prec} M={m} N={n} K={k}: rerun differs", gpu.name()));
    }
    Ok(())
}

#[test]
fn mma_tf32_matches_plain_product() {
    let mut failures = Vec::new();
    for gpu in devices("mma tf32") {
        for &(m, n, k) in SHAPES {
            failures.extend(check_mma(&gpu, Precision::Tf32, m, n, k).err());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn mma_bf16_matches_plain_product() {
    let mut failures = Vec::new();
    for gpu in devices("mma bf16") {
        for &(m, n, k) in SHAPES {
            failures.extend(check_mma(&gpu, Precision::Bf16, m, n, k).err());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The twin needs the whole warp: a block of 16 threads is an error naming the missing
/// lanes, never a hang or a wrong result.
#[test]
fn mma_with_a_partial_warp_is_an_error() {
    let gpu = common::emu();
    let (m, n, k) = (16, 8, 8);
    let (d_a, d_b, d_c) = (gpu.zeros::<f32>(m * k).unwrap(), gpu.zeros::<f32>(k * n).unwrap(), gpu.zeros::<f32>(m * n).unwrap());
    let e = gpu
        .launch("test_mma_tf32", 1usize, 16u32, 0, &[d_c.arg(), d_a.arg(), d_b.arg(), m.into(), n.into(), k.into()])
        .expect_err("a 16-thread block cannot run an mma");
    let msg = format!("{e:#}");
    assert!(msg.contains("does not exist") && msg.contains("mma"), "{msg}");
}
