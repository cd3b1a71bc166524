//! Residual add: out = inp1 + inp2. Kernel: `kernels/residual.cu`.
//! Backward is the identity into both inputs; the model keeps one residual-gradient
//! buffer, so it only ever needs `residual_backward` where the streams are separate.

use rayon::prelude::*;

use super::Float;

/// out (N)  <-  inp1 (N), inp2 (N).
pub fn residual_forward<T: Float>(out: &mut [T], inp1: &[T], inp2: &[T]) {
    assert_eq!(out.len(), inp1.len());
    assert_eq!(out.len(), inp2.len());
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK).zip(inp1.par_chunks(CHUNK)).zip(inp2.par_chunks(CHUNK)).for_each(|((out, inp1), inp2)| {
        for ((o, &a), &b) in out.iter_mut().zip(inp1).zip(inp2) {
            *o = a + b;
        }
    });
}

/// dinp1 (N) +=, dinp2 (N) +=  <-  dout (N). Both accumulate (residual stream rule).
pub fn residual_backward<T: Float>(dinp1: &mut [T], dinp2: &mut [T], dout: &[T]) {
    for ((a, b), &d) in dinp1.iter_mut().zip(dinp2.iter_mut()).zip(dout) {
        *a += d;
        *b += d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    #[test]
    fn residual_backward_matches_finite_differences() {
        let n = 13;
        let mut rng = SplitMix64::new(1);
        let (a, b, probe) = (rng.normal_vec(n, 1.0), rng.normal_vec(n, 1.0), rng.normal_vec(n, 1.0));
        let (mut da, mut db) = (vec![0.0; n], vec![0.0; n]);
        residual_backward(&mut da, &mut db, &probe);
        let f = |x: &[Vec<f64>]| {
            let mut out = vec![0.0; n];
            residual_forward(&mut out, &x[0], &x[1]);
            out
        };
        let report = check_op_gradient(f, &[a, b], &probe, &[da, db]);
        println!("residual N={n}: {report} (tol 1e-6)");
        assert!(report.max_rel_err < 1e-6);
    }
}
