//! Bidirectional multi-head self-attention with a key padding mask.
//! Kernel: `kernels/attention.cu`; launcher: `src/ops/attention.rs`.
//!
//! q, k, v are the column blocks [0,C), [C,2C), [2C,3C) of qkv (B,T,3C); head h uses
//! columns h*HS .. (h+1)*HS of each block, HS = C / NH. For review b with L = lens[b]:
//! for every query i < L, p = softmax_j<L (q_i . k_j / sqrt(HS)), out_i = sum_j p_j v_j.
//! Keys j >= L are masked out. Rows of padded queries (i >= L) are exactly 0, their
//! `att` rows are 0, and they pass no gradient; L = 0 gives all zeros and no NaN.
//! No dropout on the attention probabilities. Parallel over the batch (rayon).

use rayon::prelude::*;

use super::{gemm, Float};

/// out (B,T,C), att (B,NH,T,T) saved probabilities  <-  qkv (B,T,3C), lens (B).
/// Per (review, head): scores = scale * Q K^T and out = P V are two GEMMs over the valid
/// block (L x HS)(HS x L) and (L x L)(L x HS), read in place from qkv with its strides.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward<T: Float>(
    out: &mut [T],
    att: &mut [T],
    qkv: &[T],
    lens: &[u32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert_eq!(out.len(), b * t * c);
    assert_eq!(att.len(), b * nh * t * t);
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
        .zip(att.par_chunks_mut(nh * t * t))
        .enumerate()
        .for_each(|(bi, (out_b, att_b))| {
            let qkv_b = &qkv[bi * t * c3..(bi + 1) * t * c3];
            let len = (lens[bi] as usize).min(t);
            out_b.fill(T::zero());
            att_b.fill(T::zero());
            for h in 0..nh {
                let att_h = &mut att_b[h * t * t..(h + 1) * t * t];
                let (q, k, v) = (&qkv_b[h * hs..], &qkv_b[c + h * hs..], &qkv_b[2 * c + h * hs..]);
                // scores (L, L) = scale * q (L, HS) @ k^T (HS, L), rows of att_h with stride T
                gemm(len, hs, len, scale, q, (c3, 1), k, (1, c3), T::zero(), att_h, (t, 1));
                for row in att_h.chunks_exact_mut(t).take(len) {
                    softmax_in_place(&mut row[..len]);
                }
                // out (L, HS) = p (L, L) @ v (L, HS)
                gemm(len, len, hs, T::one(), att_h, (t, 1), v, (c3, 1), T::zero(), &mut out_b[h * hs..], (c, 1));
            }
        });
}

/// A stable softmax of one row of scores, in place.
fn softmax_in_place<T: Float>(row: &mut [T]) {
    let maxv = max_lanes(row);
    row.iter_mut().for_each(|r| *r = (*r - maxv).fast_exp()); // vectorizes for f32
    let inv = T::one() / dot_lanes(row, None);
    row.iter_mut().for_each(|r| *r *= inv);
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

/// dqkv (B,T,3C) =  <-  dout (B,T,C), qkv (B,T,3C), att (B,NH,T,T), lens (B).
/// Padded positions get dqkv = 0 (as queries they output nothing; as keys they are masked).
/// Per (review, head), with P the saved probabilities over the valid block:
/// dP = dO V^T, dV = P^T dO, dS = P * (dP - rowsum(P * dP)) * scale, dQ = dS K, dK = dS^T Q
/// (four GEMMs and one elementwise pass).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    att: &[T],
    lens: &[u32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert_eq!(dqkv.len(), b * t * 3 * c);
    assert_eq!(dout.len(), b * t * c);
    assert_eq!(att.len(), b * nh * t * t);
    let hs = c / nh;
    let scale = T::of(1.0 / (hs as f64).sqrt());
    if b == 0 || t == 0 || c == 0 {
        return;
    }
    let c3 = 3 * c;
    dqkv.par_chunks_mut(t * c3).enumerate().for_each_init(Vec::new, |ds, (bi, dqkv_b)| {
        let qkv_b = &qkv[bi * t * c3..(bi + 1) * t * c3];
        let dout_b = &dout[bi * t * c..(bi + 1) * t * c];
        let att_b = &att[bi * nh * t * t..(bi + 1) * nh * t * t];
        let len = (lens[bi] as usize).min(t);
        dqkv_b.fill(T::zero());
        if len == 0 {
            return;
        }
        ds.clear();
        ds.resize(len * len, T::zero()); // (L, L) scratch: dP, then dS in place
        for h in 0..nh {
            let p = &att_b[h * t * t..(h + 1) * t * t]; // rows with stride T
            let d_o = &dout_b[h * hs..];
            let (q, k, v) = (&qkv_b[h * hs..], &qkv_b[c + h * hs..], &qkv_b[2 * c + h * hs..]);
            // dP (L, L) = dO (L, HS) @ v^T (HS, L)
            gemm(len, hs, len, T::one(), d_o, (c, 1), v, (1, c3), T::zero(), ds, (len, 1));
            // dV (L, HS) = p^T (L, L) @ dO (L, HS)
            gemm(len, len, hs, T::one(), p, (1, t), d_o, (c, 1), T::zero(), &mut dqkv_b[2 * c + h * hs..], (c3, 1));
            // softmax backward, times the score scale
            for (ds_row, p_row) in ds.chunks_exact_mut(len).zip(p.chunks_exact(t)) {
                let p_row = &p_row[..len];
                let pdp = dot_lanes(p_row, Some(ds_row));
                for (d, &pj) in ds_row.iter_mut().zip(p_row) {
                    *d = pj * (*d - pdp) * scale;
                }
            }
            // dQ (L, HS) = dS (L, L) @ k (L, HS);  dK (L, HS) = dS^T (L, L) @ q (L, HS)
            gemm(len, len, hs, T::one(), ds, (len, 1), k, (c3, 1), T::zero(), &mut dqkv_b[h * hs..], (c3, 1));
            gemm(len, len, hs, T::one(), ds, (1, len), q, (c3, 1), T::zero(), &mut dqkv_b[c + h * hs..], (c3, 1));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    fn run(qkv: &[f64], lens: &[u32], b: usize, t: usize, c: usize, nh: usize) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![f64::NAN; b * t * c];
        let mut att = vec![f64::NAN; b * nh * t * t];
        attention_forward(&mut out, &mut att, qkv, lens, b, t, c, nh);
        (out, att)
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
            let (_, att) = run(&qkv, lens, b, t, c, nh);
            let mut dqkv = vec![7.0; b * t * 3 * c];
            attention_backward(&mut dqkv, &probe, &qkv, &att, lens, b, t, c, nh);
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
        let (out1, _) = run(&qkv, &lens, b, t, c, nh);
        for ti in 3..t {
            assert!(out1[ti * c..(ti + 1) * c].iter().all(|&x| x == 0.0));
        }
        assert!(out1[t * c..].iter().all(|&x| x == 0.0), "len 0 gives zeros");
        // change padded positions of review 0 wildly: valid outputs unchanged
        for ti in 3..t {
            for x in &mut qkv[ti * 3 * c..(ti + 1) * 3 * c] {
                *x = 1e3;
            }
        }
        let (out2, _) = run(&qkv, &lens, b, t, c, nh);
        assert_eq!(out1, out2);
    }
}
