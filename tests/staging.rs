//! The staged upload (`device::Staging`): several host arrays packed into one buffer and
//! copied to the device in one copy (on cuda from page-locked memory, asynchronously,
//! two staging buffers alternating). Checked:
//! - the layout (`Packing`) at awkward sizes (0, 1, odd, just past the alignment): parts
//!   aligned, in order, not overlapping, gaps zeroed, bad input an error;
//! - parts of random bytes at awkward sizes, and the training batch's five parts for
//!   batches of odd B and T with reviews of length 0 and 1, read back exactly, part by
//!   part, through growing and shrinking sizes; a part read as the wrong type, or a
//!   missing part, is an error;
//! - launches between uploads read the upload enqueued before them (several uploads and
//!   launches queued with no wait between them, then read back);
//! - whole training steps of different batch shapes queued back to back without a
//!   synchronize end bit-identical (parameters, moments, totals) to the same steps each
//!   followed by a synchronize.
//!
//! On emu (both fiber orders) and on cuda when present: on the emulator launches are
//! synchronous, so the last two checks only bite on a GPU.
mod common;

use common::devices;
use cudaenc::config::{Loss, ModelConfig, OptimConfig};
use cudaenc::device::{Gpu, Packing, Staging, PART_ALIGN};
use cudaenc::model::{Batch, GpuEngine};
use cudaenc::ops::embedding::embedding_forward;
use cudaenc::reference::embedding::embedding_backward_order;
use cudaenc::rng::SplitMix64;
use cudaenc::train::engine::{Engine, StepTotals};

#[test]
fn packing_layout_at_awkward_sizes() {
    let sizes = [0, 1, 3, PART_ALIGN, PART_ALIGN + 1, 0, 5, 0];
    let p = Packing::new(&sizes);
    let mut end = 0;
    for (i, (&off, &size)) in p.offsets.iter().zip(&p.sizes).enumerate() {
        assert_eq!(size, sizes[i]);
        assert_eq!(off % PART_ALIGN, 0, "part {i} aligned");
        assert!(off >= end, "part {i} after part {}", i.max(1) - 1);
        end = off + size;
    }
    assert_eq!(p.total, end);
    assert_eq!(p.offsets, [0, 0, 256, 512, 768, 1280, 1280, 1536]);
    assert_eq!(p.total, 1536, "the end of the last part (empty, at 1536)");
    assert_eq!(Packing::new(&[]).total, 0);

    // packing: every part at its offset, every other byte zero (the buffer held garbage)
    let parts: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &s)| (0..s).map(|j| (i * 37 + j) as u8 | 1).collect()).collect();
    let refs: Vec<&[u8]> = parts.iter().map(|v| v.as_slice()).collect();
    let mut dst = vec![0xAAu8; p.total + 7];
    p.pack(&mut dst, &refs).unwrap();
    let mut want = vec![0u8; p.total];
    for (i, part) in parts.iter().enumerate() {
        want[p.offsets[i]..p.offsets[i] + part.len()].copy_from_slice(part);
    }
    assert_eq!(&dst[..p.total], &want[..]);
    assert!(dst[p.total..].iter().all(|&b| b == 0xAA), "nothing written past the total");

    assert!(p.pack(&mut dst, &refs[..3]).is_err(), "too few parts");
    let mut wrong = refs.clone();
    wrong[2] = refs[3];
    assert!(p.pack(&mut dst, &wrong).is_err(), "a part of the wrong size");
    assert!(p.pack(&mut vec![0u8; p.total - 1], &refs).is_err(), "a buffer too small");
}

/// B reviews of the given lengths (vocabulary 37), padded to `t`; labels alternate.
fn batch(lens: &[u32], t: usize, seed: u64) -> Batch {
    let mut rng = SplitMix64::new(seed);
    let mut ids = vec![0u32; lens.len() * t];
    for (b, &l) in lens.iter().enumerate() {
        for i in 0..l as usize {
            ids[b * t + i] = 1 + rng.below(36) as u32;
        }
    }
    let labels = (0..lens.len()).map(|i| (i % 2) as u8).collect();
    Batch { ids, lens: lens.to_vec(), labels, batch_size: lens.len(), seq_len: t }
}

