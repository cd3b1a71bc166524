//! AdamW (decoupled weight decay, PyTorch semantics), with the gradient scale (clip
//! factor) folded into the read of g. Kernel: `kernels/adamw.cu`.
//!
//! g = grad * grad_scale
//! m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//! p -= lr * (wd * p + (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps))
//! The caller passes wd = 0 for tensors without decay (biases, layer norms).

use rayon::prelude::*;

use super::{with_simd, Float};

/// params (N), m (N), v (N) updated in place  <-  grads (N). `t` is the 1-based step.
/// The bias corrections `(1 - beta1^t, 1 - beta2^t)` of step `t`, computed in f64 from
/// the f32 betas; the kernel's launcher passes the same values (rounded to f32).
pub fn adamw_bias_corrections(beta1: f32, beta2: f32, t: u64) -> (f64, f64) {
    (1.0 - (beta1 as f64).powi(t as i32), 1.0 - (beta2 as f64).powi(t as i32))
}

#[allow(clippy::too_many_arguments)]
pub fn adamw_update<T: Float>(
    params: &mut [T],
    m: &mut [T],
    v: &mut [T],
    grads: &[T],
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    grad_scale: f32,
    t: u64,
) {
    assert!(t >= 1, "AdamW steps are 1-based");
    assert!(params.len() == grads.len() && m.len() == grads.len() && v.len() == grads.len());
    let (bc1, bc2) = adamw_bias_corrections(beta1, beta2, t);
    let (bc1, bc2) = (T::of(bc1), T::of(bc2));
    let (b1, b2) = (T::of(beta1 as f64), T::of(beta2 as f64));
    let (lr, eps, wd, gs) = (T::of(lr as f64), T::of(eps as f64), T::of(weight_decay as f64), T::of(grad_scale as f64));
    let k = Consts { bc1, bc2, b1, b2, lr, eps, wd, gs };
    // elementwise: the same bits whatever the split (and with AVX-512, AVX2 or neither)
    params.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK)).zip(grads.par_chunks(CHUNK)).for_each(|(((p, m), v), g)| {
        with_simd(adamw_chunk, (p, m, v, g, k));
    });
}

/// Elements per rayon task.
const CHUNK: usize = 1 << 15;

#[derive(Clone, Copy)]
struct Consts<T> {
    bc1: T,
    bc2: T,
    b1: T,
    b2: T,
    lr: T,
    eps: T,
    wd: T,
    gs: T,
}

#[inline(always)]
fn adamw_chunk<T: Float>((params, m, v, grads, k): (&mut [T], &mut [T], &mut [T], &[T], Consts<T>)) {
    for (((p, m), v), &g) in params.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(grads) {
        let g = g * k.gs;
        *m = k.b1 * *m + (T::one() - k.b1) * g;
        *v = k.b2 * *v + (T::one() - k.b2) * g * g;
        let mhat = *m / k.bc1;
        let vhat = *v / k.bc2;
        *p -= k.lr * (k.wd * *p + mhat / (vhat.sqrt() + k.eps));
    }
}

