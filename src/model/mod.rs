//! The model: its parameter layout (shared by every device), the batch it reads, and
//! the `Engine` trait through which the trainer drives one device's model.

pub mod batch;
pub mod gpu;
pub mod params;

pub use batch::Batch;
pub use gpu::{GpuEngine, GpuModel};
pub use params::{init_params, ParamLayout, ParamTensor};
