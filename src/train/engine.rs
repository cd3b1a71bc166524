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

/// Slots of the device-side totals (`kernels/steptotals.cu`), as [`StepTotals::from_slots`]
/// reads them.
pub const STEP_TOTALS_SLOTS: usize = 7;

/// A step whose mean loss or gradient norm was not finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonFinite {
    pub step: u64,
    pub loss: f32,
    pub grad_norm: f32,
}

/// Statistics summed over training steps: what the trainer logs, read back from the
/// device once per several steps.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTotals {
    pub steps: usize,
    pub reviews: usize,
    /// Sum over steps of (mean loss x reviews).
    pub loss_sum: f64,
    pub correct: usize,
    /// The first step whose mean loss or gradient norm was not finite.
    pub nonfinite: Option<NonFinite>,
}

impl StepTotals {
    /// From the slots `reference::steptotals::step_totals_add` (and its kernel) fill:
    /// steps, reviews, loss sum, correct, first non-finite step (0: none), its loss, its norm.
    pub fn from_slots(s: &[f64]) -> StepTotals {
        assert_eq!(s.len(), STEP_TOTALS_SLOTS);
        let nonfinite = (s[4] != 0.0).then(|| NonFinite { step: s[4] as u64, loss: s[5] as f32, grad_norm: s[6] as f32 });
        StepTotals { steps: s[0] as usize, reviews: s[1] as usize, loss_sum: s[2], correct: s[3] as usize, nonfinite }
    }
    /// Add one step's statistics over `reviews` reviews (mean loss x reviews, in f64).
    pub fn add_step(&mut self, step: u64, s: &StepStats, reviews: usize) {
        self.add(&StepTotals { steps: 1, reviews, loss_sum: s.loss as f64 * reviews as f64, correct: s.correct, nonfinite: None });
        if self.nonfinite.is_none() && !(s.loss.is_finite() && s.grad_norm.is_finite()) {
            self.nonfinite = Some(NonFinite { step, loss: s.loss, grad_norm: s.grad_norm });
        }
    }
    /// Add totals of later steps (the first non-finite step is kept).
    pub fn add(&mut self, o: &StepTotals) {
        self.steps += o.steps;
        self.reviews += o.reviews;
        self.loss_sum += o.loss_sum;
        self.correct += o.correct;
        self.nonfinite = self.nonfinite.or(o.nonfinite);
    }
}

pub trait Engine {
    /// One training step: forward (with dropout), backward, clip, AdamW at learning
    /// rate `lr`. `step` is the 1-based optimizer step (AdamW bias correction and
    /// dropout seeds derive from it).
    fn train_step(&mut self, batch: &Batch, lr: f32, step: u64) -> anyhow::Result<StepStats>;
    /// The same step, its statistics added to running totals instead of returned: the
    /// kernel model keeps them on the device (no host synchronization in the step) until
    /// [`Engine::flush_totals`]; a step with a non-finite gradient norm is skipped there
    /// (no update) and recorded. Default: `train_step`, added to `totals` at once.
    fn queue_step(&mut self, batch: &Batch, lr: f32, step: u64, totals: &mut StepTotals) -> anyhow::Result<()> {
        let s = self.train_step(batch, lr, step)?;
        totals.add_step(step, &s, batch.batch_size);
        Ok(())
    }
    /// Add the totals of the steps queued since the last call to `totals` (reads the
    /// device; the one synchronization). Default: nothing is pending.
    fn flush_totals(&mut self, _totals: &mut StepTotals) -> anyhow::Result<()> {
        Ok(())
    }
    /// Probability of the positive class per review, without dropout. (B)
    fn predict(&mut self, batch: &Batch) -> anyhow::Result<Vec<f32>>;
    /// All parameters in the layout of docs/design.md.
    fn params(&mut self) -> anyhow::Result<Vec<f32>>;
    /// AdamW first and second moments, same layout (for checkpoints and resume).
    fn optimizer_state(&mut self) -> anyhow::Result<(Vec<f32>, Vec<f32>)>;
    /// Replace parameters and optimizer moments (all the same length).
    fn load_state(&mut self, params: &[f32], m: &[f32], v: &[f32]) -> anyhow::Result<()>;
}
