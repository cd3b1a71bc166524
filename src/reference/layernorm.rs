//! Layer norm over the last dimension: out = (x - mean) / sqrt(var + eps) * weight + bias.
//! Also `residual_layernorm_forward`: the dropout + residual add before a layer norm, fused,
//! and `residual_layernorm_backward`, the backward of that layer norm and dropout.
//! Kernel: `kernels/layernorm.cu`; launcher: `src/ops/layernorm.rs`.

use rayon::prelude::*;

use super::dropout::{dropout_backward, dropout_forward};
use super::Float;

/// Rows per rayon task.
const ROWS: usize = 256;

/// The epsilon inside the square root, the same in the kernels.
pub const LAYERNORM_EPS: f64 = 1e-5;

/// out (N, C), mean (N), rstd (N)  <-  inp (N, C), weight (C), bias (C).
/// `mean` and `rstd` are saved for the backward pass.
pub fn layernorm_forward<T: Float>(
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    inp: &[T],
    weight: &[T],
    bias: &[T],
    n: usize,
    c: usize,
) {
    assert_eq!(inp.len(), n * c);
    assert_eq!(out.len(), n * c);
    assert_eq!(mean.len(), n);
    assert_eq!(rstd.len(), n);
    let eps = T::of(LAYERNORM_EPS);
    let inv_c = T::of(1.0 / c as f64);
    if n == 0 || c == 0 {
        return;
    }
    out.par_chunks_mut(ROWS * c)
        .zip(inp.par_chunks(ROWS * c))
        .zip(mean.par_chunks_mut(ROWS).zip(rstd.par_chunks_mut(ROWS)))
        .for_each(|((out, inp), (mean, rstd))| {
            for (((o, x), m_out), s_out) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)).zip(mean).zip(rstd) {
                let m = x.iter().copied().sum::<T>() * inv_c;
                let v = x.iter().map(|&xi| (xi - m) * (xi - m)).sum::<T>() * inv_c;
                let s = T::one() / (v + eps).sqrt();
                for i in 0..c {
                    o[i] = (x[i] - m) * s * weight[i] + bias[i];
                }
                *m_out = m;
                *s_out = s;
            }
        });
}

/// res (N, C), ln (N, C), mean (N), rstd (N)  <-  x (N, C), branch (N, C), weight (C), bias (C):
/// `res = x + dropout(branch)` (the mask of `dropout_forward` over the flat (N, C) tensor),
/// then `ln = layernorm(res)`: the kernel's one-pass fusion of the three ops, here
/// composed from them.
pub fn residual_layernorm_forward<T: Float>(
    res: &mut [T],
    ln: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    x: &[T],
    branch: &[T],
    weight: &[T],
    bias: &[T],
    seed: u64,
    p: f32,
    n: usize,
    c: usize,
) {
    assert_eq!(x.len(), n * c);
    dropout_forward(res, branch, seed, p);
    for (r, &xi) in res.iter_mut().zip(x) {
        *r = xi + *r;
    }
    layernorm_forward(ln, mean, rstd, res, weight, bias, n, c);
}

/// dinp (N, C) +=, dweight (C) +=, dbias (C) +=  <-  dout (N, C), inp, weight, mean, rstd.
/// `dinp` accumulates: layer norm always reads the residual stream.
pub fn layernorm_backward<T: Float>(
    dinp: &mut [T],
    dweight: &mut [T],
    dbias: &mut [T],
    dout: &[T],
    inp: &[T],
    weight: &[T],
    mean: &[T],
    rstd: &[T],
    n: usize,
    c: usize,
) {
    let inv_c = T::of(1.0 / c as f64);
    for row in 0..n {
        let x = &inp[row * c..(row + 1) * c];
        let d = &dout[row * c..(row + 1) * c];
        let (m, s) = (mean[row], rstd[row]);
        // two reductions: mean(dnorm) and mean(dnorm * norm), dnorm = dout * weight
        let mut dnorm_mean = T::zero();
        let mut dnorm_norm_mean = T::zero();
        for i in 0..c {
            let norm = (x[i] - m) * s;
            let dnorm = d[i] * weight[i];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean *= inv_c;
        dnorm_norm_mean *= inv_c;
        let di = &mut dinp[row * c..(row + 1) * c];
        for i in 0..c {
            let norm = (x[i] - m) * s;
            let dnorm = d[i] * weight[i];
            dbias[i] += d[i];
            dweight[i] += d[i] * norm;
            di[i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
    }
}

/// dres (N, C) +=, dbranch (N, C) =, dweight (C) +=, dbias (C) +=  <-  dout (N, C), inp
/// (the forward's res), weight, mean, rstd: the backward of [`residual_layernorm_forward`]'s
/// layer norm and dropout, `layernorm_backward` into dres, then `dbranch =
/// dropout_backward(dres)` with the forward's seed and p (the kernel does both in one pass).
pub fn residual_layernorm_backward<T: Float>(
    dres: &mut [T],
    dbranch: &mut [T],
    dweight: &mut [T],
    dbias: &mut [T],
    dout: &[T],
    inp: &[T],
    weight: &[T],
    mean: &[T],
    rstd: &[T],
    seed: u64,
    p: f32,
    n: usize,
    c: usize,
) {
    layernorm_backward(dres, dweight, dbias, dout, inp, weight, mean, rstd, n, c);
    dropout_backward(dbranch, dres, seed, p);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    #[test]
    fn layernorm_backward_matches_finite_differences() {
        for &(n, c) in &[(1, 1), (3, 7), (4, 33)] {
            let mut rng = SplitMix64::new(17 + c as u64);
            let inp = rng.normal_vec(n * c, 1.0);
            let weight = rng.normal_vec(c, 1.0);
            let bias = rng.normal_vec(c, 1.0);
            // f(inputs) -> outputs, and the analytic vector-Jacobian product
            let forward = |inp: &[f64], weight: &[f64], bias: &[f64]| {
                let mut out = vec![0.0; n * c];
                let (mut m, mut s) = (vec![0.0; n], vec![0.0; n]);
                layernorm_forward(&mut out, &mut m, &mut s, inp, weight, bias, n, c);
                (out, m, s)
            };
            let probe = rng.normal_vec(n * c, 1.0);
            let (_, m, s) = forward(&inp, &weight, &bias);
            let (mut di, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
            layernorm_backward(&mut di, &mut dw, &mut db, &probe, &inp, &weight, &m, &s, n, c);
            let f = |args: &[Vec<f64>]| forward(&args[0], &args[1], &args[2]).0;
            let report = check_op_gradient(
                f,
                &[inp.clone(), weight.clone(), bias.clone()],
                &probe,
                &[di, dw, db],
            );
            println!("layernorm N={n} C={c}: {report}");
            assert!(report.max_rel_err < 1e-6, "layernorm N={n} C={c}: {report}");
        }
    }
}
