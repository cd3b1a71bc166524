//! CPU reference: every op of the model in plain Rust, generic over f32 and f64.
//!
//! This is the ground truth the CUDA kernels are checked against (in f64) and the
//! `cpu` device's trainer (in f32). Each op carries the same name as its kernel in
//! `kernels/*.cu` and its launcher in `src/ops/`, and the same argument order,
//! llm.c style: `(out, ..., inp, weight, ..., sizes)`.
//!
//! Gradient rule (the same for kernels): parameter gradients accumulate (`+=`),
//! activation gradients overwrite (`=`), except gradients flowing into the residual
//! stream, which accumulate (`+=`), because the residual stream has several consumers.

// llm.c-style signatures: outputs, inputs, weights, then sizes
#![allow(clippy::too_many_arguments)]

pub mod adamw;
pub mod attention;
pub mod dropout;
pub mod embedding;
pub mod engine;
pub mod gelu;
pub mod gradcheck;
pub mod gradnorm;
pub mod layernorm;
pub mod loss;
pub mod matmul;
pub mod meanpool;
pub mod model;
pub mod residual;
pub mod steptotals;

/// The float types the reference runs in: f64 for gradient checks, f32 for training.
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + std::fmt::Display
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + 'static
{
    /// Convert a literal or an f64 into this type.
    fn of(x: f64) -> Self {
        <Self as num_traits::FromPrimitive>::from_f64(x).expect("f64 converts to every Float")
    }
    /// Convert to f64 (exact for f32 and f64).
    fn to_f64_(self) -> f64 {
        num_traits::ToPrimitive::to_f64(&self).expect("Float converts to f64")
    }
    /// `exp(self)` for the hot loops (softmax). f64: libm, the ground truth. f32: a
    /// branch-free polynomial ([`exp_f32`]) within 2 ulp of libm, so loops vectorize.
    fn fast_exp(self) -> Self {
        self.exp()
    }
    /// `tanh(self)` for the hot loops (GELU). f64: libm. f32: `1 - 2 / (exp(2x) + 1)` with
    /// [`exp_f32`] (absolute error below 2e-7).
    fn fast_tanh(self) -> Self {
        self.tanh()
    }
    /// The GEMM of the well-kept `matrixmultiply` crate (sgemm / dgemm, one thread; [`gemm`]
    /// splits large products over rayon):
    /// `c (m, n) = alpha * a (m, k) @ b (k, n) + beta * c`, each matrix given by its
    /// slice and its row and column strides (in elements). With `beta == 0` the old
    /// contents of `c` are ignored (may even be NaN).
    ///
    /// # Safety
    /// Every element the strides address must lie inside its allocation, and `c` must
    /// not overlap `a` or `b`. Use the checked wrapper [`gemm`].
    unsafe fn gemm_raw(
        m: usize, k: usize, n: usize,
        alpha: Self,
        a: *const Self, rsa: isize, csa: isize,
        b: *const Self, rsb: isize, csb: isize,
        beta: Self,
        c: *mut Self, rsc: isize, csc: isize,
    );
}

