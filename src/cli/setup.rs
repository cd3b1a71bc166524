//! What `train`, `experiment`, `eval` and `predict` share: presets, the flags that
//! override them, loading the data into batches, and opening an engine on a device.

use crate::config::{Loss, ModelConfig, OptimConfig, Precision};
use crate::data::demo::DemoData;
use crate::data::{self, BatchConfig, BatchPlan, DataSource, Locator, Review, ReviewSet, Truncate, TruncatePolicy};
use crate::device::{DeviceKind, Gpu};
use crate::model::gpu::GpuEngine;
use crate::model::Batch;
use crate::reference::engine::CpuEngine;
use crate::train::engine::Engine;
use crate::train::trainer::{RunData, TrainConfig};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A named starting point for every hyperparameter; each can be overridden by a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// demo data -> demo, cpu device -> cpu, else gpu
    Auto,
    /// Tiny model for the embedded demo corpus (trains in seconds on a CPU).
    Demo,
    /// CPU-sized model for IMDB: width 64, 1 layer, 4 heads.
    Cpu,
    /// The default GPU model for IMDB: width 256, 2 layers, 4 heads, strong regularization.
    Gpu,
    /// Close to NanoGPT's small configuration: 6 layers, 6 heads, width 384, dropout 0.2.
    Nanogpt,
}

/// Every hyperparameter a preset fixes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_ff: usize,
    pub dropout: f32,
    pub token_drop: f32,
    pub max_len: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub warmup_fraction: f32,
    pub min_lr_fraction: f32,
    pub weight_decay: f32,
    pub grad_clip: f32,
    pub epochs: usize,
    /// Input precision of the linear layers (every preset: fp32; absent in older runs).
    #[serde(default)]
    pub precision: Precision,
}

impl Preset {
    pub fn resolve(self, demo: bool, device_is_cpu: bool) -> Preset {
        match self {
            Preset::Auto if demo => Preset::Demo,
            Preset::Auto if device_is_cpu => Preset::Cpu,
            Preset::Auto => Preset::Gpu,
            p => p,
        }
    }

    pub fn hyper(self) -> Hyper {
        let base = Hyper {
            d_model: 64,
            n_layer: 1,
            n_head: 4,
            d_ff: 256,
            dropout: 0.1,
            token_drop: 0.0,
            max_len: 512,
            batch_size: 64,
            lr: 1e-3,
            warmup_fraction: 0.05,
            min_lr_fraction: 0.1,
            weight_decay: 0.1,
            grad_clip: 1.0,
            epochs: 10,
            precision: Precision::Fp32,
        };
        match self {
            Preset::Auto | Preset::Cpu => base,
            Preset::Demo => Hyper {
                d_model: 32,
                d_ff: 128,
                batch_size: 32,
                lr: 3e-3,
                weight_decay: 0.01,
                epochs: 3,
                ..base
            },
            Preset::Gpu => Hyper {
                d_model: 256,
                n_layer: 2,
                n_head: 4,
                d_ff: 1024,
                dropout: 0.3,
                token_drop: 0.3,
                lr: 5e-4,
                ..base
            },
            Preset::Nanogpt => Hyper {
                d_model: 384,
                n_layer: 6,
                n_head: 6,
                d_ff: 1536,
                dropout: 0.2,
                lr: 3e-4,
                ..base
            },
        }
    }
}

/// Model and optimization flags; each one left out keeps the preset's value.
#[derive(clap::Args, Clone, Debug)]
pub struct HyperArgs {
    /// Starting point for every hyperparameter below
    #[arg(long, value_enum, default_value = "auto")]
    pub preset: Preset,
    /// Width C
    #[arg(long)]
    pub d_model: Option<usize>,
    /// Number of encoder blocks
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads (must divide the width)
    #[arg(long)]
    pub heads: Option<usize>,
    /// FFN hidden width (default 4 x width)
    #[arg(long)]
    pub d_ff: Option<usize>,
    /// Dropout on the embedding and on each residual branch
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Probability of dropping each input token of a training review
    #[arg(long)]
    pub token_drop: Option<f32>,
    /// Longest review in tokens; longer ones are truncated (see --truncate)
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Reviews per batch
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate
    #[arg(long)]
    pub lr: Option<f32>,
    /// Fraction of the steps spent warming up
    #[arg(long)]
    pub warmup: Option<f32>,
    /// Final learning rate as a fraction of the peak (cosine decay)
    #[arg(long)]
    pub min_lr: Option<f32>,
    /// AdamW weight decay (matrices and embedding only)
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Clip the global gradient norm to this value (0: off)
    #[arg(long)]
    pub grad_clip: Option<f32>,
    /// Training epochs
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Inputs of the linear layers' products: fp32 (SIMT), or tensor cores with tf32 or bf16
    /// inputs and f32 accumulation (cuda and emu devices; weights and AdamW stay f32)
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
}

