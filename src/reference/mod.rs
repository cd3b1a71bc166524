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

pub mod gradcheck;
pub mod layernorm;

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
}

impl Float for f32 {}
impl Float for f64 {}
