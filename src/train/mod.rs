//! Training: the device-independent loop drives an `Engine`.

pub mod cpu_demo;
pub mod engine;
