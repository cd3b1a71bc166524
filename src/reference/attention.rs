//! Bidirectional multi-head self-attention with a key padding mask.
//! Kernel: `kernels/attention.cu`; launcher: `src/ops/attention.rs`.
//!
//! q, k, v are the column blocks [0,C), [C,2C), [2C,3C) of qkv (B,T,3C); head h uses
//! columns h*HS .. (h+1)*HS of each block, HS = C / NH. For review b with L = lens[b]:
//! for every query i < L, s_ij = q_i . k_j / sqrt(HS), p = softmax_j<L (s_ij),
//! out_i = sum_j p_j v_j. Keys j >= L are masked out. The forward saves the log-sum-exp
//! lse_i = log sum_j<L exp(s_ij) (B,NH,T) instead of the probabilities; the backward
//! recomputes p_ij = exp(s_ij - lse_i). Rows of padded queries (i >= L) are exactly 0,
//! their lse is 0, and they pass no gradient; L = 0 gives all zeros and no NaN.
//! No dropout on the attention probabilities. Parallel over the batch (rayon).

use rayon::prelude::*;
use std::any::TypeId;

use super::{gemm, Float};

/// out (B,T,C), lse (B,NH,T) log-sum-exp of each query's scaled scores  <-  qkv (B,T,3C),
/// lens (B). Per (review, head): scores = scale * Q K^T and out = P V are two GEMMs over
/// the valid block (L x HS)(HS x L) and (L x L)(L x HS), read in place from qkv with its
/// strides, through an (L, L) scratch.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward<T: Float>(
    out: &mut [T],
    lse: &mut [T],
    qkv: &[T],
    lens: &[u32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert_eq!(out.len(), b * t * c);
    assert_eq!(lse.len(), b * nh * t);
    assert_eq!(qkv.len(), b * t * 3 * c);
    assert_eq!(lens.len(), b);
    assert!(c % nh == 0, "C must be a multiple of NH");
    let hs = c / nh;
    let scale = T::of(1.0 / (hs as f64).sqrt());
    if b == 0 || t == 0 || c == 0 {
        return;
    }
    if let (Some(out), Some(lse), Some(qkv)) = (as_f32_mut(out), as_f32_mut(lse), as_f32(qkv)) {
        if fused::forward(out, lse, qkv, lens, t, c, nh) {
            return;
        }
    }
    let c3 = 3 * c;
    out.par_chunks_mut(t * c)
        .zip(lse.par_chunks_mut(nh * t))
        .enumerate()
        .for_each_init(Vec::new, |p, (bi, (out_b, lse_b))| {
            let qkv_b = &qkv[bi * t * c3..(bi + 1) * t * c3];
            let len = (lens[bi] as usize).min(t);
            out_b.fill(T::zero());
            lse_b.fill(T::zero());
            if len == 0 {
                return;
            }
            p.clear();
            p.resize(len * len, T::zero()); // (L, L) scores, then probabilities
            for h in 0..nh {
                let (q, k, v) = (&qkv_b[h * hs..], &qkv_b[c + h * hs..], &qkv_b[2 * c + h * hs..]);
                // scores (L, L) = scale * q (L, HS) @ k^T (HS, L)
                gemm(len, hs, len, scale, q, (c3, 1), k, (1, c3), T::zero(), p, (len, 1));
                for (row, l) in p.chunks_exact_mut(len).zip(&mut lse_b[h * t..h * t + len]) {
                    *l = softmax_in_place(row);
                }
                // out (L, HS) = p (L, L) @ v (L, HS)
                gemm(len, len, hs, T::one(), p, (len, 1), v, (c3, 1), T::zero(), &mut out_b[h * hs..], (c, 1));
            }
        });
}

/// `x` as f32, when T is f32 (the `cpu` device's type, which takes the fused path).
fn as_f32<T: Float>(x: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 itself, so the slice is reinterpreted as its own type.
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) })
}

