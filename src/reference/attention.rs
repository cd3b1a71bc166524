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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    fn run(qkv: &[f64], lens: &[u32], b: usize, t: usize, c: usize, nh: usize) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![f64::NAN; b * t * c];
        let mut lse = vec![f64::NAN; b * nh * t];
        attention_forward(&mut out, &mut lse, qkv, lens, b, t, c, nh);
        (out, lse)
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