impl Float for f32 {
    #[inline(always)]
    fn fast_exp(self) -> f32 {
        exp_f32(self)
    }
    #[inline(always)]
    fn fast_tanh(self) -> f32 {
        1.0 - 2.0 / (exp_f32(2.0 * self) + 1.0)
    }
    unsafe fn gemm_raw(
        m: usize, k: usize, n: usize, alpha: f32,
        a: *const f32, rsa: isize, csa: isize,
        b: *const f32, rsb: isize, csb: isize,
        beta: f32, c: *mut f32, rsc: isize, csc: isize,
    ) {
        matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

impl Float for f64 {
    unsafe fn gemm_raw(
        m: usize, k: usize, n: usize, alpha: f64,
        a: *const f64, rsa: isize, csa: isize,
        b: *const f64, rsb: isize, csb: isize,
        beta: f64, c: *mut f64, rsc: isize, csc: isize,
    ) {
        matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

/// Constants of the Cephes `expf` shared by [`exp_f32`] and [`exp_f32_fma`].
mod cephes {
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    pub const LN2_HI: f32 = 0.693_359_4; // ln 2 = LN2_HI + LN2_LO, LN2_HI exact in few bits
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    pub const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting rounds to integer
    pub const MIN: f32 = -87.3; // the clamp: results from about 1.2e-38 to 2.1e38
    pub const MAX: f32 = 88.3;
    /// exp(r) ~ 1 + r + r^2 (P[0] r^5 + ... + P[5]) on |r| <= ln2 / 2
    pub const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];
}

/// `exp(x)` in f32 without branches or libm calls (Cephes `expf`): x = n ln2 + r with
/// |r| <= ln2 / 2, exp(r) by a degree-6 polynomial, times 2^n built in the exponent bits.
/// Inputs are clamped to [-87.3, 88.3] (results from about 1.2e-38 to 2.1e38, never inf
/// or a denormal); NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    use cephes::*;
    let x = x.clamp(MIN, MAX);
    let rounded = x * LOG2E + ROUND; // ROUND + n, n = round(x log2 e)
    let n = rounded - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((P[0] * r + P[1]) * r + P[2]) * r + P[3]) * r + P[4]) * r + P[5];
    let y = p * r * r + r + 1.0;
    y * pow2_of_rounded(rounded)
}

/// [`exp_f32`] with its multiply-adds fused (`mul_add`): half the instructions where the
/// caller is compiled with FMA (the fused attention), a correctly rounded libm `fmaf`
/// elsewhere, so the same bits on every machine. Within 2 ulp of libm, like `exp_f32`.
#[inline(always)]
pub fn exp_f32_fma(x: f32) -> f32 {
    use cephes::*;
    let x = x.clamp(MIN, MAX);
    let rounded = x.mul_add(LOG2E, ROUND); // ROUND + n, n = round(x log2 e)
    let n = rounded - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let p = P[0].mul_add(r, P[1]).mul_add(r, P[2]).mul_add(r, P[3]).mul_add(r, P[4]).mul_add(r, P[5]);
    let y = (p * r).mul_add(r, r) + 1.0;
    y * pow2_of_rounded(rounded)
}

/// 2^n from `rounded` = 1.5 * 2^23 + n (|n| < 2^22): that float's bits are those of
/// 1.5 * 2^23 plus n, so n comes out with integer arithmetic on the bits, which
/// vectorizes (`n as i32` is a saturating conversion with NaN checks that does not, and
/// was a third of the attention forward). 2^n is built in the exponent bits; n in
/// [-126, 127] gives a normal float.
#[inline(always)]
pub(crate) fn pow2_of_rounded(rounded: f32) -> f32 {
    const ROUND_BITS: i32 = 0x4B40_0000; // 1.5 * 2^23
    let n = (rounded.to_bits() as i32).wrapping_sub(ROUND_BITS);
    f32::from_bits((n.wrapping_add(127) << 23) as u32)
}

/// `f(args)` compiled for AVX-512 (F, DQ, VL, BW) when the CPU has it, else for AVX2 with
/// FMA when it has those, else as is: for the elementwise loops of the `cpu` device,
/// which the default x86-64 target vectorizes only 4 lanes wide (and the dropout hash's
/// 64-bit multiplies not at all). `f` is best a function marked `#[inline(always)]`: LLVM
/// may leave a large closure un-inlined, and then it runs without the wider lanes. The
/// results are the same bits every way: Rust never contracts a multiply and an add or
/// reorders a float sum by itself, `mul_add` is one rounding with or without FMA, and
/// integer arithmetic is exact.
#[inline(always)]
pub(crate) fn with_simd<A, R>(f: impl FnOnce(A) -> R, args: A) -> R {
    with_lanes(simd(), f, args)
}

/// The vector extensions the `cpu` device's fast paths are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Simd {
    /// AVX-512 F, DQ, VL and BW: 16 f32 lanes.
    Avx512,
    /// AVX2 with FMA: 8 f32 lanes.
    Avx2,
}

/// The widest of [`Simd`] this CPU has, AVX-512 first; None on other CPUs.
pub(crate) fn simd() -> Option<Simd> {
    if has_avx512() {
        Some(Simd::Avx512)
    } else if has_avx2_fma() {
        Some(Simd::Avx2)
    } else {
        None
    }
}

