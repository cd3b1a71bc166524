//! `cudaenc train`: one run. Loads the data, builds the model on the chosen device,
//! and hands both to the training loop (`train::trainer::train_run`), which writes the
//! run folder: `config.json`, `metrics.jsonl`, `checkpoint.safetensors`.

use super::setup::{self, DataArgs, Device, HyperArgs, Preset, RunConfig};
use crate::config::Loss;
use crate::device::DeviceKind;
use crate::model::params::ParamLayout;
use crate::train::checkpoint::TensorSlot;
use crate::train::metrics::RunRecord;
use crate::train::trainer::{fault_point, train_run, Progress, RunDir, RunLock, CONFIG_FILE};
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

/// What `train` makes of its flags for the run with `seed`: the data (the training set
/// shuffled by `seed`), the resolved preset and the run's configuration. `experiment`
/// calls this for each of its runs, so that every run folder's config.json gives the
/// same run again under `train`.
pub fn prepare(
    data: &DataArgs,
    hyper: &HyperArgs,
    loss: Loss,
    seed: u64,
    device: &Device,
) -> Result<(setup::LoadedData, Preset, RunConfig)> {
    let loaded = setup::load_data(data, seed)?;
    let preset = hyper.preset.resolve(loaded.source == "demo", device.is_cpu());
    let h = hyper.apply(preset);
    let config = RunConfig::new(&h, preset, &loaded, data, loss, seed, device)?;
    Ok((loaded, preset, config))
}

/// One run, shared by `train` and `experiment`, in the run folder `dir` (life cycle in
/// docs/design.md, "The run folder"). Without `resume` the folder may be new, or hold
/// other files, or a run that stopped before its first checkpoint; with `resume` it must
/// hold a run with the same configuration. Only files this function wrote are ever removed.
pub fn run_one(
    device: &Device,
    loaded: &setup::LoadedData,
    config: &RunConfig,
    dir: &Path,
    resume: bool,
    label: &str,
) -> Result<RunRecord> {
    // refuse what cannot fit or cannot run before the folder is touched
    setup::check_fits(&config.model, config.train.batch_size, device)?;
    if config.hyper.cuda_graphs && device.is_cpu() {
        bail!("--cuda-graphs captures the kernels of the cuda (or emu) device: use --device cuda, or drop --cuda-graphs");
    }
    if resume && !dir.join(CONFIG_FILE).is_file() {
        bail!("--resume: {} holds no run (no {CONFIG_FILE}); start it without --resume", dir.display());
    }
    let created = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("creating run folder {}", dir.display()))?;
    let lock = RunLock::acquire(dir)?;
    let run_dir = RunDir { path: dir.to_path_buf() };
    run_dir.remove_stale_temps();
    if resume {
        let recorded = RunConfig::read(dir)?;
        let differ = config.differences(&recorded);
        if !differ.is_empty() {
            bail!(
                "--resume: {} differ from the run's {} (give the flags the run was started with)",
                differ.join(", "),
                dir.join(CONFIG_FILE).display()
            );
        }
    } else {
        if run_dir.checkpoint_path().exists() {
            bail!("{} already holds a run; use --resume to continue it or choose another --out", dir.display());
        }
        // a config.json that is not a run's was not written by cudaenc: never overwrite it
        let config_path = dir.join(CONFIG_FILE);
        if config_path.exists() && RunConfig::read(dir).is_err() {
            bail!("{} exists and is not a cudaenc run configuration: choose another --out", config_path.display());
        }
        if run_dir.metrics_path().exists() {
            if !config_path.exists() {
                bail!("{} exists without a run configuration beside it: choose another --out", run_dir.metrics_path().display());
            }
            // the metrics of a run that stopped before its first checkpoint
            std::fs::remove_file(run_dir.metrics_path())
                .with_context(|| format!("removing {}", run_dir.metrics_path().display()))?;
        }
        RunDir::create(dir, &serde_json::to_value(config)?)?;
        fault_point("after-config");
    }
    let data = setup::run_data(loaded, &config.hyper, config.truncate.parse().map_err(anyhow::Error::msg)?, config.train.seed);
    let slots = tensor_slots(&ParamLayout::new(&config.model));
    let progress = Progress { show_bar: std::io::stderr().is_terminal(), label: label.to_string(), stop_after: None };
    let result = device
        .engine(&config.model, &config.train.optim, config.train.seed, config.hyper.cuda_graphs)
        .and_then(|mut engine| train_run(engine.as_mut(), config.model.loss, &config.train, &data, &slots, Some(&run_dir), resume, &progress));
    if result.is_err() && !resume && !run_dir.checkpoint_path().exists() {
        // nothing was trained to keep: remove what this run wrote, and the folder if this
        // run created it and nothing else is in it (remove_dir fails on a non-empty folder)
        let _ = std::fs::remove_file(run_dir.metrics_path());
        let _ = std::fs::remove_file(dir.join(CONFIG_FILE));
        drop(lock);
        if created {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

pub fn run(args: Args) -> Result<()> {
    let device = Device::open(args.device)?;
    let (loaded, preset, config) = prepare(&args.data, &args.hyper, args.loss, args.seed, &device)?;
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
