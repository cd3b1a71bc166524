//! cudaenc: train small transformer text classifiers where every compute step is a
//! hand-written CUDA kernel. See README.md for the map of the crate.

pub mod bench;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod infer;
pub mod model;
pub mod ops;
pub mod reference;
pub mod rng;
pub mod serve;
pub mod train;