/// `f(args)` compiled for `lanes` (as is for None, or for lanes this CPU does not have):
/// [`with_simd`] with a choice, so the tests can hold each build to the plain one.
#[inline(always)]
pub(crate) fn with_lanes<A, R>(lanes: Option<Simd>, f: impl FnOnce(A) -> R, args: A) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
        fn run512<A, R>(f: impl FnOnce(A) -> R, args: A) -> R {
            f(args)
        }
        #[target_feature(enable = "avx2,fma")]
        fn run256<A, R>(f: impl FnOnce(A) -> R, args: A) -> R {
            f(args)
        }
        match lanes {
            // SAFETY: the CPU has the features `run512` is compiled for.
            Some(Simd::Avx512) if has_avx512() => return unsafe { run512(f, args) },
            // SAFETY: the CPU has the features `run256` is compiled for.
            Some(Simd::Avx2) if has_avx2_fma() => return unsafe { run256(f, args) },
            _ => {}
        }
    }
    let _ = lanes;
    f(args)
}

/// Whether this CPU has AVX2 and FMA (every x86-64 CPU since Haswell and Zen 1); the
/// `cpu` device's fast paths take them where AVX-512 is missing. False off x86-64.
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has the AVX-512 subsets the `cpu` device's fast paths are compiled
/// for (F, DQ, VL, BW: every AVX-512 CPU since Skylake-SP and Zen 4); false off x86-64.
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") && is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Row and column strides of a matrix operand: `(rows, cols)` in elements.
pub type Strides = (usize, usize);

