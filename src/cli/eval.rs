//! `cudaenc eval`: accuracy and loss of a run's checkpoint on a data set.

use super::setup::{self, DataArgs, Device, RunConfig};
use super::train::tensor_slots;
use crate::data::{BatchConfig, BatchPlan, ReviewSet, Truncate};
use crate::device::DeviceKind;
use crate::model::params::ParamLayout;
use crate::model::Batch;
use crate::train::checkpoint;
use crate::train::engine::Engine;
use crate::train::trainer::evaluate;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// The validation sample (--val-size, --val-seed)
    Val,
    /// The whole test split
    Test,
    /// The training split
    Train,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run folder written by `cudaenc train` (config.json + checkpoint.safetensors)
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, value_enum, default_value = "test")]
    pub split: Split,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    #[command(flatten)]
    pub data: DataArgs,
    /// Precision of the linear layers (default: the one the run was trained with)
    #[arg(long, value_enum)]
    pub precision: Option<crate::config::Precision>,
}

/// The model of a run folder, loaded on `device`, with its configuration.
pub fn load_run(run: &Path, device: &Device) -> Result<(RunConfig, Box<dyn Engine>)> {
    load_run_with(run, device, None)
}

/// [`load_run`], with the linear layers in `precision` instead of the run's own.
pub fn load_run_with(run: &Path, device: &Device, precision: Option<crate::config::Precision>) -> Result<(RunConfig, Box<dyn Engine>)> {
    let mut config = RunConfig::read(run)?;
    if let Some(p) = precision {
        config.model.precision = p;
    }
    let slots = tensor_slots(&ParamLayout::new(&config.model));
    let ckpt = checkpoint::load(&run.join("checkpoint.safetensors"), &slots)?;
    let mut engine = device.engine(&config.model, &config.train.optim, config.train.seed)?;
    let zeros = vec![0.0; ckpt.params.len()];
    let (m, v) = if ckpt.adam_m.is_empty() { (&zeros, &zeros) } else { (&ckpt.adam_m, &ckpt.adam_v) };
    engine.load_state(&ckpt.params, m, v)?;
    Ok((config, engine))
}

pub fn run(args: Args) -> Result<()> {
    let device = Device::open(args.device)?;
    let (config, mut engine) = load_run_with(&args.run, &device, args.precision).with_context(|| format!("loading run {}", args.run.display()))?;
    let mut data_args = args.data.clone();
    if data_args.data.is_none() && config.data_source == "demo" {
        data_args.data = Some("demo".into());
    }
    data_args.full_test = args.split == Split::Test;
    let loaded = setup::load_data(&data_args, config.train.seed)?;
    ensure!(
        loaded.vocab == config.model.vocab,
        "the data's vocabulary ({}) is not the model's ({}): was the run trained on other data?",
        loaded.vocab,
        config.model.vocab
    );
    let set: &ReviewSet = match args.split {
        Split::Val => &loaded.val,
        Split::Test => loaded.test.as_ref().context("this data source has no test split")?,
        Split::Train => &loaded.train,
    };
    let policy = config.truncate.parse().map_err(anyhow::Error::msg)?;
    let cfg = BatchConfig::new(config.train.batch_size, Truncate::new(config.model.max_len, policy));
    let batches: Vec<Batch> = BatchPlan::eval(set, &cfg).iter(set).collect();
    let (loss, acc) = evaluate(engine.as_mut(), &batches)?;
    println!(
        "{:?} split of {}: {} reviews, accuracy {acc:.2}%, loss {loss:.4} ({} on {}, {})",
        args.split,
        loaded.source,
        set.len(),
        args.run.display(),
        device.name(),
        config.model.precision
    );
    Ok(())
}
