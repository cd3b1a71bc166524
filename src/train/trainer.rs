//! The training loop, the same for every device: it drives an [`Engine`] over the
//! batches of each epoch, evaluates after every epoch, writes one JSON line of
//! metrics per epoch and a checkpoint, and can resume from that checkpoint.
//!
//! One step, from here down: `train_run` -> `Engine::train_step` -> (cpu) the reference
//! model in `src/reference/model.rs`, or (emu/cuda) the kernel model in
//! `src/model/gpu.rs`, which launches each kernel.

use super::checkpoint::{self, Checkpoint, TensorSlot};
use super::engine::{Engine, StepTotals};
use super::metrics::{EpochMetrics, RunRecord};
use super::schedule::Schedule;
use crate::config::{Loss, OptimConfig};
use crate::model::Batch;
use crate::reference::engine::predicted_label;
use crate::rng::SplitMix64;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything about a run's optimization that is not the model's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Fraction of all steps spent in linear warmup.
    pub warmup_fraction: f32,
    /// Final learning rate as a fraction of the peak (cosine decay).
    pub min_lr_fraction: f32,
    pub optim: OptimConfig,
    /// Seeds initialization, data order, token drop and dropout.
    pub seed: u64,
    /// Probability of dropping each input token of a training review (0: off).
    pub token_drop: f32,
}

/// The batches a run trains and evaluates on. `train(epoch)` must be a pure function
/// of the epoch (seeded), so that a resumed run sees the same batches.
pub struct RunData {
    pub train: Box<dyn Fn(usize) -> Vec<Batch>>,
    pub steps_per_epoch: usize,
    pub val: Vec<Batch>,
    /// The whole test split, evaluated after the last epoch when present.
    pub test: Option<Vec<Batch>>,
}

/// Loss and accuracy (percent) of a model on a set of batches, without dropout.
pub fn evaluate(engine: &mut dyn Engine, batches: &[Batch]) -> Result<(f64, f64)> {
    let (mut loss, mut correct, mut n) = (0.0f64, 0usize, 0usize);
    for batch in batches {
        let probs = engine.predict(batch)?;
        for (&p, &y) in probs.iter().zip(&batch.labels) {
            let p_label = if y == 1 { p as f64 } else { 1.0 - p as f64 };
            loss -= p_label.max(1e-12).ln();
            correct += usize::from(predicted_label(p) == y);
            n += 1;
        }
    }
    if n == 0 {
        bail!("evaluation set is empty");
    }
    Ok((loss / n as f64, 100.0 * correct as f64 / n as f64))
}

/// Drop each valid token with probability `p` (seeded per review), keeping at least
/// one token per review, and re-pad. A regularizer for a bag-of-tokens model.
pub fn drop_tokens(batch: &Batch, p: f32, seed: u64) -> Batch {
    if p <= 0.0 {
        return batch.clone();
    }
    let mut rng = SplitMix64::new(seed);
    let kept: Vec<Vec<u32>> = (0..batch.batch_size)
        .map(|b| {
            let row = &batch.ids[b * batch.seq_len..b * batch.seq_len + batch.lens[b] as usize];
            let mut keep: Vec<u32> = row.iter().copied().filter(|_| rng.uniform() >= p as f64).collect();
            if keep.is_empty() && !row.is_empty() {
                keep.push(row[rng.below(row.len() as u64) as usize]);
            }
            keep
        })
        .collect();
    let refs: Vec<&[u32]> = kept.iter().map(|k| k.as_slice()).collect();
    Batch::from_reviews(&refs, &batch.labels)
}

