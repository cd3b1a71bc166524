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
        dedup: false,
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
        let mut engine = Device::Cpu.engine(&cfg, &tcfg.optim, 1, false).unwrap();
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
        let mut engine = Device::Cpu.engine(&cfg, &tcfg.optim, 3, false).unwrap();
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
        let mut engine = device.engine(&cfg, &tcfg.optim, 5, false).unwrap();
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

/// `--cuda-graphs` on the emulator: a short run whose training steps are captured per
/// batch shape and replayed equals, bit for bit, the same run (the same 64-rounded
/// batches) with every step launched directly; and the rounding leaves every batch's
/// reviews as they were (only T grows).
#[test]
fn emu_run_with_graphs_equals_direct_launches() {
    use cudaenc::device::DeviceKind;
    let mut loaded = setup::load_data(&DataArgs { train_subset: Some(192), ..demo_args() }, 7).unwrap();
    loaded.val.reviews.truncate(100);
    let h = setup::Hyper { epochs: 2, d_model: 16, n_head: 2, d_ff: 32, dropout: 0.1, token_drop: 0.1, cuda_graphs: true, ..Preset::Demo.hyper() };
    let cfg = setup::model_config(&h, loaded.vocab, Loss::Ce).unwrap();
    let tcfg = setup::train_config(&h, 7).unwrap();
    let slots = tensor_slots(&ParamLayout::new(&cfg));
    let data = setup::run_data(&loaded, &h, TruncatePolicy::Head, 7);
    let plain = setup::run_data(&loaded, &setup::Hyper { cuda_graphs: false, ..h.clone() }, TruncatePolicy::Head, 7);
    for (g, p) in (data.train)(1).iter().zip((plain.train)(1).iter()) {
        assert_eq!(g.seq_len % setup::GRAPH_LEN_MULTIPLE, 0, "T rounded up to a multiple of GRAPH_LEN_MULTIPLE");
        assert!(g.seq_len >= p.seq_len && g.seq_len < p.seq_len + setup::GRAPH_LEN_MULTIPLE);
        assert_eq!((&g.lens, &g.labels), (&p.lens, &p.labels), "the same reviews in the same batches");
    }
    let device = Device::open(DeviceKind::Emu).unwrap();
    let run = |graphs: bool| {
        let data = setup::run_data(&loaded, &h, TruncatePolicy::Head, 7);
        let mut engine = device.engine(&cfg, &tcfg.optim, 7, graphs).unwrap();
        train_run(engine.as_mut(), Loss::Ce, &tcfg, &data, &slots, None, false, &progress(None)).unwrap()
    };
    let (direct, graphs) = (run(false), run(true));
    for (d, g) in direct.epochs.iter().zip(&graphs.epochs) {
        println!("epoch {}: train loss direct {} graphs {}; val acc {} / {}", d.epoch, d.train_loss, g.train_loss, d.val_acc, g.val_acc);
        assert_eq!(d.train_loss.to_bits(), g.train_loss.to_bits(), "epoch {}: train loss", d.epoch);
        assert_eq!(d.val_loss.to_bits(), g.val_loss.to_bits(), "epoch {}: val loss", d.epoch);
        assert_eq!(d.val_acc.to_bits(), g.val_acc.to_bits(), "epoch {}: val acc", d.epoch);
    }
    assert_eq!(direct.epochs.len(), 2);
    let e = Device::Cpu.engine(&cfg, &tcfg.optim, 7, true).err().expect("the cpu device has no graphs");
    assert!(format!("{e:#}").contains("--cuda-graphs"), "{e:#}");
}

