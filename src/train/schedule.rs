//! Learning-rate schedule: linear warmup, then cosine decay to a floor.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate, reached at the end of warmup.
    pub lr: f32,
    /// Optimizer steps of linear warmup from 0.
    pub warmup_steps: u64,
    /// Total optimizer steps of the run.
    pub total_steps: u64,
    /// Learning rate at the last step, as a fraction of `lr`.
    pub min_lr_fraction: f32,
}

impl Schedule {
    /// Learning rate at 1-based optimizer step `step`.
    pub fn lr_at(&self, step: u64) -> f32 {
        let step = step.max(1);
        if step <= self.warmup_steps {
            return self.lr * step as f32 / self.warmup_steps as f32;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        let floor = self.min_lr_fraction as f64;
        (self.lr as f64 * (floor + (1.0 - floor) * cosine)) as f32
    }
}

/// A value that goes linearly from `from` at step 1 to `to` at step `total_steps` (and
/// stays there after): the token-drop schedule (`--token-drop-end`).
pub fn linear_at(from: f32, to: f32, step: u64, total_steps: u64) -> f32 {
    if total_steps <= 1 {
        return to;
    }
    let progress = (step.max(1) - 1).min(total_steps - 1) as f64 / (total_steps - 1) as f64;
    (from as f64 + (to as f64 - from as f64) * progress) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_goes_from_first_to_last_step() {
        assert_eq!(linear_at(0.3, 0.0, 1, 101), 0.3);
        assert!((linear_at(0.3, 0.0, 51, 101) - 0.15).abs() < 1e-7);
        assert_eq!(linear_at(0.3, 0.0, 101, 101), 0.0);
        assert_eq!(linear_at(0.3, 0.0, 500, 101), 0.0, "past the end stays at the end");
        assert_eq!(linear_at(0.1, 0.5, 1, 1), 0.5, "a one-step run is at its end");
        assert!((linear_at(0.1, 0.5, 26, 51) - 0.3).abs() < 1e-7, "rising works too");
    }

    #[test]
    fn warmup_then_cosine_to_floor() {
        let s = Schedule { lr: 1e-3, warmup_steps: 10, total_steps: 110, min_lr_fraction: 0.1 };
        assert!((s.lr_at(1) - 1e-4).abs() < 1e-9);
        assert!((s.lr_at(10) - 1e-3).abs() < 1e-9);
        // halfway through the decay: floor + (1 - floor) / 2
        assert!((s.lr_at(60) - 1e-3 * 0.55).abs() < 1e-8, "{}", s.lr_at(60));
        assert!((s.lr_at(110) - 1e-4).abs() < 1e-9);
        assert!((s.lr_at(500) - 1e-4).abs() < 1e-9, "past the end stays at the floor");
        let monotone = (10..110).all(|t| s.lr_at(t + 1) <= s.lr_at(t));
        assert!(monotone, "decay never increases");
    }
}
