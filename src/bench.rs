//! Kernel microbenchmarks at the model's real shapes (`cudaenc bench`, `cargo bench`).
//!
//! Each case is a name plus a setup function that allocates its inputs at [`Shapes`] and
//! returns a closure launching the kernel, with the bytes it moves and the flops it does.
//! On cuda: warm-up launches, then `repeats` timed launches (CUDA events, `Gpu::time_ms`),
//! each after an untimed copy over a buffer larger than L2 so every repeat starts cold;
//! the median is reported as ms, GB/s, TFLOP/s and as a fraction of the device-to-device
//! copy bandwidth (the `copy` case, always measured first). On emu: reduced shapes, each
//! case run once, to prove it runs.
//!
//! Adding a case: write `fn my_op(gpu: &Gpu, s: &Shapes) -> Result<Case>` (allocate with
//! [`rand_buf`] / `gpu.zeros`, move the buffers into the closure) and add one line to
//! [`cases`].

use crate::device::{ceil_div, DeviceSlice, Gpu};
use crate::ops;
use anyhow::Result;

/// The shapes the cases run at.
#[derive(Clone, Copy, Debug)]
pub struct Shapes {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub nh: usize,
    pub f: usize,
    pub v: usize,
}

impl Shapes {
    /// The model's: B = 64 reviews x T = 256 tokens, C = 384, NH = 6, F = 1536, V = 100277.
    pub const MODEL: Shapes = Shapes { b: 64, t: 256, c: 384, nh: 6, f: 1536, v: 100277 };
    /// Small enough for the emulator to run every case in seconds.
    pub const EMU: Shapes = Shapes { b: 2, t: 32, c: 384, nh: 6, f: 1536, v: 100277 };
    /// Tokens per batch.
    pub fn n(&self) -> usize {
        self.b * self.t
    }
}

/// Launches a case's kernel once on its own buffers.
pub type Launch = Box<dyn Fn(&Gpu) -> Result<()>>;

/// A prepared benchmark: `run` launches the kernel once on its own buffers.
pub struct Case {
    /// Shape in words, e.g. "N=16384 IC=384 OC=1152".
    pub shape: String,
    /// Bytes one launch must move to/from device memory (each tensor read or written once).
    pub bytes: f64,
    /// Floating-point operations of one launch (0 for memory-bound ops).
    pub flops: f64,
    pub run: Launch,
}

/// A benchmark's name and its setup.
pub type Setup = fn(&Gpu, &Shapes) -> Result<Case>;

/// Every case, in report order. `copy` first: the others are shown relative to it.
pub fn cases() -> Vec<(&'static str, Setup)> {
    vec![
        ("copy", copy),
        ("matmul_forward qkv", |g, s| matmul_forward(g, s.n(), s.c, 3 * s.c)),
        ("matmul_forward attn_proj", |g, s| matmul_forward(g, s.n(), s.c, s.c)),
        ("matmul_forward fc", |g, s| matmul_forward(g, s.n(), s.c, s.f)),
        ("matmul_forward fc_proj", |g, s| matmul_forward(g, s.n(), s.f, s.c)),
        ("matmul_forward head", |g, s| matmul_forward(g, s.b, s.c, 2)),
        ("matmul_backward qkv", |g, s| matmul_backward(g, s.n(), s.c, 3 * s.c)),
        ("matmul_backward attn_proj", |g, s| matmul_backward(g, s.n(), s.c, s.c)),
        ("matmul_backward fc", |g, s| matmul_backward(g, s.n(), s.c, s.f)),
        ("matmul_backward fc_proj", |g, s| matmul_backward(g, s.n(), s.f, s.c)),
        ("matmul_backward head", |g, s| matmul_backward(g, s.b, s.c, 2)),
        ("gelu_forward", gelu_forward),
        ("gelu_backward", gelu_backward),
        ("residual_forward", residual_forward),
        ("residual_backward", residual_backward),
        ("dropout_forward", dropout_forward),
        ("dropout_backward", dropout_backward),
        ("layernorm_forward", layernorm_forward),
        ("layernorm_backward", layernorm_backward),
    ]
}

/// A device buffer of `n` N(0, 1) values (deterministic).
pub fn rand_buf(gpu: &Gpu, n: usize, seed: u64) -> Result<crate::device::Buf<f32>> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    let host: Vec<f32> = (0..n).map(|_| rng.normal(1.0) as f32).collect();
    gpu.upload(&host)
}

const F: f64 = 4.0; // bytes per f32

