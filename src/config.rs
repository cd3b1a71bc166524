//! Model configuration: plain values with defaults, shared by every device.

pub use crate::ops::matmul::Precision;
use serde::{Deserialize, Serialize};

/// Which classification head and loss the model trains with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// One logit, sigmoid + binary cross-entropy.
    Bce,
    /// Two logits, softmax cross-entropy.
    Ce,
}

impl Loss {
    /// Number of head outputs (logits per review).
    pub fn outputs(self) -> usize {
        match self {
            Loss::Bce => 1,
            Loss::Ce => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Loss::Bce => "bce",
            Loss::Ce => "ce",
        }
    }
}

/// The shape of the encoder classifier (see docs/design.md for the parameter layout).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Vocabulary size V (cl100k_base: 100,277).
    pub vocab: usize,
    /// Width C.
    pub d_model: usize,
    /// Number of encoder blocks L.
    pub n_layer: usize,
    /// Number of attention heads NH (C % NH == 0).
    pub n_head: usize,
    /// FFN hidden width, 4C by default.
    pub d_ff: usize,
    /// Longest sequence T the model is run at.
    pub max_len: usize,
    /// Dropout probability on the embedding output and on each residual branch.
    pub dropout: f32,
    pub loss: Loss,
    /// Input precision of the linear layers' products on the kernel devices (absent in
    /// older config.json files: fp32). Weights, gradients and AdamW are f32 in every one.
    #[serde(default)]
    pub precision: Precision,
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_head
    }
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.vocab > 0, "vocab must be positive");
        anyhow::ensure!(self.d_model > 0 && self.n_head > 0, "width and heads must be positive");
        anyhow::ensure!(
            self.d_model.is_multiple_of(self.n_head),
            "width {} is not a multiple of the number of heads {}",
            self.d_model,
            self.n_head
        );
        anyhow::ensure!(self.d_ff > 0, "FFN width must be positive");
        anyhow::ensure!(self.max_len > 0, "max length must be positive");
        anyhow::ensure!(
            (0.0..1.0).contains(&self.dropout),
            "dropout must be in [0, 1), got {}",
            self.dropout
        );
        Ok(())
    }
}

/// Optimizer settings for one training step (AdamW with clipping).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Clip the global gradient L2 norm to this value (0 or less: no clipping).
    pub grad_clip: f32,
    /// Label smoothing (CE: target (1 - eps) onehot + eps / 2) or target smoothing (BCE:
    /// target (1 - eps) y + eps / 2) of the training loss, in [0, 1); 0: none.
    #[serde(default)]
    pub label_smoothing: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig { weight_decay: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, grad_clip: 1.0, label_smoothing: 0.0 }
    }
}
