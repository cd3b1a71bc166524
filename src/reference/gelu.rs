//! GELU, tanh form: out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
//! Kernel: `kernels/gelu.cu`; launcher: `src/ops/gelu.rs`.

use rayon::prelude::*;

use super::{with_simd, Float};

/// Elements per rayon task (elementwise ops: results do not depend on the split).
const CHUNK: usize = 1 << 14;

const GELU_SCALE: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)

/// out (N)  <-  inp (N)   (N = any number of elements, e.g. B * T * F).
pub fn gelu_forward<T: Float>(out: &mut [T], inp: &[T]) {
    assert_eq!(out.len(), inp.len());
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(out, inp)| with_simd(gelu_forward_chunk, (out, inp)));
}

#[inline(always)]
fn gelu_forward_chunk<T: Float>((out, inp): (&mut [T], &[T])) {
    let (s, c, half) = (T::of(GELU_SCALE), T::of(0.044715), T::of(0.5));
    for (o, &x) in out.iter_mut().zip(inp) {
        let cube = c * x * x * x;
        *o = half * x * (T::one() + (s * (x + cube)).fast_tanh());
    }
}

/// dinp (N) =  <-  dout (N), inp (N).
pub fn gelu_backward<T: Float>(dinp: &mut [T], dout: &[T], inp: &[T]) {
    assert_eq!(dinp.len(), inp.len());
    assert_eq!(dout.len(), inp.len());
    dinp.par_chunks_mut(CHUNK)
        .zip(dout.par_chunks(CHUNK))
        .zip(inp.par_chunks(CHUNK))
        .for_each(|((dinp, dout), inp)| with_simd(gelu_backward_chunk, (dinp, dout, inp)));
}

#[inline(always)]
fn gelu_backward_chunk<T: Float>((dinp, dout, inp): (&mut [T], &[T], &[T])) {
    let (s, c, half) = (T::of(GELU_SCALE), T::of(0.044715), T::of(0.5));
    let three_c = T::of(3.0 * 0.044715);
    for ((di, &d), &x) in dinp.iter_mut().zip(dout).zip(inp) {
        let u = s * (x + c * x * x * x);
        let th = u.fast_tanh();
        let sech2 = T::one() - th * th;
        let local = half * (T::one() + th) + half * x * sech2 * s * (T::one() + three_c * x * x);
        *di = local * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    #[test]
    fn gelu_backward_matches_finite_differences() {
        for &n in &[1usize, 7, 64] {
            let mut rng = SplitMix64::new(n as u64);
            let inp = rng.normal_vec(n, 2.0);
            let probe = rng.normal_vec(n, 1.0);
            let mut di = vec![99.0; n];
            gelu_backward(&mut di, &probe, &inp);
            let f = |a: &[Vec<f64>]| {
                let mut out = vec![0.0; n];
                gelu_forward(&mut out, &a[0]);
                out
            };
            let report = check_op_gradient(f, &[inp], &probe, &[di]);
            println!("gelu N={n}: {report} (tol 1e-6)");
            assert!(report.max_rel_err < 1e-6, "gelu: {report}");
        }
    }

    #[test]
    fn vector_builds_give_the_plain_bits() {
        // The loops compiled for AVX-512 and for AVX2 with FMA (each where the CPU has
        // it; as is otherwise) against the same loops called directly (the default
        // target's code): identical bits, forward and backward.
        use crate::reference::{with_lanes, Simd};
        let inp: Vec<f32> = SplitMix64::new(4).normal_vec(10_001, 3.0).iter().map(|&x| x as f32).collect();
        let dout: Vec<f32> = SplitMix64::new(5).normal_vec(10_001, 1.0).iter().map(|&x| x as f32).collect();
        let (mut fwd, mut bwd) = (vec![0f32; inp.len()], vec![0f32; inp.len()]);
        gelu_forward_chunk((&mut fwd, &inp));
        gelu_backward_chunk((&mut bwd, &dout, &inp));
        for lanes in [Some(Simd::Avx512), Some(Simd::Avx2)] {
            let mut b = vec![0f32; inp.len()];
            with_lanes(lanes, gelu_forward_chunk, (&mut b, &inp[..]));
            assert!(fwd.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{lanes:?} forward");
            with_lanes(lanes, gelu_backward_chunk, (&mut b, &dout[..], &inp[..]));
            assert!(bwd.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{lanes:?} backward");
        }
    }

    #[test]
    fn gelu_known_values() {
        let mut out = [0.0f64; 3];
        gelu_forward(&mut out, &[0.0, 1.0, -1.0]);
        // tanh-form GELU(1) = 0.8411919906082768
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 0.841_191_990_608_276_8).abs() < 1e-12, "{}", out[1]);
        assert!((out[2] + 0.158_808_009_391_723_2).abs() < 1e-12, "{}", out[2]);
    }
}
