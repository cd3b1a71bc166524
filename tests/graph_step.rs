//! The training step captured as a graph and replayed (`--cuda-graphs`,
//! `GpuEngine::use_graphs`): on cuda a CUDA graph, on the emulator the recorded launches
//! (`Gpu::capture`). A replay repeats every argument bit of the capture, so these tests
//! check that nothing that changes between steps of one shape is a kernel argument:
//! - steps through the graph path equal direct launches bit for bit (parameters, AdamW
//!   moments, step totals) over a schedule of mixed shapes with a changing learning rate
//!   and fresh batches each step, through a larger batch that reallocates the buffers
//!   (every graph dropped) and an evaluation forward in between, for CE and BCE, with
//!   dropout on, on both fiber orders of the emulator (and cuda when present);
//! - the graph path did capture and replay (its counts);
//! - inside a capture, uploads, downloads, allocations and synchronizes are errors (emu).
mod common;

use common::devices;
use cudaenc::config::{Loss, ModelConfig, OptimConfig};
use cudaenc::model::gpu::GraphCounts;
use cudaenc::model::{Batch, GpuEngine};
use cudaenc::rng::SplitMix64;
use cudaenc::train::engine::{Engine, StepTotals};

/// Reviews of the given lengths (vocabulary 37), padded to `t`; labels from the seed.
fn batch(lens: &[u32], t: usize, seed: u64) -> Batch {
    let mut rng = SplitMix64::new(seed);
    let mut ids = vec![0u32; lens.len() * t];
    for (b, &l) in lens.iter().enumerate() {
        for i in 0..l as usize {
            ids[b * t + i] = 1 + rng.below(36) as u32;
        }
    }
    let labels = (0..lens.len()).map(|_| rng.below(2) as u8).collect();
    Batch { ids, lens: lens.to_vec(), labels, batch_size: lens.len(), seq_len: t }
}

