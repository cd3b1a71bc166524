//! global_norm kernels (two-pass deterministic reduction) vs the f64 reference, and the
//! clip factor from the device's norm, on emu (both fiber orders) and on cuda when
//! present. Tolerance: relative error 1e-5 for the norm and the clip scale; reruns are
//! bit-identical.
mod common;

use common::{devices, rel_err, to_f32, small_if_asked};
use cudaenc::device::Gpu;
use cudaenc::ops::gradnorm::{global_norm, global_norm_blocks, GLOBAL_NORM_MAX_BLOCKS};
use cudaenc::reference::gradnorm as reference;
use cudaenc::rng::SplitMix64;

const TOL: f64 = 1e-5;
/// N = 1; below one warp; not a multiple of 32; one block; several blocks; more than
/// 1024 blocks' worth (pass 1 is capped at 1024 blocks that loop).
const SIZES: &[usize] = &[1, 31, 1000, 2048, 100_003, 3_000_001];

fn run(gpu: &Gpu, n: usize, scale: f64) -> anyhow::Result<f64> {
    let dev = gpu.name();
    let mut rng = SplitMix64::new(n as u64);
    let g = to_f32(&rng.normal_vec(n, scale));
    let want: f64 = reference::global_norm(&g.iter().map(|&x| x as f64).collect::<Vec<_>>());
    let d_g = gpu.upload(&g)?;
    let d_out = gpu.zeros::<f32>(1)?;
    let d_scratch = gpu.zeros::<f32>(GLOBAL_NORM_MAX_BLOCKS)?;
    global_norm(gpu, &d_out, &d_scratch, &d_g)?;
    let got = gpu.download(&d_out)?[0];
    let e = rel_err(got as f64, want, 1e-30);
    // clip factor as the engine computes it: from the device norm, on the host
    let max_norm = (want * 0.5) as f32;
    let (s_got, s_want) = (reference::clip_scale(got, max_norm), max_norm as f64 / (want + 1e-6));
    let es = rel_err(s_got as f64, s_want, 1e-30);
    println!(
        "  {dev:<22} N={n:<8} blocks={:<5} norm {got:.7e} want {want:.7e} rel err {e:.2e}; clip scale rel err {es:.2e}",
        global_norm_blocks(n)
    );
    // determinism
    for _ in 0..2 {
        gpu.zero(&d_out)?;
        global_norm(gpu, &d_out, &d_scratch, &d_g)?;
        anyhow::ensure!(gpu.download(&d_out)?[0].to_bits() == got.to_bits(), "{dev}: norm differs on rerun");
    }
    Ok(e.max(es))
}

#[test]
fn global_norm_matches_f64_reference() {
    let mut failures = Vec::new();
    for gpu in devices("gradnorm") {
        for &&n in &small_if_asked("gradnorm", SIZES, |&n| n, 200_000) {
            for scale in [1.0, 1e-4] {
                match run(&gpu, n, scale) {
                    Ok(e) if e <= TOL => {}
                    Ok(e) => failures.push(format!("{} N={n} scale {scale}: max rel err {e:.2e} > {TOL:.0e}", gpu.name())),
                    Err(e) => failures.push(format!("{} N={n} scale {scale}: {e:#}", gpu.name())),
                }
            }
        }
    }
    assert!(failures.is_empty(), "gradnorm failures:\n{}", failures.join("\n"));
}

#[test]
fn global_norm_of_zeros_is_zero_and_scale_is_one() {
    for gpu in devices("gradnorm zeros") {
        let g = gpu.zeros::<f32>(777).unwrap();
        let out = gpu.upload(&[f32::NAN]).unwrap();
        let scratch = gpu.zeros::<f32>(GLOBAL_NORM_MAX_BLOCKS).unwrap();
        global_norm(&gpu, &out, &scratch, &g).unwrap();
        let norm = gpu.download(&out).unwrap()[0];
        assert_eq!(norm, 0.0, "{}", gpu.name());
        assert_eq!(reference::clip_scale(norm, 1.0), 1.0);
        // scratch too small is an error, not an overrun
        let small = gpu.zeros::<f32>(1).unwrap();
        let big = gpu.zeros::<f32>(100_000).unwrap();
        assert!(global_norm(&gpu, &out, &small, &big).is_err());
    }
}
