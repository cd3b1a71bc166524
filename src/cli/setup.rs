//! What `train`, `experiment`, `eval` and `predict` share: presets, the flags that
//! override them, loading the data into batches, and opening an engine on a device.

use crate::config::{Loss, ModelConfig, OptimConfig, Precision};
use crate::data::demo::DemoData;
use crate::data::vocab::VocabMap;
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
    /// CPU-sized model for IMDB: width 64, 1 layer, 4 heads, the whole review, 3 epochs.
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
    /// Embedding dropout by type (every occurrence of an id in a batch); 0.3 in `cpu` and
    /// `gpu`, 0 in the others; absent in older runs.
    #[serde(default)]
    pub type_drop: f32,
    /// Token drop at the last step, reached linearly from `token_drop` (None in every
    /// preset: constant; absent in older runs).
    #[serde(default)]
    pub token_drop_end: Option<f32>,
    /// Decay of the moving average of the weights that is evaluated and saved (0 in every
    /// preset: off; absent in older runs).
    #[serde(default)]
    pub ema: f32,
    pub max_len: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub warmup_fraction: f32,
    pub min_lr_fraction: f32,
    pub weight_decay: f32,
    pub grad_clip: f32,
    pub epochs: usize,
    /// Label smoothing (CE) / target smoothing (BCE); 0.1 in `cpu` and `gpu`, 0 in the others.
    #[serde(default)]
    pub label_smoothing: f32,
    /// Input precision of the linear layers (every preset: fp32; absent in older runs).
    #[serde(default)]
    pub precision: Precision,
    /// `--cuda-graphs`: the training step captured once per batch shape and replayed, the
    /// training batches' T rounded up to a multiple of [`GRAPH_LEN_MULTIPLE`] so that
    /// shapes repeat (off in every preset; absent in older runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cuda_graphs: bool,
}