/// A run folder: `config.json`, `metrics.jsonl` (one line per epoch) and
/// `checkpoint.safetensors` (after each epoch, atomically replaced).
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub fn create(path: &Path, config: &serde_json::Value) -> Result<RunDir> {
        std::fs::create_dir_all(path).with_context(|| format!("creating run folder {}", path.display()))?;
        let tmp = path.join("config.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(config)?)?;
        std::fs::rename(&tmp, path.join("config.json"))?;
        Ok(RunDir { path: path.to_path_buf() })
    }
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join("checkpoint.safetensors")
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }
    /// Rewrite the metrics file to hold exactly `epochs` (used after each epoch, and on
    /// resume to drop lines of epochs the checkpoint does not cover).
    fn write_metrics(&self, epochs: &[EpochMetrics]) -> Result<()> {
        let tmp = self.path.join("metrics.jsonl.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        for e in epochs {
            writeln!(f, "{}", serde_json::to_string(e)?)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, self.metrics_path())?;
        Ok(())
    }
    pub fn read_metrics(&self) -> Result<Vec<EpochMetrics>> {
        let text = std::fs::read_to_string(self.metrics_path())
            .with_context(|| format!("reading {}", self.metrics_path().display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).context("corrupt line in metrics.jsonl"))
            .collect()
    }
}

/// What the caller sees of a run in progress.
pub struct Progress {
    pub show_bar: bool,
    pub label: String,
    /// Return after this epoch even if the run has more (simulates an interruption).
    pub stop_after: Option<usize>,
}

/// Steps between read-backs of the training statistics (loss, accuracy, the non-finite
/// check): the kernel model keeps them on the device in between.
const READBACK_STEPS: usize = 50;

