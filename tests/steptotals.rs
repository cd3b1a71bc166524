//! step_totals_add (training statistics summed on the device) against the reference of
//! the same name, on emu (both fiber orders) and on cuda when present: the slots must be
//! equal exactly (the same f32 sums in the same order, then exact f64 products), over
//! several steps, CE and BCE, with a non-finite step recorded once (the first).
mod common;

use common::devices;
use cudaenc::ops::steptotals::step_totals_add;
use cudaenc::reference::steptotals as reference;
use cudaenc::rng::SplitMix64;
use cudaenc::train::engine::{StepTotals, STEP_TOTALS_SLOTS};

#[test]
fn step_totals_match_reference_exactly() {
    let mut failures = Vec::new();
    for gpu in devices("step_totals_add") {
        for &(b, k) in &[(1usize, 2usize), (37, 2), (64, 1), (5, 1)] {
            let run = || -> anyhow::Result<()> {
                let mut rng = SplitMix64::new((b * 10 + k) as u64);
                let d_totals = gpu.zeros::<f64>(STEP_TOTALS_SLOTS)?;
                let mut want = vec![0.0f64; STEP_TOTALS_SLOTS];
                for step in 1..=5u64 {
                    let mut losses: Vec<f32> = (0..b).map(|_| rng.uniform() as f32 * 2.0).collect();
                    let probs: Vec<f32> = (0..b * k).map(|_| rng.uniform() as f32).collect();
                    let labels: Vec<u8> = (0..b).map(|_| rng.below(2) as u8).collect();
                    let mut norm = 0.5 + rng.uniform() as f32;
                    if step == 3 {
                        losses[b / 2] = f32::NAN; // the first non-finite step
                    }
                    if step == 4 {
                        norm = f32::INFINITY; // a later one: not recorded
                    }
                    let (d_l, d_p, d_y, d_n) = (gpu.upload(&losses)?, gpu.upload(&probs)?, gpu.upload(&labels)?, gpu.upload(&[norm])?);
                    let d_step = gpu.upload(&[step])?; // read from device memory
                    step_totals_add(&gpu, &d_totals, &d_l, &d_p, &d_y, &d_n, b, k, &d_step)?;
                    reference::step_totals_add(&mut want, &losses, &probs, &labels, norm, b, k, step);
                }
                let got = gpu.download(&d_totals)?;
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                println!("  {} B={b} K={k}: {:?}", gpu.name(), StepTotals::from_slots(&got));
                anyhow::ensure!(same, "slots differ: got {got:?} want {want:?}");
                let t = StepTotals::from_slots(&got);
                anyhow::ensure!(t.steps == 5 && t.reviews == 5 * b, "steps/reviews: {t:?}");
                anyhow::ensure!(t.nonfinite.map(|n| n.step) == Some(3), "the first non-finite step is 3: {t:?}");
                Ok(())
            };
            if let Err(e) = run() {
                failures.push(format!("{} B={b} K={k}: {e:#}", gpu.name()));
            }
        }
    }
    assert!(failures.is_empty(), "step_totals_add failures:\n{}", failures.join("\n"));
}

#[test]
fn step_totals_rejects_bad_shapes() {
    let gpu = common::emu();
    let (t, f, y) = (gpu.zeros::<f64>(STEP_TOTALS_SLOTS).unwrap(), gpu.zeros::<f32>(4).unwrap(), gpu.zeros::<u8>(4).unwrap());
    let n = gpu.zeros::<f32>(1).unwrap();
    let one = gpu.upload(&[1u64]).unwrap();
    assert!(step_totals_add(&gpu, &t, &f, &f, &y, &n, 4, 3, &one).is_err(), "K = 3");
    assert!(step_totals_add(&gpu, &t, &f, &f, &y, &n, 3, 1, &one).is_err(), "B = 3 with 4 losses");
    assert!(step_totals_add(&gpu, &t, &f, &f, &y, &f, 4, 1, &one).is_err(), "norm of 4");
    assert!(step_totals_add(&gpu, &gpu.zeros::<f64>(3).unwrap(), &f, &f, &y, &n, 4, 1, &one).is_err(), "3 slots");
    assert!(step_totals_add(&gpu, &t, &f, &f, &y, &n, 4, 1, &gpu.zeros::<u64>(2).unwrap()).is_err(), "step of 2");
    assert!(step_totals_add(&gpu, &t, &f, &f, &y, &n, 4, 1, &one).is_ok(), "valid");
}

/// B reviews of the given lengths (vocabulary 37), padded to the longest; labels alternate.
fn batch(lens: &[u32], seed: u64) -> cudaenc::model::Batch {
    let mut rng = SplitMix64::new(seed);
    let t = *lens.iter().max().unwrap() as usize;
    let mut ids = vec![0u32; lens.len() * t];
    for (b, &l) in lens.iter().enumerate() {
        for i in 0..l as usize {
            ids[b * t + i] = 1 + rng.below(36) as u32;
        }
    }
    let labels = (0..lens.len()).map(|i| (i % 2) as u8).collect();
    cudaenc::model::Batch { ids, lens: lens.to_vec(), labels, batch_size: lens.len(), seq_len: t }
}

/// The kernel engine's queued steps (statistics kept on the device, read back once) sum
/// to exactly what its synchronous `train_step` returns step by step, and end in the same
/// parameters; a diverging run (huge learning rate) is reported by the read-back, with
/// the first non-finite step.
#[test]
fn queued_steps_equal_synchronous_steps_and_report_divergence() {
    use cudaenc::config::{Loss, ModelConfig, OptimConfig};
    use cudaenc::model::GpuEngine;
    use cudaenc::train::engine::Engine;
    let cfg = ModelConfig { vocab: 37, d_model: 12, n_layer: 1, n_head: 2, d_ff: 24, max_len: 9, dropout: 0.1, loss: Loss::Ce, precision: Default::default() };
    let optim = OptimConfig::default();
    let batches = [batch(&[9, 3, 0, 5], 1), batch(&[2, 7], 2), batch(&[4, 4, 1], 3)];
    let mut sync = GpuEngine::new(common::emu(), &cfg, &optim, 5, 6).unwrap();
    let mut queued = GpuEngine::new(common::emu(), &cfg, &optim, 5, 6).unwrap();
    let mut want = StepTotals::default();
    let mut got = StepTotals::default();
    for (i, b) in batches.iter().enumerate() {
        let step = i as u64 + 1;
        let s = sync.train_step(b, 1e-2, step).unwrap();
        want.add_step(step, &s, b.batch_size);
        queued.queue_step(b, 1e-2, step, &mut got).unwrap();
    }
    assert_eq!(got, StepTotals::default(), "nothing is read back before flush_totals");
    queued.flush_totals(&mut got).unwrap();
    println!("  synchronous {want:?}\n  queued      {got:?}");
    assert_eq!(got, want);
    assert_eq!(sync.params().unwrap(), queued.params().unwrap(), "same parameters");

    // divergence: lr 1e30 blows the parameters up within a few steps
    let mut t = StepTotals::default();
    for step in 4..=9u64 {
        queued.queue_step(&batches[step as usize % 3], 1e30, step, &mut t).unwrap();
    }
    queued.flush_totals(&mut t).unwrap();
    let bad = t.nonfinite.expect("a non-finite step is reported");
    println!("  diverging run: {t:?}");
    assert!((5..=9).contains(&bad.step), "first non-finite step {}", bad.step);
    assert_eq!(t.steps, 6, "every queued step is counted");
}
