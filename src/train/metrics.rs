//! What one epoch of one run measured; written as one JSON line per epoch.

use super::stats::ProbQuality;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (with dropout).
    pub train_loss: f64,
    /// Training accuracy in percent, counted during the epoch (with dropout).
    pub train_acc: f64,
    /// Validation loss and accuracy in percent, after the epoch (no dropout).
    pub val_loss: f64,
    pub val_acc: f64,
    /// Accuracy on the whole test split, when it was evaluated.
    pub test_acc: Option<f64>,
    /// Wall-clock seconds of the epoch's training steps (evaluation excluded).
    pub train_seconds: f64,
    /// Valid (unpadded) training tokens per second.
    pub tokens_per_second: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Last epoch only: ROC-AUC and calibration of the validation probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_quality: Option<ProbQuality>,
    /// Last epoch only, when the whole test split was evaluated: the same on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_quality: Option<ProbQuality>,
}

/// The epochs of one run, with the settings that tell the runs apart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub loss: crate::config::Loss,
    pub seed: u64,
    pub epochs: Vec<EpochMetrics>,
}

impl RunRecord {
    pub fn last(&self) -> Option<&EpochMetrics> {
        self.epochs.last()
    }
    /// The epoch with the highest validation accuracy (the first of equals).
    pub fn best(&self) -> Option<&EpochMetrics> {
        self.epochs.iter().fold(None, |best: Option<&EpochMetrics>, e| match best {
            Some(b) if b.val_acc >= e.val_acc => Some(b),
            _ => Some(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// metrics.jsonl is read back and rewritten on --resume: every float must come back
    /// with the same bits, or the rewritten lines differ from the first ones.
    #[test]
    fn metrics_lines_round_trip_bit_exactly() {
        let mut rng = SplitMix64::new(14);
        let mut differing = 0;
        let x = |rng: &mut SplitMix64| rng.uniform() * 10f64.powi((rng.below(12) as i32) - 6);
        for epoch in 0..20_000 {
            let m = EpochMetrics {
                epoch,
                train_loss: x(&mut rng),
                train_acc: 100.0 * rng.uniform(),
                val_loss: x(&mut rng),
                val_acc: 100.0 * rng.uniform(),
                test_acc: Some(x(&mut rng)),
                train_seconds: x(&mut rng),
                tokens_per_second: x(&mut rng),
                lr: f32::from_bits(rng.below(0x3f80_0000) as u32) as f64,
                val_quality: None,
                test_quality: None,
            };
            let line = serde_json::to_string(&m).unwrap();
            let back: EpochMetrics = serde_json::from_str(&line).unwrap();
            differing += usize::from(serde_json::to_string(&back).unwrap() != line || back != m);
        }
        assert_eq!(differing, 0, "metrics lines that do not survive a read and a rewrite");
    }
}