/// Safe GEMM: `c (m, n) = alpha * a (m, k) @ b (k, n) + beta * c`, with strides checked
/// against the slices' lengths. `c` must not alias `a` or `b` (the borrow checker sees to it).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Float>(
    m: usize, k: usize, n: usize,
    alpha: T,
    a: &[T], sa: Strides,
    b: &[T], sb: Strides,
    beta: T,
    c: &mut [T], sc: Strides,
) {
    fn span(r: usize, c: usize, s: Strides) -> usize {
        if r == 0 || c == 0 { 0 } else { (r - 1) * s.0 + (c - 1) * s.1 + 1 }
    }
    if m == 0 || n == 0 {
        return;
    }
    assert!(span(m, n, sc) <= c.len(), "gemm: c too short");
    if k == 0 {
        // a @ b is the zero matrix
        for i in 0..m {
            for j in 0..n {
                let x = &mut c[i * sc.0 + j * sc.1];
                *x = if beta == T::zero() { T::zero() } else { beta * *x };
            }
        }
        return;
    }
    assert!(span(m, k, sa) <= a.len(), "gemm: a too short");
    assert!(span(k, n, sb) <= b.len(), "gemm: b too short");
    // Large tall products (m >= 2k: the linear layers' forward and input gradient): one
    // block of rows of a and c per rayon thread, each a single-threaded GEMM that packs
    // b again (small when k is). Each element of c is the same sum in the same order
    // whatever the blocks (the split is over rows, never over k), so the bits do not
    // depend on the thread count. Wide-k products (weight gradients) run on one thread;
    // `matmul_backward` runs them beside the input gradient.
    let rows_per = m.div_ceil(rayon::current_num_threads()).next_multiple_of(16);
    if rows_per < m && m >= 2 * k && m * n * k >= 1 << 20 && (n - 1) * sc.1 < sc.0 {
        use rayon::prelude::*;
        c.par_chunks_mut(rows_per * sc.0).enumerate().for_each(|(i, c_rows)| {
            let r0 = i * rows_per;
            if r0 >= m {
                return; // c runs past the last row
            }
            let rm = rows_per.min(m - r0);
            // SAFETY: rows r0..r0+rm of a are inside a (span checked above); those rows
            // of c start this chunk and lie inside it, since (n - 1) * sc.1 < sc.0 (and
            // the whole span was checked); the chunks are disjoint.
            unsafe {
                T::gemm_raw(
                    rm, k, n, alpha,
                    a.as_ptr().add(r0 * sa.0), sa.0 as isize, sa.1 as isize,
                    b.as_ptr(), sb.0 as isize, sb.1 as isize,
                    beta,
                    c_rows.as_mut_ptr(), sc.0 as isize, sc.1 as isize,
                )
            }
        });
        return;
    }
    // SAFETY: every index the GEMM touches is inside its slice (checked above), and `c`
    // is a unique borrow distinct from `a` and `b`.
    unsafe {
        T::gemm_raw(
            m, k, n, alpha,
            a.as_ptr(), sa.0 as isize, sa.1 as isize,
            b.as_ptr(), sb.0 as isize, sb.1 as isize,
            beta,
            c.as_mut_ptr(), sc.0 as isize, sc.1 as isize,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_and_tanh_f32_match_f64() {
        let (mut worst_exp, mut worst_fma, mut worst_tanh) = (0.0f64, 0.0f64, 0.0f64);
        let mut x = -90.0f32;
        while x < 89.0 {
            let e = (x as f64).exp();
            if (-87.3..=88.3).contains(&x) {
                worst_exp = worst_exp.max(((x.fast_exp() as f64) - e).abs() / e);
                worst_fma = worst_fma.max(((exp_f32_fma(x) as f64) - e).abs() / e);
            }
            worst_tanh = worst_tanh.max(((x.fast_tanh() as f64) - (x as f64).tanh()).abs());
            x += 0.000_731;
        }
        println!("f32 fast_exp max rel err {worst_exp:.2e}, exp_f32_fma {worst_fma:.2e} (tol 3e-7), fast_tanh max abs err {worst_tanh:.2e} (tol 2e-7)");
        assert!(worst_exp < 3e-7 && worst_fma < 3e-7 && worst_tanh < 2e-7);
        assert_eq!(0.0f32.fast_exp(), 1.0);
        assert_eq!(f32::NEG_INFINITY.fast_exp(), (-87.3f32).fast_exp());
        assert!(f32::NAN.fast_exp().is_nan());
        assert_eq!(exp_f32_fma(0.0), 1.0);
        assert_eq!(exp_f32_fma(-1000.0), exp_f32_fma(-87.3));
        assert!(exp_f32_fma(f32::NAN).is_nan());
        assert_eq!((100.0f32).fast_tanh(), 1.0);
        assert_eq!((-100.0f32).fast_tanh(), -1.0);
        assert_eq!(1.5f64.fast_exp(), 1.5f64.exp());
    }

    #[test]
    fn split_gemm_gives_the_same_bits_on_any_number_of_threads() {
        // A tall product large enough to be split by rows (m >= 2k, m n k >= 2^20), with
        // edge tiles (m, n odd), against the same GEMM on one thread (no split).
        let (m, k, n) = (4099, 64, 67);
        let mut rng = crate::reference::gradcheck::SplitMix64::new(12);
        let a: Vec<f32> = rng.normal_vec(m * k, 1.0).iter().map(|&x| x as f32).collect();
        let b: Vec<f32> = rng.normal_vec(k * n, 1.0).iter().map(|&x| x as f32).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
            let mut c = vec![f32::NAN; m * n];
            pool.install(|| gemm(m, k, n, 1.0, &a, (k, 1), &b, (1, k), 0.0, &mut c, (n, 1)));
            c
        };
        let one = run(1);
        let want = (0..k).map(|d| a[d] as f64 * b[d] as f64).sum::<f64>(); // c[0][0]
        assert!((one[0] as f64 - want).abs() < 1e-4, "{} vs {want}", one[0]);
        for threads in [2, 3, 8] {
            let c = run(threads);
            assert!(one.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()), "{threads} threads");
        }
    }

    #[test]
    fn pow2_of_rounded_is_two_to_the_rounded_integer() {
        for n in -126i32..=127 {
            let rounded = 12_582_912.0f32 + n as f32;
            assert_eq!(pow2_of_rounded(rounded), 2f32.powi(n), "n = {n}");
            assert_eq!(pow2_of_rounded(rounded), f32::from_bits(((n + 127) << 23) as u32));
        }
    }
}