/// With `--cuda-graphs`, a training batch's T is rounded up to a multiple of this: at
/// most 32 lengths up to 512 tokens, so each (B, T) is captured once and replayed often.
/// On IMDB's train split at 512 tokens and batch 64 (`cudaenc data`): padding 0.9% ->
/// 3.4%, 30 shapes; a multiple of 32 gives 5.7% and 16 shapes, of 64 10.4% and 9. Over a
/// run of thousands of steps 30 shapes cost about 60 steps outside a replay, so the
/// smaller padding wins.
pub const GRAPH_LEN_MULTIPLE: usize = 16;

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
            type_drop: 0.0,
            token_drop_end: None,
            ema: 0.0,
            max_len: 512,
            batch_size: 64,
            lr: 1e-3,
            warmup_fraction: 0.05,
            min_lr_fraction: 0.1,
            weight_decay: 0.1,
            grad_clip: 1.0,
            epochs: 10,
            label_smoothing: 0.0,
            precision: Precision::Fp32,
            cuda_graphs: false,
        };
        match self {
            // Chosen on held-out movies of the train split (docs/training.md, "More of the
            // list on held-out movies"): the whole review (the longest IMDB review is
            // 3,079 tokens), a lower learning rate, more dropout, token drop and label
            // smoothing, and 3 epochs (the held-out loss rises after epoch 2-3); then
            // type drop 0.3 (round 3: the same accuracy, a lower held-out loss and half
            // the calibration error)
            Preset::Auto | Preset::Cpu => Hyper {
                dropout: 0.3,
                token_drop: 0.3,
                type_drop: 0.3,
                max_len: 4096,
                lr: 3e-4,
                epochs: 3,
                label_smoothing: 0.1,
                ..base
            },
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
                // from the cpu preset's held-out findings, not yet tried on a GPU: the whole
                // review, label smoothing 0.1 and type drop 0.3
                max_len: 4096,
                label_smoothing: 0.1,
                type_drop: 0.3,
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
    /// Probability of dropping every occurrence of a vocabulary id from a training batch
    /// (embedding dropout by type); default 0 (off)
    #[arg(long)]
    pub type_drop: Option<f32>,
    /// Token drop at the last step, reached linearly from --token-drop at the first
    /// [default: the same as --token-drop: constant]
    #[arg(long)]
    pub token_drop_end: Option<f32>,
    /// Evaluate and save an exponential moving average of the weights with this decay
    /// (e.g. 0.999), in [0, 1); default 0 (off: the weights themselves)
    #[arg(long)]
    pub ema: Option<f32>,
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
    /// Label smoothing EPS for CE (target (1-EPS) onehot + EPS/2), target smoothing for
    /// BCE (target (1-EPS) y + EPS/2); in [0, 1). Default 0 (off)
    #[arg(long)]
    pub label_smoothing: Option<f32>,
    /// Inputs of the linear layers' products: fp32 (SIMT), or tensor cores with tf32 or bf16
    /// inputs and f32 accumulation (cuda and emu devices; weights and AdamW stay f32)
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Capture the training step as a CUDA graph once per batch shape and replay it (one
    /// launch a step instead of dozens); training batches' T rounded up to a multiple of
    /// 16 so that shapes repeat. cuda and emu devices; bit-identical to direct launches on
    /// the same batches. Default: off (no GPU has measured it yet)
    #[arg(long)]
    pub cuda_graphs: bool,
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
        set(&mut h.type_drop, self.type_drop);
        set(&mut h.ema, self.ema);
        h.token_drop_end = self.token_drop_end.or(h.token_drop_end);
        h.max_len = self.max_len.unwrap_or(h.max_len);
        h.batch_size = self.batch_size.unwrap_or(h.batch_size);
        set(&mut h.lr, self.lr);
        set(&mut h.warmup_fraction, self.warmup);
        set(&mut h.min_lr_fraction, self.min_lr);
        set(&mut h.weight_decay, self.weight_decay);
        set(&mut h.grad_clip, self.grad_clip);
        h.epochs = self.epochs.unwrap_or(h.epochs);
        set(&mut h.label_smoothing, self.label_smoothing);
        h.precision = self.precision.unwrap_or(h.precision);
        h.cuda_graphs |= self.cuda_graphs;
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
    /// Validation reviews drawn from the test split [default: 2500; IMDB only]
    #[arg(long)]
    pub val_size: Option<usize>,
    /// Seed of the validation sample (the same for every run of an experiment) [default: 0]
    #[arg(long)]
    pub val_seed: Option<u64>,
    /// Which tokens of a long review to keep
    #[arg(long, default_value = "head")]
    pub truncate: TruncatePolicy,
    /// Train on only the first N (shuffled) training reviews
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Also evaluate the whole test split after the last epoch
    #[arg(long)]
    pub full_test: bool,
    /// Validate on a movie-disjoint held-out part of the train split of about N reviews
    /// (whole movies, drawn by --val-seed) instead of the test-split sample; the test
    /// split is then only measured (--full-test). Default: off
    #[arg(long)]
    pub holdout: Option<usize>,
    /// Give an embedding row only to the token ids seen in the training reviews; all
    /// others share one row (recorded in the run for eval and predict). Default: off
    #[arg(long)]
    pub compact_vocab: bool,
    /// With --compact-vocab: ids seen fewer than K times in training also share that row
    #[arg(long, value_name = "K", requires = "compact_vocab", default_value_t = 1)]
    pub min_count: u32,
    /// Feed each review's distinct token ids once, in order of first occurrence (a bag of
    /// types, like the presence features of a unigram model): the model has no positions,
    /// so this changes only how often an id counts in the mean (recorded in the run for
    /// eval, predict and serve). Default: off
    #[arg(long)]
    pub dedup: bool,
}

/// The validation sample's size when --val-size is not given.
pub const DEFAULT_VAL_SIZE: usize = 2500;

impl DataArgs {
    pub fn val_size(&self) -> usize {
        self.val_size.unwrap_or(DEFAULT_VAL_SIZE)
    }
    pub fn val_seed(&self) -> u64 {
        self.val_seed.unwrap_or(0)
    }
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
    /// `--compact-vocab`: the remap applied to every set (after `id_map`); `vocab` is its size.
    pub vocab_map: Option<VocabMap>,
}

impl LoadedData {
    /// Every set's reviews reduced to their distinct token ids (`--dedup`).
    pub fn dedup(&mut self) {
        self.train = self.train.distinct();
        self.val = self.val.distinct();
        self.test = self.test.as_ref().map(ReviewSet::distinct);
    }

    /// Remap the tokens of every set through `map`; the vocabulary becomes its size.
    pub fn compact(&mut self, map: VocabMap) {
        let mut sets: Vec<&mut ReviewSet> = vec![&mut self.train, &mut self.val];
        sets.extend(self.test.as_mut());
        map.apply(&mut sets);
        self.vocab = map.size();
        self.vocab_map = Some(map);
    }
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

fn demo_data(args: &DataArgs, split_seed: u64) -> Result<LoadedData> {
    let val_seed = args.val_seed();
    if args.holdout.is_some() {
        bail!("--holdout needs IMDB (it holds out whole movies); the demo corpus has no movies");
    }
    let demo = DemoData::new(val_seed, DEMO_TRAIN, DEMO_VAL, true)?;
    Ok(LoadedData {
        source: "demo".into(),
        train: review_set(&demo.train).shuffled(split_seed),
        val: review_set(&demo.val),
        test: None,
        vocab: demo.vocab,
        id_map: demo.id_map,
        vocab_map: None,
    })
}

/// Load the data named by `args`; `split_seed` shuffles the training set. When no
/// source was named (no --data, no CUDAENC_DATA) and IMDB can be neither found in the
/// cache nor downloaded, fall back to the embedded demo corpus with a notice.
pub fn load_data(args: &DataArgs, split_seed: u64) -> Result<LoadedData> {
    let mut loaded = if is_demo(args) {
        demo_flags_used(args)?;
        demo_data(args, split_seed)?
    } else {
        let loc = Locator::from_env()?;
        let named = args.data.is_some() || std::env::var_os("CUDAENC_DATA").is_some_and(|v| !v.is_empty());
        match loc.resolve(args.data.as_deref()) {
            Ok(source) => {
                if source == DataSource::Demo {
                    bail!("internal: demo source reached the IMDB loader");
                }
                let ds = data::load(&source, &data::LoadOptions::cached(&loc.cache_dir))?;
                let split = match args.holdout {
                    Some(n) => data::split::holdout_split(&ds, split_seed, n, args.val_seed())?,
                    None => data::paper_split(&ds, split_seed, args.val_size(), args.val_seed()),
                };
                LoadedData {
                    source: source.to_string(),
                    train: split.train,
                    val: split.val,
                    test: args.full_test.then_some(split.test),
                    vocab: data::tokenize::VOCAB_SIZE as usize,
                    id_map: Vec::new(),
                    vocab_map: None,
                }
            }
            Err(e) if !named => {
                eprintln!(
                    "notice: IMDB is not available ({e:#}); using the embedded demo corpus instead. \
                     Give --data PATH or set CUDAENC_DATA to train on IMDB."
                );
                demo_flags_used(args)?;
                demo_data(args, split_seed)?
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(n) = args.train_subset {
        anyhow::ensure!(n > 0, "--train-subset must be at least 1");
        loaded.train.reviews.truncate(n);
    }
    if loaded.train.is_empty() || loaded.val.is_empty() {
        bail!("no training or validation reviews in {}", loaded.source);
    }
    let positives = loaded.train.reviews.iter().filter(|r| r.label == 1).count();
    if positives == 0 || positives == loaded.train.len() {
        bail!(
            "the training set of {} has {} reviews, all {}: a classifier needs both classes{}",
            loaded.source,
            loaded.train.len(),
            if positives == 0 { "negative" } else { "positive" },
            if args.train_subset.is_some() { " (raise --train-subset)" } else { " (check the data's pos/ and neg/ folders)" }
        );
    }
    if args.dedup {
        // before the compaction, as `infer::TextPolicy::prepare` does for a new text (the
        // compaction maps many ids to one row)
        loaded.dedup();
    }
    if args.compact_vocab {
        // counted on the reviews trained on only, so held-out and test ids unseen in
        // training share the one row, as they would for a new review
        let map = VocabMap::build(&loaded.train, args.min_count);
        loaded.compact(map);
    }
    Ok(loaded)
}

/// The demo corpus has a fixed validation set and no test split: refuse the flags that
/// would be ignored there instead of silently dropping them.
fn demo_flags_used(args: &DataArgs) -> Result<()> {
    if let Some(n) = args.val_size {
        bail!(
            "--val-size {n}: the demo corpus has a fixed validation set of {DEMO_VAL} reviews; \
             --val-size applies to IMDB only (drop it, or give --data with IMDB)"
        );
    }
    if args.full_test {
        bail!("--full-test: the demo corpus has no test split; drop --full-test, or give --data with IMDB");
    }
    Ok(())
}

/// The batches of a run: training batches re-drawn per epoch (seeded), evaluation
/// batches sorted by length.
pub fn run_data(loaded: &LoadedData, h: &Hyper, policy: TruncatePolicy, seed: u64) -> RunData {
    let cfg = BatchConfig::new(h.batch_size, Truncate::new(h.max_len, policy));
    // evaluation is never captured: its batches stay at the longest review's length
    let train_cfg = BatchConfig { pad_multiple: if h.cuda_graphs { GRAPH_LEN_MULTIPLE } else { 0 }, ..cfg };
    let train = loaded.train.clone();
    let steps_per_epoch = BatchPlan::train(&train, &train_cfg, seed, 1).len();
    let eval = |set: &ReviewSet| -> Vec<Batch> { BatchPlan::eval(set, &cfg).iter(set).collect() };
    RunData {
        train: Box::new(move |epoch| BatchPlan::train(&train, &train_cfg, seed, epoch as u64).iter(&train).collect()),
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
    anyhow::ensure!(h.lr > 0.0 && h.lr.is_finite(), "--lr must be positive and finite, got {}", h.lr);
    anyhow::ensure!((0.0..1.0).contains(&h.token_drop), "--token-drop must be in [0, 1), got {}", h.token_drop);
    anyhow::ensure!((0.0..1.0).contains(&h.type_drop), "--type-drop must be in [0, 1), got {}", h.type_drop);
    anyhow::ensure!((0.0..1.0).contains(&h.ema), "--ema must be in [0, 1), got {}", h.ema);
    if let Some(end) = h.token_drop_end {
        anyhow::ensure!((0.0..1.0).contains(&end), "--token-drop-end must be in [0, 1), got {end}");
    }
    anyhow::ensure!((0.0..=1.0).contains(&h.warmup_fraction), "--warmup must be in [0, 1], got {}", h.warmup_fraction);
    anyhow::ensure!(
        (0.0..=1.0).contains(&h.min_lr_fraction),
        "--min-lr is a fraction of the peak learning rate and must be in [0, 1], got {}",
        h.min_lr_fraction
    );
    anyhow::ensure!(
        h.weight_decay >= 0.0 && h.weight_decay.is_finite(),
        "--weight-decay must be zero or positive and finite, got {}",
        h.weight_decay
    );
    anyhow::ensure!(
        h.grad_clip >= 0.0 && h.grad_clip.is_finite(),
        "--grad-clip must be zero (off) or a positive finite norm, got {}",
        h.grad_clip
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&h.label_smoothing),
        "--label-smoothing must be in [0, 1), got {}",
        h.label_smoothing
    );
    Ok(TrainConfig {
        epochs: h.epochs,
        batch_size: h.batch_size,
        lr: h.lr,
        warmup_fraction: h.warmup_fraction,
        min_lr_fraction: h.min_lr_fraction,
        optim: OptimConfig {
            weight_decay: h.weight_decay,
            grad_clip: h.grad_clip,
            label_smoothing: h.label_smoothing,
            ..OptimConfig::default()
        },
        seed,
        token_drop: h.token_drop,
        type_drop: h.type_drop,
        token_drop_end: h.token_drop_end,
        ema: h.ema,
    })
}

/// Bytes a training run needs at least, estimated from the model's shape: parameters,
/// gradients and the two AdamW moments, plus the activations one batch keeps for the
/// backward pass (per layer and token: about 9C + 2F values and one log-sum-exp per
/// head: the attention keeps no (T, T) weights), plus the CPU attention backward's two
/// (T, T) scratch matrices per worker thread (`batch_size` > 0 only: on cuda the batch
/// lives on the device). `None` when the count does not even fit in 128 bits.
pub fn training_bytes(m: &ModelConfig, batch_size: usize) -> Option<u128> {
    let [v, c, l, f, k, t, b, nh] =
        [m.vocab, m.d_model, m.n_layer, m.d_ff, m.loss.outputs(), m.max_len, batch_size, m.n_head].map(|x| x as u128);
    let per_layer = (4 * c).checked_mul(c)?.checked_add((2 * f).checked_mul(c)?)?.checked_add(9 * c + f)?;
    let params = v.checked_mul(c)?.checked_add(l.checked_mul(per_layer)?)?.checked_add(2 * c + k * c + k)?;
    let per_token_layer = (9 * c + 2 * f).checked_add(nh)?;
    let activations = b.checked_mul(t)?.checked_mul(l.checked_mul(per_token_layer)?.checked_add(4 * c)?)?;
    let threads = if b > 0 { rayon::current_num_threads() as u128 } else { 0 };
    let scratch = (2 * threads).checked_mul(t.checked_mul(t)?)?;
    params.checked_mul(4)?.checked_add(activations)?.checked_add(scratch)?.checked_mul(4)
}

/// Memory the system can give this process now (Linux: MemAvailable), if known.
fn available_host_bytes() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuse a model that cannot fit before anything is allocated or written: on the cpu
/// and emu devices the whole run lives in host memory; on cuda the host holds buffers of
/// the parameters' size (initialization, checkpoints), and a device allocation that
/// fails is an error from the driver, not an abort.
pub fn check_fits(m: &ModelConfig, batch_size: usize, device: &Device) -> Result<()> {
    let flags = "lower --d-model, --layers, --d-ff, --max-len or --batch-size";
    let host_batch = match device {
        Device::Gpu(gpu) if gpu.is_cuda() => 0,
        _ => batch_size,
    };
    let need = training_bytes(m, host_batch).with_context(|| format!("the model's size overflows any memory: {flags}"))?;
    let gib = need as f64 / (1u64 << 30) as f64;
    if need > isize::MAX as u128 {
        bail!("this model needs about {gib:.3e} GiB of memory, more than this machine can address: {flags}");
    }
    if let Some(have) = available_host_bytes() {
        if need > have {
            bail!(
                "this model needs about {gib:.1} GiB of memory and {:.1} GiB are available: {flags}",
                have as f64 / (1u64 << 30) as f64
            );
        }
    }
    Ok(())
}

/// A device to train on: the CPU reference, or a kernel device (cuda or emu).
pub enum Device {
    Cpu,
    /// The opened kernel device; every engine gets a handle on it (one CUDA context a process).
    Gpu(Gpu),
}

impl Device {
    pub fn open(kind: DeviceKind) -> Result<Device> {
        Ok(match Gpu::open(kind)? {
            Some(gpu) => Device::Gpu(gpu),
            None => Device::Cpu,
        })
    }
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Gpu(gpu) => gpu.name(),
        }
    }
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// A fresh model on this device: parameters initialized from `seed`; `graphs`: the
    /// training step captured per batch shape and replayed (`--cuda-graphs`; cuda and emu).
    pub fn engine(&self, cfg: &ModelConfig, optim: &OptimConfig, seed: u64, graphs: bool) -> Result<Box<dyn Engine>> {
        Ok(match self {
            Device::Cpu if graphs => bail!("--cuda-graphs captures the kernels of the cuda (or emu) device: use --device cuda, or drop --cuda-graphs"),
            Device::Cpu if cfg.precision != Precision::Fp32 => bail!(
                "precision {} runs the linear layers on the tensor cores: use --device cuda (or emu); the cpu device is fp32",
                cfg.precision
            ),
            Device::Cpu => Box::new(CpuEngine::new(cfg, optim, seed, seed)?),
            Device::Gpu(gpu) => {
                let mut engine = GpuEngine::new(gpu.clone(), cfg, optim, seed, seed).context("creating the model on the device")?;
                engine.use_graphs(graphs);
                Box::new(engine)
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
    /// --train-subset: the run trained on the first N shuffled training reviews.
    #[serde(default)]
    pub train_subset: Option<usize>,
    /// `--holdout N`: the validation set was a movie-disjoint part of the train split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<usize>,
    pub truncate: String,
    /// `--dedup`: every review was fed as its distinct token ids.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dedup: bool,
    pub device: String,
    /// Demo corpus only: dense id -> cl100k id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_map: Vec<u32>,
    /// `--compact-vocab`: the token remap of the run (applied after `id_map`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_map: Option<VocabMap>,
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
            val_seed: data.val_seed(),
            train_subset: data.train_subset,
            holdout: data.holdout,
            truncate: data.truncate.to_string(),
            dedup: data.dedup,
            device: device.name(),
            id_map: loaded.id_map.clone(),
            vocab_map: loaded.vocab_map.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    /// The settings in which `self` (from the flags) differs from `recorded` (a run's
    /// config.json), by flag name: a run resumes only with none. The device may differ.
    pub fn differences(&self, recorded: &RunConfig) -> Vec<&'static str> {
        let (a, b) = (self, recorded);
        let mut out = Vec::new();
        let mut check = |same: bool, name: &'static str| {
            if !same {
                out.push(name)
            }
        };
        check(a.model.loss == b.model.loss, "--loss");
        check(a.train.seed == b.train.seed, "--seed");
        check(a.model == b.model, "model (--d-model, --layers, --heads, --d-ff, --max-len, --dropout, or the data's vocabulary)");
        check(a.train == b.train, "optimization (--epochs, --batch-size, --lr, --warmup, --min-lr, --weight-decay, --grad-clip, --token-drop, --label-smoothing)");
        check(a.data_source == b.data_source, "--data");
        check(a.val_size == b.val_size, "--val-size");
        check(a.val_seed == b.val_seed, "--val-seed");
        check(a.train_subset == b.train_subset, "--train-subset");
        check(a.holdout == b.holdout, "--holdout");
        check(a.vocab_map == b.vocab_map, "--compact-vocab / --min-count");
        check(a.truncate == b.truncate, "--truncate");
        check(a.dedup == b.dedup, "--dedup");
        check(a.hyper.cuda_graphs == b.hyper.cuda_graphs, "--cuda-graphs (it rounds the training batches' lengths)");
        check(a.id_map == b.id_map, "the demo corpus's vocabulary");
        out
    }

    pub fn read(dir: &std::path::Path) -> Result<RunConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a cudaenc run configuration", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attention keeps a log-sum-exp per query, not (T, T) weights, so the
    /// activations grow linearly in T: the cpu preset on IMDB's vocabulary at 4096 tokens
    /// fits in 2 GiB plus the per-thread scratch (the estimate read 33 GiB while it still
    /// counted 2 x heads x T weights per token).
    #[test]
    fn training_bytes_is_linear_in_the_length() {
        let h = Preset::Cpu.hyper();
        let m = model_config(&h, 100_277, Loss::Bce).unwrap();
        let params = 4 * 4 * 100_277 * 64u128;
        let scratch = |t: usize| 4 * 2 * rayon::current_num_threads() as u128 * (t * t) as u128;
        let bytes = training_bytes(&m, h.batch_size).unwrap();
        assert!(bytes > params && bytes < (2 << 30) + scratch(4096), "{bytes} bytes");
        let activations =
            |t: usize| training_bytes(&ModelConfig { max_len: t, ..m.clone() }, h.batch_size).unwrap() - scratch(t) - training_bytes(&m, 0).unwrap();
        assert_eq!(activations(4096), 2 * activations(2048));
        // on cuda (batch 0 on the host) only the parameters, gradients and moments count
        assert!(training_bytes(&m, 0).unwrap() < params + (1 << 20));
    }
}
