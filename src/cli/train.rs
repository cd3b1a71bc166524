//! `cudaenc train`: one run. Loads the data, builds the model on the chosen device,
//! and hands both to the training loop (`train::trainer::train_run`), which writes the
//! run folder: `config.json`, `metrics.jsonl`, `checkpoint.safetensors`.

use super::setup::{self, DataArgs, Device, HyperArgs, RunConfig};
use crate::config::Loss;
use crate::device::DeviceKind;
use crate::model::params::ParamLayout;
use crate::train::checkpoint::TensorSlot;
use crate::train::metrics::RunRecord;
use crate::train::trainer::{train_run, Progress, RunDir};
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Loss and head: bce (1 logit, sigmoid) or ce (2 logits, softmax)
    #[arg(long, value_enum, default_value = "bce")]
    pub loss: Loss,
    /// Where the compute runs
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    /// Seeds initialization, data order, token drop and dropout
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run folder (default: runs/<loss>-seed<seed>, numbered -2, -3, ... if taken)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the interrupted run in --out from its last checkpoint
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub hyper: HyperArgs,
}

/// The checkpoint's tensor names and places, from the parameter layout.
pub fn tensor_slots(layout: &ParamLayout) -> Vec<TensorSlot> {
    layout
        .tensors
        .iter()
        .map(|t| TensorSlot { name: t.name.to_string(), shape: t.shape.clone(), offset: t.offset })
        .collect()
}

/// `base`, or the first of `base-2`, `base-3`, ... that does not exist yet, so that
/// running the same command twice never fails on the folder of the first run.
pub fn first_free(base: &str) -> PathBuf {
    (1..)
        .map(|i| PathBuf::from(if i == 1 { base.to_string() } else { format!("{base}-{i}") }))
        .find(|d| !d.exists())
        .expect("an unused folder name")
}

/// One run, shared by `train` and `experiment`.
pub fn run_one(
    device: &Device,
    loaded: &setup::LoadedData,
    config: &RunConfig,
    dir: &Path,
    resume: bool,
    label: &str,
) -> Result<RunRecord> {
    let run_dir = if resume {
        let existing = RunConfig::read(dir)?;
        if existing.model != config.model || existing.train != config.train {
            bail!("--resume: the flags differ from the run's config.json in {}", dir.display());
        }
        RunDir { path: dir.to_path_buf() }
    } else {
        if dir.join("checkpoint.safetensors").exists() {
            bail!("{} already holds a run; use --resume to continue it or choose another --out", dir.display());
        }
        RunDir::create(dir, &serde_json::to_value(config)?)?
    };
    let data = setup::run_data(loaded, &config.hyper, config.truncate.parse().map_err(anyhow::Error::msg)?, config.train.seed);
    let mut engine = device.engine(&config.model, &config.train.optim, config.train.seed)?;
    let slots = tensor_slots(&ParamLayout::new(&config.model));
    let progress = Progress { show_bar: std::io::stderr().is_terminal(), label: label.to_string(), stop_after: None };
    let result = train_run(engine.as_mut(), config.model.loss, &config.train, &data, &slots, Some(&run_dir), resume, &progress);
    if result.is_err() && !resume && !run_dir.checkpoint_path().exists() {
        // nothing was trained to keep: leave no half run folder behind
        let _ = std::fs::remove_dir_all(&run_dir.path);
    }
    result
}

pub fn run(args: Args) -> Result<()> {
    let device = Device::open(args.device)?;
    let loaded = setup::load_data(&args.data, args.seed)?;
    let preset = args.hyper.preset.resolve(loaded.source == "demo", device.is_cpu());
    let h = args.hyper.apply(preset);
    let config = RunConfig::new(&h, preset, &loaded, &args.data, args.loss, args.seed, &device)?;
    let dir = match (&args.out, args.resume) {
        (Some(out), _) => out.clone(),
        (None, true) => bail!("--resume needs --out: the run folder to continue"),
        (None, false) => first_free(&format!("runs/{}-seed{}", args.loss.name(), args.seed)),
    };
    eprintln!(
        "training {} on {} | data {} ({} train, {} val reviews) | preset {:?}: width {}, {} layers, {} heads, \
         max len {}, batch {}, lr {:.1e}, {} epochs | run folder {}",
        args.loss.name().to_uppercase(),
        device.name(),
        loaded.source,
        loaded.train.len(),
        loaded.val.len(),
        preset,
        config.model.d_model,
        config.model.n_layer,
        config.model.n_head,
        config.model.max_len,
        config.train.batch_size,
        config.train.lr,
        config.train.epochs,
        dir.display()
    );
    let record = run_one(&device, &loaded, &config, &dir, args.resume, args.loss.name())
        .with_context(|| format!("run in {}", dir.display()))?;
    let last = record.last().context("no epoch was trained")?;
    let best = record.best().context("no epoch was trained")?;
    println!(
        "final validation accuracy {:.2}% (best {:.2}% at epoch {}){}; run folder {}",
        last.val_acc,
        best.val_acc,
        best.epoch,
        last.test_acc.map(|t| format!("; full test split {t:.2}%")).unwrap_or_default(),
        dir.display()
    );
    Ok(())
}
