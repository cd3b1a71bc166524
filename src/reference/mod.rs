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
    /// The GEMM of the well-kept `matrixmultiply` crate (sgemm / dgemm, multithreaded):
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
