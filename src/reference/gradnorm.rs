//! Global gradient L2 norm and the clip factor folded into AdamW.
//! Kernel: `kernels/gradnorm.cu`.
//! norm = sqrt(sum of g^2 over every parameter gradient);
//! scale = min(1, max_norm / (norm + 1e-6)), or 1 when max_norm <= 0 (no clipping).

use rayon::prelude::*;

use super::Float;

/// The L2 norm of all of `grads` (accumulated in f64 on the host: per chunk of
/// `NORM_CHUNK` elements in parallel, then the chunk sums in order).
pub fn global_norm<T: Float>(grads: &[T]) -> T {
    const NORM_CHUNK: usize = 1 << 16;
    let partial: Vec<f64> = grads
        .par_chunks(NORM_CHUNK)
        .map(|ch| {
            ch.iter().map(|&g| {
                let g = g.to_f64_();
                g * g
            }).sum()
        })
        .collect();
    T::of(partial.iter().sum::<f64>().sqrt())
}

/// The factor AdamW multiplies each gradient by.
pub fn clip_scale(norm: f32, max_norm: f32) -> f32 {
    if max_norm <= 0.0 || !norm.is_finite() {
        return 1.0;
    }
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// Scale `grads` in place so their norm is at most `max_norm`; returns the norm before.
pub fn clip_grads<T: Float>(grads: &mut [T], max_norm: f32) -> T {
    let norm = global_norm(grads);
    let s = clip_scale(norm.to_f64_() as f32, max_norm);
    if s < 1.0 {
        let s = T::of(s as f64);
        grads.iter_mut().for_each(|g| *g *= s);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    #[test]
    fn norm_and_clip() {
        assert_eq!(global_norm(&[3.0f64, 4.0]), 5.0);
        assert_eq!(clip_scale(0.5, 1.0), 1.0);
        assert!((clip_scale(10.0, 1.0) - 0.1).abs() < 1e-6);
        assert_eq!(clip_scale(10.0, 0.0), 1.0);
        let mut g = vec![30.0f64, 40.0];
        let n = clip_grads(&mut g, 1.0);
        assert_eq!(n, 50.0);
        println!("clipped norm {} (expect 1)", global_norm(&g));
        assert!((global_norm(&g) - 1.0).abs() < 1e-6);
    }

    /// d norm / d g = g / norm (the norm's own backward, checked for completeness).
    #[test]
    fn norm_gradient_matches_finite_differences() {
        let mut rng = SplitMix64::new(4);
        let g = rng.normal_vec(17, 1.0);
        let n: f64 = global_norm(&g);
        let analytic: Vec<f64> = g.iter().map(|&x| x / n).collect();
        let report = check_op_gradient(|a| vec![global_norm(&a[0])], &[g], &[1.0], &[analytic]);
        println!("global_norm N=17: {report} (tol 1e-6)");
        assert!(report.max_rel_err < 1e-6);
    }
}