impl HyperArgs {
    pub fn apply(&self, preset: Preset) -> Hyper {
        let mut h = preset.hyper();
        let set = |dst: &mut f32, v: Option<f32>| {
            if let Some(v) = v {
                *dst = v
            }
        };
        if let Some(c) = self.d_model {
            h.d_model = c;
            h.d_ff = 4 * c;
        }
        h.n_layer = self.layers.unwrap_or(h.n_layer);
        h.n_head = self.heads.unwrap_or(h.n_head);
        h.d_ff = self.d_ff.unwrap_or(h.d_ff);
        set(&mut h.dropout, self.dropout);
        set(&mut h.token_drop, self.token_drop);
        h.max_len = self.max_len.unwrap_or(h.max_len);
        h.batch_size = self.batch_size.unwrap_or(h.batch_size);
        set(&mut h.lr, self.lr);
        set(&mut h.warmup_fraction, self.warmup);
        set(&mut h.min_lr_fraction, self.min_lr);
        set(&mut h.weight_decay, self.weight_decay);
        set(&mut h.grad_clip, self.grad_clip);
        h.epochs = self.epochs.unwrap_or(h.epochs);
        h.precision = self.precision.unwrap_or(h.precision);
        h
    }
}

/// Where the reviews come from and how they are split and cut.
#[derive(clap::Args, Clone, Debug)]
pub struct DataArgs {
    /// `demo`, an aclImdb/ directory or a .tar.gz in its layout (else CUDAENC_DATA, the
    /// cache, or a download of the official archive)
    #[arg(long)]
    pub data: Option<String>,
    /// Validation reviews drawn from the test split
    #[arg(long, default_value_t = 2500)]
    pub val_size: usize,
    /// Seed of the validation sample (the same for every run of an experiment)
    #[arg(long, default_value_t = 0)]
    pub val_seed: u64,
    /// Which tokens of a long review to keep
    #[arg(long, default_value = "head")]
    pub truncate: TruncatePolicy,
    /// Train on only the first N (shuffled) training reviews
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Also evaluate the whole test split after the last epoch
    #[arg(long)]
    pub full_test: bool,
}

/// Reviews ready for batching, with the vocabulary they need.
pub struct LoadedData {
    pub source: String,
    pub train: ReviewSet,
    pub val: ReviewSet,
    pub test: Option<ReviewSet>,
    pub vocab: usize,
    /// Demo corpus only: dense id -> cl100k id (the model's vocabulary is remapped).
    pub id_map: Vec<u32>,
}

/// Number of demo reviews for training and validation.
pub const DEMO_TRAIN: usize = 16000;
pub const DEMO_VAL: usize = 1000;

/// A review set over token lists (the demo corpus), in the IMDB pipeline's types.
fn review_set(examples: &[(Vec<u32>, u8)]) -> ReviewSet {
    let mut tokens = Vec::new();
    let mut reviews = Vec::new();
    for (i, (ids, label)) in examples.iter().enumerate() {
        reviews.push(Review { start: tokens.len(), len: ids.len() as u32, label: *label, rating: 0, id: i as u32, movie: 0 });
        tokens.extend_from_slice(ids);
    }
    ReviewSet { tokens: Arc::from(tokens), reviews }
}

pub fn is_demo(args: &DataArgs) -> bool {
    args.data.as_deref() == Some("demo")
        || (args.data.is_none() && std::env::var("CUDAENC_DATA").is_ok_and(|v| v == "demo"))
}

fn demo_data(val_seed: u64, split_seed: u64) -> Result<LoadedData> {
    let demo = DemoData::new(val_seed, DEMO_TRAIN, DEMO_VAL, true)?;
    Ok(LoadedData {
        source: "demo".into(),
        train: review_set(&demo.train).shuffled(split_seed),
        val: review_set(&demo.val),
        test: None,
        vocab: demo.vocab,
        id_map: demo.id_map,
    })
}