/// Odd B and T, reviews of length 0 and 1, growing and shrinking (T <= 9).
fn awkward_batches() -> Vec<Batch> {
    vec![
        batch(&[5, 0, 1], 5, 1),
        batch(&[1], 1, 2),
        batch(&[0], 3, 3),
        batch(&[7, 1, 0, 3, 7], 7, 4),
        batch(&[2, 2], 3, 5),
        batch(&[9, 8, 1, 0, 4, 9, 6], 9, 6),
        batch(&[1, 1, 1], 1, 7),
    ]
}

/// The first five parts of a batch upload, as `GpuModel::load_batch` sends them (the
/// four after them, the step's scalars and the embedding order's [U, M], are checked by
/// tests/graph_step.rs through whole steps).
struct Parts {
    ids: Vec<u32>,
    lens: Vec<u32>,
    labels: Vec<u8>,
    pos: Vec<u32>,
    starts: Vec<u32>,
}

fn parts(b: &Batch) -> Parts {
    let (pos, starts) = embedding_backward_order(&b.ids, &b.lens, b.seq_len);
    Parts { ids: b.ids.clone(), lens: b.lens.clone(), labels: b.labels.clone(), pos, starts }
}

fn upload(gpu: &Gpu, st: &mut Staging, p: &Parts) {
    let bytes: [&[u8]; 5] = [
        bytemuck::cast_slice(&p.ids),
        bytemuck::cast_slice(&p.lens),
        &p.labels,
        bytemuck::cast_slice(&p.pos),
        bytemuck::cast_slice(&p.starts),
    ];
    st.upload(gpu, &bytes).unwrap();
}

#[test]
fn batch_uploads_read_back_exactly() {
    for gpu in devices("staging round trip") {
        let mut st = Staging::new();
        assert!(st.part::<u32>(0).is_err(), "no part before the first upload");
        for (k, b) in awkward_batches().iter().enumerate() {
            let p = parts(b);
            upload(&gpu, &mut st, &p);
            let what = format!("{} batch {k} (B={}, T={})", gpu.name(), b.batch_size, b.seq_len);
            assert_eq!(gpu.download(&st.part::<u32>(0).unwrap()).unwrap(), p.ids, "{what}: ids");
            assert_eq!(gpu.download(&st.part::<u32>(1).unwrap()).unwrap(), p.lens, "{what}: lens");
            assert_eq!(gpu.download(&st.part::<u8>(2).unwrap()).unwrap(), p.labels, "{what}: labels");
            assert_eq!(gpu.download(&st.part::<u32>(3).unwrap()).unwrap(), p.pos, "{what}: positions");
            assert_eq!(gpu.download(&st.part::<u32>(4).unwrap()).unwrap(), p.starts, "{what}: starts");
            assert!(st.part::<u32>(5).is_err(), "{what}: no sixth part");
            if b.batch_size % 4 != 0 {
                assert!(st.part::<u32>(2).is_err(), "{what}: {} label bytes are not whole u32s", b.batch_size);
            }
        }
        assert_eq!(st.counts().0, awkward_batches().len() as u64);
    }
}

/// Parts of random bytes (every byte of a part can be any value, the last included) and
/// awkward sizes: 0, 1, odd, across the alignment; more and fewer parts than before.
#[test]
fn random_parts_read_back_exactly() {
    for gpu in devices("staging random parts") {
        let mut rng = SplitMix64::new(11);
        let mut st = Staging::new();
        for round in 0..12 {
            let n_parts = 1 + rng.below(6) as usize;
            let sizes: Vec<usize> = (0..n_parts).map(|_| [0, 1, 3, 255, 257, 1000][rng.below(6) as usize]).collect();
            let parts: Vec<Vec<u8>> = sizes.iter().map(|&s| (0..s).map(|_| 1 + rng.below(255) as u8).collect()).collect();
            let refs: Vec<&[u8]> = parts.iter().map(|v| v.as_slice()).collect();
            st.upload(&gpu, &refs).unwrap();
            assert_eq!(st.packing(), &Packing::new(&sizes));
            for (i, part) in parts.iter().enumerate() {
                assert_eq!(&gpu.download(&st.part::<u8>(i).unwrap()).unwrap(), part, "{}: round {round}, part {i} of sizes {sizes:?}", gpu.name());
            }
        }
    }
}

