//! A minimal training loop on the demo corpus with the `cpu` engine: enough to measure
//! that the reference trains (the real `cudaenc train` loop lives on the `Engine` trait).

use std::time::Instant;

use crate::config::{Loss, ModelConfig, OptimConfig};
use crate::data::demo::{DemoData, Example};
use crate::model::Batch;
use crate::reference::engine::{predicted_label, CpuEngine};
use crate::rng::SplitMix64;
use crate::train::engine::Engine;

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub loss: Loss,
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_ff: usize,
    pub dropout: f32,
    pub batch_size: usize,
    /// Peak learning rate: linear warmup over the first 5% of steps, cosine to 10%.
    pub lr: f32,
    pub epochs: usize,
    pub n_train: usize,
    pub n_val: usize,
    /// Seeds the corpus, initialization, data order and dropout.
    pub seed: u64,
    /// Map the corpus's cl100k ids to a dense vocabulary (see `data::demo`).
    pub remap: bool,
    pub optim: OptimConfig,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            loss: Loss::Ce,
            d_model: 32,
            n_layer: 1,
            n_head: 4,
            d_ff: 128,
            dropout: 0.1,
            batch_size: 32,
            lr: 3e-3,
            epochs: 8,
            n_train: 4000,
            n_val: 1000,
            seed: 1,
            remap: true,
            optim: OptimConfig { weight_decay: 0.01, ..OptimConfig::default() },
        }
    }
}

#[derive(Clone, Debug)]
pub struct DemoEpoch {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_acc: f64,
    pub val_acc: f64,
    /// Seconds since the start of training (data preparation excluded).
    pub seconds: f64,
}

#[derive(Clone, Debug)]
pub struct DemoReport {
    pub config: ModelConfig,
    pub epochs: Vec<DemoEpoch>,
    pub val_acc: f64,
    pub train_seconds: f64,
    pub prep_seconds: f64,
}

fn batch_of(examples: &[&Example]) -> Batch {
    let reviews: Vec<&[u32]> = examples.iter().map(|(ids, _)| ids.as_slice()).collect();
    let labels: Vec<u8> = examples.iter().map(|(_, y)| *y).collect();
    Batch::from_reviews(&reviews, &labels)
}

/// Accuracy of `engine` on `set`.
pub fn accuracy(engine: &mut dyn Engine, set: &[Example]) -> anyhow::Result<f64> {
    let mut correct = 0;
    for chunk in set.chunks(256) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = batch_of(&refs);
        let probs = engine.predict(&batch)?;
        correct += probs.iter().zip(&batch.labels).filter(|(&p, &y)| predicted_label(p) == y).count();
    }
    Ok(correct as f64 / set.len().max(1) as f64)
}

/// Train on the demo corpus; `log` receives one line per epoch.
pub fn train_demo_cpu(opts: &DemoOptions, mut log: impl FnMut(&str)) -> anyhow::Result<DemoReport> {
    let t0 = Instant::now();
    let data = DemoData::new(opts.seed, opts.n_train, opts.n_val, opts.remap)?;
    let config = ModelConfig {
        vocab: data.vocab,
        d_model: opts.d_model,
        n_layer: opts.n_layer,
        n_head: opts.n_head,
        d_ff: opts.d_ff,
        max_len: data.max_len(),
        dropout: opts.dropout,
        loss: opts.loss,
    };
    let mut engine = CpuEngine::new(&config, &opts.optim, opts.seed, opts.seed.wrapping_add(1))?;
    let prep_seconds = t0.elapsed().as_secs_f64();
    let start = Instant::now();
    let steps_per_epoch = data.train.len().div_ceil(opts.batch_size);
    let total = (steps_per_epoch * opts.epochs).max(1) as f64;
    let warmup = (total * 0.05).max(1.0);
    let mut rng = SplitMix64::new(opts.seed ^ 0x5EED);
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    let mut step = 0u64;
    let mut epochs = Vec::new();
    for epoch in 1..=opts.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for idx in order.chunks(opts.batch_size) {
            step += 1;
            let s = step as f64;
            let lr = if s <= warmup {
                s / warmup
            } else {
                let prog = (s - warmup) / (total - warmup).max(1.0);
                0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * prog).cos())
            } * opts.lr as f64;
            let refs: Vec<&Example> = idx.iter().map(|&i| &data.train[i]).collect();
            let stats = engine.train_step(&batch_of(&refs), lr as f32, step)?;
            loss_sum += stats.loss as f64 * idx.len() as f64;
            correct += stats.correct;
        }
        let val_acc = accuracy(&mut engine, &data.val)?;
        let e = DemoEpoch {
            epoch,
            train_loss: (loss_sum / data.train.len() as f64) as f32,
            train_acc: correct as f64 / data.train.len() as f64,
            val_acc,
            seconds: start.elapsed().as_secs_f64(),
        };
        log(&format!(
            "epoch {}: train loss {:.4} acc {:.2}% | val acc {:.2}% | {:.1}s",
            e.epoch,
            e.train_loss,
            100.0 * e.train_acc,
            100.0 * e.val_acc,
            e.seconds
        ));
        epochs.push(e);
    }
    let val_acc = epochs.last().map(|e| e.val_acc).unwrap_or(0.0);
    Ok(DemoReport { config, epochs, val_acc, train_seconds: start.elapsed().as_secs_f64(), prep_seconds })
}