/// `--ema`: the checkpoint's parameters are the moving average (what was evaluated: the
/// record's validation loss is that of the saved parameters, to the bit), the raw weights
/// are kept under `train.`, and an interrupted run resumes bit-identical.
#[test]
fn ema_run_evaluates_and_saves_the_average_and_resumes_bit_identical() {
    use cudaenc::train::trainer::{loss_and_accuracy, predictions};
    let loaded = setup::load_data(&DataArgs { train_subset: Some(300), ..demo_args() }, 4).unwrap();
    let h = setup::Hyper { epochs: 3, dropout: 0.2, token_drop: 0.2, ema: 0.9, ..Preset::Demo.hyper() };
    let cfg = setup::model_config(&h, loaded.vocab, Loss::Bce).unwrap();
    let tcfg = setup::train_config(&h, 4).unwrap();
    let slots = tensor_slots(&ParamLayout::new(&cfg));
    let tmp = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"test": true});
    let run = |tcfg: &cudaenc::train::trainer::TrainConfig, dir: &std::path::Path, stop_after: Option<usize>, resume: bool| {
        let data = setup::run_data(&loaded, &h, TruncatePolicy::Head, 4);
        let run_dir = if resume { RunDir { path: dir.to_path_buf() } } else { RunDir::create(dir, &config).unwrap() };
        let mut engine = Device::Cpu.engine(&cfg, &tcfg.optim, 4, false).unwrap();
        train_run(engine.as_mut(), Loss::Bce, tcfg, &data, &slots, Some(&run_dir), resume, &progress(stop_after))
    };
    let straight = tmp.path().join("straight");
    let a = run(&tcfg, &straight, None, false).unwrap();
    let ca = checkpoint::load(&straight.join("checkpoint.safetensors"), &slots).unwrap();
    assert_eq!(ca.train_params.len(), ca.params.len(), "the raw weights are saved beside the average");
    let moved = ca.params.iter().zip(&ca.train_params).filter(|(x, y)| x != y).count();
    println!("ema: {moved} of {} saved parameters differ from the raw weights (want most)", ca.params.len());
    assert!(moved > ca.params.len() / 2);
    // and it is an average of the last steps' weights (decay 0.9: about the last ten of
    // 30), far closer to the raw weights than the initial ones are
    let init = Device::Cpu.engine(&cfg, &tcfg.optim, 4, false).unwrap().params().unwrap();
    let dist = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    let (to_avg, to_init) = (dist(&ca.params, &ca.train_params), dist(&init, &ca.train_params));
    println!("ema: raw weights {to_avg:.4} from the average, {to_init:.4} from the initial weights (want < 1/4 of it)");
    assert!(to_avg < 0.25 * to_init);

    let data = setup::run_data(&loaded, &h, TruncatePolicy::Head, 4);
    let mut engine = Device::Cpu.engine(&cfg, &tcfg.optim, 4, false).unwrap();
    engine.load_state(&ca.params, &ca.adam_m, &ca.adam_v).unwrap();
    let (p, y) = predictions(engine.as_mut(), &data.val).unwrap();
    let (loss, acc) = loss_and_accuracy(&p, &y).unwrap();
    let last = a.last().unwrap();
    println!("ema: saved parameters give val loss {loss:.6} acc {acc:.2}%; the record says {:.6} {:.2}%", last.val_loss, last.val_acc);
    assert_eq!((loss.to_bits(), acc), (last.val_loss.to_bits(), last.val_acc), "the average is what was evaluated");

    let interrupted = tmp.path().join("interrupted");
    run(&tcfg, &interrupted, Some(1), false).unwrap();
    let plain = cudaenc::train::trainer::TrainConfig { ema: 0.0, ..tcfg.clone() };
    let err = run(&plain, &interrupted, None, true).unwrap_err().to_string();
    assert!(err.contains("moving average"), "resuming an --ema checkpoint without it: {err}");
    let b = run(&tcfg, &interrupted, None, true).unwrap();
    let cb = checkpoint::load(&interrupted.join("checkpoint.safetensors"), &slots).unwrap();
    // the average only watches: training without it takes the very same steps
    let without = tmp.path().join("without");
    let c = run(&plain, &without, None, false).unwrap();
    let cc = checkpoint::load(&without.join("checkpoint.safetensors"), &slots).unwrap();
    assert!(cc.params == ca.train_params && cc.adam_m == ca.adam_m, "the raw weights are those of a run without --ema");
    assert!(a.epochs.iter().zip(&c.epochs).all(|(x, y)| x.train_loss.to_bits() == y.train_loss.to_bits()));
    assert!(ca.params == cb.params && ca.train_params == cb.train_params, "average and raw weights identical after resume");
    assert!(ca.adam_m == cb.adam_m && ca.adam_v == cb.adam_v, "optimizer state identical");
    for (x, y) in a.epochs.iter().zip(&b.epochs) {
        assert_eq!(x.val_loss.to_bits(), y.val_loss.to_bits(), "epoch {} val loss", x.epoch);
    }
}
