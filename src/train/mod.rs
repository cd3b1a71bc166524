//! Training: the device-independent loop drives an `Engine`.

pub mod engine;