/// Launch the copy kernel: dst <- src (lengths multiples of 4, equal).
fn launch_copy(gpu: &Gpu, dst: &impl DeviceSlice<f32>, src: &impl DeviceSlice<f32>) -> Result<()> {
    let n4 = src.len() / 4;
    gpu.launch("bench_copy", ceil_div(n4, 256).clamp(1, 8192), 256u32, 0, &[dst.arg(), src.arg(), n4.into()])
}

fn copy(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    // 64 Mi floats = 256 MiB each way at the model's shapes (well past any L2)
    let n = if s.n() >= 4096 { 64 << 20 } else { 1 << 20 };
    let (src, dst) = (gpu.zeros::<f32>(n)?, gpu.zeros::<f32>(n)?);
    Ok(Case {
        shape: format!("{} MiB", (n * 4) >> 20),
        bytes: 2.0 * F * n as f64,
        flops: 0.0,
        run: Box::new(move |g| launch_copy(g, &dst, &src)),
    })
}

fn matmul_forward(gpu: &Gpu, n: usize, ic: usize, oc: usize) -> Result<Case> {
    let (inp, w, b, out) = (rand_buf(gpu, n * ic, 1)?, rand_buf(gpu, oc * ic, 2)?, rand_buf(gpu, oc, 3)?, gpu.zeros(n * oc)?);
    Ok(Case {
        shape: format!("N={n} IC={ic} OC={oc}"),
        bytes: F * (n * ic + oc * ic + oc + n * oc) as f64,
        flops: 2.0 * (n * ic * oc) as f64,
        run: Box::new(move |g| ops::matmul::matmul_forward(g, &out, &inp, &w, Some(&b), n, ic, oc)),
    })
}

fn matmul_backward(gpu: &Gpu, n: usize, ic: usize, oc: usize) -> Result<Case> {
    let (dout, inp, w) = (rand_buf(gpu, n * oc, 1)?, rand_buf(gpu, n * ic, 2)?, rand_buf(gpu, oc * ic, 3)?);
    let (dinp, dw, db) = (gpu.zeros(n * ic)?, gpu.zeros(oc * ic)?, gpu.zeros(oc)?);
    Ok(Case {
        shape: format!("N={n} IC={ic} OC={oc}"),
        // reads dout, inp, weight; writes dinp; dweight and dbias read and written
        bytes: F * (n * oc + n * ic + oc * ic + n * ic + 2 * oc * ic + 2 * oc) as f64,
        flops: 4.0 * (n * ic * oc) as f64 + (n * oc) as f64,
        run: Box::new(move |g| ops::matmul::matmul_backward(g, &dinp, &dw, Some(&db), &dout, &inp, &w, n, ic, oc)),
    })
}

/// An elementwise case over `n` elements: `ins` inputs, `outs` outputs (fresh buffers),
/// `rw` read-and-written buffers (counted twice), launched by `f(gpu, &buffers)`.
fn elementwise(
    gpu: &Gpu,
    n: usize,
    ins: usize,
    outs: usize,
    rw: usize,
    f: impl Fn(&Gpu, &[crate::device::Buf<f32>]) -> Result<()> + 'static,
) -> Result<Case> {
    let bufs = (0..ins + outs + rw).map(|i| rand_buf(gpu, n, 10 + i as u64)).collect::<Result<Vec<_>>>()?;
    Ok(Case {
        shape: format!("N={n}"),
        bytes: F * (n * (ins + outs + 2 * rw)) as f64,
        flops: 0.0,
        run: Box::new(move |g| f(g, &bufs)),
    })
}

// buffer order in each closure: outputs / read-written first, then inputs (as the launcher)
fn gelu_forward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    elementwise(gpu, s.n() * s.f, 1, 1, 0, |g, b| ops::gelu::gelu_forward(g, &b[0], &b[1]))
}
fn gelu_backward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    elementwise(gpu, s.n() * s.f, 2, 1, 0, |g, b| ops::gelu::gelu_backward(g, &b[0], &b[1], &b[2]))
}
fn residual_forward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    elementwise(gpu, s.n() * s.c, 2, 1, 0, |g, b| ops::residual::residual_forward(g, &b[0], &b[1], &b[2]))
}
fn residual_backward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    elementwise(gpu, s.n() * s.c, 1, 0, 2, |g, b| ops::residual::residual_backward(g, &b[0], &b[1], &b[2]))
}
fn dropout_forward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    elementwise(gpu, s.n() * s.c, 1, 1, 0, |g, b| ops::dropout::dropout_forward(g, &b[0], &b[1], 42, 0.1))
}
fn dropout_backward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    elementwise(gpu, s.n() * s.c, 1, 1, 0, |g, b| ops::dropout::dropout_backward(g, &b[0], &b[1], 42, 0.1))
}

