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

use super::Float;

/// out (B,T,C), att (B,NH,T,T) saved probabilities  <-  qkv (B,T,3C), lens (B).
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
    out.par_chunks_mut(t * c)
        .zip(att.par_chunks_mut(nh * t * t))
        .enumerate()
        .for_each(|(bi, (out_b, att_b))| {
            let qkv_b = &qkv[bi * t * 3 * c..(bi + 1) * t * 3 * c];
            let len = (lens[bi] as usize).min(t);
            out_b.fill(T::zero());
            att_b.fill(T::zero());
            for h in 0..nh {
                for i in 0..len {
                    let q = &qkv_b[i * 3 * c + h * hs..i * 3 * c + (h + 1) * hs];
                    let row = &mut att_b[(h * t + i) * t..(h * t + i) * t + len];
                    // scores and their max (for a stable softmax)
                    let mut maxv = T::neg_infinity();
                    for (j, r) in row.iter_mut().enumerate() {
                        let k = &qkv_b[j * 3 * c + c + h * hs..j * 3 * c + c + (h + 1) * hs];
                        let s = q.iter().zip(k).map(|(&a, &b)| a * b).sum::<T>() * scale;
                        *r = s;
                        if s > maxv {
                            maxv = s;
                        }
                    }
                    let mut sum = T::zero();
                    for r in row.iter_mut() {
                        *r = (*r - maxv).exp();
                        sum += *r;
                    }
                    let inv = T::one() / sum;
                    let o = &mut out_b[i * c + h * hs..i * c + (h + 1) * hs];
                    for (j, r) in row.iter_mut().enumerate() {
                        *r *= inv;
                        let v = &qkv_b[j * 3 * c + 2 * c + h * hs..j * 3 * c + 2 * c + (h + 1) * hs];
                        for (od, &vd) in o.iter_mut().zip(v) {
                            *od += *r * vd;
                        }
                    }
                }
            }
        });
}

/// dqkv (B,T,3C) =  <-  dout (B,T,C), qkv (B,T,3C), att (B,NH,T,T), lens (B).
/// Padded positions get dqkv = 0 (as queries they output nothing; as keys they are masked).
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
    dqkv.par_chunks_mut(t * 3 * c).enumerate().for_each(|(bi, dqkv_b)| {
        let qkv_b = &qkv[bi * t * 3 * c..(bi + 1) * t * 3 * c];
        let dout_b = &dout[bi * t * c..(bi + 1) * t * c];
        let att_b = &att[bi * nh * t * t..(bi + 1) * nh * t * t];
        let len = (lens[bi] as usize).min(t);
        dqkv_b.fill(T::zero());
        let mut dp = vec![T::zero(); len];
        for h in 0..nh {
            for i in 0..len {
                let p = &att_b[(h * t + i) * t..(h * t + i) * t + len];
                let d_o = &dout_b[i * c + h * hs..i * c + (h + 1) * hs];
                // dp_j = dout_i . v_j ;  dv_j += p_j dout_i
                for j in 0..len {
                    let vo = j * 3 * c + 2 * c + h * hs;
                    let v = &qkv_b[vo..vo + hs];
                    dp[j] = d_o.iter().zip(v).map(|(&a, &b)| a * b).sum::<T>();
                    for (dv, &g) in dqkv_b[vo..vo + hs].iter_mut().zip(d_o) {
                        *dv += p[j] * g;
                    }
                }
                // softmax backward: ds_j = p_j (dp_j - sum_k p_k dp_k)
                let pdp: T = p.iter().zip(&dp).map(|(&a, &b)| a * b).sum();
                let qo = i * 3 * c + h * hs;
                for j in 0..len {
                    let ds = p[j] * (dp[j] - pdp) * scale;
                    let ko = j * 3 * c + c + h * hs;
                    // dq_i += ds_j k_j ; dk_j += ds_j q_i
                    for d in 0..hs {
                        let kd = qkv_b[ko + d];
                        let qd = qkv_b[qo + d];
                        dqkv_b[qo + d] += ds * kd;
                        dqkv_b[ko + d] += ds * qd;
                    }
                }
            }
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
