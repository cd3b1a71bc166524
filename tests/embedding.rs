//! embedding_forward / embedding_backward kernels vs the CPU reference, on emu (both fiber
//! orders) and on cuda when present.
//! Tolerances: forward is a gather, so it must be exact (bit-identical to the reference);
//! backward within relative error 1e-5 of the f64 reference, and bit-identical to the
//! f32 reference (same summation order), and to itself on a rerun.
mod common;

use common::{devices, max_rel_err, to_f64, small_if_asked};
use cudaenc::device::Gpu;
use cudaenc::ops::embedding::{embedding_backward, embedding_forward, upload_embedding_order};
use cudaenc::reference::embedding as reference;
use cudaenc::rng::SplitMix64;

const TOL: f64 = 1e-5;
/// (N, C, V): N = 1; C = 1; C not a multiple of 32; heavy repeats (V small); C wider than
/// a block (256); the real vocabulary (cl100k_base, 100,277) at C = 384 with few tokens.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 384, 5),
    (7, 5, 3),
    (13, 33, 11),
    (64, 100, 4),
    (40, 300, 1000),
    (24, 384, 100_277),
];

/// Cheap deterministic values in [-1, 1) (the big-vocabulary tensors are 38.5M floats).
fn pattern(n: usize, salt: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(salt);
    (0..n).map(|_| (r.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect()
}

/// Ids with repeats: half the positions reuse a small pool, the rest are drawn from V,
/// and the largest id V-1 always appears (the last row of wte).
fn ids_for(n: usize, v: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    let pool: Vec<u32> = (0..3).map(|_| rng.below(v as u64) as u32).collect();
    let mut ids: Vec<u32> = (0..n)
        .map(|i| if i % 2 == 0 { pool[rng.below(3) as usize] } else { rng.below(v as u64) as u32 })
        .collect();
    ids[n / 2] = (v - 1) as u32;
    ids
}

fn run_shape(gpu: &Gpu, n: usize, c: usize, v: usize) -> anyhow::Result<f64> {
    let dev = gpu.name();
    let ids = ids_for(n, v, (n * 131 + c * 7 + v) as u64);
    let wte = pattern(v * c, 1 + v as u64);
    let dout = pattern(n * c, 2 + n as u64);
    let dwte0 = pattern(v * c, 3 + c as u64); // accumulates: start non-zero

    // forward: a gather, exact
    let mut out_r = vec![0.0f32; n * c];
    reference::embedding_forward(&mut out_r, &ids, &wte, n, c);
    let d_ids = gpu.upload(&ids)?;
    let d_wte = gpu.upload(&wte)?;
    let d_out = gpu.zeros::<f32>(n * c)?;
    embedding_forward(gpu, &d_out, &d_ids, &d_wte, n, c)?;
    drop(d_wte);
    let out = gpu.download(&d_out)?;
    let bad = out.iter().zip(&out_r).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    println!("  {dev:<22} N={n:<3} C={c:<4} V={v:<6} out      {bad} of {} elements differ (tol: exact)", n * c);
    anyhow::ensure!(bad == 0, "{dev}: forward is not an exact gather ({bad} differ)");

    // backward vs f64 and f32 references
    let mut dwte_r64 = to_f64(&dwte0);
    reference::embedding_backward(&mut dwte_r64, &to_f64(&dout), &ids, n, c);
    let mut dwte_r32 = dwte0.clone();
    reference::embedding_backward(&mut dwte_r32, &dout, &ids, n, c);
    let d_dout = gpu.upload(&dout)?;
    let d_dwte = gpu.upload(&dwte0)?;
    let (d_pos, d_starts, d_um) = upload_embedding_order(gpu, &ids, &[n as u32], n)?;
    embedding_backward(gpu, &d_dwte, &d_dout, &d_ids, &d_pos, &d_starts, &d_um, n, c)?;
    let dwte = gpu.download(&d_dwte)?;
    let (e, i) = max_rel_err(&dwte, &dwte_r64);
    let bad32 = dwte.iter().zip(&dwte_r32).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    println!(
        "  {dev:<22} N={n:<3} C={c:<4} V={v:<6} dwte     max rel err {e:.2e} vs f64 (at {i}: got {} want {}); {bad32} differ from f32 ref",
        dwte[i], dwte_r64[i]
    );
    anyhow::ensure!(bad32 == 0, "{dev}: dwte differs from the f32 reference in {bad32} elements (same order expected)");

    // determinism: rerun from the same start is bit-identical
    gpu.write(&d_dwte, &dwte0)?;
    embedding_backward(gpu, &d_dwte, &d_dout, &d_ids, &d_pos, &d_starts, &d_um, n, c)?;
    let again = gpu.download(&d_dwte)?;
    anyhow::ensure!(again.iter().zip(&dwte).all(|(a, b)| a.to_bits() == b.to_bits()), "{dev}: dwte differs on rerun");
    Ok(e)
}

#[test]
fn embedding_matches_reference() {
    let mut failures = Vec::new();
    for gpu in devices("embedding") {
        for &&(n, c, v) in &small_if_asked("embedding", SHAPES, |s| s.1 * s.2, 1_000_000) {
            match run_shape(&gpu, n, c, v) {
                Ok(e) if e <= TOL => {}
                Ok(e) => failures.push(format!("{} N={n} C={c} V={v}: max rel err {e:.2e} > {TOL:.0e}", gpu.name())),
                Err(e) => failures.push(format!("{} N={n} C={c} V={v}: {e:#}", gpu.name())),
            }
        }
    }
    assert!(failures.is_empty(), "embedding failures:\n{}", failures.join("\n"));
}

/// Many positions of one id (a long run summed by one block) and a padded batch's ids
/// (padding id 0 repeated): the run order is the position order.
#[test]
fn embedding_backward_long_runs_are_deterministic() {
    for gpu in devices("embedding long runs") {
        let (n, c, v) = (500, 37, 3);
        let mut ids = vec![0u32; n];
        for (i, id) in ids.iter_mut().enumerate().take(40) {
            *id = (i % 3) as u32;
        }
        let dout = pattern(n * c, 9);
        let d_ids = gpu.upload(&ids).unwrap();
        let d_dout = gpu.upload(&dout).unwrap();
        let (d_pos, d_starts, d_um) = upload_embedding_order(&gpu, &ids, &[n as u32], n).unwrap();
        let mut runs = Vec::new();
        for _ in 0..3 {
            let d_dwte = gpu.zeros::<f32>(v * c).unwrap();
            embedding_backward(&gpu, &d_dwte, &d_dout, &d_ids, &d_pos, &d_starts, &d_um, n, c).unwrap();
            runs.push(gpu.download(&d_dwte).unwrap());
        }
        let mut want = vec![0.0f64; v * c];
        reference::embedding_backward(&mut want, &to_f64(&dout), &ids, n, c);
        let mut want32 = vec![0.0f32; v * c];
        reference::embedding_backward(&mut want32, &dout, &ids, n, c);
        let (e, i) = max_rel_err(&runs[0], &want);
        // a sequential f32 sum of 474 terms: error bound ~ 474 * 2^-24 = 2.8e-5 of sum |terms|
        const TOL_LONG: f64 = 1e-4;
        println!("  {:<22} N={n} C={c} V={v} (run of 474 zeros) dwte max rel err {e:.2e} at {i} (tol {TOL_LONG:.0e})", gpu.name());
        assert!(e <= TOL_LONG, "{}: {e:.2e}", gpu.name());
        assert!(runs[0] == want32, "{}: differs from the f32 reference (same order expected)", gpu.name());
        assert!(runs.windows(2).all(|w| w[0] == w[1]), "{}: reruns differ", gpu.name());
    }
}

#[test]
fn embedding_wrong_shapes_are_errors() {
    let gpu = common::emu();
    let ids = gpu.upload(&[0u32, 1]).unwrap();
    let wte = gpu.zeros::<f32>(2 * 4).unwrap();
    let out = gpu.zeros::<f32>(2 * 3).unwrap();
    assert!(embedding_forward(&gpu, &out, &ids, &wte, 2, 4).is_err());
    let (pos, starts, um) = upload_embedding_order(&gpu, &[0, 1], &[2], 2).unwrap();
    assert!(embedding_backward(&gpu, &wte, &out, &ids, &pos, &starts, &um, 2, 4).is_err());
    let dout = gpu.zeros::<f32>(2 * 4).unwrap();
    assert!(embedding_backward(&gpu, &wte, &dout, &ids, &pos, &starts, &gpu.zeros::<u32>(3).unwrap(), 2, 4).is_err(), "um must be [U, M]");
    assert!(embedding_backward(&gpu, &wte, &dout, &ids, &pos, &starts, &um, 2, 4).is_ok());
}

/// Padded positions (id 0, beyond each review's length) are left out of the backward:
/// with a nonzero gradient planted at every padded position, the padding row of dwte stays
/// exactly as it was and the other rows equal the reference over the valid tokens only.
#[test]
fn embedding_backward_skips_padded_positions() {
    for gpu in devices("embedding padding") {
        let (b, t, c, v) = (3, 7, 5, 4);
        let lens = [7u32, 3, 0];
        let mut ids = vec![0u32; b * t];
        for (p, id) in ids.iter_mut().enumerate() {
            if p % t < lens[p / t] as usize {
                *id = 1 + (p as u32 * 7) % 3; // valid ids 1..=3, never the padding id 0
            }
        }
        let dout = pattern(b * t * c, 5); // nonzero everywhere, padding included
        let dwte0 = pattern(v * c, 6);
        let mut masked = to_f64(&dout);
        for p in 0..b * t {
            if p % t >= lens[p / t] as usize {
                masked[p * c..(p + 1) * c].iter_mut().for_each(|x| *x = 0.0);
            }
        }
        let mut want = to_f64(&dwte0);
        reference::embedding_backward(&mut want, &masked, &ids, b * t, c);
        let (d_ids, d_dout, d_dwte) = (gpu.upload(&ids).unwrap(), gpu.upload(&dout).unwrap(), gpu.upload(&dwte0).unwrap());
        let (d_pos, d_starts, d_um) = upload_embedding_order(&gpu, &ids, &lens, t).unwrap();
        assert_eq!((d_pos.len(), d_starts.len()), (10, 3), "10 valid tokens over 3 distinct ids");
        embedding_backward(&gpu, &d_dwte, &d_dout, &d_ids, &d_pos, &d_starts, &d_um, b * t, c).unwrap();
        let got = gpu.download(&d_dwte).unwrap();
        assert_eq!(got[..c], dwte0[..c], "{}: the padding row was touched", gpu.name());
        let (e, i) = max_rel_err(&got, &want);
        println!("  {:<22} B={b} T={t} lens {lens:?}: dwte max rel err {e:.2e} at {i} (tol {TOL:.0e}); padding row untouched", gpu.name());
        assert!(e <= TOL, "{}: {e:.2e}", gpu.name());
    }
}

/// As the model launches it: pos and starts padded to B*T (capacity-sized parts) and
/// [U, M] read from device memory, the same buffers (same addresses, same launch
/// arguments) for three batches of one shape with different U and M, one of them with
/// more distinct ids than the grid has blocks (the blocks loop). Each result equals the
/// f32 reference over that batch's valid tokens, bit for bit.
#[test]
fn embedding_backward_fixed_grid_serves_every_batch_of_a_shape() {
    use cudaenc::ops::embedding::{embedding_order_parts, EMBEDDING_BACKWARD_MAX_BLOCKS};
    for gpu in devices("embedding fixed grid") {
        let (b, t, c, v) = (4, 1500, 3, 20_000);
        let n = b * t;
        let (d_ids, d_dout) = (gpu.zeros::<u32>(n).unwrap(), gpu.zeros::<f32>(n * c).unwrap());
        let (d_pos, d_starts, d_um) = (gpu.zeros::<u32>(n).unwrap(), gpu.zeros::<u32>(n).unwrap(), gpu.zeros::<u32>(2).unwrap());
        let mut rng = SplitMix64::new(77);
        for (k, lens) in [[1500u32, 1500, 1500, 1500], [3, 0, 1499, 7], [0, 0, 0, 0]].iter().enumerate() {
            let ids: Vec<u32> = (0..n).map(|p| if p % t < lens[p / t] as usize { rng.below(v as u64) as u32 } else { 0 }).collect();
            let dout = pattern(n * c, 20 + k as u64);
            let (pos, starts, um) = embedding_order_parts(&ids, lens, t, Some(n)).unwrap();
            assert_eq!((pos.len(), starts.len()), (n, n), "padded to capacity");
            if k == 0 {
                assert!(um[0] as usize > EMBEDDING_BACKWARD_MAX_BLOCKS, "U = {} must exceed the grid", um[0]);
            }
            for (d, h) in [(&d_ids, &ids), (&d_pos, &pos), (&d_starts, &starts)] {
                gpu.write(d, h).unwrap();
            }
            gpu.write(&d_um, &um).unwrap();
            gpu.write(&d_dout, &dout).unwrap();
            let d_dwte = gpu.zeros::<f32>(v * c).unwrap();
            embedding_backward(&gpu, &d_dwte, &d_dout, &d_ids, &d_pos, &d_starts, &d_um, n, c).unwrap();
            let mut masked = dout.clone();
            for p in 0..n {
                if p % t >= lens[p / t] as usize {
                    masked[p * c..(p + 1) * c].iter_mut().for_each(|x| *x = 0.0);
                }
            }
            let mut want = vec![0.0f32; v * c];
            reference::embedding_backward(&mut want, &masked, &ids, n, c);
            let got = gpu.download(&d_dwte).unwrap();
            let bad = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            println!("  {:<22} batch {k}: U={} M={}: {bad} of {} elements differ from the f32 reference", gpu.name(), um[0], um[1], v * c);
            assert_eq!(bad, 0, "{} batch {k}: dwte differs from the f32 reference", gpu.name());
        }
    }
}

/// The fused gather + dropout (`embedding_dropout_forward`, the model's first launch)
/// equals embedding_forward then dropout_forward bit for bit (same mask over the flat
/// tensor, same scale) and the f32 reference exactly, at awkward sizes, p = 0 included; a
/// seed that is not one u64, or p >= 1, is an error.
#[test]
fn embedding_dropout_forward_equals_the_two_launches() {
    use cudaenc::ops::dropout::dropout_forward;
    use cudaenc::ops::embedding::embedding_dropout_forward;
    for gpu in devices("embedding dropout") {
        for &(n, c, v, p) in &[(1usize, 1usize, 1usize, 0.5f32), (37, 13, 50, 0.1), (300, 64, 1000, 0.3), (5, 7, 3, 0.0), (1000, 33, 17, 0.9)] {
            let mut rng = SplitMix64::new((n * c) as u64);
            let ids: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
            let wte = pattern(v * c, 3);
            let seed = 0xE4B0_0000_0000_0000u64 ^ (n * 7 + c) as u64;
            let (d_ids, d_wte, d_seed) = (gpu.upload(&ids).unwrap(), gpu.upload(&wte).unwrap(), gpu.upload(&[seed]).unwrap());
            let (fused, rows, unfused) = (gpu.upload(&vec![f32::NAN; n * c]).unwrap(), gpu.zeros::<f32>(n * c).unwrap(), gpu.zeros::<f32>(n * c).unwrap());
            embedding_dropout_forward(&gpu, &fused, &d_ids, &d_wte, &d_seed, p, n, c).unwrap();
            embedding_forward(&gpu, &rows, &d_ids, &d_wte, n, c).unwrap();
            dropout_forward(&gpu, &unfused, &rows, &d_seed, p).unwrap();
            let (got, want) = (gpu.download(&fused).unwrap(), gpu.download(&unfused).unwrap());
            let mut want_ref = vec![0.0f32; n * c];
            reference::embedding_dropout_forward(&mut want_ref, &ids, &wte, seed, p, n, c);
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let dropped = got.iter().filter(|&&x| x == 0.0).count();
            println!("  {:<22} N={n:<5} C={c:<3} p={p}: {dropped} of {} dropped; fused == two launches == f32 reference", gpu.name(), n * c);
            assert_eq!(bits(&got), bits(&want), "{} N={n} C={c} p={p}: fused differs from the two launches", gpu.name());
            assert_eq!(bits(&got), bits(&want_ref), "{} N={n} C={c} p={p}: fused differs from the reference", gpu.name());
        }
    }
    let gpu = common::emu();
    let (out, ids, wte) = (gpu.zeros::<f32>(4).unwrap(), gpu.zeros::<u32>(2).unwrap(), gpu.zeros::<f32>(6).unwrap());
    let (seed, two) = (gpu.upload(&[1u64]).unwrap(), gpu.zeros::<u64>(2).unwrap());
    assert!(embedding_dropout_forward(&gpu, &out, &ids, &wte, &two, 0.1, 2, 2).is_err(), "two seeds");
    assert!(embedding_dropout_forward(&gpu, &out, &ids, &wte, &seed, 1.0, 2, 2).is_err(), "p = 1");
    assert!(embedding_dropout_forward(&gpu, &out, &ids, &wte, &seed, 0.1, 2, 3).is_err(), "out not N*C");
    assert!(embedding_dropout_forward(&gpu, &out, &ids, &wte, &seed, 0.1, 2, 2).is_ok());
}
