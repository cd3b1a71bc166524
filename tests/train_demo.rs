//! The training loop end to end on the cpu device and the embedded demo corpus: it
//! learns (both heads), and an interrupted run resumed from its checkpoint ends
//! bit-identical to an uninterrupted one.

use cudaenc::cli::setup::{self, DataArgs, Device, Preset};
use cudaenc::cli::train::tensor_slots;
use cudaenc::config::Loss;
use cudaenc::data::TruncatePolicy;
use cudaenc::model::params::ParamLayout;
use cudaenc::train::checkpoint;
use cudaenc::train::trainer::{train_run, Progress, RunDir};

fn demo_args() -> DataArgs {
    DataArgs {
        data: Some("demo".into()),
        val_size: None,
        val_seed: None,
        truncate: TruncatePolicy::Head,
        train_subset: Some(2000),
        full_test: false,
        holdout: None,
        compact_vocab: false,
        min_count: 1,
    }
}

fn progress(stop_after: Option<usize>) -> Progress {
    Progress { show_bar: false, label: "test".into(), stop_after }
}

#[test]
fn cpu_training_learns_the_demo_corpus() {
    let loaded = setup::load_data(&DataArgs { train_subset: None, ..demo_args() }, 1).unwrap();
    let h = setup::Hyper { epochs: 6, ..Preset::Demo.hyper() };
    for loss in [Loss::Bce, Loss::Ce] {
        let cfg = setup::model_config(&h, loaded.vocab, loss).unwrap();
        let tcfg = setup::train_config(&h, 1).unwrap();
        let data = setup::run_data(&loaded, &h, TruncatePolicy::Head, 1);
        let mut engine = Device::Cpu.engine(&cfg, &tcfg.optim, 1).unwrap();
        let slots = tensor_slots(&ParamLayout::new(&cfg));
        let rec = train_run(engine.as_mut(), loss, &tcfg, &data, &slots, None, false, &progress(None)).unwrap();
        let last = rec.last().unwrap();
        println!("{}: validation accuracy {:.2}% after {} epochs (want >= 90%)", loss.name(), last.val_acc, rec.epochs.len());
        assert!(last.val_acc >= 90.0, "{}: {:.2}%", loss.name(), last.val_acc);
    }
}

#[test]
fn resumed_run_ends_bit_identical() {
    let loaded = setup::load_data(&DataArgs { train_subset: Some(300), ..demo_args() }, 3).unwrap();
    let h = setup::Hyper { epochs: 3, dropout: 0.2, token_drop: 0.2, ..Preset::Demo.hyper() };
    let cfg = setup::model_config(&h, loaded.vocab, Loss::Ce).unwrap();
    let tcfg = setup::train_config(&h, 3).unwrap();
    let slots = tensor_slots(&ParamLayout::new(&cfg));
    let tmp = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"test": true});

    let run = |dir: &std::path::Path, stop_after: Option<usize>, resume: bool| {
        let data = setup::run_data(&loaded, &h, TruncatePolicy::Head, 3);
        let run_dir = if resume { RunDir { path: dir.to_path_buf() } } else { RunDir::create(dir, &config).unwrap() };
        let mut engine = Device::Cpu.engine(&cfg, &tcfg.optim, 3).unwrap();
        train_run(engine.as_mut(), Loss::Ce, &tcfg, &data, &slots, Some(&run_dir), resume, &progress(stop_after)).unwrap()
    };
    let straight = tmp.path().join("straight");
    let a = run(&straight, None, false);
    let interrupted = tmp.path().join("interrupted");
    let first = run(&interrupted, Some(1), false);
    assert_eq!(first.epochs.len(), 1);
    let b = run(&interrupted, None, true);
    assert_eq!(b.epochs.len(), 3, "resumed record holds every epoch");
    let (ca, cb) = (
        checkpoint::load(&straight.join("checkpoint.safetensors"), &slots).unwrap(),
        checkpoint::load(&interrupted.join("checkpoint.safetensors"), &slots).unwrap(),
    );
    let differing = ca.params.iter().zip(&cb.params).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    println!("resume: {differing} of {} parameters differ bitwise (want 0)", ca.params.len());
    assert_eq!(differing, 0);
    assert!(ca.adam_m == cb.adam_m && ca.adam_v == cb.adam_v, "optimizer state identical");
    for (x, y) in a.epochs.iter().zip(&b.epochs) {
        assert_eq!(x.train_loss.to_bits(), y.train_loss.to_bits(), "epoch {} train loss", x.epoch);
        assert_eq!(x.val_acc, y.val_acc);
    }
}

/// The same short run on the emulator (the CUDA kernels) and on the CPU reference:
/// per-epoch losses agree to float reassociation and validation accuracies to one review.
#[test]
fn emu_run_agrees_with_cpu_run() {
    use cudaenc::device::DeviceKind;
    let mut loaded = setup::load_data(&DataArgs { train_subset: Some(256), ..demo_args() }, 5).unwrap();
    loaded.val.reviews.truncate(300); // the emulator is slow: a smaller validation set
    let h = setup::Hyper { epochs: 2, d_model: 16, n_head: 2, d_ff: 32, dropout: 0.1, token_drop: 0.1, ..Preset::Demo.hyper() };
    let cfg = setup::model_config(&h, loaded.vocab, Loss::Bce).unwrap();
    let tcfg = setup::train_config(&h, 5).unwrap();
    let slots = tensor_slots(&ParamLayout::new(&cfg));
    let run = |device: &Device| {
        let data = setup::run_data(&loaded, &h, TruncatePolicy::Head, 5);
        let mut engine = device.engine(&cfg, &tcfg.optim, 5).unwrap();
        train_run(engine.as_mut(), Loss::Bce, &tcfg, &data, &slots, None, false, &progress(None)).unwrap()
    };
    let cpu = run(&Device::Cpu);
    let emu = run(&Device::open(DeviceKind::Emu).unwrap());
    let n_val = loaded.val.len() as f64;
    for (c, e) in cpu.epochs.iter().zip(&emu.epochs) {
        let rel = (c.train_loss - e.train_loss).abs() / c.train_loss.abs();
        println!(
            "epoch {}: train loss cpu {:.6} emu {:.6} (rel {rel:.1e}, tol 1e-3); val acc cpu {:.2}% emu {:.2}% (tol one review)",
            c.epoch, c.train_loss, e.train_loss, c.val_acc, e.val_acc
        );
        assert!(rel < 1e-3, "epoch {}: train loss differs by {rel:.2e}", c.epoch);
        let val_rel = (c.val_loss - e.val_loss).abs() / c.val_loss.abs();
        println!("epoch {}: val loss cpu {:.6} emu {:.6} (rel {val_rel:.1e}, tol 1e-4)", c.epoch, c.val_loss, e.val_loss);
        assert!(val_rel < 1e-4, "epoch {}: val loss differs by {val_rel:.2e}", c.epoch);
        assert!((c.val_acc - e.val_acc).abs() <= 100.0 / n_val + 1e-9, "epoch {}: val acc differs", c.epoch);
    }
}