fn layernorm_forward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (n, c) = (s.n(), s.c);
    let (inp, w, b) = (rand_buf(gpu, n * c, 1)?, rand_buf(gpu, c, 2)?, rand_buf(gpu, c, 3)?);
    let (out, mean, rstd) = (gpu.zeros(n * c)?, gpu.zeros(n)?, gpu.zeros(n)?);
    Ok(Case {
        shape: format!("N={n} C={c}"),
        bytes: F * (2 * n * c + 2 * c + 2 * n) as f64,
        flops: 0.0,
        run: Box::new(move |g| ops::layernorm::layernorm_forward(g, &out, &mean, &rstd, &inp, &w, &b, n, c)),
    })
}

fn layernorm_backward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (n, c) = (s.n(), s.c);
    let (dout, inp, w) = (rand_buf(gpu, n * c, 1)?, rand_buf(gpu, n * c, 2)?, rand_buf(gpu, c, 3)?);
    let (mean, rstd) = (gpu.zeros(n)?, rand_buf(gpu, n, 4)?);
    let (dinp, dw, db) = (gpu.zeros(n * c)?, gpu.zeros(c)?, gpu.zeros(c)?);
    Ok(Case {
        shape: format!("N={n} C={c}"),
        // reads dout, inp; dinp read and written; small vectors ignored
        bytes: F * (4 * n * c) as f64,
        flops: 0.0,
        run: Box::new(move |g| {
            ops::layernorm::layernorm_backward(g, &dinp, &dw, &db, &dout, &inp, &w, &mean, &rstd, n, c)
        }),
    })
}

/// One measured case.
#[derive(Clone, Debug)]
pub struct Result1 {
    pub name: String,
    pub shape: String,
    pub ms: f64,
    pub gbps: f64,
    pub tflops: f64,
}

/// Run the cases whose name contains `filter` (all if None; `copy` always runs, as the
/// reference) and print a table. cuda: `repeats` timed runs each (median); emu: one run
/// at [`Shapes::EMU`] unless `shapes` is given.
pub fn run(gpu: &Gpu, filter: Option<&str>, repeats: usize, shapes: Option<Shapes>) -> Result<Vec<Result1>> {
    let cuda = gpu.is_cuda();
    let s = shapes.unwrap_or(if cuda { Shapes::MODEL } else { Shapes::EMU });
    let (warmup, repeats) = if cuda { (3, repeats.max(1)) } else { (0, 1) };
    // untimed copy over 2 x 128 MiB between repeats: evicts L2 (50 MB on H100) so every
    // timed launch reads its inputs from device memory
    let flush = if cuda { Some((gpu.zeros::<f32>(32 << 20)?, gpu.zeros::<f32>(32 << 20)?)) } else { None };
    println!("device {} shapes B={} T={} C={} NH={} F={} V={}; {} repeats{}", gpu.name(), s.b, s.t, s.c, s.nh, s.f, s.v, repeats,
        if cuda { ", median, L2 flushed before each" } else { " (emu: proves each case runs; timings mean nothing)" });
    println!("{:<28} {:<26} {:>10} {:>9} {:>9} {:>7}", "case", "shape", "ms", "GB/s", "TFLOP/s", "%copy");
    let mut results: Vec<Result1> = Vec::new();
    let mut copy_gbps = None;
    for (name, setup) in cases() {
        if name != "copy" && filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let case = setup(gpu, &s).map_err(|e| e.context(format!("bench {name}: setup")))?;
        for _ in 0..warmup {
            (case.run)(gpu)?;
        }
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            if let Some((a, b)) = &flush {
                launch_copy(gpu, a, b)?;
            }
            times.push(gpu.time_ms(|| (case.run)(gpu)).map_err(|e| e.context(format!("bench {name}")))?);
        }
        gpu.synchronize()?;
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        let gbps = case.bytes / (ms * 1e-3) / 1e9;
        let tflops = case.flops / (ms * 1e-3) / 1e12;
        if name == "copy" {
            copy_gbps = Some(gbps);
        }
        let pct = copy_gbps.map_or(String::new(), |c| format!("{:.0}%", 100.0 * gbps / c));
        let tf = if case.flops > 0.0 { format!("{tflops:.2}") } else { "-".into() };
        println!("{name:<28} {:<26} {ms:>10.4} {gbps:>9.1} {tf:>9} {pct:>7}", case.shape);
        results.push(Result1 { name: name.into(), shape: case.shape, ms, gbps, tflops });
    }
    Ok(results)
}