/// ids uploaded k, then a kernel reading them (embedding of a table wte[i] = i, C = 1, so
/// out = ids as floats), then the next upload into the same device buffer, ... with no
/// wait in between: each launch must see its own upload, and no staging buffer may be
/// overwritten before its copy ran (the host buffers alternate, so upload k + 2 reuses
/// upload k's).
#[test]
fn launches_read_the_upload_queued_before_them() {
    for gpu in devices("staging order") {
        let batches = awkward_batches();
        let wte: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let wte = gpu.upload(&wte).unwrap();
        let mut st = Staging::new();
        let mut outs = Vec::new();
        for _round in 0..2 {
            for b in &batches {
                let p = parts(b);
                upload(&gpu, &mut st, &p);
                let out = gpu.zeros::<f32>(p.ids.len()).unwrap();
                embedding_forward(&gpu, &out, &st.part::<u32>(0).unwrap(), &wte, p.ids.len(), 1).unwrap();
                outs.push((out, p.ids));
            }
        }
        for (k, (out, ids)) in outs.iter().enumerate() {
            let want: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
            assert_eq!(gpu.download(out).unwrap(), want, "{}: launch {k}", gpu.name());
        }
        let (uploads, waits) = st.counts();
        println!("{}: {uploads} uploads, {waits} waited for their staging buffer's previous copy", gpu.name());
    }
}

/// Several training steps of different batch shapes (odd B and T, lengths 0 and 1, the
/// activations grown and reused) queued back to back with no synchronize equal, bit for
/// bit, the same steps each followed by a synchronize.
#[test]
fn queued_steps_equal_synchronized_steps() {
    let cfg = ModelConfig { vocab: 37, d_model: 12, n_layer: 1, n_head: 2, d_ff: 24, max_len: 9, dropout: 0.1, loss: Loss::Ce, precision: Default::default() };
    let optim = OptimConfig::default();
    let batches = awkward_batches();
    for gpu in devices("staging queued steps") {
        // one run after the other: the engines share the device's stream, so a synchronize
        // of one would also wait for the other's queued work
        let mut queued = GpuEngine::new(gpu.clone(), &cfg, &optim, 5, 6).unwrap();
        let mut tq = StepTotals::default();
        gpu.synchronize().unwrap();
        for (i, b) in batches.iter().enumerate() {
            queued.queue_step(b, 1e-2, i as u64 + 1, &mut tq).unwrap();
        }
        queued.flush_totals(&mut tq).unwrap();
        let mut synced = GpuEngine::new(gpu.clone(), &cfg, &optim, 5, 6).unwrap();
        let mut ts = StepTotals::default();
        for (i, b) in batches.iter().enumerate() {
            synced.queue_step(b, 1e-2, i as u64 + 1, &mut ts).unwrap();
            synced.gpu.synchronize().unwrap();
        }
        synced.flush_totals(&mut ts).unwrap();
        let name = gpu.name();
        assert_eq!(tq, ts, "{name}: step totals");
        assert_eq!(tq.steps, batches.len(), "{name}: every step counted");
        assert_eq!(queued.params().unwrap(), synced.params().unwrap(), "{name}: parameters");
        assert_eq!(queued.optimizer_state().unwrap(), synced.optimizer_state().unwrap(), "{name}: AdamW moments");
        let (uploads, waits) = queued.model.upload_counts();
        println!("{name}: queued run: {uploads} batch uploads, {waits} waited for their staging buffer's previous copy");
    }
}
