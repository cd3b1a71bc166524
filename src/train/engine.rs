//! What the trainer needs from one device's model. Implemented by the CPU reference
//! model (`cpu` device) and by the kernel model (`emu` and `cuda` devices).

use crate::model::Batch;

/// Results of one optimizer step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// Mean loss over the batch (before the update).
    pub loss: f32,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f32,
    /// Number of reviews classified correctly (before the update).
    pub correct: usize,
}

pub trait Engine {
    /// One training step: forward (with dropout), backward, clip, AdamW at learning
    /// rate `lr`. `step` is the 1-based optimizer step (AdamW bias correction and
    /// dropout seeds derive from it).
    fn train_step(&mut self, batch: &Batch, lr: f32, step: u64) -> anyhow::Result<StepStats>;
    /// Probability of the positive class per review, without dropout. (B)
    fn predict(&mut self, batch: &Batch) -> anyhow::Result<Vec<f32>>;
    /// All parameters in the layout of docs/design.md.
    fn params(&mut self) -> anyhow::Result<Vec<f32>>;
    /// AdamW first and second moments, same layout (for checkpoints and resume).
    fn optimizer_state(&mut self) -> anyhow::Result<(Vec<f32>, Vec<f32>)>;
    /// Replace parameters and optimizer moments (all the same length).
    fn load_state(&mut self, params: &[f32], m: &[f32], v: &[f32]) -> anyhow::Result<()>;
}
