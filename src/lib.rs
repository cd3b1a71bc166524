//! cudaenc: train small transformer text classifiers where every compute step is a
//! hand-written CUDA kernel. See README.md for the map of the crate.

pub mod config;
pub mod model;
pub mod rng;
pub mod train;
pub mod reference;
pub mod cli;
pub mod device;
pub mod ops;
pub mod bench;