/// Train `engine` for `cfg.epochs` epochs on `data`, writing into `dir` when given.
/// With `resume`, continue from the checkpoint in `dir` (same configuration), ending
/// where an uninterrupted run would.
#[allow(clippy::too_many_arguments)] // the run's parts, each used once; a struct would only rename them
pub fn train_run(
    engine: &mut dyn Engine,
    loss_kind: Loss,
    cfg: &TrainConfig,
    data: &RunData,
    slots: &[TensorSlot],
    dir: Option<&RunDir>,
    resume: bool,
    progress: &Progress,
) -> Result<RunRecord> {
    let total_steps = (cfg.epochs * data.steps_per_epoch) as u64;
    let schedule = Schedule {
        lr: cfg.lr,
        warmup_steps: ((total_steps as f64 * cfg.warmup_fraction as f64).round() as u64).max(1),
        total_steps,
        min_lr_fraction: cfg.min_lr_fraction,
    };
    let mut record = RunRecord { loss: loss_kind, seed: cfg.seed, epochs: Vec::new() };
    let mut start_epoch = 0;
    if resume {
        let dir = dir.context("--resume needs a run folder")?;
        let ckpt = checkpoint::load(&dir.checkpoint_path(), slots)?;
        start_epoch = ckpt.metadata.get("epoch").and_then(|e| e.parse().ok()).context("checkpoint has no epoch")?;
        if ckpt.adam_m.is_empty() {
            bail!("checkpoint {} has no optimizer state to resume from", dir.checkpoint_path().display());
        }
        engine.load_state(&ckpt.params, &ckpt.adam_m, &ckpt.adam_v)?;
        record.epochs = dir.read_metrics()?.into_iter().filter(|e| e.epoch <= start_epoch).collect();
        eprintln!("resuming {} after epoch {start_epoch}", dir.path.display());
    }
    for epoch in start_epoch + 1..=cfg.epochs {
        let batches = (data.train)(epoch);
        let bar = if progress.show_bar { ProgressBar::new(batches.len() as u64) } else { ProgressBar::hidden() };
        bar.set_draw_target(if progress.show_bar { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{} epoch {epoch}/{}", progress.label, cfg.epochs));
        let t0 = Instant::now();
        let (mut totals, mut tokens) = (StepTotals::default(), 0usize);
        let mut lr = 0.0;
        for (i, batch) in batches.iter().enumerate() {
            let step = ((epoch - 1) * data.steps_per_epoch + i + 1) as u64;
            lr = schedule.lr_at(step);
            let dropped;
            let batch = if cfg.token_drop > 0.0 {
                dropped = drop_tokens(batch, cfg.token_drop, crate::rng::derive_seed(cfg.seed, step, u64::MAX));
                &dropped
            } else {
                batch
            };
            engine.queue_step(batch, lr, step, &mut totals)?;
            tokens += batch.valid_tokens();
            // the kernel model keeps the statistics on the device: read back every
            // READBACK_STEPS steps and at the end of the epoch (the cpu device's are on
            // the host at once); a non-finite step stops training when it is seen
            let read_back = (i + 1) % READBACK_STEPS == 0 || i + 1 == batches.len();
            if read_back {
                engine.flush_totals(&mut totals)?;
            }
            if let Some(bad) = totals.nonfinite {
                bar.abandon();
                bail!(
                    "training loss became {} (gradient norm {}) at epoch {epoch}, step {}; \
                     the last good checkpoint is kept{}",
                    bad.loss,
                    bad.grad_norm,
                    bad.step,
                    dir.map(|d| format!(" in {}", d.checkpoint_path().display())).unwrap_or_default()
                );
            }
            if read_back {
                let secs = t0.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4} acc {:.2}% {:.0} tok/s",
                    totals.loss_sum / totals.reviews.max(1) as f64,
                    100.0 * totals.correct as f64 / totals.reviews.max(1) as f64,
                    tokens as f64 / secs
                ));
            }
            bar.inc(1);
        }
        let (loss_sum, correct, seen) = (totals.loss_sum, totals.correct, totals.reviews);
        let train_seconds = t0.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let (val_loss, val_acc) = evaluate(engine, &data.val)?;
        let test_acc = match (&data.test, epoch == cfg.epochs) {
            (Some(test), true) => Some(evaluate(engine, test)?.1),
            _ => None,
        };
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: 100.0 * correct as f64 / seen.max(1) as f64,
            val_loss,
            val_acc,
            test_acc,
            train_seconds,
            tokens_per_second: tokens as f64 / train_seconds.max(1e-9),
            lr: lr as f64,
        };
        eprintln!(
            "{} epoch {epoch}/{}: train loss {:.4} acc {:.2}% | val loss {:.4} acc {:.2}%{} | {:.1}s, {:.0} tok/s",
            progress.label,
            cfg.epochs,
            m.train_loss,
            m.train_acc,
            m.val_loss,
            m.val_acc,
            m.test_acc.map(|t| format!(" | test acc {t:.2}%")).unwrap_or_default(),
            m.train_seconds,
            m.tokens_per_second
        );
        record.epochs.push(m);
        if let Some(dir) = dir {
            let (adam_m, adam_v) = engine.optimizer_state()?;
            let ckpt = Checkpoint {
                params: engine.params()?,
                adam_m,
                adam_v,
                metadata: [
                    ("epoch".to_string(), epoch.to_string()),
                    ("step".to_string(), (epoch * data.steps_per_epoch).to_string()),
                    ("loss".to_string(), loss_kind.name().to_string()),
                    ("format".to_string(), "cudaenc-1".to_string()),
                ]
                .into(),
            };
            checkpoint::save(&dir.checkpoint_path(), slots, &ckpt)?;
            dir.write_metrics(&record.epochs)?;
        }
        if progress.stop_after == Some(epoch) {
            break;
        }
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_drop_keeps_order_labels_and_one_token() {
        let reviews: [&[u32]; 3] = [&[1, 2, 3, 4, 5, 6, 7, 8], &[9], &[]];
        let batch = Batch::from_reviews(&reviews, &[1, 0, 1]);
        let out = drop_tokens(&batch, 0.5, 7);
        assert_eq!(out.labels, batch.labels);
        assert_eq!(out.lens[1], 1, "a one-token review keeps its token");
        assert_eq!(out.lens[2], 0, "an empty review stays empty");
        let kept = &out.ids[..out.lens[0] as usize];
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "order is kept: {kept:?}");
        assert!(out.lens[0] >= 1 && out.lens[0] < 8, "about half dropped: {}", out.lens[0]);
        assert_eq!(drop_tokens(&batch, 0.5, 7), out, "seeded");
        assert_eq!(drop_tokens(&batch, 0.0, 7), batch);
    }
}
