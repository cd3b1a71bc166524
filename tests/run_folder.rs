//! The training loop's NaN guard, on the cpu device with the demo corpus: a checkpoint is
//! written only when its weights are finite and its validation probabilities are
//! numbers, so the checkpoint a failed run keeps is one that evaluates.

use cudaenc::cli::setup::{self, DataArgs, Device, Preset};
use cudaenc::cli::train::tensor_slots;
use cudaenc::config::Loss;
use cudaenc::data::TruncatePolicy;
use cudaenc::model::params::ParamLayout;
use cudaenc::model::Batch;
use cudaenc::train::checkpoint;
use cudaenc::train::engine::{Engine, StepStats};
use cudaenc::train::trainer::{train_run, Progress, RunDir};

/// The cpu engine, except that after `good_steps` training steps its predictions or its
/// parameters turn NaN (what a diverging model shows without a NaN training loss).
struct TurnsNan {
    inner: Box<dyn Engine>,
    steps: usize,
    good_steps: usize,
    nan_params: bool,
}

impl TurnsNan {
    fn bad(&self) -> bool {
        self.steps > self.good_steps
    }
}

impl Engine for TurnsNan {
    fn train_step(&mut self, batch: &Batch, lr: f32, step: u64) -> anyhow::Result<StepStats> {
        self.steps += 1;
        self.inner.train_step(batch, lr, step)
    }
    fn predict(&mut self, batch: &Batch) -> anyhow::Result<Vec<f32>> {
        let mut p = self.inner.predict(batch)?;
        if self.bad() && !self.nan_params {
            let mid = p.len() / 2;
            p[mid] = f32::NAN;
        }
        Ok(p)
    }
    fn params(&mut self) -> anyhow::Result<Vec<f32>> {
        let mut p = self.inner.params()?;
        if self.bad() && self.nan_params {
            p[3] = f32::NAN;
        }
        Ok(p)
    }
    fn optimizer_state(&mut self) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        self.inner.optimizer_state()
    }
    fn load_state(&mut self, params: &[f32], m: &[f32], v: &[f32]) -> anyhow::Result<()> {
        self.inner.load_state(params, m, v)
    }
}

#[test]
fn only_a_finite_checkpoint_is_kept() {
    let args = DataArgs {
        data: Some("demo".into()),
        val_size: None,
        val_seed: None,
        truncate: TruncatePolicy::Head,
        train_subset: Some(64),
        full_test: false,
        holdout: None,
        compact_vocab: false,
        min_count: 1,
        dedup: false,
    };
    let loaded = setup::load_data(&args, 1).unwrap();
    let h = setup::Hyper { epochs: 3, d_model: 8, d_ff: 16, n_head: 2, max_len: 16, batch_size: 16, ..Preset::Demo.hyper() };
    let cfg = setup::model_config(&h, loaded.vocab, Loss::Bce).unwrap();
    let tcfg = setup::train_config(&h, 1).unwrap();
    let slots = tensor_slots(&ParamLayout::new(&cfg));
    let tmp = tempfile::tempdir().unwrap();
    for nan_params in [false, true] {
        let dir = RunDir::create(&tmp.path().join(format!("nan-params-{nan_params}")), &serde_json::json!({})).unwrap();
        let data = setup::run_data(&loaded, &h, TruncatePolicy::Head, 1);
        let mut engine = TurnsNan {
            inner: Device::Cpu.engine(&cfg, &tcfg.optim, 1, false).unwrap(),
            steps: 0,
            good_steps: data.steps_per_epoch,
            nan_params,
        };
        let progress = Progress { show_bar: false, label: "nan".into(), stop_after: None };
        let err = train_run(&mut engine, Loss::Bce, &tcfg, &data, &slots, Some(&dir), false, &progress).unwrap_err();
        let msg = format!("{err:#}");
        println!("nan_params {nan_params}: {msg}");
        assert!(msg.contains("NaN") && msg.contains("checkpoint of epoch 1"), "{msg}");
        let ckpt = checkpoint::load(&dir.checkpoint_path(), &slots).unwrap();
        assert_eq!(ckpt.metadata.get("epoch").map(String::as_str), Some("1"), "the last checkpoint is epoch 1's");
        assert!(ckpt.params.iter().all(|p| p.is_finite()));
        let epochs: Vec<usize> = dir.read_metrics().unwrap().iter().map(|m| m.epoch).collect();
        assert_eq!(epochs, [1], "metrics.jsonl holds the saved epoch only");
    }
}

