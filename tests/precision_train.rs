//! A short training run on the demo corpus in each precision, on the emulator (every CUDA
//! kernel of the model, the linear layers through the mma host twins): the tf32 and bf16
//! runs of the same seed reach the fp32 run's validation accuracy and final training loss,
//! within the tolerances explained below.
//! The fiber order is CUDAENC_EMU_ORDER's (CI runs the suite in both).
//!
//! The emulator trains at about 1,000 tokens/s on the project's loaded 2-core machine, so
//! the run is tiny: width 16, 2 heads, 1 layer, the demo reviews of at most 12 tokens
//! (800 of them for training, the 157 such validation reviews for validation), batch 8,
//! 2 epochs, no dropout. fp32 reaches 80.9% validation accuracy (50% is chance); about
//! 33-64 s wall (27-31 s of CPU) for the three runs per fiber order on the loaded machine.
//!
//! Tolerances. The run ends in the steep part of learning, where a small change to one
//! step moves the whole trajectory: fp32 in this configuration on the cpu device ends at
//! 72.6%, 80.9%, 59.9%, 79.6%, 67.5%, 81.5% with seeds 1 to 6 (seed 2, used here, is one
//! where it clearly learns). Rounding the products' inputs to 10 (tf32) or 7 (bf16)
//! mantissa bits is such a change, so the tolerance is not the GPU check's 0.3 points on
//! IMDB but the spread that rounding alone causes here, measured on the emulator with this
//! test's configuration at six seeds (difference to fp32 of the same seed; accuracy in
//! points, final training loss relative):
//!
//! | seed | fp32 acc | tf32 acc, loss | bf16 acc, loss |
//! |---|---|---|---|
//! | 1 | 72.61 | +0.00, 0.1% | +0.64, 0.7% |
//! | 2 | 80.89 | +0.00, 0.3% | -1.27, 1.8% |
//! | 4 | 79.62 | -1.91, 5.0% | -4.46, 8.4% |
//! | 6 | 81.53 | -2.55, 0.0% | -3.18, 2.5% |
//! | 7 | 71.97 | -0.64, 0.1% | +0.00, 1.7% |
//! | 8 | 80.25 | +1.91, 0.8% | -3.18, 0.9% |
//!
//! (bf16 was below fp32 at 4 of the 6 seeds, mean -1.9 points: possibly a real cost of
//! bf16 at this scale, not significant at 157 reviews; the GPU check's IMDB runs decide.)
//! The bounds leave about 1.5x the worst of these: validation accuracy within 7 points
//! (11 of the 157 reviews) of fp32's, final training loss within 12% of fp32's. (Seed 2's
//! differences are among the small ones; another kernel's reassociation can move them
//! anywhere in this range, hence bounds from all six seeds, not from seed 2 alone.) A
//! broken tensor-core path is far outside: a wrong product leaves the model at chance
//! (about 50%, 30 points below, loss 0.69, +37%) or diverges. Tried (docs/kernels.md,
//! Mutation checks): a shifted lane index in the tensor-core GEMM left the tf32 run at
//! 47.13%, and this test failed. Results are identical in both fiber orders.
use cudaenc::cli::setup::{self, DataArgs, Device, Preset};
use cudaenc::cli::train::tensor_slots;
use cudaenc::config::{Loss, Precision};
use cudaenc::data::TruncatePolicy;
use cudaenc::device::DeviceKind;
use cudaenc::model::params::ParamLayout;
use cudaenc::train::metrics::RunRecord;
use cudaenc::train::trainer::{train_run, Progress};

/// Longest review kept, in tokens (the short reviews: a verdict and at most an aside).
const MAX_TOKENS: u32 = 12;
const TRAIN_REVIEWS: usize = 800;
const SEED: u64 = 2;
/// Accuracy tolerance in points: 11 of the 157 validation reviews (see above).
const ACC_TOL: f64 = 7.0;
/// Relative tolerance on the last epoch's training loss (see above).
const LOSS_TOL: f64 = 0.12;

fn train(precision: Precision) -> (RunRecord, usize) {
    let args = DataArgs {
        data: Some("demo".into()),
        val_size: None,
        val_seed: None,
        truncate: TruncatePolicy::Head,
        train_subset: None,
        full_test: false,
        holdout: None,
        compact_vocab: false,
        min_count: 1,
        dedup: false,
    };
    let mut loaded = setup::load_data(&args, SEED).unwrap();
    loaded.train.reviews.retain(|r| r.len <= MAX_TOKENS);
    loaded.train.reviews.truncate(TRAIN_REVIEWS);
    loaded.val.reviews.retain(|r| r.len <= MAX_TOKENS);
    let h = setup::Hyper {
        epochs: 2,
        d_model: 16,
        n_head: 2,
        d_ff: 32,
        dropout: 0.0,
        token_drop: 0.0,
        weight_decay: 0.0,
        batch_size: 8,
        lr: 3e-3,
        precision,
        ..Preset::Demo.hyper()
    };
    let cfg = setup::model_config(&h, loaded.vocab, Loss::Bce).unwrap();
    let tcfg = setup::train_config(&h, SEED).unwrap();
    let slots = tensor_slots(&ParamLayout::new(&cfg));
    let data = setup::run_data(&loaded, &h, TruncatePolicy::Head, SEED);
    let mut engine = Device::open(DeviceKind::Emu).unwrap().engine(&cfg, &tcfg.optim, SEED, false).unwrap();
    let progress = Progress { show_bar: false, label: precision.to_string(), stop_after: None };
    let rec = train_run(engine.as_mut(), Loss::Bce, &tcfg, &data, &slots, None, false, &progress).unwrap();
    (rec, loaded.val.len())
}

#[test]
fn tensor_core_runs_reach_the_fp32_accuracy() {
    let (fp32, n_val) = train(Precision::Fp32);
    let base = fp32.last().unwrap().clone();
    println!(
        "fp32: val acc {:.2}% of {n_val} reviews, train loss {:.4} (epoch 1: {:.2}%)",
        base.val_acc, base.train_loss, fp32.epochs[0].val_acc
    );
    assert!(base.val_acc >= 70.0, "fp32 must learn for the comparison to mean anything: {:.2}%", base.val_acc);
    for prec in [Precision::Tf32, Precision::Bf16] {
        let (rec, _) = train(prec);
        let last = rec.last().unwrap();
        let rel = (last.train_loss - base.train_loss).abs() / base.train_loss;
        println!(
            "{prec}: val acc {:.2}% ({:+.2} points, tol {ACC_TOL}), train loss {:.4} (rel {rel:.3}, tol {LOSS_TOL})",
            last.val_acc,
            last.val_acc - base.val_acc,
            last.train_loss
        );
        assert!((last.val_acc - base.val_acc).abs() <= ACC_TOL, "{prec}: {:.2}% vs fp32 {:.2}%", last.val_acc, base.val_acc);
        assert!(rel <= LOSS_TOL, "{prec}: train loss {:.4} vs fp32 {:.4}", last.train_loss, base.train_loss);
    }
}
