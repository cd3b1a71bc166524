//! Rust launchers, one per kernel, written once for both devices ([`crate::device::Gpu`]).
//! Same names and argument order as `kernels/<op>.cu` and `src/reference/<op>.rs`.

pub mod layernorm;
pub mod attention;
pub mod loss;
pub mod meanpool;