/// AdamW over a whole buffer of tensors: tensor k covers [ends[k-1], ends[k]) and
/// decays with `weight_decay` if decay[k] != 0, else not (the table of
/// `ops::adamw::adamw_table`): `adamw_update` per tensor with the clip factor
/// `gradnorm::clip_scale(norm, max_norm)`; a non-finite norm changes nothing.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update_tensors<T: Float>(
    params: &mut [T],
    m: &mut [T],
    v: &mut [T],
    grads: &[T],
    ends: &[u32],
    decay: &[u32],
    norm: f32,
    max_norm: f32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    t: u64,
) {
    assert_eq!(ends.len(), decay.len());
    if !norm.is_finite() {
        return;
    }
    let grad_scale = super::gradnorm::clip_scale(norm, max_norm);
    assert_eq!(ends.last().map_or(0, |&e| e as usize), params.len(), "the table covers the buffer");
    let mut start = 0;
    for (&end, &d) in ends.iter().zip(decay) {
        let r = start..end as usize;
        let wd = if d != 0 { weight_decay } else { 0.0 };
        adamw_update(&mut params[r.clone()], &mut m[r.clone()], &mut v[r.clone()], &grads[r], lr, beta1, beta2, eps, wd, grad_scale, t);
        start = end as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_vector_update_gives_the_plain_loops_bits() {
        // adamw_update (rayon chunks, compiled for the widest lanes the CPU has) and the
        // chunk body compiled for AVX-512 and for AVX2 with FMA, against one plain call
        // of the chunk body over the whole buffer: identical bits.
        let n = 3 * CHUNK + 17;
        let mut rng = crate::reference::gradcheck::SplitMix64::new(8);
        let f32s = |rng: &mut crate::reference::gradcheck::SplitMix64, s: f64| rng.normal_vec(n, s).iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let (p0, g) = (f32s(&mut rng, 1.0), f32s(&mut rng, 0.1));
        let (m0, v0) = (f32s(&mut rng, 0.01), f32s(&mut rng, 0.01).iter().map(|x| x * x).collect::<Vec<f32>>());
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        adamw_update(&mut p, &mut m, &mut v, &g, 1e-3, 0.9, 0.999, 1e-8, 0.1, 0.5, 7);
        let (bc1, bc2) = adamw_bias_corrections(0.9, 0.999, 7);
        let k = Consts { bc1: bc1 as f32, bc2: bc2 as f32, b1: 0.9, b2: 0.999, lr: 1e-3, eps: 1e-8, wd: 0.1, gs: 0.5 };
        let (mut p2, mut m2, mut v2) = (p0.clone(), m0.clone(), v0.clone());
        adamw_chunk((&mut p2, &mut m2, &mut v2, &g, k));
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p), bits(&p2));
        assert_eq!(bits(&m), bits(&m2));
        assert_eq!(bits(&v), bits(&v2));
        assert_ne!(bits(&p), bits(&p0), "the update moved the parameters");
        for lanes in [Some(crate::reference::Simd::Avx512), Some(crate::reference::Simd::Avx2)] {
            let (mut p3, mut m3, mut v3) = (p0.clone(), m0.clone(), v0.clone());
            crate::reference::with_lanes(lanes, adamw_chunk, (&mut p3, &mut m3, &mut v3, &g, k));
            assert_eq!((bits(&p3), bits(&m3), bits(&v3)), (bits(&p2), bits(&m2), bits(&v2)), "{lanes:?}");
        }
    }

    /// Independent scalar re-derivation over several steps.
    #[test]
    fn adamw_matches_scalar_formula_over_steps() {
        let (lr, b1, b2, eps, wd, gs) = (1e-2f64, 0.9f64, 0.999f64, 1e-8f64, 0.1f64, 0.5f64);
        let grads = [[0.3, -2.0, 0.0], [0.1, 1.0, -4.0], [-0.7, 0.5, 2.0]];
        let mut p = vec![1.0f64, -0.5, 2.0];
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        let (mut ep, mut em, mut ev) = (p.clone(), [0.0f64; 3], [0.0f64; 3]);
        for (step, g) in grads.iter().enumerate() {
            let t = step as u64 + 1;
            adamw_update(&mut p, &mut m, &mut v, g, lr as f32, b1 as f32, b2 as f32, eps as f32, wd as f32, gs as f32, t);
            let (b1f, b2f) = (b1 as f32 as f64, b2 as f32 as f64);
            for i in 0..3 {
                let gi = g[i] * gs;
                em[i] = b1f * em[i] + (1.0 - b1f) * gi;
                ev[i] = b2f * ev[i] + (1.0 - b2f) * gi * gi;
                let mh = em[i] / (1.0 - b1f.powi(t as i32));
                let vh = ev[i] / (1.0 - b2f.powi(t as i32));
                ep[i] -= (lr as f32 as f64) * ((wd as f32 as f64) * ep[i] + mh / (vh.sqrt() + eps as f32 as f64));
            }
        }
        for i in 0..3 {
            println!("adamw p[{i}] = {} expected {}", p[i], ep[i]);
            assert!((p[i] - ep[i]).abs() < 1e-12);
        }
        // first step moves each parameter by about lr * sign(g) (plus decay)
        let mut q = vec![0.0f64; 2];
        adamw_update(&mut q, &mut [0.0; 2], &mut [0.0; 2], &[3.0, -1e-3], 0.1, 0.9, 0.999, 1e-8, 0.0, 1.0, 1);
        assert!((q[0] + 0.1).abs() < 1e-6 && (q[1] - 0.1).abs() < 1e-4, "{q:?}");
    }
}
