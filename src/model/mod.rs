//! The model: its parameter layout (shared by every device), the batch it reads, and
//! the `Engine` trait through which the trainer drives one device's model.

pub mod batch;

pub use batch::Batch;