/// A checkpoint whose header does not match its run (edited: epoch 0, or an epoch that
/// disagrees with its step, or another loss) is refused by --resume; before, epoch 0
/// retrained both epochs on trained weights and ended with exit 0.
#[test]
fn resume_refuses_a_checkpoint_header_that_is_not_the_runs() {
    let args = DataArgs {
        data: Some("demo".into()),
        val_size: None,
        val_seed: None,
        truncate: TruncatePolicy::Head,
        train_subset: Some(48),
        full_test: false,
        holdout: None,
        compact_vocab: false,
        min_count: 1,
        dedup: false,
    };
    let loaded = setup::load_data(&args, 1).unwrap();
    let h = setup::Hyper { epochs: 2, d_model: 8, d_ff: 16, n_head: 2, max_len: 16, batch_size: 16, ..Preset::Demo.hyper() };
    let cfg = setup::model_config(&h, loaded.vocab, Loss::Bce).unwrap();
    let tcfg = setup::train_config(&h, 1).unwrap();
    let slots = tensor_slots(&ParamLayout::new(&cfg));
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(&tmp.path().join("run"), &serde_json::json!({})).unwrap();
    let data = setup::run_data(&loaded, &h, TruncatePolicy::Head, 1);
    let mut engine = Device::Cpu.engine(&cfg, &tcfg.optim, 1, false).unwrap();
    let progress = Progress { show_bar: false, label: "header".into(), stop_after: Some(1) };
    train_run(engine.as_mut(), Loss::Bce, &tcfg, &data, &slots, Some(&dir), false, &progress).unwrap();
    let good = checkpoint::load(&dir.checkpoint_path(), &slots).unwrap();
    assert_eq!(good.metadata.get("step").map(String::as_str), Some(data.steps_per_epoch.to_string().as_str()));
    let edits: [(&str, &str); 4] = [("epoch", "0"), ("step", "1"), ("loss", "ce"), ("epoch", "2")];
    for (key, value) in edits {
        let mut ckpt = good.clone();
        ckpt.metadata.insert(key.into(), value.into());
        checkpoint::save(&dir.checkpoint_path(), &slots, &ckpt).unwrap();
        let mut engine = Device::Cpu.engine(&cfg, &tcfg.optim, 1, false).unwrap();
        let err = train_run(engine.as_mut(), Loss::Bce, &tcfg, &data, &slots, Some(&dir), true, &progress)
            .expect_err(&format!("{key}={value} was resumed"));
        let msg = format!("{err:#}");
        assert!(msg.contains("not one of this run's") || msg.contains("does not hold one line"), "{key}={value}: {msg}");
        assert_eq!(checkpoint::load(&dir.checkpoint_path(), &slots).unwrap(), ckpt, "{key}={value}: the checkpoint is left as it was");
    }
    // the checkpoint as written resumes
    checkpoint::save(&dir.checkpoint_path(), &slots, &good).unwrap();
    let mut engine = Device::Cpu.engine(&cfg, &tcfg.optim, 1, false).unwrap();
    let done = Progress { stop_after: None, ..progress };
    let record = train_run(engine.as_mut(), Loss::Bce, &tcfg, &data, &slots, Some(&dir), true, &done).unwrap();
    assert_eq!(record.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), [1, 2]);
}
