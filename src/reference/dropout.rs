//! Dropout with a counter-based RNG: element `idx` is kept iff
//! `rng::dropout_uniform(seed, idx) >= p`, kept values scaled by 1 / (1 - p).
//! The mask depends only on (seed, idx), so a kernel reproduces it exactly.
//! Kernel: `kernels/dropout.cu`; launcher: `src/ops/dropout.rs`.
//! p == 0 is the identity (no RNG is drawn).

use rayon::prelude::*;

use super::{with_simd, Float};

/// Elements per rayon task (the mask depends on the element index only).
const CHUNK: usize = 1 << 14;
use crate::rng::dropout_uniform;

/// Whether element `idx` survives under `seed` at probability `p`.
#[inline]
pub fn dropout_keep(seed: u64, idx: usize, p: f32) -> bool {
    p <= 0.0 || dropout_uniform(seed, idx as u64) >= p
}

/// out (N)  <-  inp (N).
pub fn dropout_forward<T: Float>(out: &mut [T], inp: &[T], seed: u64, p: f32) {
    assert_eq!(out.len(), inp.len());
    if p <= 0.0 {
        out.copy_from_slice(inp);
        return;
    }
    let scale = T::of(1.0 / (1.0 - p as f64));
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).enumerate().for_each(|(ci, (out, inp))| {
        with_simd(dropout_chunk, (out, inp, seed, ci * CHUNK, p, scale));
    });
}

/// One chunk of `dropout_forward`, its first element at index `start`.
#[inline(always)]
fn dropout_chunk<T: Float>((out, inp, seed, start, p, scale): (&mut [T], &[T], u64, usize, f32, T)) {
    for (i, (o, &x)) in out.iter_mut().zip(inp).enumerate() {
        *o = if dropout_keep(seed, start + i, p) { x * scale } else { T::zero() };
    }
}

/// dinp (N) =  <-  dout (N): the same mask and scale as the forward pass.
pub fn dropout_backward<T: Float>(dinp: &mut [T], dout: &[T], seed: u64, p: f32) {
    dropout_forward(dinp, dout, seed, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    #[test]
    fn dropout_backward_matches_finite_differences() {
        for &(n, p) in &[(1usize, 0.5f32), (37, 0.0), (101, 0.3)] {
            let mut rng = SplitMix64::new(n as u64);
            let inp = rng.normal_vec(n, 1.0);
            let probe = rng.normal_vec(n, 1.0);
            let seed = 0xABCD + n as u64;
            let mut di = vec![5.0; n];
            dropout_backward(&mut di, &probe, seed, p);
            let f = |a: &[Vec<f64>]| {
                let mut out = vec![0.0; n];
                dropout_forward(&mut out, &a[0], seed, p);
                out
            };
            let report = check_op_gradient(f, &[inp], &probe, &[di]);
            println!("dropout N={n} p={p}: {report} (tol 1e-6)");
            assert!(report.max_rel_err < 1e-6, "dropout: {report}");
        }
    }

    #[test]
    fn vector_builds_give_the_plain_bits() {
        // The chunk compiled for AVX-512 and for AVX2 with FMA (each where the CPU has
        // it; as is otherwise) against the same loop called directly: identical bits.
        use crate::reference::{with_lanes, Simd};
        let inp: Vec<f32> = SplitMix64::new(6).normal_vec(10_001, 1.0).iter().map(|&x| x as f32).collect();
        let mut a = vec![0f32; inp.len()];
        dropout_chunk((&mut a, &inp, 77, 123, 0.3, 1.0 / 0.7));
        for lanes in [Some(Simd::Avx512), Some(Simd::Avx2)] {
            let mut b = vec![0f32; inp.len()];
            with_lanes(lanes, dropout_chunk, (&mut b[..], &inp[..], 77, 123, 0.3, 1.0 / 0.7));
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{lanes:?}");
        }
        assert!(a.iter().any(|&x| x == 0.0) && a.iter().any(|&x| x != 0.0));
    }

    #[test]
    fn mask_is_deterministic_and_has_the_right_rate() {
        let n = 100_000;
        let inp = vec![1.0f32; n];
        let (mut a, mut b) = (vec![0.0f32; n], vec![0.0f32; n]);
        dropout_forward(&mut a, &inp, 42, 0.25);
        dropout_forward(&mut b, &inp, 42, 0.25);
        assert_eq!(a, b);
        let kept = a.iter().filter(|&&x| x != 0.0).count() as f64 / n as f64;
        println!("dropout p=0.25: kept fraction {kept:.4} (expect 0.75 +- 0.01)");
        assert!((kept - 0.75).abs() < 0.01);
        assert!(a.iter().all(|&x| x == 0.0 || (x - 1.0 / 0.75).abs() < 1e-6));
        dropout_forward(&mut b, &inp, 43, 0.25);
        assert_ne!(a, b, "another seed, another mask");
    }
}