/// `x` as mutable f32, when T is f32.
fn as_f32_mut<T: Float>(x: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`.
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<f32>(), x.len()) })
}

/// p_ij = exp(s_ij - lse_i) for the valid block of one (review, head), into `p` (L, L):
/// the probabilities of the forward, recomputed from q, k and the saved log-sum-exp.
#[allow(clippy::too_many_arguments)]
fn recompute_probabilities<T: Float>(p: &mut [T], q: &[T], k: &[T], lse: &[T], len: usize, hs: usize, c3: usize, scale: T) {
    gemm(len, hs, len, scale, q, (c3, 1), k, (1, c3), T::zero(), p, (len, 1));
    for (row, &l) in p.chunks_exact_mut(len).zip(lse) {
        row.iter_mut().for_each(|s| *s = (*s - l).fast_exp());
    }
}

/// A stable softmax of one (non-empty) row of scores, in place; returns the row's
/// log-sum-exp.
#[inline(always)]
fn softmax_in_place<T: Float>(row: &mut [T]) -> T {
    let maxv = max_lanes(row);
    row.iter_mut().for_each(|r| *r = (*r - maxv).fast_exp()); // vectorizes for f32
    let sum = dot_lanes(row, None);
    let inv = T::one() / sum;
    row.iter_mut().for_each(|r| *r *= inv);
    maxv + sum.ln()
}

/// Lanes of the reductions below: independent accumulators the compiler can vectorize.
const LANES: usize = 8;

/// The maximum of `x` (-inf if empty), through `LANES` running maxima: the same value as
/// a sequential scan.
#[inline(always)]
fn max_lanes<T: Float>(x: &[T]) -> T {
    let mut m = [T::neg_infinity(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for (ml, &v) in m.iter_mut().zip(ch) {
            *ml = if v > *ml { v } else { *ml };
        }
    }
    rest.iter().chain(&m).fold(T::neg_infinity(), |a, &v| if v > a { v } else { a })
}

/// `sum x_i y_i` (or `sum x_i` when `y` is None) through `LANES` partial sums
/// (a reassociation of the sequential sum).
#[inline(always)]
fn dot_lanes<T: Float>(x: &[T], y: Option<&[T]>) -> T {
    let mut acc = [T::zero(); LANES];
    let n = x.len() / LANES * LANES;
    match y {
        Some(y) => {
            assert_eq!(x.len(), y.len());
            for (cx, cy) in x[..n].chunks_exact(LANES).zip(y[..n].chunks_exact(LANES)) {
                for l in 0..LANES {
                    acc[l] += cx[l] * cy[l];
                }
            }
            acc[0] += x[n..].iter().zip(&y[n..]).map(|(&a, &b)| a * b).sum::<T>();
        }
        None => {
            for cx in x[..n].chunks_exact(LANES) {
                for l in 0..LANES {
                    acc[l] += cx[l];
                }
            }
            acc[0] += x[n..].iter().copied().sum::<T>();
        }
    }
    acc.iter().copied().sum()
}

/// dqkv (B,T,3C)  <-  dout (B,T,C), qkv (B,T,3C), out (B,T,C) and lse (B,NH,T) of the
/// forward, lens (B). Padded positions get dqkv = 0 (as queries they output nothing; as
/// keys they are masked). Per (review, head), with P recomputed from the scores and lse
/// over the valid block: dP = dO V^T, dV = P^T dO, D_i = dO_i . O_i (= rowsum(P * dP)),
/// dS = P * (dP - D) * scale, dQ = dS K, dK = dS^T Q (five GEMMs and two elementwise passes).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    out: &[T],
    lse: &[T],
    lens: &[u32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert_eq!(dqkv.len(), b * t * 3 * c);
    assert_eq!(dout.len(), b * t * c);
    assert_eq!(out.len(), b * t * c);
    assert_eq!(lse.len(), b * nh * t);
    let hs = c / nh;
    let scale = T::of(1.0 / (hs as f64).sqrt());
    if b == 0 || t == 0 || c == 0 {
        return;
    }
    if let (Some(dqkv), Some(dout), Some(qkv), Some(out), Some(lse)) = (as_f32_mut(dqkv), as_f32(dout), as_f32(qkv), as_f32(out), as_f32(lse)) {
        if fused::backward(dqkv, dout, qkv, out, lse, lens, t, c, nh) {
            return;
        }
    }
    let c3 = 3 * c;
    dqkv.par_chunks_mut(t * c3).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(p, ds), (bi, dqkv_b)| {
            let qkv_b = &qkv[bi * t * c3..(bi + 1) * t * c3];
            let dout_b = &dout[bi * t * c..(bi + 1) * t * c];
            let out_b = &out[bi * t * c..(bi + 1) * t * c];
            let lse_b = &lse[bi * nh * t..(bi + 1) * nh * t];
            let len = (lens[bi] as usize).min(t);
            dqkv_b.fill(T::zero());
            if len == 0 {
                return;
            }
            p.clear();
            p.resize(len * len, T::zero()); // (L, L) scratch: P
            ds.clear();
            ds.resize(len * len, T::zero()); // (L, L) scratch: dP, then dS in place
            for h in 0..nh {
                let (d_o, o) = (&dout_b[h * hs..], &out_b[h * hs..]);
                let (q, k, v) = (&qkv_b[h * hs..], &qkv_b[c + h * hs..], &qkv_b[2 * c + h * hs..]);
                recompute_probabilities(p, q, k, &lse_b[h * t..h * t + len], len, hs, c3, scale);
                // dP (L, L) = dO (L, HS) @ v^T (HS, L)
                gemm(len, hs, len, T::one(), d_o, (c, 1), v, (1, c3), T::zero(), ds, (len, 1));
                // dV (L, HS) = p^T (L, L) @ dO (L, HS)
                gemm(len, len, hs, T::one(), p, (1, len), d_o, (c, 1), T::zero(), &mut dqkv_b[2 * c + h * hs..], (c3, 1));
                // softmax backward, times the score scale
                for (i, (ds_row, p_row)) in ds.chunks_exact_mut(len).zip(p.chunks_exact(len)).enumerate() {
                    let delta = dot_lanes(&d_o[i * c..i * c + hs], Some(&o[i * c..i * c + hs]));
                    for (d, &pj) in ds_row.iter_mut().zip(p_row) {
                        *d = pj * (*d - delta) * scale;
                    }
                }
                // dQ (L, HS) = dS (L, L) @ k (L, HS);  dK (L, HS) = dS^T (L, L) @ q (L, HS)
                gemm(len, len, hs, T::one(), ds, (len, 1), k, (c3, 1), T::zero(), &mut dqkv_b[h * hs..], (c3, 1));
                gemm(len, len, hs, T::one(), ds, (1, len), q, (c3, 1), T::zero(), &mut dqkv_b[c + h * hs..], (c3, 1));
            }
        },
    );
}

/// The f32 path of the `cpu` device on a CPU with AVX-512 (`reference::has_avx512`), for
/// head sizes 16, 32 and 64 (anything else takes the GEMM path above): both passes fused
/// per (review, head), flash style, with no GEMM packing of the (L, L) probabilities and
/// no GEMM threads nested in the per-review ones. Blocks of `R` rows, or `2 R` where their
/// sums fit the registers (queries in the forward, keys in the backward), meet every
/// column `W` at a time, the other operand transposed once per head into an (HS, L)
/// scratch so the inner loops are contiguous. Every sum is a chain of fused
/// multiply-adds in a fixed order: [`fused::Avx512`] gives the same bits as the plain
/// loops of [`fused::Scalar`] (the tests hold it to them), and reruns are bit-identical.
/// The scores are computed as (scale q_i) . k_j in both passes, so the backward
/// recomputes its probabilities from exactly the forward's scores.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the tests use it there
mod fused {
    use super::{dot_lanes, max_lanes};
    use crate::reference::{exp_f32_fma, simd, Simd};
    use rayon::prelude::*;

    /// Rows (queries in the forward, keys in the backward) per block.
    const R: usize = 4;
    /// Columns per chunk of the scores.
    const W: usize = 32;

    fn padded(len: usize) -> usize {
        len.div_ceil(W) * W
    }

    /// Make `v` at least `n` long (new elements 0; old ones kept, to be overwritten).
    fn grow(v: &mut Vec<f32>, n: usize) {
        if v.len() < n {
            v.resize(n, 0.0);
        }
    }

    /// A row of scores (non-empty) to e_j = exp(s_j - max) in place; returns 1 / sum_j e_j
    /// and the log-sum-exp max + ln sum_j e_j. The sum runs over 16 lanes in a fixed order.
    #[inline(always)]
    fn exp_row(row: &mut [f32]) -> (f32, f32) {
        let m = max_lanes(row);
        let mut acc = [0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for ch in &mut chunks {
            for (a, x) in acc.iter_mut().zip(ch) {
                *x = exp_f32_fma(*x - m);
                *a += *x;
            }
        }
        for x in chunks.into_remainder() {
            *x = exp_f32_fma(*x - m);
            acc[0] += *x;
        }
        let sum: f32 = acc.iter().sum();
        (1.0 / sum, m + sum.ln())
    }

    /// `HS` floats of row `i` of a (rows, stride) matrix, from column `off`.
    #[inline(always)]
    fn row<const HS: usize>(x: &[f32], i: usize, stride: usize, off: usize) -> &[f32; HS] {
        x[i * stride + off..i * stride + off + HS].try_into().expect("HS floats")
    }

    /// xt (HS, lp) = `mul` times the HS columns from `off` of rows 0..len of x,
    /// transposed; zero past len.
    #[inline(always)]
    fn transpose<const HS: usize>(xt: &mut Vec<f32>, x: &[f32], len: usize, stride: usize, off: usize, mul: f32) {
        let lp = padded(len);
        xt.clear();
        xt.resize(HS * lp, 0.0);
        for i in 0..len {
            for (d, &v) in row::<HS>(x, i, stride, off).iter().enumerate() {
                xt[d * lp + i] = v * mul;
            }
        }
    }

    /// The three inner loops of the fused passes. Every lane of every sum is a chain of
    /// fused multiply-adds in one fixed order, so [`Scalar`] and [`Avx512`] give the same
    /// bits.
    pub(super) trait Lanes {
        /// s[r][jc..jc+W] = sum_d a[r][d] * bt[d][jc..jc+W] for every chunk jc of lp and
        /// the `N` rows of `a`: the scores of a block of rows against every column of bt.
        fn scores<const HS: usize, const N: usize>(s: &mut [f32], a: &[[f32; HS]; N], bt: &[f32], lp: usize);
        /// acc[r] = sum_{i < len} w[r][i] * x_i (x_i: HS floats of row i at `stride`, from `off`).
        fn weighted_rows<const HS: usize, const N: usize>(w: &[f32], lp: usize, x: &[f32], len: usize, stride: usize, off: usize) -> [[f32; HS]; N];
        /// Two `weighted_rows` over the same i < len (more independent sums in flight): the
        /// same bits as two separate calls.
        #[allow(clippy::too_many_arguments)]
        /// (Two plain calls, no closure: a closure would be compiled without the caller's
        /// target features, and the intrinsics in it would not be inlined.)
        #[inline(always)]
        fn weighted_rows2<const HS: usize, const N: usize>(w: [&[f32]; 2], lp: usize, x: [&[f32]; 2], len: usize, stride: [usize; 2], off: [usize; 2]) -> [[[f32; HS]; N]; 2] {
            [Self::weighted_rows::<HS, N>(w[0], lp, x[0], len, stride[0], off[0]), Self::weighted_rows::<HS, N>(w[1], lp, x[1], len, stride[1], off[1])]
        }
        /// y_i += sum_r w[r][i] * k_r for i < len (y: (len, HS)).
        fn add_rows<const HS: usize, const N: usize>(y: &mut [f32], w: &[f32], lp: usize, k: &[[f32; HS]; N], len: usize);
    }

    /// Plain loops: the twin the tests hold [`Avx512`] to, bit for bit.
    #[cfg(test)]
    pub(super) struct Scalar;

    #[cfg(test)]
    impl Lanes for Scalar {
        fn scores<const HS: usize, const N: usize>(s: &mut [f32], a: &[[f32; HS]; N], bt: &[f32], lp: usize) {
            for jc in (0..lp).step_by(W) {
                for (r, ar) in a.iter().enumerate() {
                    for x in 0..W {
                        let mut acc = 0f32;
                        for d in 0..HS {
                            acc = ar[d].mul_add(bt[d * lp + jc + x], acc);
                        }
                        s[r * lp + jc + x] = acc;
                    }
                }
            }
        }
        fn weighted_rows<const HS: usize, const N: usize>(w: &[f32], lp: usize, x: &[f32], len: usize, stride: usize, off: usize) -> [[f32; HS]; N] {
            let mut acc = [[0f32; HS]; N];
            for i in 0..len {
                let xi = row::<HS>(x, i, stride, off);
                for (r, accr) in acc.iter_mut().enumerate() {
                    for (o, &xv) in accr.iter_mut().zip(xi) {
                        *o = w[r * lp + i].mul_add(xv, *o);
                    }
                }
            }
            acc
        }
        fn add_rows<const HS: usize, const N: usize>(y: &mut [f32], w: &[f32], lp: usize, k: &[[f32; HS]; N], len: usize) {
            for (i, yi) in y.chunks_exact_mut(HS).enumerate().take(len) {
                for (r, kr) in k.iter().enumerate() {
                    for (o, &kv) in yi.iter_mut().zip(kr) {
                        *o = w[r * lp + i].mul_add(kv, *o);
                    }
                }
            }
        }
    }

    /// AVX-512 intrinsics (16 lanes); HS a multiple of 16. Only ever called from a
    /// function compiled with `avx512f` that first checked the CPU has it.
    #[cfg(target_arch = "x86_64")]
    pub(super) struct Avx512;

    #[cfg(target_arch = "x86_64")]
    impl Lanes for Avx512 {
        #[inline(always)]
        fn scores<const HS: usize, const N: usize>(s: &mut [f32], a: &[[f32; HS]; N], bt: &[f32], lp: usize) {
            use std::arch::x86_64::*;
            assert!(bt.len() >= HS * lp && s.len() >= N * lp && lp % W == 0);
            // SAFETY: avx512f is present (see the type's comment); every load and store
            // is inside bt (HS rows of lp) or s (N rows of lp), as asserted.
            unsafe {
                for jc in (0..lp).step_by(W) {
                    let mut acc = [[_mm512_setzero_ps(); 2]; N];
                    for d in 0..HS {
                        let b0 = _mm512_loadu_ps(bt.as_ptr().add(d * lp + jc));
                        let b1 = _mm512_loadu_ps(bt.as_ptr().add(d * lp + jc + 16));
                        for r in 0..N {
                            let ar = _mm512_set1_ps(a[r][d]);
                            acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
                            acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
                        }
                    }
                    for (r, accr) in acc.iter().enumerate() {
                        _mm512_storeu_ps(s.as_mut_ptr().add(r * lp + jc), accr[0]);
                        _mm512_storeu_ps(s.as_mut_ptr().add(r * lp + jc + 16), accr[1]);
                    }
                }
            }
        }
        #[inline(always)]
        fn weighted_rows<const HS: usize, const N: usize>(w: &[f32], lp: usize, x: &[f32], len: usize, stride: usize, off: usize) -> [[f32; HS]; N] {
            use std::arch::x86_64::*;
            assert!(HS % 16 == 0 && w.len() >= N * lp && len <= lp);
            assert!(len == 0 || (len - 1) * stride + off + HS <= x.len());
            let mut out = [[0f32; HS]; N];
            // SAFETY: as in `scores`; rows i < len of x are inside x, as asserted.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); 4]; N]; // up to HS = 64
                for i in 0..len {
                    let xi = x.as_ptr().add(i * stride + off);
                    for v in 0..HS / 16 {
                        let xv = _mm512_loadu_ps(xi.add(16 * v));
                        for r in 0..N {
                            acc[r][v] = _mm512_fmadd_ps(_mm512_set1_ps(*w.get_unchecked(r * lp + i)), xv, acc[r][v]);
                        }
                    }
                }
                for (o, accr) in out.iter_mut().zip(&acc) {
                    for v in 0..HS / 16 {
                        _mm512_storeu_ps(o.as_mut_ptr().add(16 * v), accr[v]);
                    }
                }
            }
            out
        }
        #[inline(always)]
        fn weighted_rows2<const HS: usize, const N: usize>(w: [&[f32]; 2], lp: usize, x: [&[f32]; 2], len: usize, stride: [usize; 2], off: [usize; 2]) -> [[[f32; HS]; N]; 2] {
            use std::arch::x86_64::*;
            if HS > 32 || HS * N > 128 {
                // two sets of accumulators would not fit the 32 registers
                return [Self::weighted_rows::<HS, N>(w[0], lp, x[0], len, stride[0], off[0]), Self::weighted_rows::<HS, N>(w[1], lp, x[1], len, stride[1], off[1])];
            }
            for k in 0..2 {
                assert!(w[k].len() >= N * lp && len <= lp);
                assert!(len == 0 || (len - 1) * stride[k] + off[k] + HS <= x[k].len());
            }
            let mut out = [[[0f32; HS]; N]; 2];
            // SAFETY: as in `weighted_rows`, for each of the two.
            unsafe {
                let mut acc = [[[_mm512_setzero_ps(); 2]; N]; 2]; // HS <= 32
                for i in 0..len {
                    for k in 0..2 {
                        let xi = x[k].as_ptr().add(i * stride[k] + off[k]);
                        for v in 0..HS / 16 {
                            let xv = _mm512_loadu_ps(xi.add(16 * v));
                            for r in 0..N {
                                acc[k][r][v] = _mm512_fmadd_ps(_mm512_set1_ps(*w[k].get_unchecked(r * lp + i)), xv, acc[k][r][v]);
                            }
                        }
                    }
                }
                for k in 0..2 {
                    for (o, accr) in out[k].iter_mut().zip(&acc[k]) {
                        for v in 0..HS / 16 {
                            _mm512_storeu_ps(o.as_mut_ptr().add(16 * v), accr[v]);
                        }
                    }
                }
            }
            out
        }
        #[inline(always)]
        fn add_rows<const HS: usize, const N: usize>(y: &mut [f32], w: &[f32], lp: usize, k: &[[f32; HS]; N], len: usize) {
            use std::arch::x86_64::*;
            assert!(HS % 16 == 0 && y.len() >= len * HS && w.len() >= N * lp && len <= lp);
            // SAFETY: as in `scores`; rows i < len of y and columns i < len of w, as asserted.
            unsafe {
                let mut kv = [[_mm512_setzero_ps(); 4]; N];
                for r in 0..N {
                    for v in 0..HS / 16 {
                        kv[r][v] = _mm512_loadu_ps(k[r].as_ptr().add(16 * v));
                    }
                }
                for i in 0..len {
                    let yi = y.as_mut_ptr().add(i * HS);
                    for v in 0..HS / 16 {
                        let mut acc = _mm512_loadu_ps(yi.add(16 * v));
                        for r in 0..N {
                            acc = _mm512_fmadd_ps(_mm512_set1_ps(*w.get_unchecked(r * lp + i)), kv[r][v], acc);
                        }
                        _mm512_storeu_ps(yi.add(16 * v), acc);
                    }
                }
            }
        }
    }

    /// AVX2 with FMA (8 lanes), for the x86-64 CPUs without AVX-512; HS a multiple of 16.
    /// Each lane runs the same chain of fused multiply-adds as in [`Scalar`] and
    /// [`Avx512`], in blocks of rows sized for AVX2's 16 registers, so the same bits on
    /// either kind of CPU. Only ever called from a function compiled with `avx2,fma` that
    /// first checked the CPU has them.
    #[cfg(target_arch = "x86_64")]
    pub(super) struct Avx2;

    #[cfg(target_arch = "x86_64")]
    impl Lanes for Avx2 {
        #[inline(always)]
        fn scores<const HS: usize, const N: usize>(s: &mut [f32], a: &[[f32; HS]; N], bt: &[f32], lp: usize) {
            use std::arch::x86_64::*;
            assert!(bt.len() >= HS * lp && s.len() >= N * lp && lp % W == 0);
            // blocks of up to 4 rows x 16 columns: 8 accumulators
            let rb = N.min(4);
            assert!(N % rb == 0);
            // SAFETY: avx2 and fma are present (see the type's comment); every load and
            // store is inside bt (HS rows of lp) or s (N rows of lp), as asserted.
            unsafe {
                for jc in (0..lp).step_by(16) {
                    for r0 in (0..N).step_by(rb) {
                        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                        for d in 0..HS {
                            let b0 = _mm256_loadu_ps(bt.as_ptr().add(d * lp + jc));
                            let b1 = _mm256_loadu_ps(bt.as_ptr().add(d * lp + jc + 8));
                            for r in 0..rb {
                                let ar = _mm256_set1_ps(a[r0 + r][d]);
                                acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
                                acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
                            }
                        }
                        for (r, accr) in acc.iter().enumerate().take(rb) {
                            _mm256_storeu_ps(s.as_mut_ptr().add((r0 + r) * lp + jc), accr[0]);
                            _mm256_storeu_ps(s.as_mut_ptr().add((r0 + r) * lp + jc + 8), accr[1]);
                        }
                    }
                }
            }
        }
        #[inline(always)]
        fn weighted_rows<const HS: usize, const N: usize>(w: &[f32], lp: usize, x: &[f32], len: usize, stride: usize, off: usize) -> [[f32; HS]; N] {
            use std::arch::x86_64::*;
            assert!(HS % 16 == 0 && HS <= 64 && w.len() >= N * lp && len <= lp);
            assert!(len == 0 || (len - 1) * stride + off + HS <= x.len());
            // blocks of rows whose sums take at most 8 registers (4 rows at HS = 16)
            let rb = N.min(64 / HS).max(1);
            assert!(N % rb == 0);
            let mut out = [[0f32; HS]; N];
            // SAFETY: as in `scores`; rows i < len of x are inside x, as asserted.
            unsafe {
                for r0 in (0..N).step_by(rb) {
                    let mut acc = [[_mm256_setzero_ps(); 8]; 4]; // rb * HS / 8 <= 8 used
                    for i in 0..len {
                        let xi = x.as_ptr().add(i * stride + off);
                        for v in 0..HS / 8 {
                            let xv = _mm256_loadu_ps(xi.add(8 * v));
                            for r in 0..rb {
                                acc[r][v] = _mm256_fmadd_ps(_mm256_set1_ps(*w.get_unchecked((r0 + r) * lp + i)), xv, acc[r][v]);
                            }
                        }
                    }
                    for r in 0..rb {
                        for v in 0..HS / 8 {
                            _mm256_storeu_ps(out[r0 + r].as_mut_ptr().add(8 * v), acc[r][v]);
                        }
                    }
                }
            }
            out
        }
        #[inline(always)]
        fn add_rows<const HS: usize, const N: usize>(y: &mut [f32], w: &[f32], lp: usize, k: &[[f32; HS]; N], len: usize) {
            use std::arch::x86_64::*;
            assert!(HS % 16 == 0 && N <= 8 && y.len() >= len * HS && w.len() >= N * lp && len <= lp);
            // SAFETY: as in `scores`; rows i < len of y and columns i < len of w, as asserted.
            unsafe {
                // 8 columns of every y_i at a time, the N rows of k for them in registers
                for v in 0..HS / 8 {
                    let mut kv = [_mm256_setzero_ps(); 8];
                    for r in 0..N {
                        kv[r] = _mm256_loadu_ps(k[r].as_ptr().add(8 * v));
                    }
                    for i in 0..len {
                        let yi = y.as_mut_ptr().add(i * HS + 8 * v);
                        let mut acc = _mm256_loadu_ps(yi);
                        for r in 0..N {
                            acc = _mm256_fmadd_ps(_mm256_set1_ps(*w.get_unchecked(r * lp + i)), kv[r], acc);
                        }
                        _mm256_storeu_ps(yi, acc);
                    }
                }
            }
        }
    }

    struct Fwd<'a> {
        qkv: &'a [f32],
        len: usize,
        t: usize,
        c: usize,
        h: usize,
        scale: f32,
    }

    /// Queries i0..i0+N of one (review, head): scores against every key, softmax (lse
    /// saved), out = P V.
    #[inline(always)]
    fn forward_rows<K: Lanes, const HS: usize, const N: usize>(f: &Fwd, i0: usize, kt: &[f32], s: &mut Vec<f32>, out_b: &mut [f32], lse_b: &mut [f32]) {
        let (c3, lp) = (3 * f.c, padded(f.len));
        let mut q = [[0f32; HS]; N];
        for (r, qr) in q.iter_mut().enumerate() {
            for (o, &v) in qr.iter_mut().zip(row::<HS>(f.qkv, i0 + r, c3, f.h * HS)) {
                *o = v * f.scale;
            }
        }
        grow(s, N * lp); // every element is written before it is read
        K::scores::<HS, N>(s, &q, kt, lp);
        let mut inv = [0f32; N];
        for (r, inv_r) in inv.iter_mut().enumerate() {
            let (i, l) = exp_row(&mut s[r * lp..r * lp + f.len]);
            *inv_r = i;
            lse_b[f.h * f.t + i0 + r] = l;
        }
        // out = (sum_j e_ij v_j) / sum_j e_ij
        let o: [[f32; HS]; N] = K::weighted_rows::<HS, N>(s, lp, f.qkv, f.len, c3, 2 * f.c + f.h * HS);
        for ((or, &inv_r), r) in o.iter().zip(&inv).zip(0..) {
            let at = (i0 + r) * f.c + f.h * HS;
            for (dst, &x) in out_b[at..at + HS].iter_mut().zip(or) {
                *dst = x * inv_r;
            }
        }
    }

    /// Every head of one review; `out_b` and `lse_b` already zeroed.
    #[inline(always)]
    pub(super) fn forward_review<K: Lanes, const HS: usize>(out_b: &mut [f32], lse_b: &mut [f32], qkv_b: &[f32], len: usize, t: usize, c: usize, scratch: &mut (Vec<f32>, Vec<f32>)) {
        let (kt, s) = scratch;
        let scale = 1.0 / (HS as f32).sqrt();
        for h in 0..c / HS {
            transpose::<HS>(kt, qkv_b, len, 3 * c, c + h * HS, 1.0);
            let f = Fwd { qkv: qkv_b, len, t, c, h, scale };
            let mut i = 0;
            // 8 query rows a block where their outputs fit the registers twice over
            while HS <= 32 && i + 2 * R <= len {
                forward_rows::<K, HS, { 2 * R }>(&f, i, kt, s, out_b, lse_b);
                i += 2 * R;
            }
            while i + R <= len {
                forward_rows::<K, HS, R>(&f, i, kt, s, out_b, lse_b);
                i += R;
            }
            while i < len {
                forward_rows::<K, HS, 1>(&f, i, kt, s, out_b, lse_b);
                i += 1;
            }
        }
    }

    struct Bwd<'a> {
        qkv: &'a [f32],
        dout: &'a [f32],
        lse: &'a [f32],   // this head's lse, (L)
        delta: &'a [f32], // D_i = dO_i . O_i, (L)
        qt: &'a [f32],    // scale * Q^T (HS, lp)
        dot: &'a [f32],   // dO^T (HS, lp)
        len: usize,
        c: usize,
        h: usize,
        scale: f32,
    }

    /// Keys j0..j0+N of one (review, head): P and dS of their columns against every
    /// query, then dV_j = sum_i p_ij dO_i and dK_j = sum_i ds_ij q_i (written), and
    /// dQ_i += sum_j ds_ij k_j (accumulated in dq, (L, HS)).
    #[inline(always)]
    fn backward_cols<K: Lanes, const HS: usize, const N: usize>(b: &Bwd, j0: usize, p: &mut Vec<f32>, ds: &mut Vec<f32>, dq: &mut [f32], dqkv_b: &mut [f32]) {
        let (c, c3, lp, len) = (b.c, 3 * b.c, padded(b.len), b.len);
        let (qoff, koff, voff) = (b.h * HS, c + b.h * HS, 2 * c + b.h * HS);
        let mut k = [[0f32; HS]; N];
        let mut v = [[0f32; HS]; N];
        for r in 0..N {
            k[r] = *row::<HS>(b.qkv, j0 + r, c3, koff);
            v[r] = *row::<HS>(b.qkv, j0 + r, c3, voff);
        }
        grow(p, N * lp); // every element is written before it is read
        grow(ds, N * lp);
        K::scores::<HS, N>(p, &k, b.qt, lp); // s_ij (bit-identical to the forward's), as p
        K::scores::<HS, N>(ds, &v, b.dot, lp); // dP_ij = dO_i . v_j, as ds
        for r in 0..N {
            let (pr, dsr) = (&mut p[r * lp..r * lp + len], &mut ds[r * lp..r * lp + len]);
            for (((pi, di), &l), &dl) in pr.iter_mut().zip(dsr.iter_mut()).zip(b.lse).zip(b.delta) {
                *pi = exp_f32_fma(*pi - l);
                *di = *pi * (*di - dl) * b.scale;
            }
        }
        // dV_j = sum_i p_ij dO_i, dK_j = sum_i ds_ij q_i
        let [dv, dk] = K::weighted_rows2::<HS, N>([p, ds], lp, [b.dout, b.qkv], len, [c, c3], [qoff, qoff]);
        for r in 0..N {
            let at = (j0 + r) * c3;
            dqkv_b[at + voff..at + voff + HS].copy_from_slice(&dv[r]);
            dqkv_b[at + koff..at + koff + HS].copy_from_slice(&dk[r]);
        }
        K::add_rows::<HS, N>(dq, ds, lp, &k, len);
    }

    #[derive(Default)]
    pub(super) struct BwdScratch {
        qt: Vec<f32>,
        dot: Vec<f32>,
        delta: Vec<f32>,
        dq: Vec<f32>,
        p: Vec<f32>,
        ds: Vec<f32>,
    }

    /// Every head of one review; `dqkv_b` already zeroed.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn backward_review<K: Lanes, const HS: usize>(dqkv_b: &mut [f32], dout_b: &[f32], qkv_b: &[f32], out_b: &[f32], lse_b: &[f32], len: usize, t: usize, c: usize, w: &mut BwdScratch) {
        let scale = 1.0 / (HS as f32).sqrt();
        for h in 0..c / HS {
            transpose::<HS>(&mut w.qt, qkv_b, len, 3 * c, h * HS, scale); // as the forward scales q
            transpose::<HS>(&mut w.dot, dout_b, len, c, h * HS, 1.0);
            w.delta.clear();
            w.delta.extend((0..len).map(|i| {
                let at = i * c + h * HS;
                dot_lanes(&dout_b[at..at + HS], Some(&out_b[at..at + HS]))
            }));
            w.dq.clear();
            w.dq.resize(len * HS, 0.0);
            let b = Bwd { qkv: qkv_b, dout: dout_b, lse: &lse_b[h * t..h * t + len], delta: &w.delta, qt: &w.qt, dot: &w.dot, len, c, h, scale };
            let mut j = 0;
            // 8 key rows a block where both sets of dV, dK sums fit the registers
            while HS <= 16 && j + 2 * R <= len {
                backward_cols::<K, HS, { 2 * R }>(&b, j, &mut w.p, &mut w.ds, &mut w.dq, dqkv_b);
                j += 2 * R;
            }
            while j + R <= len {
                backward_cols::<K, HS, R>(&b, j, &mut w.p, &mut w.ds, &mut w.dq, dqkv_b);
                j += R;
            }
            while j < len {
                backward_cols::<K, HS, 1>(&b, j, &mut w.p, &mut w.ds, &mut w.dq, dqkv_b);
                j += 1;
            }
            for (i, dqi) in w.dq.chunks_exact(HS).enumerate() {
                dqkv_b[i * 3 * c + h * HS..i * 3 * c + (h + 1) * HS].copy_from_slice(dqi);
            }
        }
    }

    /// The fused forward, with the widest lanes this CPU has (AVX-512, else AVX2 with FMA:
    /// the same bits); false (nothing written) on a CPU with neither, or for a head size that is not 16, 32 or 64: the caller then takes the
    /// GEMM path.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(out: &mut [f32], lse: &mut [f32], qkv: &[f32], lens: &[u32], t: usize, c: usize, nh: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        fn run<const HS: usize>(simd: Simd, out: &mut [f32], lse: &mut [f32], qkv: &[f32], lens: &[u32], t: usize, c: usize) {
            #[target_feature(enable = "avx512f")]
            fn review512<const HS: usize>(o: &mut [f32], l: &mut [f32], q: &[f32], len: usize, t: usize, c: usize, s: &mut (Vec<f32>, Vec<f32>)) {
                forward_review::<Avx512, HS>(o, l, q, len, t, c, s)
            }
            #[target_feature(enable = "avx2,fma")]
            fn review256<const HS: usize>(o: &mut [f32], l: &mut [f32], q: &[f32], len: usize, t: usize, c: usize, s: &mut (Vec<f32>, Vec<f32>)) {
                forward_review::<Avx2, HS>(o, l, q, len, t, c, s)
            }
            let nh = c / HS;
            out.par_chunks_mut(t * c).zip(lse.par_chunks_mut(nh * t)).enumerate().for_each_init(
                <(Vec<f32>, Vec<f32>)>::default,
                |s, (bi, (out_b, lse_b))| {
                    out_b.fill(0.0);
                    lse_b.fill(0.0);
                    let len = (lens[bi] as usize).min(t);
                    let q = &qkv[bi * t * 3 * c..(bi + 1) * t * 3 * c];
                    // SAFETY: `simd()` checked that the CPU has the features of each.
                    match simd {
                        Simd::Avx512 => unsafe { review512::<HS>(out_b, lse_b, q, len, t, c, s) },
                        Simd::Avx2 => unsafe { review256::<HS>(out_b, lse_b, q, len, t, c, s) },
                    }
                },
            );
        }
        let Some(simd) = simd() else {
            return false;
        };
        #[cfg(target_arch = "x86_64")]
        match c / nh {
            16 => run::<16>(simd, out, lse, qkv, lens, t, c),
            32 => run::<32>(simd, out, lse, qkv, lens, t, c),
            64 => run::<64>(simd, out, lse, qkv, lens, t, c),
            _ => return false,
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (simd, out, lse, qkv, lens, t, c, nh);
        true
    }

    /// The fused backward; false (nothing written) as for `forward`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(dqkv: &mut [f32], dout: &[f32], qkv: &[f32], out: &[f32], lse: &[f32], lens: &[u32], t: usize, c: usize, nh: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        #[allow(clippy::too_many_arguments)]
        fn run<const HS: usize>(simd: Simd, dqkv: &mut [f32], dout: &[f32], qkv: &[f32], out: &[f32], lse: &[f32], lens: &[u32], t: usize, c: usize) {
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx512f")]
            fn review512<const HS: usize>(d: &mut [f32], g: &[f32], q: &[f32], o: &[f32], l: &[f32], len: usize, t: usize, c: usize, w: &mut BwdScratch) {
                backward_review::<Avx512, HS>(d, g, q, o, l, len, t, c, w)
            }
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx2,fma")]
            fn review256<const HS: usize>(d: &mut [f32], g: &[f32], q: &[f32], o: &[f32], l: &[f32], len: usize, t: usize, c: usize, w: &mut BwdScratch) {
                backward_review::<Avx2, HS>(d, g, q, o, l, len, t, c, w)
            }
            let (tc, tc3, tnh) = (t * c, t * 3 * c, t * (c / HS));
            dqkv.par_chunks_mut(tc3).enumerate().for_each_init(BwdScratch::default, |w, (bi, dqkv_b)| {
                dqkv_b.fill(0.0);
                let len = (lens[bi] as usize).min(t);
                let (g, q, o, l) = (&dout[bi * tc..(bi + 1) * tc], &qkv[bi * tc3..(bi + 1) * tc3], &out[bi * tc..(bi + 1) * tc], &lse[bi * tnh..(bi + 1) * tnh]);
                // SAFETY: `simd()` checked that the CPU has the features of each.
                match simd {
                    Simd::Avx512 => unsafe { review512::<HS>(dqkv_b, g, q, o, l, len, t, c, w) },
                    Simd::Avx2 => unsafe { review256::<HS>(dqkv_b, g, q, o, l, len, t, c, w) },
                }
            });
        }
        let Some(simd) = simd() else {
            return false;
        };
        #[cfg(target_arch = "x86_64")]
        match c / nh {
            16 => run::<16>(simd, dqkv, dout, qkv, out, lse, lens, t, c),
            32 => run::<32>(simd, dqkv, dout, qkv, out, lse, lens, t, c),
            64 => run::<64>(simd, dqkv, dout, qkv, out, lse, lens, t, c),
            _ => return false,
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (simd, dqkv, dout, qkv, out, lse, lens, t, c, nh);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};
    #[cfg(target_arch = "x86_64")]
    use crate::reference::Simd;

    fn run(qkv: &[f64], lens: &[u32], b: usize, t: usize, c: usize, nh: usize) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![f64::NAN; b * t * c];
        let mut lse = vec![f64::NAN; b * nh * t];
        attention_forward(&mut out, &mut lse, qkv, lens, b, t, c, nh);
        (out, lse)
    }

    /// Forward and backward of the fused f32 path for every review, with the lanes `K`
    /// (inlined, so a caller compiled for the lanes' features runs them as they run).
    #[inline(always)]
    fn fused_both<K: fused::Lanes, const HS: usize>(qkv: &[f32], dout: &[f32], lens: &[u32], b: usize, t: usize, c: usize) -> [Vec<f32>; 3] {
        let nh = c / HS;
        let (mut out, mut lse, mut dqkv) = (vec![0f32; b * t * c], vec![0f32; b * nh * t], vec![0f32; b * t * 3 * c]);
        let (mut s, mut w) = (Default::default(), fused::BwdScratch::default());
        for bi in 0..b {
            let len = (lens[bi] as usize).min(t);
            let (tc, tc3, tnh) = (t * c, t * 3 * c, t * nh);
            let q = &qkv[bi * tc3..(bi + 1) * tc3];
            fused::forward_review::<K, HS>(&mut out[bi * tc..(bi + 1) * tc], &mut lse[bi * tnh..(bi + 1) * tnh], q, len, t, c, &mut s);
            let (o, l) = (&out[bi * tc..(bi + 1) * tc], &lse[bi * tnh..(bi + 1) * tnh]);
            fused::backward_review::<K, HS>(&mut dqkv[bi * tc3..(bi + 1) * tc3], &dout[bi * tc..(bi + 1) * tc], q, o, l, len, t, c, &mut w);
        }
        [out, lse, dqkv]
    }

    /// The public f32 entry points (the fused path on a CPU with AVX-512 or AVX2 and FMA).
    fn f32_both(qkv: &[f32], dout: &[f32], lens: &[u32], b: usize, t: usize, c: usize, nh: usize) -> [Vec<f32>; 3] {
        let (mut out, mut lse, mut dqkv) = (vec![f32::NAN; b * t * c], vec![f32::NAN; b * nh * t], vec![f32::NAN; b * t * 3 * c]);
        attention_forward(&mut out, &mut lse, qkv, lens, b, t, c, nh);
        attention_backward(&mut dqkv, dout, qkv, &out, &lse, lens, b, t, c, nh);
        [out, lse, dqkv]
    }

    /// (B, T, C, NH, lens): head sizes 16, 32 and 64; lengths 0, 1, fewer than a block of
    /// 4 rows, not a multiple of 4 or of the 32-column chunk, the whole T.
    const FUSED_CASES: &[(usize, usize, usize, usize, &[u32])] = &[
        (4, 37, 64, 4, &[37, 1, 0, 3]),
        (3, 70, 64, 2, &[70, 33, 6]),
        (2, 9, 64, 1, &[5, 9]),
        (2, 65, 48, 3, &[64, 65]),
        (1, 2, 16, 1, &[2]),
    ];

    fn fused_inputs(b: usize, t: usize, c: usize, seed: u64, spread: f64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = SplitMix64::new(seed);
        (rng.normal_vec(b * t * 3 * c, spread), rng.normal_vec(b * t * c, 1.0))
    }

    fn to_f32(x: &[f64]) -> Vec<f32> {
        x.iter().map(|&v| v as f32).collect()
    }

    fn scalar_both(qkv: &[f32], dout: &[f32], lens: &[u32], b: usize, t: usize, c: usize, nh: usize) -> [Vec<f32>; 3] {
        match c / nh {
            16 => fused_both::<fused::Scalar, 16>(qkv, dout, lens, b, t, c),
            32 => fused_both::<fused::Scalar, 32>(qkv, dout, lens, b, t, c),
            64 => fused_both::<fused::Scalar, 64>(qkv, dout, lens, b, t, c),
            hs => panic!("no fused path for HS {hs}"),
        }
    }

    #[test]
    fn fused_f32_matches_the_f64_reference() {
        // Against the f64 GEMM path at f32 precision: |err| <= 2e-5 x the largest
        // |value| of that output (sums of up to 70 terms in f32, exp within 2 ulp); the
        // padded rows exactly 0. Both the plain lanes and the public entry points (the
        // AVX-512 lanes on a CPU that has them, the f32 GEMM path otherwise).
        for (n, &(b, t, c, nh, lens)) in FUSED_CASES.iter().enumerate() {
            for spread in [1.0, 4.0] {
                let (qkv, dout) = fused_inputs(b, t, c, 50 + n as u64, spread);
                let (mut out, mut lse, mut dqkv) = (vec![0.0; b * t * c], vec![0.0; b * nh * t], vec![0.0; b * t * 3 * c]);
                attention_forward(&mut out, &mut lse, &qkv, lens, b, t, c, nh);
                attention_backward(&mut dqkv, &dout, &qkv, &out, &lse, lens, b, t, c, nh);
                let (q32, d32) = (to_f32(&qkv), to_f32(&dout));
                for (path, got) in [("plain lanes", scalar_both(&q32, &d32, lens, b, t, c, nh)), ("entry points", f32_both(&q32, &d32, lens, b, t, c, nh))] {
                    for (name, want, got) in [("out", &out, &got[0]), ("lse", &lse, &got[1]), ("dqkv", &dqkv, &got[2])] {
                        let scale = want.iter().fold(1.0f64, |m, &v| m.max(v.abs()));
                        let err = want.iter().zip(got).map(|(&w, &g)| (w - g as f64).abs()).fold(0.0, f64::max);
                        println!("{path} B={b} T={t} C={c} NH={nh} spread {spread} {name}: max err {err:.2e} (scale {scale:.2e})");
                        assert!(err <= 2e-5 * scale, "{path} {name}: {err} > 2e-5 x {scale}");
                    }
                    for (bi, &len) in lens.iter().enumerate() {
                        for ti in len as usize..t {
                            let rows = [&got[0][(bi * t + ti) * c..][..c], &got[2][(bi * t + ti) * 3 * c..][..3 * c]];
                            assert!(rows.iter().all(|r| r.iter().all(|&x| x == 0.0)), "{path}: padded position {ti} of review {bi} is not 0");
                            assert!((0..nh).all(|h| got[1][(bi * nh + h) * t + ti] == 0.0), "{path}: padded lse not 0");
                        }
                    }
                }
            }
        }
    }

    /// `fused_both` with the AVX-512 or the AVX2 lanes, compiled for them; None where this
    /// CPU lacks them or for a head size without a fused path.
    #[cfg(target_arch = "x86_64")]
    fn lanes_both(lanes: Simd, qkv: &[f32], dout: &[f32], lens: &[u32], b: usize, t: usize, c: usize, nh: usize) -> Option<[Vec<f32>; 3]> {
        use crate::reference::{has_avx2_fma, has_avx512};
        #[target_feature(enable = "avx512f")]
        fn wide<const HS: usize>(qkv: &[f32], dout: &[f32], lens: &[u32], b: usize, t: usize, c: usize) -> [Vec<f32>; 3] {
            fused_both::<fused::Avx512, HS>(qkv, dout, lens, b, t, c)
        }
        #[target_feature(enable = "avx2,fma")]
        fn narrow<const HS: usize>(qkv: &[f32], dout: &[f32], lens: &[u32], b: usize, t: usize, c: usize) -> [Vec<f32>; 3] {
            fused_both::<fused::Avx2, HS>(qkv, dout, lens, b, t, c)
        }
        // SAFETY: each arm runs only where the CPU has the features its function is compiled for.
        unsafe {
            Some(match (lanes, c / nh) {
                (Simd::Avx512, _) if !has_avx512() => return None,
                (Simd::Avx2, _) if !has_avx2_fma() => return None,
                (Simd::Avx512, 16) => wide::<16>(qkv, dout, lens, b, t, c),
                (Simd::Avx512, 32) => wide::<32>(qkv, dout, lens, b, t, c),
                (Simd::Avx512, 64) => wide::<64>(qkv, dout, lens, b, t, c),
                (Simd::Avx2, 16) => narrow::<16>(qkv, dout, lens, b, t, c),
                (Simd::Avx2, 32) => narrow::<32>(qkv, dout, lens, b, t, c),
                (Simd::Avx2, 64) => narrow::<64>(qkv, dout, lens, b, t, c),
                _ => return None,
            })
        }
    }

    #[test]
    fn fused_vector_lanes_give_the_bits_of_the_plain_lanes_and_reruns_are_identical() {
        // Every vector build this CPU can run (AVX-512; AVX2 with FMA, also on an AVX-512
        // CPU) against the plain lanes, bit for bit; and the public entry points (the
        // widest of them) against the plain lanes and against a rerun.
        #[cfg(target_arch = "x86_64")]
        {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let mut builds = 0;
            for (n, &(b, t, c, nh, lens)) in FUSED_CASES.iter().enumerate() {
                let (qkv, dout) = fused_inputs(b, t, c, 90 + n as u64, 2.0);
                let (q32, d32) = (to_f32(&qkv), to_f32(&dout));
                let plain = scalar_both(&q32, &d32, lens, b, t, c, nh);
                for lanes in [Simd::Avx512, Simd::Avx2] {
                    if let Some(got) = lanes_both(lanes, &q32, &d32, lens, b, t, c, nh) {
                        builds += 1;
                        for k in 0..3 {
                            assert_eq!(bits(&plain[k]), bits(&got[k]), "{lanes:?} B={b} T={t} C={c} NH={nh}: output {k} differs from the plain lanes");
                        }
                    }
                }
                if crate::reference::simd().is_some() {
                    let fast = f32_both(&q32, &d32, lens, b, t, c, nh);
                    let again = f32_both(&q32, &d32, lens, b, t, c, nh);
                    for k in 0..3 {
                        assert_eq!(bits(&plain[k]), bits(&fast[k]), "entry points B={b} T={t} C={c} NH={nh}: output {k} differs from the plain lanes");
                        assert_eq!(bits(&fast[k]), bits(&again[k]), "output {k} differs on a rerun");
                    }
                }
            }
            println!("{builds} (case, vector build) pairs checked; widest lanes here: {:?}", crate::reference::simd());
            if builds > 0 {
                return;
            }
        }
        println!("this CPU has neither AVX-512 nor AVX2 with FMA: the f32 path is the GEMM one, checked by fused_f32_matches_the_f64_reference");
    }

    #[test]
    fn attention_backward_matches_finite_differences() {
        // (B, T, C, NH, lens): odd sizes, padding, a full review and an empty one
        let cases: &[(usize, usize, usize, usize, &[u32])] = &[
            (1, 1, 2, 1, &[1]),
            (2, 5, 6, 2, &[5, 3]),
            (3, 7, 9, 3, &[2, 7, 0]),
            (2, 4, 8, 4, &[1, 4]),
        ];
        for &(b, t, c, nh, lens) in cases {
            let mut rng = SplitMix64::new((b * 100 + t * 10 + c) as u64);
            let qkv = rng.normal_vec(b * t * 3 * c, 1.0);
            let probe = rng.normal_vec(b * t * c, 1.0);
            let (out, lse) = run(&qkv, lens, b, t, c, nh);
            let mut dqkv = vec![7.0; b * t * 3 * c];
            attention_backward(&mut dqkv, &probe, &qkv, &out, &lse, lens, b, t, c, nh);
            let f = |a: &[Vec<f64>]| run(&a[0], lens, b, t, c, nh).0;
            let report = check_op_gradient(f, &[qkv], &probe, &[dqkv]);
            println!("attention B={b} T={t} C={c} NH={nh} lens={lens:?}: {report} (tol 1e-6)");
            assert!(report.max_rel_err < 1e-6, "attention: {report}");
        }
    }

    #[test]
    fn padded_queries_are_zero_and_padded_keys_are_ignored() {
        let (b, t, c, nh) = (2, 6, 4, 2);
        let lens = [3u32, 0];
        let mut rng = SplitMix64::new(9);
        let mut qkv = rng.normal_vec(b * t * 3 * c, 1.0);
        let (out1, lse1) = run(&qkv, &lens, b, t, c, nh);
        for ti in 3..t {
            assert!(out1[ti * c..(ti + 1) * c].iter().all(|&x| x == 0.0));
            assert!((0..nh).all(|h| lse1[h * t + ti] == 0.0), "padded queries have lse 0");
        }
        assert!(out1[t * c..].iter().all(|&x| x == 0.0), "len 0 gives zeros");
        // change padded positions of review 0 wildly: valid outputs unchanged
        for ti in 3..t {
            for x in &mut qkv[ti * 3 * c..(ti + 1) * 3 * c] {
                *x = 1e3;
            }
        }
        let (out2, lse2) = run(&qkv, &lens, b, t, c, nh);
        assert_eq!(out1, out2);
        assert_eq!(lse1, lse2);
    }

    #[test]
    fn lse_is_the_log_sum_exp_of_the_scaled_scores() {
        let (b, t, c, nh) = (2, 5, 6, 2);
        let (hs, lens) = (3, [5u32, 2]);
        let qkv = SplitMix64::new(3).normal_vec(b * t * 3 * c, 2.0);
        let (_, lse) = run(&qkv, &lens, b, t, c, nh);
        for bi in 0..b {
            for h in 0..nh {
                for i in 0..lens[bi] as usize {
                    let row = |j: usize| &qkv[(bi * t + j) * 3 * c..(bi * t + j + 1) * 3 * c];
                    let score = |j: usize| (0..hs).map(|d| row(i)[h * hs + d] * row(j)[c + h * hs + d]).sum::<f64>() / (hs as f64).sqrt();
                    let want = (0..lens[bi] as usize).map(|j| score(j).exp()).sum::<f64>().ln();
                    let got = lse[(bi * nh + h) * t + i];
                    assert!((got - want).abs() < 1e-12 * want.abs().max(1.0), "b={bi} h={h} i={i}: {got} vs {want}");
                }
            }
        }
    }
}
