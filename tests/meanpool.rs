//! meanpool_forward / meanpool_backward kernels vs the f64 CPU reference, on emu (both
//! fiber orders) and on cuda when present. Tolerance: relative error 1e-5 (floor 1e-2 of
//! the tensor's largest |value|) for both: a sum of T terms and a scaling.
mod common;

use common::{devices, max_rel_err, to_f32, to_f64};
use cudaenc::device::Gpu;
use cudaenc::ops::meanpool::{meanpool_backward, meanpool_forward};
use cudaenc::reference::meanpool as reference;
use cudaenc::rng::SplitMix64;

const TOL: f64 = 1e-5;
/// (B, T, C, lens): the real width and length; T = 1; C = 1; C wider than a block and not
/// a multiple of 32; len 0; all rows padding but one; len > T (clamped).
const SHAPES: &[(usize, usize, usize, &[u32])] = &[
    (2, 512, 384, &[512, 300]),
    (3, 1, 1, &[1, 0, 1]),
    (3, 257, 30, &[257, 0, 5]),
    (4, 20, 300, &[0, 0, 13, 0]),
    (2, 7, 33, &[9, 0]),
];

fn run_shape(gpu: &Gpu, b: usize, t: usize, c: usize, lens: &[u32]) -> anyhow::Result<Vec<String>> {
    let mut rng = SplitMix64::new(101 * t as u64 + c as u64);
    let inp = to_f32(&rng.normal_vec(b * t * c, 1.0));
    let dout = to_f32(&rng.normal_vec(b * c, 1.0));
    let mut out_r = vec![0.0; b * c];
    reference::meanpool_forward(&mut out_r, &to_f64(&inp), lens, b, t, c);
    let mut dinp_r = vec![0.0; b * t * c];
    reference::meanpool_backward(&mut dinp_r, &to_f64(&dout), lens, b, t, c);

    let d_inp = gpu.upload(&inp)?;
    let d_lens = gpu.upload(lens)?;
    let d_dout = gpu.upload(&dout)?;
    let d_out = gpu.upload(&vec![f32::NAN; b * c])?; // every element must be written
    let d_dinp = gpu.upload(&vec![f32::NAN; b * t * c])?;
    meanpool_forward(gpu, &d_out, &d_inp, &d_lens, b, t, c)?;
    meanpool_backward(gpu, &d_dinp, &d_dout, &d_lens, b, t, c)?;
    let (out, dinp) = (gpu.download(&d_out)?, gpu.download(&d_dinp)?);
    let dev = gpu.name();
    let mut fails = Vec::new();
    for (what, got, want) in [("out", &out, &out_r), ("dinp", &dinp, &dinp_r)] {
        let (e, i) = max_rel_err(got, want);
        println!("  {dev:<16} B={b} T={t:<3} C={c:<3} {what:<4} max rel err {e:.2e} (tol {TOL:.0e}; at {i}: got {} want {})", got[i], want[i]);
        if e > TOL || e.is_nan() {
            fails.push(format!("{dev} B={b} T={t} C={c} lens={lens:?}: {what} max rel err {e:.2e} > {TOL:.0e}"));
        }
    }
    for bi in 0..b {
        let len = (lens[bi] as usize).min(t);
        if len == 0 && out[bi * c..(bi + 1) * c].iter().any(|&x| x != 0.0) {
            fails.push(format!("{dev}: len 0 review {bi} pooled to non-zero"));
        }
        if dinp[(bi * t + len) * c..(bi + 1) * t * c].iter().any(|&x| x != 0.0) {
            fails.push(format!("{dev}: padded rows of review {bi} got a non-zero gradient"));
        }
    }
    // deterministic: a rerun is bit-identical
    meanpool_forward(gpu, &d_out, &d_inp, &d_lens, b, t, c)?;
    if gpu.download(&d_out)?.iter().zip(&out).any(|(x, y)| x.to_bits() != y.to_bits()) {
        fails.push(format!("{dev} B={b} T={t} C={c}: out differs on rerun"));
    }
    Ok(fails)
}

#[test]
fn meanpool_matches_f64_reference() {
    let mut failures = Vec::new();
    for gpu in devices("meanpool") {
        for &(b, t, c, lens) in SHAPES {
            match run_shape(&gpu, b, t, c, lens) {
                Ok(f) => failures.extend(f),
                Err(e) => failures.push(format!("{} B={b} T={t} C={c}: {e:#}", gpu.name())),
            }
        }
    }
    assert!(failures.is_empty(), "meanpool failures:\n{}", failures.join("\n"));
}

#[test]
fn meanpool_rejects_wrong_shapes() {
    let gpu = Gpu::emu();
    let x = gpu.zeros::<f32>(12).unwrap();
    let lens = gpu.upload(&[3u32, 1]).unwrap();
    assert!(meanpool_forward(&gpu, &x, &x, &lens, 2, 3, 2).is_err(), "out must be B*C");
    assert!(meanpool_backward(&gpu, &x, &x, &lens, 2, 3, 2).is_err(), "dout must be B*C");
    assert!(meanpool_forward(&gpu, &gpu.zeros::<f32>(4).unwrap(), &x, &lens, 2, 3, 2).is_ok());
}
