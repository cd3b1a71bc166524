//! Helpers shared by the kernel tests: the devices to test on, and error metrics.
#![allow(dead_code)]

use cudaenc::device::{EmuOrder, Gpu};

/// Every device a kernel test runs on: the emulator in both fiber orders (always) and
/// the real GPU when one is usable; otherwise a loud SKIPPED line in the test output.
/// With `CUDAENC_ONLY_CUDA` set (the GPU check's sanitizer runs), the emulator is left
/// out and a missing CUDA device is a failure.
pub fn devices(test: &str) -> Vec<Gpu> {
    let only_cuda = std::env::var_os("CUDAENC_ONLY_CUDA").is_some();
    let mut v = if only_cuda {
        Vec::new()
    } else {
        vec![Gpu::emu_with_order(EmuOrder::Forward), Gpu::emu_with_order(EmuOrder::Reverse)]
    };
    match Gpu::cuda_if_present() {
        Ok(g) => v.push(g),
        Err(why) if only_cuda || std::env::var_os("CUDAENC_REQUIRE_CUDA").is_some() => {
            panic!("CUDAENC_REQUIRE_CUDA is set but there is no usable CUDA device: {why}")
        }
        Err(why) => {
            // straight to stderr: libtest does not capture this, so the skip is always visible
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: no CUDA device for {test} ({why}); tested on emu only");
        }
    }
    v
}

/// The emulator in the order from CUDAENC_EMU_ORDER, for tests of the emulator itself.
pub fn emu() -> Gpu {
    Gpu::emu()
}

/// Relative error with a floor: |got - want| / max(|want|, floor).
pub fn rel_err(got: f64, want: f64, floor: f64) -> f64 {
    (got - want).abs() / want.abs().max(floor)
}

/// Max relative error over a tensor, with the floor relative to the tensor's scale
/// (1e-2 of its largest |value|, at least 1e-6), and the worst index.
pub fn max_rel_err(got: &[f32], want: &[f64]) -> (f64, usize) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let floor = (1e-2 * scale).max(1e-6);
    let mut worst = (0.0, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = if g.is_finite() { rel_err(g as f64, w, floor) } else { f64::INFINITY };
        if e > worst.0 || (e.is_nan() && !worst.0.is_nan()) {
            worst = (e, i);
        }
    }
    worst
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}
pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// With `CUDAENC_SMALL_SHAPES` set (the GPU check's compute-sanitizer runs, where every
/// memory access is instrumented and a T = 512 attention takes minutes), the cases whose
/// `work` exceeds `limit` are left out; the small and awkward ones kept exercise the same
/// barriers, tails and split paths. Without it, every case. Says what it left out.
pub fn small_if_asked<'a, S>(test: &str, shapes: &'a [S], work: impl Fn(&S) -> usize, limit: usize) -> Vec<&'a S> {
    if std::env::var_os("CUDAENC_SMALL_SHAPES").is_none() {
        return shapes.iter().collect();
    }
    let kept: Vec<&S> = shapes.iter().filter(|s| work(s) <= limit).collect();
    println!("CUDAENC_SMALL_SHAPES: {test}: {} of {} cases (work <= {limit})", kept.len(), shapes.len());
    kept
}
