//! Training: the device-independent loop drives an `Engine`.

pub mod checkpoint;
pub mod engine;
pub mod metrics;
pub mod plots;
pub mod schedule;
pub mod stats;
pub mod trainer;
