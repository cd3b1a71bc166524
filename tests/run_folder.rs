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
            inner: Device::Cpu.engine(&cfg, &tcfg.optim, 1).unwrap(),
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