/// Load the data named by `args`; `split_seed` shuffles the training set. When no
/// source was named (no --data, no CUDAENC_DATA) and IMDB can be neither found in the
/// cache nor downloaded, fall back to the embedded demo corpus with a notice.
pub fn load_data(args: &DataArgs, split_seed: u64) -> Result<LoadedData> {
    let mut loaded = if is_demo(args) {
        demo_data(args.val_seed, split_seed)?
    } else {
        let loc = Locator::from_env()?;
        let named = args.data.is_some() || std::env::var_os("CUDAENC_DATA").is_some_and(|v| !v.is_empty());
        match loc.resolve(args.data.as_deref()) {
            Ok(source) => {
                if source == DataSource::Demo {
                    bail!("internal: demo source reached the IMDB loader");
                }
                let ds = data::load(&source, &data::LoadOptions::cached(&loc.cache_dir))?;
                let split = data::paper_split(&ds, split_seed, args.val_size, args.val_seed);
                LoadedData {
                    source: source.to_string(),
                    train: split.train,
                    val: split.val,
                    test: args.full_test.then_some(split.test),
                    vocab: data::tokenize::VOCAB_SIZE as usize,
                    id_map: Vec::new(),
                }
            }
            Err(e) if !named => {
                eprintln!(
                    "notice: IMDB is not available ({e:#}); using the embedded demo corpus instead. \
                     Give --data PATH or set CUDAENC_DATA to train on IMDB."
                );
                demo_data(args.val_seed, split_seed)?
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(n) = args.train_subset {
        loaded.train.reviews.truncate(n);
    }
    if loaded.train.is_empty() || loaded.val.is_empty() {
        bail!("no training or validation reviews in {}", loaded.source);
    }
    Ok(loaded)
}

/// The batches of a run: training batches re-drawn per epoch (seeded), evaluation
/// batches sorted by length.
pub fn run_data(loaded: &LoadedData, h: &Hyper, policy: TruncatePolicy, seed: u64) -> RunData {
    let cfg = BatchConfig::new(h.batch_size, Truncate::new(h.max_len, policy));
    let train = loaded.train.clone();
    let steps_per_epoch = BatchPlan::train(&train, &cfg, seed, 1).len();
    let eval = |set: &ReviewSet| -> Vec<Batch> { BatchPlan::eval(set, &cfg).iter(set).collect() };
    RunData {
        train: Box::new(move |epoch| BatchPlan::train(&train, &cfg, seed, epoch as u64).iter(&train).collect()),
        steps_per_epoch,
        val: eval(&loaded.val),
        test: loaded.test.as_ref().map(eval),
    }
}

pub fn model_config(h: &Hyper, vocab: usize, loss: Loss) -> Result<ModelConfig> {
    let cfg = ModelConfig {
        vocab,
        d_model: h.d_model,
        n_layer: h.n_layer,
        n_head: h.n_head,
        d_ff: h.d_ff,
        max_len: h.max_len,
        dropout: h.dropout,
        loss,
        precision: h.precision,
    };
    cfg.validate()?;
    Ok(cfg)
}

pub fn train_config(h: &Hyper, seed: u64) -> Result<TrainConfig> {
    anyhow::ensure!(h.epochs > 0, "--epochs must be at least 1");
    anyhow::ensure!(h.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(h.lr > 0.0 && h.lr.is_finite(), "--lr must be positive");
    anyhow::ensure!((0.0..1.0).contains(&h.token_drop), "--token-drop must be in [0, 1)");
    anyhow::ensure!((0.0..=1.0).contains(&h.warmup_fraction), "--warmup must be in [0, 1]");
    Ok(TrainConfig {
        epochs: h.epochs,
        batch_size: h.batch_size,
        lr: h.lr,
        warmup_fraction: h.warmup_fraction,
        min_lr_fraction: h.min_lr_fraction,
        optim: OptimConfig { weight_decay: h.weight_decay, grad_clip: h.grad_clip, ..OptimConfig::default() },
        seed,
        token_drop: h.token_drop,
    })
}

/// A device to train on: the CPU reference, or a kernel device (cuda or emu).
pub enum Device {
    Cpu,
    /// The resolved kind (Cuda or Emu) and its name; each engine opens its own handle.
    Gpu { kind: DeviceKind, name: String },
}

impl Device {
    pub fn open(kind: DeviceKind) -> Result<Device> {
        Ok(match Gpu::open(kind)? {
            Some(gpu) => Device::Gpu {
                kind: if gpu.is_cuda() { DeviceKind::Cuda } else { DeviceKind::Emu },
                name: gpu.name(),
            },
            None => Device::Cpu,
        })
    }
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Gpu { name, .. } => name.clone(),
        }
    }
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// A fresh model on this device: parameters initialized from `seed`.
    pub fn engine(&self, cfg: &ModelConfig, optim: &OptimConfig, seed: u64) -> Result<Box<dyn Engine>> {
        Ok(match self {
            Device::Cpu if cfg.precision != Precision::Fp32 => bail!(
                "precision {} runs the linear layers on the tensor cores: use --device cuda (or emu); the cpu device is fp32",
                cfg.precision
            ),
            Device::Cpu => Box::new(CpuEngine::new(cfg, optim, seed, seed)?),
            Device::Gpu { kind, .. } => {
                let gpu = Gpu::open(*kind)?.context("the device went away")?;
                Box::new(GpuEngine::new(gpu, cfg, optim, seed, seed).context("creating the model on the device")?)
            }
        })
    }
}

/// The run's settings as written to `config.json`, enough to rebuild its model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub hyper: Hyper,
    pub preset: Preset,
    pub data_source: String,
    pub val_size: usize,
    pub val_seed: u64,
    pub truncate: String,
    pub device: String,
    /// Demo corpus only: dense id -> cl100k id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_map: Vec<u32>,
    pub version: String,
}

impl RunConfig {
    pub fn new(
        h: &Hyper,
        preset: Preset,
        loaded: &LoadedData,
        data: &DataArgs,
        loss: Loss,
        seed: u64,
        device: &Device,
    ) -> Result<RunConfig> {
        Ok(RunConfig {
            model: model_config(h, loaded.vocab, loss)?,
            train: train_config(h, seed)?,
            hyper: h.clone(),
            preset,
            data_source: loaded.source.clone(),
            val_size: loaded.val.len(),
            val_seed: data.val_seed,
            truncate: data.truncate.to_string(),
            device: device.name(),
            id_map: loaded.id_map.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    pub fn read(dir: &std::path::Path) -> Result<RunConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a cudaenc run configuration", path.display()))
    }
}
