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
use super::stats::ProbQuality;
use crate::config::{Loss, OptimConfig};
use crate::model::Batch;
use crate::reference::engine::predicted_label;
use crate::rng::SplitMix64;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use crate::data::fsutil::atomic_write;
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
    /// Probability of dropping every occurrence of a vocabulary id from a training batch
    /// (embedding dropout by type; 0: off, and absent in older runs).
    #[serde(default)]
    pub type_drop: f32,
    /// Token drop at the last step, reached linearly from `token_drop` at the first
    /// (None: constant `token_drop`; absent in older runs).
    #[serde(default)]
    pub token_drop_end: Option<f32>,
    /// Decay of the exponential moving average of the weights that is evaluated and saved
    /// as the model (0: off, the weights themselves; absent in older runs).
    #[serde(default)]
    pub ema: f32,
}

/// The exponential moving average of the weights (`--ema`), updated on the host after
/// every step from `Engine::params` (on the kernel devices a download: one host
/// synchronization a step, the price of the flag). The decay ramps up as
/// min(decay, (1 + n) / (10 + n)) after n updates, so the first steps' weights, far from
/// trained, fade within a few hundred steps whatever the decay.
pub struct Ema {
    pub decay: f32,
    pub weights: Vec<f32>,
    pub updates: u64,
}

impl Ema {
    /// The decay of update number `n` (1-based).
    pub fn decay_at(decay: f32, n: u64) -> f32 {
        decay.min(((1 + n) as f64 / (10 + n) as f64) as f32)
    }
    /// Fold in the weights after one more step.
    pub fn update(&mut self, params: &[f32]) {
        self.updates += 1;
        let d = Ema::decay_at(self.decay, self.updates);
        for (e, &p) in self.weights.iter_mut().zip(params) {
            *e = d * *e + (1.0 - d) * p;
        }
    }
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

/// The probability of the positive class of every review of `batches`, without
/// dropout, with the reviews' labels, in batch order.
pub fn predictions(engine: &mut dyn Engine, batches: &[Batch]) -> Result<(Vec<f32>, Vec<u8>)> {
    let (mut probs, mut labels) = (Vec::new(), Vec::new());
    for batch in batches {
        probs.extend(engine.predict(batch)?);
        labels.extend_from_slice(&batch.labels);
    }
    Ok((probs, labels))
}

/// Mean negative log-likelihood and accuracy (percent) of probabilities of the positive class.
/// A probability that is NaN or outside [0, 1] is an error, never a number in the result.
pub fn loss_and_accuracy(probs: &[f32], labels: &[u8]) -> Result<(f64, f64)> {
    anyhow::ensure!(probs.len() == labels.len(), "internal: {} probabilities for {} labels", probs.len(), labels.len());
    if let Some(p) = probs.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        bail!("the model gives probability {p} (not in [0, 1]): its weights have diverged or are broken");
    }
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for (&p, &y) in probs.iter().zip(labels) {
        let p_label = if y == 1 { p as f64 } else { 1.0 - p as f64 };
        loss -= p_label.max(1e-12).ln();
        correct += usize::from(predicted_label(p) == y);
    }
    let n = probs.len();
    if n == 0 {
        bail!("evaluation set is empty");
    }
    Ok((loss / n as f64, 100.0 * correct as f64 / n as f64))
}

