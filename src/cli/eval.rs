//! `cudaenc eval`: accuracy and loss of a run's checkpoint on a data set.

use super::setup::{self, DataArgs, Device, RunConfig};
use super::train::tensor_slots;
use crate::data::{ReviewSet, Truncate};
use crate::device::DeviceKind;
use crate::infer;
use crate::model::params::ParamLayout;
use crate::train::checkpoint;
use crate::train::engine::Engine;
use crate::train::stats::ProbQuality;
use crate::train::trainer::{loss_and_accuracy, CHECKPOINT_FILE, CONFIG_FILE};
use anyhow::{bail, ensure, Context, Result};
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
    if !run.join(CONFIG_FILE).exists() {
        // an experiment folder holds run folders: name one instead of "No such file"
        let mut runs: Vec<String> = std::fs::read_dir(run)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(CONFIG_FILE).is_file())
            .map(|e| e.path().display().to_string())
            .collect();
        runs.sort();
        if let Some(first) = runs.first() {
            bail!("{} is not a run folder but holds {} (an experiment?): give one of them to --run, e.g. {first}", run.display(), runs.len());
        }
    }
    let mut config = RunConfig::read(run)?;
    if let Some(p) = precision {
        config.model.precision = p;
    }
    let slots = tensor_slots(&ParamLayout::new(&config.model));
    let path = run.join(CHECKPOINT_FILE);
    if !path.exists() && run.join(CONFIG_FILE).is_file() {
        bail!("no epoch of the run in {} has finished yet (no {CHECKPOINT_FILE}): there is no model to use", run.display());
    }
    let ckpt = checkpoint::load(&path, &slots)?;
    let mut engine = device.engine(&config.model, &config.train.optim, config.train.seed, false)?; // no training step to capture
    let zeros = vec![0.0; ckpt.params.len()];
    let (m, v) = if ckpt.adam_m.is_empty() { (&zeros, &zeros) } else { (&ckpt.adam_m, &ckpt.adam_v) };
    engine.load_state(&ckpt.params, m, v)?;
    Ok((config, engine))
}

/// What `eval` measured on one set.
#[derive(Clone, Debug)]
pub struct Measured {
    pub source: String,
    pub device: String,
    pub reviews: usize,
    /// Mean negative log-likelihood and accuracy in percent.
    pub loss: f64,
    pub acc: f64,
    /// ROC-AUC and calibration of the probabilities.
    pub quality: ProbQuality,
}

pub fn run(args: Args) -> Result<()> {
    let m = measure(&args)?;
    println!(
        "{:?} split of {}: {} reviews, accuracy {:.2}%, loss {:.4}, ROC-AUC {}, ECE {:.4} ({} on {})",
        args.split,
        m.source,
        m.reviews,
        m.acc,
        m.loss,
        m.quality.auc.map(|a| format!("{a:.4}")).unwrap_or_else(|| "n/a (one class)".into()),
        m.quality.ece,
        args.run.display(),
        m.device
    );
    Ok(())
}

/// Load the run and the data as the run saw them (its held-out movies and token remap)
/// and evaluate the chosen split.
pub fn measure(args: &Args) -> Result<Measured> {
    let device = Device::open(args.device)?;
    let (config, mut engine) = load_run_with(&args.run, &device, args.precision).with_context(|| format!("loading run {}", args.run.display()))?;
    // without --data: the data the run was trained on, as its config.json records it
    let mut data_args = args.data.clone();
    let recorded = data_args.data.is_none();
    if recorded {
        data_args.data = Some(config.data_source.clone());
        data_args.val_seed = data_args.val_seed.or(Some(config.val_seed));
        data_args.train_subset = data_args.train_subset.or(config.train_subset);
    }
    let demo = data_args.data.as_deref() == Some("demo");
    if !demo && recorded {
        data_args.val_size = data_args.val_size.or(Some(config.val_size));
    }
    if demo && args.split == Split::Test {
        anyhow::bail!("the demo corpus has no test split: use --split val (or train)");
    }
    data_args.full_test = args.split == Split::Test;
    if data_args.holdout.is_none() && config.holdout.is_some() {
        // the run validated on held-out movies of the train split: the same ones
        data_args.holdout = config.holdout;
        data_args.val_seed = Some(config.val_seed);
    }
    data_args.compact_vocab = false; // the run's own remap is applied below
    ensure!(
        !data_args.dedup || config.dedup,
        "--dedup: the run was trained without it, and eval feeds reviews as the run was fed (drop --dedup)"
    );
    data_args.dedup = config.dedup; // as the run was fed
    let mut loaded = setup::load_data(&data_args, config.train.seed).with_context(|| {
        if recorded {
            format!("loading the run's data {} (recorded in its config.json; give --data to use other data)", config.data_source)
        } else {
            "loading the data".to_string()
        }
    })?;
    if let Some(map) = &config.vocab_map {
        loaded.compact(map.clone());
    }
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
    let cfg = infer::batch_config(config.train.batch_size, None, Truncate::new(config.model.max_len, policy));
    let probs = infer::predict_set(engine.as_mut(), set, &cfg)?;
    let labels = set.labels();
    let (loss, acc) = loss_and_accuracy(&probs, &labels)?;
    Ok(Measured {
        source: loaded.source.clone(),
        device: device.name(),
        reviews: set.len(),
        loss,
        acc,
        quality: ProbQuality::of(&probs, &labels),
    })
}
