//! Masked mean pooling: out[b] = mean over t < lens[b] of inp[b, t]; lens[b] = 0 gives 0.
//! Kernel: `kernels/meanpool.cu`; launcher: `src/ops/meanpool.rs`.

use super::Float;

/// out (B, C)  <-  inp (B, T, C), lens (B).
pub fn meanpool_forward<T: Float>(out: &mut [T], inp: &[T], lens: &[u32], b: usize, t: usize, c: usize) {
    assert_eq!(out.len(), b * c);
    assert_eq!(inp.len(), b * t * c);
    for bi in 0..b {
        let len = (lens[bi] as usize).min(t);
        let o = &mut out[bi * c..(bi + 1) * c];
        o.fill(T::zero());
        if len == 0 {
            continue;
        }
        for ti in 0..len {
            let x = &inp[(bi * t + ti) * c..(bi * t + ti + 1) * c];
            for (od, &xd) in o.iter_mut().zip(x) {
                *od += xd;
            }
        }
        let inv = T::one() / T::of(len as f64);
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

/// dinp (B, T, C) =  <-  dout (B, C), lens (B). Padded rows get exactly 0.
pub fn meanpool_backward<T: Float>(dinp: &mut [T], dout: &[T], lens: &[u32], b: usize, t: usize, c: usize) {
    assert_eq!(dinp.len(), b * t * c);
    assert_eq!(dout.len(), b * c);
    for bi in 0..b {
        let len = (lens[bi] as usize).min(t);
        let inv = if len == 0 { T::zero() } else { T::one() / T::of(len as f64) };
        let d = &dout[bi * c..(bi + 1) * c];
        for ti in 0..t {
            let row = &mut dinp[(bi * t + ti) * c..(bi * t + ti + 1) * c];
            if ti < len {
                row.iter_mut().zip(d).for_each(|(r, &g)| *r = g * inv);
            } else {
                row.fill(T::zero());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    #[test]
    fn meanpool_backward_matches_finite_differences() {
        let cases: &[(usize, usize, usize, &[u32])] = &[(1, 1, 1, &[1]), (3, 5, 7, &[5, 2, 0]), (2, 9, 4, &[9, 1])];
        for &(b, t, c, lens) in cases {
            let mut rng = SplitMix64::new((b + t + c) as u64);
            let inp = rng.normal_vec(b * t * c, 1.0);
            let probe = rng.normal_vec(b * c, 1.0);
            let mut di = vec![3.0; b * t * c];
            meanpool_backward(&mut di, &probe, lens, b, t, c);
            let f = |a: &[Vec<f64>]| {
                let mut out = vec![0.0; b * c];
                meanpool_forward(&mut out, &a[0], lens, b, t, c);
                out
            };
            let report = check_op_gradient(f, &[inp], &probe, &[di]);
            println!("meanpool B={b} T={t} C={c} lens={lens:?}: {report} (tol 1e-6)");
            assert!(report.max_rel_err < 1e-6, "meanpool: {report}");
        }
    }
}