/// Drop each valid token with probability `p` (seeded per review) and, with probability
/// `type_p`, every occurrence of a vocabulary id in the batch (one draw per id and batch:
/// embedding dropout by type, as Gal and Ghahramani 2016), keeping at least one token per
/// review, and re-pad. A regularizer for a bag-of-tokens model. With `type_p` 0 the result
/// is the same as before type drop existed (the same draws per token).
pub fn drop_tokens(batch: &Batch, p: f32, type_p: f32, seed: u64) -> Batch {
    if p <= 0.0 && type_p <= 0.0 {
        return batch.clone();
    }
    let mut rng = SplitMix64::new(seed);
    // one draw per id, from (seed, id) alone: the same id is kept or dropped in every
    // review of the batch, whatever the order the reviews come in
    let type_seed = crate::rng::derive_seed(seed, 0, TYPE_DROP_SITE);
    let type_dropped =
        |id: u32| type_p > 0.0 && SplitMix64::new(crate::rng::derive_seed(type_seed, id as u64, 1)).uniform() < type_p as f64;
    let kept: Vec<Vec<u32>> = (0..batch.batch_size)
        .map(|b| {
            let row = &batch.ids[b * batch.seq_len..b * batch.seq_len + batch.lens[b] as usize];
            let mut keep: Vec<u32> = row.iter().copied().filter(|&id| (rng.uniform() >= p as f64) & !type_dropped(id)).collect();
            if keep.is_empty() && !row.is_empty() {
                keep.push(row[rng.below(row.len() as u64) as usize]);
            }
            keep
        })
        .collect();
    let refs: Vec<&[u32]> = kept.iter().map(|k| k.as_slice()).collect();
    Batch::from_reviews(&refs, &batch.labels)
}

/// The `site` of the type-drop seed (`rng::derive_seed`): apart from every other draw.
const TYPE_DROP_SITE: u64 = 0x7479_7065; // "type"

/// A run folder: `config.json`, `metrics.jsonl` (one line per epoch) and
/// `checkpoint.safetensors` (after each epoch). Every file is written to a temporary
/// name and renamed into place; docs/design.md ("The run folder") has the life cycle.
pub struct RunDir {
    pub path: PathBuf,
}

/// The files of a run folder, by name: the only files cudaenc ever writes there (their
/// temporary copies are `.<name>.tmp.<pid>.<nanos>`, see `fsutil::temp_path`).
pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const LOCK_FILE: &str = "run.lock";

impl RunDir {
    /// Create the folder if needed and write `config.json` into it (atomically).
    pub fn create(path: &Path, config: &serde_json::Value) -> Result<RunDir> {
        std::fs::create_dir_all(path).with_context(|| format!("creating run folder {}", path.display()))?;
        let text = serde_json::to_string_pretty(config)?;
        atomic_write(&path.join(CONFIG_FILE), |w| w.write_all(text.as_bytes()))?;
        Ok(RunDir { path: path.to_path_buf() })
    }
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join(CHECKPOINT_FILE)
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join(METRICS_FILE)
    }
    /// Rewrite the metrics file to hold exactly `epochs`.
    fn write_metrics(&self, epochs: &[EpochMetrics]) -> Result<()> {
        let mut text = String::new();
        for e in epochs {
            text += &serde_json::to_string(e)?;
            text.push('\n');
        }
        atomic_write(&self.metrics_path(), |w| w.write_all(text.as_bytes()))
    }
    pub fn read_metrics(&self) -> Result<Vec<EpochMetrics>> {
        let path = self.metrics_path();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{} line {}: not a metrics line", path.display(), i + 1)))
            .collect()
    }
    /// Remove temporary files a killed process left (only cudaenc's own temporary names).
    pub fn remove_stale_temps(&self) {
        crate::data::fsutil::remove_stale_temps(&self.path, &[CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE]);
    }
}

/// The lock of a run folder: an exclusive `flock` on `run.lock`, held while one process
/// writes the folder, released by the kernel when that process ends however it ends (so
/// a lock is never stale). The file holds the holder's pid for the error message and is
/// removed when the lock is dropped.
pub struct RunLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl RunLock {
    /// Take the lock of `dir` (which must exist), or fail at once if another process has it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("opening the lock {}", path.display()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    bail!(
                        "{} is in use by another cudaenc process{}: wait for it to end, or choose another folder",
                        dir.display(),
                        holder.trim().parse::<u32>().map(|p| format!(" (pid {p})")).unwrap_or_default()
                    );
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()))
                }
            }
            // the previous holder removes the file as it lets go: if that happened between
            // our open and our lock, we hold a lock on a removed file; open it again
            if same_file(&file, &path) {
                file.set_len(0).and_then(|_| write!(file, "{}", std::process::id())).with_context(|| format!("writing {}", path.display()))?;
                return Ok(RunLock { path, _file: file });
            }
        }
    }
}