/// (lens, T) per step: shapes A (4 x 24), B (2 x 40) repeating, then C (6 x 48), larger
/// than any before (reallocates), then A and B again. Reviews of length 0 and 1 included;
/// the lengths (so the embedding backward's U and M) differ between steps of one shape,
/// by more than the 256-byte alignment of the upload's parts (64 positions), so a part
/// sized by M rather than by the shape would move the parts after it.
fn schedule() -> Vec<(Vec<u32>, usize)> {
    let a = |k: u32| (vec![24, 1 + (k * 5) % 23, (k * 11) % 24, 24 - k % 3], 24);
    let b = |k: u32| (vec![40 - (k * 13) % 40, k % 2], 40);
    vec![a(0), b(0), a(1), a(2), b(1), a(3), b(2), b(3), (vec![48, 3, 47, 1, 20, 0], 48), a(4), a(5), a(6), b(4), a(7), b(5), b(6), a(8), b(7)]
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn graph_steps_equal_direct_steps() {
    for loss in [Loss::Ce, Loss::Bce] {
        let cfg = ModelConfig { vocab: 37, d_model: 16, n_layer: 2, n_head: 2, d_ff: 32, max_len: 48, dropout: 0.1, loss, precision: Default::default() };
        let optim = OptimConfig { grad_clip: 0.5, ..OptimConfig::default() };
        for gpu in devices("graph steps") {
            let name = format!("{} {loss:?}", gpu.name());
            let mut direct = GpuEngine::new(gpu.clone(), &cfg, &optim, 5, 6).unwrap();
            let mut graph = GpuEngine::new(gpu.clone(), &cfg, &optim, 5, 6).unwrap();
            graph.use_graphs(true);
            let (mut td, mut tg) = (StepTotals::default(), StepTotals::default());
            for (i, (lens, t)) in schedule().iter().enumerate() {
                let step = i as u64 + 1;
                let b = batch(lens, *t, 100 + step);
                let lr = 1e-2 * (1.0 + (i % 3) as f32); // changes from step to step
                if i % 4 == 3 {
                    // train_step: its own totals buffer, so its own graphs
                    let (sd, sg) = (direct.train_step(&b, lr, step).unwrap(), graph.train_step(&b, lr, step).unwrap());
                    assert_eq!((sd.loss.to_bits(), sd.grad_norm.to_bits(), sd.correct), (sg.loss.to_bits(), sg.grad_norm.to_bits(), sg.correct), "{name} step {step}: statistics");
                } else {
                    direct.queue_step(&b, lr, step, &mut td).unwrap();
                    graph.queue_step(&b, lr, step, &mut tg).unwrap();
                }
                assert!(same_bits(&direct.params().unwrap(), &graph.params().unwrap()), "{name} step {step} ({lens:?} x {t}): parameters differ");
                if i == 6 {
                    // an evaluation forward in between uploads its own batch
                    let e = batch(&[24, 2, 5, 0], 24, 999);
                    assert!(same_bits(&direct.predict(&e).unwrap(), &graph.predict(&e).unwrap()), "{name}: predictions");
                }
            }
            direct.flush_totals(&mut td).unwrap();
            graph.flush_totals(&mut tg).unwrap();
            assert_eq!(td, tg, "{name}: step totals");
            let ((pd, md), (pg, mg)) = (direct.optimizer_state().unwrap(), graph.optimizer_state().unwrap());
            assert!(same_bits(&pd, &pg) && same_bits(&md, &mg), "{name}: AdamW moments");
            let c = graph.graph_counts();
            println!("{name}: {c:?}");
            // per (shape, train_step or queue_step): first step direct, second captured, then
            // replays; C drops every graph; train_step's shapes never reach a third step
            let want = GraphCounts { direct: 9, captured: 4, replayed: 5, invalidated: 1 };
            assert_eq!(c, want, "{name}: what the graph path did");
            assert_eq!(direct.graph_counts(), GraphCounts::default(), "{name}: graphs off");
        }
    }
}

#[test]
fn capture_refuses_what_a_graph_cannot_hold() {
    let gpu = common::emu();
    let buf = gpu.zeros::<f32>(4).unwrap();
    assert!(gpu.capture(|g| g.download(&buf).map(|_| ())).is_err(), "download");
    assert!(gpu.capture(|g| g.write(&buf, &[1.0; 4])).is_err(), "write");
    assert!(gpu.capture(|g| g.zeros::<f32>(4).map(|_| ())).is_err(), "allocation");
    assert!(gpu.capture(|g| g.synchronize()).is_err(), "synchronize");
    assert!(gpu.capture(|g| g.launch("no_such_kernel", 1u32, 32u32, 0, &[])).is_err(), "unknown kernel");
    // a memset and a launch are recorded, not run; the replay runs them, every time
    let x = gpu.upload(&[1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let y = gpu.upload(&[9.0f32; 4]).unwrap();
    let graph = gpu
        .capture(|g| {
            g.zero(&y)?;
            cudaenc::ops::gelu::gelu_forward(g, &y, &x)
        })
        .unwrap();
    assert_eq!(graph.ops().map(|o| o.len()), Some(2));
    assert_eq!(gpu.download(&y).unwrap(), vec![9.0; 4], "capturing ran nothing");
    gpu.launch_graph(&graph).unwrap();
    let once = gpu.download(&y).unwrap();
    assert!(once.iter().zip([1.0f32, 2.0, 3.0, 4.0]).all(|(g, x)| (g - x).abs() < 0.2), "gelu of x: {once:?}");
    gpu.write(&x, &[-1.0, -2.0, -3.0, -4.0]).unwrap();
    gpu.launch_graph(&graph).unwrap();
    let twice = gpu.download(&y).unwrap();
    assert!(twice.iter().all(|&g| g < 0.0 && g > -0.2), "the replay read x's new values: {twice:?}");
}
