//! Linear layer: out (N, OC) = inp (N, IC) @ weight^T + bias, weight stored (OC, IC)
//! row-major (llm.c). Kernel: `kernels/matmul.cu`; launcher: `src/ops/matmul.rs`.
//! All three products go through `reference::gemm` (matrixmultiply sgemm / dgemm; tall
//! ones split over rayon's threads).

use super::{gemm, Float};

/// out (N, OC)  <-  inp (N, IC), weight (OC, IC), bias (OC) or none.
pub fn matmul_forward<T: Float>(
    out: &mut [T],
    inp: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    n: usize,
    ic: usize,
    oc: usize,
) {
    assert_eq!(out.len(), n * oc);
    assert_eq!(inp.len(), n * ic);
    assert_eq!(weight.len(), oc * ic);
    // out = inp @ weight^T : (N, IC) x (IC, OC); weight^T has strides (1, IC)
    gemm(n, ic, oc, T::one(), inp, (ic, 1), weight, (1, ic), T::zero(), out, (oc, 1));
    if let Some(bias) = bias {
        assert_eq!(bias.len(), oc);
        for row in out.chunks_exact_mut(oc) {
            for (o, &b) in row.iter_mut().zip(bias) {
                *o += b;
            }
        }
    }
}

/// dinp (N, IC) =, dweight (OC, IC) +=, dbias (OC) +=  <-  dout (N, OC), inp, weight.
/// `dinp` is overwritten (the linear layers never read the residual stream directly).
pub fn matmul_backward<T: Float>(
    dinp: &mut [T],
    dweight: &mut [T],
    dbias: Option<&mut [T]>,
    dout: &[T],
    inp: &[T],
    weight: &[T],
    n: usize,
    ic: usize,
    oc: usize,
) {
    assert_eq!(dinp.len(), n * ic);
    assert_eq!(dweight.len(), oc * ic);
    assert_eq!(dout.len(), n * oc);
    // the two products side by side on rayon's threads (they write different buffers)
    rayon::join(
        // dinp = dout @ weight : (N, OC) x (OC, IC)
        || gemm(n, oc, ic, T::one(), dout, (oc, 1), weight, (ic, 1), T::zero(), dinp, (ic, 1)),
        // dweight += dout^T @ inp : (OC, N) x (N, IC); dout^T has strides (1, OC)
        || gemm(oc, n, ic, T::one(), dout, (1, oc), inp, (ic, 1), T::one(), dweight, (ic, 1)),
    );
    if let Some(dbias) = dbias {
        assert_eq!(dbias.len(), oc);
        for row in dout.chunks_exact(oc) {
            for (d, &g) in dbias.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    #[test]
    fn matmul_backward_matches_finite_differences() {
        for &(n, ic, oc) in &[(1, 1, 1), (5, 3, 7), (17, 8, 13), (9, 33, 2)] {
            let mut rng = SplitMix64::new(11 + (n * ic * oc) as u64);
            let inp = rng.normal_vec(n * ic, 1.0);
            let w = rng.normal_vec(oc * ic, 1.0);
            let b = rng.normal_vec(oc, 1.0);
            let probe = rng.normal_vec(n * oc, 1.0);
            // dinp must be overwritten: start it with garbage
            let mut di = vec![123.0; n * ic];
            let (mut dw, mut db) = (vec![0.0; oc * ic], vec![0.0; oc]);
            matmul_backward(&mut di, &mut dw, Some(&mut db), &probe, &inp, &w, n, ic, oc);
            let f = |a: &[Vec<f64>]| {
                let mut out = vec![f64::NAN; n * oc];
                matmul_forward(&mut out, &a[0], &a[1], Some(&a[2]), n, ic, oc);
                out
            };
            let report = check_op_gradient(f, &[inp, w, b], &probe, &[di, dw, db]);
            println!("matmul N={n} IC={ic} OC={oc}: {report} (tol 1e-6)");
            assert!(report.max_rel_err < 1e-6, "matmul: {report}");
        }
    }

    #[test]
    fn matmul_forward_matches_naive_loop_f32() {
        let (n, ic, oc) = (37, 19, 23);
        let mut rng = SplitMix64::new(5);
        let inp: Vec<f32> = rng.normal_vec(n * ic, 1.0).iter().map(|&x| x as f32).collect();
        let w: Vec<f32> = rng.normal_vec(oc * ic, 1.0).iter().map(|&x| x as f32).collect();
        let b: Vec<f32> = rng.normal_vec(oc, 1.0).iter().map(|&x| x as f32).collect();
        let mut out = vec![0.0f32; n * oc];
        matmul_forward(&mut out, &inp, &w, Some(&b), n, ic, oc);
        let mut worst = 0.0f32;
        for i in 0..n {
            for o in 0..oc {
                let s: f32 = b[o] + (0..ic).map(|k| inp[i * ic + k] * w[o * ic + k]).sum::<f32>();
                worst = worst.max((s - out[i * oc + o]).abs());
            }
        }
        println!("matmul f32 vs naive loop: max abs err {worst:.2e} (tol 1e-4)");
        assert!(worst < 1e-4);
    }
}