#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::File, path: &Path) -> bool {
    path.exists()
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // removed while still locked (the file closes after this): see `acquire`
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Test hook, debug builds only: with `CUDAENC_FAULT=<point>` the process dies at that
/// point as a `kill -9` would (no cleanup, no destructors). Tests use it to check what
/// each crash window leaves behind. Release builds never read the variable.
pub fn fault_point(point: &str) {
    if cfg!(debug_assertions) && std::env::var("CUDAENC_FAULT").is_ok_and(|v| v == point) {
        eprintln!("CUDAENC_FAULT: dying at {point}");
        std::process::abort();
    }
}

/// Test hook, debug builds only: with `CUDAENC_FAULT=<point>` the write at that point
/// fails as on a full disk.
pub fn disk_full_point(point: &str) -> Result<()> {
    if cfg!(debug_assertions) && std::env::var("CUDAENC_FAULT").is_ok_and(|v| v == point) {
        return Err(std::io::Error::from_raw_os_error(28)).context(format!("CUDAENC_FAULT={point}"));
    }
    Ok(())
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
    let mut ema = if cfg.ema > 0.0 { Some(Ema { decay: cfg.ema, weights: engine.params()?, updates: 0 }) } else { None };
    if resume {
        let dir = dir.context("--resume needs a run folder")?;
        if !dir.checkpoint_path().exists() {
            bail!(
                "no epoch finished yet in {} (no {CHECKPOINT_FILE}): nothing to resume; run the same command without --resume",
                dir.path.display()
            );
        }
        let ckpt = checkpoint::load(&dir.checkpoint_path(), slots)?;
        start_epoch = ckpt.metadata.get("epoch").and_then(|e| e.parse().ok()).context("checkpoint has no epoch")?;
        // the checkpoint of epoch k is written after k whole epochs of this run's loss: a
        // header that says otherwise (edited, or another run's) would retrain finished
        // epochs on trained weights and end, exit 0, with a run no command gives
        let step = (start_epoch * data.steps_per_epoch).to_string();
        let meta = |k: &str| ckpt.metadata.get(k).map(String::as_str);
        if start_epoch == 0 || meta("step") != Some(step.as_str()) || meta("loss") != Some(loss_kind.name()) {
            bail!(
                "checkpoint {} is not one of this run's (epoch {start_epoch}, step {}, loss {}; expected step {step}, loss {}): cannot resume",
                dir.checkpoint_path().display(),
                meta("step").unwrap_or("none"),
                meta("loss").unwrap_or("none"),
                loss_kind.name()
            );
        }
        if ckpt.adam_m.is_empty() {
            bail!("checkpoint {} has no optimizer state to resume from", dir.checkpoint_path().display());
        }
        match (&mut ema, ckpt.train_params.is_empty()) {
            (None, true) => engine.load_state(&ckpt.params, &ckpt.adam_m, &ckpt.adam_v)?,
            (Some(ema), false) => {
                engine.load_state(&ckpt.train_params, &ckpt.adam_m, &ckpt.adam_v)?;
                ema.weights = ckpt.params.clone();
                ema.updates = (start_epoch * data.steps_per_epoch) as u64;
            }
            (Some(_), true) => bail!(
                "checkpoint {} has no training weights (train.*) for the run's --ema: cannot resume",
                dir.checkpoint_path().display()
            ),
            (None, false) => bail!(
                "checkpoint {} holds a moving average (train.*) but the run has no --ema: cannot resume",
                dir.checkpoint_path().display()
            ),
        }
        // metrics.jsonl is written before the checkpoint, so it holds every epoch the
        // checkpoint covers, and after a crash between the two, one more: dropped here
        record.epochs = dir.read_metrics()?.into_iter().filter(|e| e.epoch <= start_epoch).collect();
        if record.epochs.iter().map(|e| e.epoch).ne(1..=start_epoch) {
            bail!(
                "{} does not hold one line for each of the {start_epoch} epochs of the checkpoint: cannot resume",
                dir.metrics_path().display()
            );
        }
        if start_epoch >= cfg.epochs {
            eprintln!("{} already finished all {} epochs", dir.path.display(), cfg.epochs);
        } else {
            eprintln!("resuming {} after epoch {start_epoch}", dir.path.display());
        }
    }
    for epoch in start_epoch + 1..=cfg.epochs {
        let kept = || match dir {
            Some(d) if epoch > 1 => format!("; the checkpoint of epoch {} in {} is kept", epoch - 1, d.path.display()),
            _ => String::new(),
        };
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
            let token_drop = match cfg.token_drop_end {
                Some(end) => super::schedule::linear_at(cfg.token_drop, end, step, total_steps),
                None => cfg.token_drop,
            };
            let batch = if token_drop > 0.0 || cfg.type_drop > 0.0 {
                dropped = drop_tokens(batch, token_drop, cfg.type_drop, crate::rng::derive_seed(cfg.seed, step, u64::MAX));
                &dropped
            } else {
                batch
            };
            engine.queue_step(batch, lr, step, &mut totals)?;
            if let Some(ema) = &mut ema {
                ema.update(&engine.params()?);
            }
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
                    "training loss became {} (gradient norm {}) at epoch {epoch}, step {}{}",
                    bad.loss,
                    bad.grad_norm,
                    bad.step,
                    kept()
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
        let last = epoch == cfg.epochs;
        // with --ema the average is evaluated and saved as the model; the raw weights (and
        // the moments, unchanged) go back into the engine after the checkpoint
        let raw = match &ema {
            Some(ema) => {
                let (params, (m, v)) = (engine.params()?, engine.optimizer_state()?);
                engine.load_state(&ema.weights, &m, &v)?;
                Some((params, m, v))
            }
            None => None,
        };
        // probabilities, loss and accuracy of one evaluation set; an error names the set
        let mut score = |batches: &[Batch], set: &str| -> Result<(Vec<f32>, Vec<u8>, f64, f64)> {
            let context = || format!("{set} after epoch {epoch}{}", kept());
            let (p, y) = predictions(engine, batches).with_context(context)?;
            let (loss, acc) = loss_and_accuracy(&p, &y).with_context(context)?;
            Ok((p, y, loss, acc))
        };
        let (val_probs, val_labels, val_loss, val_acc) = score(&data.val, "validation")?;
        let val_quality = last.then(|| ProbQuality::of(&val_probs, &val_labels));
        let (test_acc, test_quality) = match (&data.test, last) {
            (Some(test), true) => {
                let (p, y, _, acc) = score(test, "test split")?;
                (Some(acc), Some(ProbQuality::of(&p, &y)))
            }
            _ => (None, None),
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
            val_quality,
            test_quality,
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
            let params = engine.params()?;
            if let Some(i) = params.iter().position(|p| !p.is_finite()) {
                bail!("parameter {i} is {} after epoch {epoch}: not saved{}", params[i], kept());
            }
            // metrics first: after a crash between the two renames, metrics.jsonl is one
            // epoch ahead of the checkpoint and --resume drops that line and redoes the epoch
            disk_full_point(&format!("metrics-{epoch}"))
                .and_then(|_| dir.write_metrics(&record.epochs))
                .with_context(|| format!("saving epoch {epoch}{}", kept()))?;
            fault_point(&format!("after-metrics-{epoch}"));
            let (adam_m, adam_v) = engine.optimizer_state()?;
            let ckpt = Checkpoint {
                params,
                adam_m,
                adam_v,
                train_params: raw.as_ref().map(|(p, _, _)| p.clone()).unwrap_or_default(),
                metadata: [
                    ("epoch".to_string(), epoch.to_string()),
                    ("step".to_string(), (epoch * data.steps_per_epoch).to_string()),
                    ("loss".to_string(), loss_kind.name().to_string()),
                    ("format".to_string(), "cudaenc-1".to_string()),
                ]
                .into(),
            };
            disk_full_point(&format!("checkpoint-{epoch}"))
                .and_then(|_| checkpoint::save(&dir.checkpoint_path(), slots, &ckpt))
                .with_context(|| format!("saving epoch {epoch}{}", kept()))?;
            fault_point(&format!("after-checkpoint-{epoch}"));
        }
        if let Some((params, m, v)) = &raw {
            if !last {
                engine.load_state(params, m, v)?;
            }
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
        let out = drop_tokens(&batch, 0.5, 0.0, 7);
        assert_eq!(out.labels, batch.labels);
        assert_eq!(out.lens[1], 1, "a one-token review keeps its token");
        assert_eq!(out.lens[2], 0, "an empty review stays empty");
        let kept = &out.ids[..out.lens[0] as usize];
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "order is kept: {kept:?}");
        assert!(out.lens[0] >= 1 && out.lens[0] < 8, "about half dropped: {}", out.lens[0]);
        assert_eq!(drop_tokens(&batch, 0.5, 0.0, 7), out, "seeded");
        assert_eq!(drop_tokens(&batch, 0.0, 0.0, 7), batch);
    }

    #[test]
    fn type_drop_drops_an_id_everywhere_in_the_batch() {
        let n = 2000u32;
        let forward: Vec<u32> = (0..n).collect();
        let backward: Vec<u32> = (0..n).rev().collect();
        let batch = Batch::from_reviews(&[&forward[..], &backward[..], &[5, 5, 5]], &[1, 0, 1]);
        let out = drop_tokens(&batch, 0.0, 0.3, 11);
        let kept = |b: usize| {
            let mut k = out.ids[b * out.seq_len..b * out.seq_len + out.lens[b] as usize].to_vec();
            k.sort_unstable();
            k
        };
        assert_eq!(kept(0), kept(1), "an id is kept or dropped in every review of the batch alike");
        // 2000 draws at 0.3: standard deviation 20.5 ids; 5 of them either side
        let dropped = n as usize - kept(0).len();
        assert!((600 - 103..=600 + 103).contains(&dropped), "{dropped} of {n} ids dropped at 0.3");
        assert!(out.lens[2] == 3 || out.lens[2] == 1, "id 5 kept three times, or dropped and one token kept");
        assert_eq!(drop_tokens(&batch, 0.0, 0.3, 11), out, "seeded");
        assert_ne!(drop_tokens(&batch, 0.0, 0.3, 12).ids, out.ids, "another step, other ids");
        // both at once: no more kept than either alone
        let both = drop_tokens(&batch, 0.5, 0.3, 11);
        assert!(both.lens[0] < out.lens[0] && both.lens[0] < drop_tokens(&batch, 0.5, 0.0, 11).lens[0]);
    }

    #[test]
    fn ema_ramps_its_decay_and_matches_an_f64_average() {
        assert!((Ema::decay_at(0.999, 1) - 2.0 / 11.0).abs() < 1e-7, "the first update keeps little of the start");
        assert!((Ema::decay_at(0.999, 90) - 0.91).abs() < 1e-6);
        assert_eq!(Ema::decay_at(0.999, 1_000_000), 0.999, "then the decay itself");
        assert!((1..5000).all(|n| Ema::decay_at(0.99, n + 1) >= Ema::decay_at(0.99, n)), "never decreasing");
        let mut rng = SplitMix64::new(3);
        let start: Vec<f32> = (0..16).map(|_| rng.normal(1.0) as f32).collect();
        let mut ema = Ema { decay: 0.95, weights: start.clone(), updates: 0 };
        let mut reference: Vec<f64> = start.iter().map(|&x| x as f64).collect();
        for n in 1..=200u64 {
            let params: Vec<f32> = (0..16).map(|i| (i as f64 + rng.normal(0.1)) as f32).collect();
            ema.update(&params);
            let d = Ema::decay_at(0.95, n) as f64;
            for (r, &p) in reference.iter_mut().zip(&params) {
                *r = d * *r + (1.0 - d) * p as f64;
            }
        }
        for (i, (&e, &r)) in ema.weights.iter().zip(&reference).enumerate() {
            assert!((e as f64 - r).abs() <= 1e-5 * (1.0 + r.abs()), "weight {i}: f32 {e} f64 {r}");
            assert!((r - i as f64).abs() < 0.1, "weight {i} averages to about {i}: {r}");
        }
    }
}
