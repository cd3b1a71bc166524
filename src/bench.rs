//! Kernel microbenchmarks at the model's real shapes (`cudaenc bench`, `cargo bench`).
//!
//! Each case is a name plus a setup function that allocates its inputs at [`Shapes`] and
//! returns a closure launching the kernel, with the bytes it moves and the flops it does.
//! On cuda: warm-up launches, then `repeats` timed launches (CUDA events, `Gpu::time_ms`),
//! each after an untimed copy over a buffer larger than L2 so every repeat starts cold;
//! the median is reported as ms, GB/s, TFLOP/s and as a fraction of the device-to-device
//! copy bandwidth (the `copy` case, always measured first) and of a large cuBLAS SGEMM
//! (`cublas_sgemm 8192`, measured second; cuda only, "n/a" on emu). On emu: reduced
//! shapes, each case run once, to prove it runs.
//!
//! [`step_bench`] times whole training steps (`GpuEngine::train_step`) at a preset's
//! shape on synthetic batches ([`step_batch`]); `benches/pytorch_reference.py` builds the
//! same batches and model in PyTorch.
//!
//! Adding a case: write `fn my_op(gpu: &Gpu, s: &Shapes) -> Result<Case>` (allocate with
//! [`rand_buf`] / `gpu.zeros`, move the buffers into the closure) and add one line to
//! [`cases`].

use crate::config::{Loss, ModelConfig, OptimConfig};
use crate::device::{ceil_div, Arg, DeviceSlice, Gpu};
use crate::model::params::ParamLayout;
use crate::model::Batch;
use crate::ops;
use anyhow::{bail, Context, Result};

/// The shapes the cases run at.
#[derive(Clone, Copy, Debug)]
pub struct Shapes {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub nh: usize,
    pub f: usize,
    pub v: usize,
    /// Layers of the model whose whole parameter buffer `adamw_update` / `global_norm` run over.
    pub l: usize,
}

impl Shapes {
    /// The model's (the `nanogpt` preset): B = 64 reviews x T = 256 tokens, C = 384, NH = 6,
    /// F = 1536, V = 100277, 6 layers (49.2 M parameters).
    pub const MODEL: Shapes = Shapes { b: 64, t: 256, c: 384, nh: 6, f: 1536, v: 100277, l: 6 };
    /// Small enough for the emulator to run every case in seconds (V and L reduced too).
    pub const EMU: Shapes = Shapes { b: 2, t: 32, c: 384, nh: 6, f: 1536, v: 1000, l: 1 };
    /// Tokens per batch.
    pub fn n(&self) -> usize {
        self.b * self.t
    }
    /// The same number of tokens at twice the length (B/2 x 2T: T = 512 at the model's).
    pub fn long(&self) -> (usize, usize) {
        ((self.b / 2).max(1), 2 * self.t)
    }
    /// The model these shapes describe (CE head), for the parameter count.
    pub fn model(&self) -> ModelConfig {
        ModelConfig { vocab: self.v, d_model: self.c, n_layer: self.l, n_head: self.nh, d_ff: self.f, max_len: 2 * self.t, dropout: 0.1, loss: Loss::Ce, precision: Default::default() }
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
    /// Not measurable on this device (cuBLAS on emu): reported as "n/a".
    pub na: bool,
}

/// A benchmark's name and its setup.
pub type Setup = fn(&Gpu, &Shapes) -> Result<Case>;

/// Every case, in report order. `copy` and `cublas_sgemm 8192` first: the others are
/// shown relative to them (GB/s as % of copy, TFLOP/s as % of the SGEMM).
pub fn cases() -> Vec<(&'static str, Setup)> {
    let kernels: Vec<(&'static str, Setup)> = vec![
        ("copy", copy),
        ("cublas_sgemm 8192", |g, _| cublas_sgemm(g, 8192, 8192, 8192)),
        ("cublas_sgemm qkv", |g, s| cublas_sgemm(g, s.n(), s.c, 3 * s.c)),
        ("cublas_sgemm attn_proj", |g, s| cublas_sgemm(g, s.n(), s.c, s.c)),
        ("cublas_sgemm fc", |g, s| cublas_sgemm(g, s.n(), s.c, s.f)),
        ("cublas_sgemm fc_proj", |g, s| cublas_sgemm(g, s.n(), s.f, s.c)),
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
        ("residual_layernorm_forward", |g, s| residual_layernorm(g, s, true)),
        ("residual_layernorm unfused", |g, s| residual_layernorm(g, s, false)),
        ("residual_layernorm_backward", |g, s| residual_layernorm_backward(g, s, true)),
        ("residual_layernorm_bwd unfused", |g, s| residual_layernorm_backward(g, s, false)),
        ("attention_forward", |g, s| attention_forward(g, s.b, s.t, s.c, s.nh)),
        ("attention_forward long", |g, s| attention_forward(g, s.long().0, s.long().1, s.c, s.nh)),
        ("attention_forward tf32", |g, s| attention_forward_prec(g, s.b, s.t, s.c, s.nh, ops::matmul::Precision::Tf32)),
        ("attention_forward bf16", |g, s| attention_forward_prec(g, s.b, s.t, s.c, s.nh, ops::matmul::Precision::Bf16)),
        ("attention_forward bf16 long", |g, s| attention_forward_prec(g, s.long().0, s.long().1, s.c, s.nh, ops::matmul::Precision::Bf16)),
        ("attention_backward", |g, s| attention_backward(g, s.b, s.t, s.c, s.nh)),
        ("attention_backward long", |g, s| attention_backward(g, s.long().0, s.long().1, s.c, s.nh)),
        ("attention_backward tf32", |g, s| attention_backward_prec(g, s.b, s.t, s.c, s.nh, ops::matmul::Precision::Tf32)),
        ("attention_backward bf16", |g, s| attention_backward_prec(g, s.b, s.t, s.c, s.nh, ops::matmul::Precision::Bf16)),
        ("meanpool_forward", meanpool_forward),
        ("meanpool_backward", meanpool_backward),
        ("softmax_ce_forward", |g, s| loss_case(g, s.b, Loss::Ce, true)),
        ("softmax_ce_backward", |g, s| loss_case(g, s.b, Loss::Ce, false)),
        ("sigmoid_bce_forward", |g, s| loss_case(g, s.b, Loss::Bce, true)),
        ("sigmoid_bce_backward", |g, s| loss_case(g, s.b, Loss::Bce, false)),
        ("embedding_forward", embedding_forward),
        ("embedding_dropout_forward", embedding_dropout_forward),
        ("embedding_backward", embedding_backward),
        ("adamw_update", adamw_update),
        ("adamw_update_tensors", adamw_update_tensors),
        ("adamw_update per tensor", adamw_update_per_tensor),
        ("global_norm", global_norm),
    ];
    kernels.into_iter().chain(tc_cases()).collect()
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
        na: false,
        flops: 0.0,
        run: Box::new(move |g| launch_copy(g, &dst, &src)),
    })
}

fn matmul_forward(gpu: &Gpu, n: usize, ic: usize, oc: usize) -> Result<Case> {
    let (inp, w, b, out) = (rand_buf(gpu, n * ic, 1)?, rand_buf(gpu, oc * ic, 2)?, rand_buf(gpu, oc, 3)?, gpu.zeros(n * oc)?);
    Ok(Case {
        shape: format!("N={n} IC={ic} OC={oc}"),
        bytes: F * (n * ic + oc * ic + oc + n * oc) as f64,
        na: false,
        flops: 2.0 * (n * ic * oc) as f64,
        run: Box::new(move |g| ops::matmul::matmul_forward(g, &out, &inp, &w, Some(&b), n, ic, oc)),
    })
}

fn matmul_backward(gpu: &Gpu, n: usize, ic: usize, oc: usize) -> Result<Case> {
    let (dout, inp, w) = (rand_buf(gpu, n * oc, 1)?, rand_buf(gpu, n * ic, 2)?, rand_buf(gpu, oc * ic, 3)?);
    let (dinp, dw, db) = (gpu.zeros(n * ic)?, gpu.zeros(oc * ic)?, gpu.zeros(oc)?);
    // split-K workspace, allocated once like the model's (its traffic is not counted:
    // bytes is what the op must move, whatever the kernel's scheme)
    let scratch = gpu.zeros(ops::matmul::matmul_backward_scratch_len(n, ic, oc))?;
    let (chunks, _) = ops::matmul::matmul_backward_chunks(n, ic, oc);
    Ok(Case {
        shape: format!("N={n} IC={ic} OC={oc} S={chunks}"),
        // reads dout, inp, weight; writes dinp; dweight and dbias read and written
        bytes: F * (n * oc + n * ic + oc * ic + n * ic + 2 * oc * ic + 2 * oc) as f64,
        na: false,
        flops: 4.0 * (n * ic * oc) as f64 + (n * oc) as f64,
        run: Box::new(move |g| ops::matmul::matmul_backward(g, &dinp, &dw, Some(&db), &scratch, &dout, &inp, &w, n, ic, oc)),
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
        na: false,
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
    let seed = gpu.upload(&[42u64])?;
    elementwise(gpu, s.n() * s.c, 1, 1, 0, move |g, b| ops::dropout::dropout_forward(g, &b[0], &b[1], &seed, 0.1))
}
fn dropout_backward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let seed = gpu.upload(&[42u64])?;
    elementwise(gpu, s.n() * s.c, 1, 1, 0, move |g, b| ops::dropout::dropout_backward(g, &b[0], &b[1], &seed, 0.1))
}

fn layernorm_forward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (n, c) = (s.n(), s.c);
    let (inp, w, b) = (rand_buf(gpu, n * c, 1)?, rand_buf(gpu, c, 2)?, rand_buf(gpu, c, 3)?);
    let (out, mean, rstd) = (gpu.zeros(n * c)?, gpu.zeros(n)?, gpu.zeros(n)?);
    Ok(Case {
        shape: format!("N={n} C={c}"),
        bytes: F * (2 * n * c + 2 * c + 2 * n) as f64,
        na: false,
        flops: 0.0,
        run: Box::new(move |g| ops::layernorm::layernorm_forward(g, &out, &mean, &rstd, &inp, &w, &b, n, c)),
    })
}

fn layernorm_backward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (n, c) = (s.n(), s.c);
    let (dout, inp, w) = (rand_buf(gpu, n * c, 1)?, rand_buf(gpu, n * c, 2)?, rand_buf(gpu, c, 3)?);
    let (mean, rstd) = (gpu.zeros(n)?, rand_buf(gpu, n, 4)?);
    let (dinp, dw, db) = (gpu.zeros(n * c)?, gpu.zeros(c)?, gpu.zeros(c)?);
    let scratch = gpu.zeros(ops::layernorm::layernorm_backward_scratch_len(n, c))?;
    let (chunks, _) = ops::layernorm::layernorm_backward_chunks(n, c);
    Ok(Case {
        shape: format!("N={n} C={c} S={chunks}"),
        // reads dout, inp; dinp read and written; small vectors ignored
        bytes: F * (4 * n * c) as f64,
        na: false,
        flops: 0.0,
        run: Box::new(move |g| {
            ops::layernorm::layernorm_backward(g, &dinp, &dw, &db, &scratch, &dout, &inp, &w, &mean, &rstd, n, c)
        }),
    })
}

/// The model's residual add with the layer norm after it: res = x + dropout(branch) (p 0.1),
/// ln = layernorm(res). `fused`: residual_layernorm_forward, one launch. Otherwise the
/// three launches it replaces (dropout_forward, residual_forward, layernorm_forward), which
/// move 7 N*C floats instead of 4; both rows count the fused kernel's 4 (x and branch read,
/// res and ln written), so their GB/s is the same work per second and compares directly.
fn residual_layernorm(gpu: &Gpu, s: &Shapes, fused: bool) -> Result<Case> {
    let (n, c) = (s.n(), s.c);
    let (x, branch) = (rand_buf(gpu, n * c, 1)?, rand_buf(gpu, n * c, 2)?);
    let (w, b) = (rand_buf(gpu, c, 3)?, rand_buf(gpu, c, 4)?);
    let (res, ln, mean, rstd) = (gpu.zeros(n * c)?, gpu.zeros(n * c)?, gpu.zeros(n)?, gpu.zeros(n)?);
    let branch_drop = gpu.zeros(if fused { 0 } else { n * c })?;
    let (seed, p) = (gpu.upload(&[42u64])?, 0.1);
    Ok(Case {
        shape: format!("N={n} C={c}{}", if fused { "" } else { " 3 launches" }),
        bytes: F * (4 * n * c + 2 * c + 2 * n) as f64,
        na: false,
        flops: 0.0,
        run: Box::new(move |g| {
            if fused {
                return ops::layernorm::residual_layernorm_forward(g, &res, &ln, &mean, &rstd, &x, &branch, &w, &b, &seed, p, n, c);
            }
            ops::dropout::dropout_forward(g, &branch_drop, &branch, &seed, p)?;
            ops::residual::residual_forward(g, &res, &x, &branch_drop)?;
            ops::layernorm::layernorm_forward(g, &ln, &mean, &rstd, &res, &w, &b, n, c)
        }),
    })
}

/// The backward of that layer norm and dropout: dres += layernorm'(dln), dbranch =
/// dropout'(dres). `fused`: residual_layernorm_backward, one pass; otherwise
/// layernorm_backward then dropout_backward (which reads dres again: 6 N*C floats instead
/// of 5). Both rows count the fused pass's 5 (dout and inp read, dres read and written,
/// dbranch written; small vectors ignored), so their GB/s compares the same work.
fn residual_layernorm_backward(gpu: &Gpu, s: &Shapes, fused: bool) -> Result<Case> {
    let (n, c) = (s.n(), s.c);
    let (dout, inp, w) = (rand_buf(gpu, n * c, 1)?, rand_buf(gpu, n * c, 2)?, rand_buf(gpu, c, 3)?);
    let (mean, rstd) = (gpu.zeros(n)?, rand_buf(gpu, n, 4)?);
    let (dres, dbranch, dw, db) = (gpu.zeros(n * c)?, gpu.zeros(n * c)?, gpu.zeros(c)?, gpu.zeros(c)?);
    let scratch = gpu.zeros(ops::layernorm::layernorm_backward_scratch_len(n, c))?;
    let (chunks, _) = ops::layernorm::layernorm_backward_chunks(n, c);
    let (seed, p) = (gpu.upload(&[42u64])?, 0.1);
    Ok(Case {
        shape: format!("N={n} C={c} S={chunks}{}", if fused { "" } else { " 2 launches" }),
        bytes: F * (5 * n * c) as f64,
        na: false,
        flops: 0.0,
        run: Box::new(move |g| {
            use ops::layernorm::{layernorm_backward, residual_layernorm_backward};
            if fused {
                return residual_layernorm_backward(g, &dres, &dbranch, &dw, &db, &scratch, &dout, &inp, &w, &mean, &rstd, &seed, p, n, c);
            }
            layernorm_backward(g, &dres, &dw, &db, &scratch, &dout, &inp, &w, &mean, &rstd, n, c)?;
            ops::dropout::dropout_backward(g, &dbranch, &dres, &seed, p)
        }),
    })
}

/// Token ids as a real batch has them: Zipf-Mandelbrot over ranks, p(r) ~ 1 / (r + 2.7),
/// with rank r = id r (cl100k ids are roughly in merge, i.e. frequency, order). 16 K
/// tokens give about 4-5 K distinct ids, as a batch of IMDB reviews does.
/// `benches/pytorch_reference.py` draws its ids from the same distribution.
pub fn zipf_ids(n: usize, v: usize, seed: u64) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(v);
    let mut acc = 0.0f64;
    for r in 0..v {
        acc += 1.0 / (r as f64 + 2.7);
        cdf.push(acc);
    }
    let mut rng = crate::rng::SplitMix64::new(seed);
    (0..n).map(|_| cdf.partition_point(|&c| c <= rng.uniform() * acc).min(v - 1) as u32).collect()
}

/// A cuBLAS handle on the current context (the one `Gpu::cuda` opened; cuBLAS and our
/// launches share the legacy default stream, so the CUDA events time both). Destroyed on drop.
struct Cublas(cudarc::cublas::sys::cublasHandle_t);

impl Cublas {
    /// A handle whose calls go to `gpu`'s stream (the device's own stream, not the legacy
    /// default stream, which a non-blocking stream does not wait for): ordered with our
    /// launches and timed by the same events.
    fn new(gpu: &Gpu) -> Result<Cublas> {
        let stream = gpu.cuda_stream().ok_or_else(|| anyhow::anyhow!("cublas: not a cuda device"))?;
        // the primary context of device 0, which Gpu::cuda(0) uses: make it current here
        let ctx = cudarc::driver::CudaContext::new(0).map_err(|e| anyhow::anyhow!("cuda: {e:?}"))?;
        ctx.bind_to_thread().map_err(|e| anyhow::anyhow!("cuda: {e:?}"))?;
        let h = cudarc::cublas::result::create_handle().map_err(|e| anyhow::anyhow!("cublas: create handle: {e:?}"))?;
        let handle = Cublas(h); // destroyed on an error below
        unsafe { cudarc::cublas::result::set_stream(handle.0, stream as _) }.map_err(|e| anyhow::anyhow!("cublas: set stream: {e:?}"))?;
        Ok(handle)
    }
}

impl Drop for Cublas {
    fn drop(&mut self) {
        unsafe {
            let _ = cudarc::cublas::result::destroy_handle(self.0);
        }
    }
}

/// cuBLAS SGEMM (default math mode: plain FP32, no TF32) computing what
/// `matmul_forward` does without the bias: out (N, OC) = inp (N, IC) @ W^T. On emu a
/// placeholder reported as "n/a", as where libcublas cannot be loaded.
fn cublas_sgemm(gpu: &Gpu, n: usize, ic: usize, oc: usize) -> Result<Case> {
    let shape = format!("N={n} IC={ic} OC={oc}");
    let (bytes, flops) = (F * (n * ic + oc * ic + n * oc) as f64, 2.0 * (n * ic * oc) as f64);
    if !gpu.is_cuda() {
        return Ok(Case { shape, bytes, flops, run: Box::new(|_| Ok(())), na: true });
    }
    // cudarc loads libcublas on first use and panics when it is missing: look first
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        eprintln!("bench: libcublas (libcublas.so.13) not found on the library path: cuBLAS rows are n/a");
        return Ok(Case { shape, bytes, flops, run: Box::new(|_| Ok(())), na: true });
    }
    let (inp, w, out) = (rand_buf(gpu, n * ic, 1)?, rand_buf(gpu, oc * ic, 2)?, gpu.zeros::<f32>(n * oc)?);
    let handle = Cublas::new(gpu)?;
    let (m_, n_, k_) = (oc as i32, n as i32, ic as i32);
    Ok(Case {
        shape,
        bytes,
        flops,
        na: false,
        run: Box::new(move |_| {
            use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
            let (alpha, beta) = (1.0f32, 0.0f32);
            // row-major out (N,OC) = inp (N,IC) W^T  <=>  column-major out^T (OC,N) = W^T' inp^T
            unsafe {
                cudarc::cublas::result::sgemm(
                    handle.0, CUBLAS_OP_T, CUBLAS_OP_N, m_, n_, k_, &alpha,
                    w.addr() as *const f32, k_, inp.addr() as *const f32, k_, &beta, out.addr() as *mut f32, m_,
                )
            }
            .map_err(|e| anyhow::anyhow!("cublas sgemm: {e:?}"))
        }),
    })
}

fn full_lens(gpu: &Gpu, b: usize, t: usize) -> Result<crate::device::Buf<u32>> {
    gpu.upload(&vec![t as u32; b])
}

/// Every key valid (len = T): the flops below are then exact.
fn attention_forward(gpu: &Gpu, b: usize, t: usize, c: usize, nh: usize) -> Result<Case> {
    let (qkv, lens) = (rand_buf(gpu, b * t * 3 * c, 1)?, full_lens(gpu, b, t)?);
    let (out, lse) = (gpu.zeros::<f32>(b * t * c)?, gpu.zeros::<f32>(b * nh * t)?);
    Ok(Case {
        shape: format!("B={b} T={t} NH={nh} C={c}"),
        // reads qkv; writes out and the log-sum-exp lse (fused: no (T,T) matrix)
        bytes: F * (b * t * 3 * c + b * t * c + b * nh * t) as f64,
        // q.k and p.v: 2 T^2 HS multiply-adds per (b, head)
        flops: 4.0 * (b * t * t * c) as f64,
        na: false,
        run: Box::new(move |g| ops::attention::attention_forward(g, &out, &lse, &qkv, &lens, b, t, c, nh)),
    })
}

/// The tensor-core forward (`--precision tf32|bf16`), same work and bytes as the fp32 row.
fn attention_forward_prec(gpu: &Gpu, b: usize, t: usize, c: usize, nh: usize, prec: ops::matmul::Precision) -> Result<Case> {
    let mut case = attention_forward(gpu, b, t, c, nh)?;
    let (qkv, lens) = (rand_buf(gpu, b * t * 3 * c, 1)?, full_lens(gpu, b, t)?);
    let (out, lse) = (gpu.zeros::<f32>(b * t * c)?, gpu.zeros::<f32>(b * nh * t)?);
    case.run = Box::new(move |g| ops::attention::attention_forward_prec(g, prec, &out, &lse, &qkv, &lens, b, t, c, nh));
    Ok(case)
}

fn attention_backward(gpu: &Gpu, b: usize, t: usize, c: usize, nh: usize) -> Result<Case> {
    attention_backward_prec(gpu, b, t, c, nh, ops::matmul::Precision::Fp32)
}

/// The backward in a precision (tf32/bf16: the tensor-core kernels), from the same
/// precision's forward; the same work and bytes as the fp32 row.
fn attention_backward_prec(gpu: &Gpu, b: usize, t: usize, c: usize, nh: usize, prec: ops::matmul::Precision) -> Result<Case> {
    let (qkv, dout, lens) = (rand_buf(gpu, b * t * 3 * c, 1)?, rand_buf(gpu, b * t * c, 2)?, full_lens(gpu, b, t)?);
    let (out, lse, dqkv) = (gpu.zeros::<f32>(b * t * c)?, gpu.zeros::<f32>(b * nh * t)?, gpu.zeros::<f32>(b * t * 3 * c)?);
    ops::attention::attention_forward_prec(gpu, prec, &out, &lse, &qkv, &lens, b, t, c, nh)?; // real out and lse
    Ok(Case {
        shape: format!("B={b} T={t} NH={nh} C={c}"),
        // reads dout, qkv, out, lse; writes dqkv (three launches: each input counted once)
        bytes: F * (b * t * c + b * t * 3 * c + b * t * c + b * nh * t + b * t * 3 * c) as f64,
        // s = q k^T (recomputed), dp = do v^T, dv = p^T do, dq = ds k, dk = ds^T q: the
        // useful work (the dk/dv and dq passes each recompute s and dp on top of this)
        flops: 10.0 * (b * t * t * c) as f64,
        na: false,
        run: Box::new(move |g| ops::attention::attention_backward_prec(g, prec, &dqkv, &dout, &qkv, &out, &lse, &lens, b, t, c, nh)),
    })
}

fn meanpool_forward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (b, t, c) = (s.b, s.t, s.c);
    let (inp, lens, out) = (rand_buf(gpu, b * t * c, 1)?, full_lens(gpu, b, t)?, gpu.zeros::<f32>(b * c)?);
    Ok(Case {
        shape: format!("B={b} T={t} C={c}"),
        bytes: F * (b * t * c + b * c + b) as f64,
        flops: 0.0,
        na: false,
        run: Box::new(move |g| ops::meanpool::meanpool_forward(g, &out, &inp, &lens, b, t, c)),
    })
}

fn meanpool_backward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (b, t, c) = (s.b, s.t, s.c);
    let (dout, lens, dinp) = (rand_buf(gpu, b * c, 1)?, full_lens(gpu, b, t)?, gpu.zeros::<f32>(b * t * c)?);
    Ok(Case {
        shape: format!("B={b} T={t} C={c}"),
        bytes: F * (b * c + b * t * c + b) as f64,
        flops: 0.0,
        na: false,
        run: Box::new(move |g| ops::meanpool::meanpool_backward(g, &dinp, &dout, &lens, b, t, c)),
    })
}

/// The loss kernels, launched directly as their launchers do (grid ceil(B/256) x 256):
/// the forward launchers also download the losses, which is not kernel time.
fn loss_case(gpu: &Gpu, b: usize, loss: Loss, forward: bool) -> Result<Case> {
    const BLOCK: usize = 256; // src/ops/loss.rs
    let k = loss.outputs();
    let labels = gpu.upload(&(0..b).map(|i| (i % 2) as u8).collect::<Vec<u8>>())?;
    let (logits, probs, losses, dlogits) = (rand_buf(gpu, b * k, 1)?, gpu.zeros::<f32>(b * k)?, gpu.zeros::<f32>(b)?, gpu.zeros::<f32>(b * k)?);
    let grid = ceil_div(b, BLOCK);
    let bytes = if forward { F * (b * k + b * k + b) as f64 + b as f64 } else { F * (2 * b * k) as f64 + b as f64 };
    Ok(Case {
        shape: format!("B={b} K={k}"),
        bytes,
        flops: 0.0,
        na: false,
        run: Box::new(move |g| {
            let (name, args): (&str, Vec<Arg>) = match (loss, forward) {
                (Loss::Ce, true) => ("softmax_ce_forward", vec![losses.arg(), probs.arg(), logits.arg(), labels.arg(), b.into(), k.into(), 0.0f32.into()]),
                (Loss::Ce, false) => ("softmax_ce_backward", vec![dlogits.arg(), probs.arg(), labels.arg(), b.into(), k.into(), 0.0f32.into()]),
                (Loss::Bce, true) => ("sigmoid_bce_forward", vec![losses.arg(), probs.arg(), logits.arg(), labels.arg(), b.into(), 0.0f32.into()]),
                (Loss::Bce, false) => ("sigmoid_bce_backward", vec![dlogits.arg(), probs.arg(), labels.arg(), b.into(), 0.0f32.into()]),
            };
            g.launch(name, grid, BLOCK as u32, 0, &args)
        }),
    })
}

fn embedding_forward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (n, c, v) = (s.n(), s.c, s.v);
    let ids = gpu.upload(&zipf_ids(n, v, 7))?;
    let (wte, out) = (rand_buf(gpu, v * c, 1)?, gpu.zeros::<f32>(n * c)?);
    Ok(Case {
        shape: format!("N={n} C={c} V={v}"),
        // reads ids and one wte row per token (repeats counted); writes out
        bytes: F * (2 * n * c + n) as f64,
        flops: 0.0,
        na: false,
        run: Box::new(move |g| ops::embedding::embedding_forward(g, &out, &ids, &wte, n, c)),
    })
}

/// The model's first launch: the gather and the embedding dropout in one pass (the
/// unfused pair moves 2 N*C floats more: out written by the gather, read by dropout).
fn embedding_dropout_forward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (n, c, v) = (s.n(), s.c, s.v);
    let ids = gpu.upload(&zipf_ids(n, v, 7))?;
    let (wte, out, seed) = (rand_buf(gpu, v * c, 1)?, gpu.zeros::<f32>(n * c)?, gpu.upload(&[42u64])?);
    Ok(Case {
        shape: format!("N={n} C={c} V={v} p=0.1"),
        bytes: F * (2 * n * c + n) as f64,
        flops: 0.0,
        na: false,
        run: Box::new(move |g| ops::embedding::embedding_dropout_forward(g, &out, &ids, &wte, &seed, 0.1, n, c)),
    })
}

fn embedding_backward(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (n, c, v) = (s.n(), s.c, s.v);
    let host_ids = zipf_ids(n, v, 7);
    let (pos, starts, um) = ops::embedding::upload_embedding_order(gpu, &host_ids, &vec![s.t as u32; s.b], s.t)?;
    let u = starts.len();
    let (ids, dout, dwte) = (gpu.upload(&host_ids)?, rand_buf(gpu, n * c, 1)?, gpu.zeros::<f32>(v * c)?);
    Ok(Case {
        shape: format!("N={n} C={c} V={v} U={u}"),
        // reads dout, ids, pos, starts; reads and writes the U touched rows of dwte
        bytes: F * (n * c + 2 * u * c + 2 * n + u) as f64,
        flops: 0.0,
        na: false,
        run: Box::new(move |g| ops::embedding::embedding_backward(g, &dwte, &dout, &ids, &pos, &starts, &um, n, c)),
    })
}

/// Parameters, gradients, m and v over the whole parameter buffer of `s.model()`.
fn adamw_buffers(gpu: &Gpu, s: &Shapes) -> Result<(ParamLayout, [crate::device::Buf<f32>; 4])> {
    let layout = ParamLayout::new(&s.model());
    let n = layout.total;
    let bufs = [rand_buf(gpu, n, 1)?, gpu.zeros(n)?, gpu.zeros(n)?, rand_buf(gpu, n, 2)?];
    Ok((layout, bufs))
}

/// One launch over the whole buffer (weight decay everywhere).
fn adamw_update(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (layout, [p, m, v, g]) = adamw_buffers(gpu, s)?;
    let n = layout.total;
    Ok(Case {
        shape: format!("N={n} (L={} V={})", s.l, s.v),
        // reads p, m, v, g; writes p, m, v
        bytes: F * (7 * n) as f64,
        flops: 0.0,
        na: false,
        run: Box::new(move |gpu| ops::adamw::adamw_update(gpu, &p, &m, &v, &g, 1e-4, 0.9, 0.999, 1e-8, 0.1, 1.0, 1)),
    })
}

/// As `GpuModel::update` does it: one launch over the whole buffer, decay per tensor from
/// the layout's table.
fn adamw_update_tensors(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (layout, [p, m, v, g]) = adamw_buffers(gpu, s)?;
    let n = layout.total;
    let (ends, decay) = ops::adamw::adamw_table(layout.tensors.iter().map(|t| (t.size, t.decay)));
    let (ends, decay, norm) = (gpu.upload(&ends)?, gpu.upload(&decay)?, gpu.upload(&[0.5f32])?);
    let sched = gpu.upload(&ops::adamw::adamw_schedule(1e-4, 0.9, 0.999, 1)?)?;
    Ok(Case {
        shape: format!("N={n}, {} tensors", layout.tensors.len()),
        bytes: F * (7 * n) as f64,
        flops: 0.0,
        na: false,
        run: Box::new(move |gpu| {
            ops::adamw::adamw_update_tensors(gpu, &p, &m, &v, &g, &ends, &decay, &norm, 1.0, &sched, 0.9, 0.999, 1e-8, 0.1)
        }),
    })
}

/// The model's update before `adamw_update_tensors`: one launch per named tensor (17),
/// decay per the layout.
fn adamw_update_per_tensor(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let (layout, [p, m, v, g]) = adamw_buffers(gpu, s)?;
    let n = layout.total;
    Ok(Case {
        shape: format!("N={n} in {} launches", layout.tensors.len()),
        bytes: F * (7 * n) as f64,
        flops: 0.0,
        na: false,
        run: Box::new(move |gpu| {
            for t in &layout.tensors {
                let wd = if t.decay { 0.1 } else { 0.0 };
                let (pv, mv, vv, gv) = (p.view(t.offset, t.size), m.view(t.offset, t.size), v.view(t.offset, t.size), g.view(t.offset, t.size));
                ops::adamw::adamw_update(gpu, &pv, &mv, &vv, &gv, 1e-4, 0.9, 0.999, 1e-8, wd, 1.0, 1)?;
            }
            Ok(())
        }),
    })
}

fn global_norm(gpu: &Gpu, s: &Shapes) -> Result<Case> {
    let n = ParamLayout::new(&s.model()).total;
    let grads = rand_buf(gpu, n, 1)?;
    let (out, scratch) = (gpu.zeros::<f32>(1)?, gpu.zeros::<f32>(ops::gradnorm::GLOBAL_NORM_MAX_BLOCKS)?);
    Ok(Case {
        shape: format!("N={n}"),
        bytes: F * n as f64,
        flops: 0.0, // 2 per element: memory-bound
        na: false,
        run: Box::new(move |g| ops::gradnorm::global_norm(g, &out, &scratch, &grads)),
    })
}

/// One measured case.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Result1 {
    pub name: String,
    pub shape: String,
    pub ms: f64,
    pub gbps: f64,
    pub tflops: f64,
    /// Not measured on this device (cuBLAS on emu); the numbers are 0.
    pub na: bool,
}

/// Run the cases whose name contains `filter` (all if None; `copy` and `cublas_sgemm
/// 8192` always run, as the references) and print a table, then one line
/// `BENCHJSON [...]` with every result. cuda: `repeats` timed runs each (median); emu:
/// one run at [`Shapes::EMU`] unless `shapes` is given.
pub fn run(gpu: &Gpu, filter: Option<&str>, repeats: usize, shapes: Option<Shapes>) -> Result<Vec<Result1>> {
    run_cases(gpu, cases(), filter, repeats, shapes)
}

/// [`run`] over a given case list. A case whose name starts with `cublas` (a library
/// reference) that fails to set up or to run is an `n/a` row with the error; any other
/// failing case is an error naming it.
pub fn run_cases(gpu: &Gpu, cases: Vec<(&'static str, Setup)>, filter: Option<&str>, repeats: usize, shapes: Option<Shapes>) -> Result<Vec<Result1>> {
    let cuda = gpu.is_cuda();
    let s = shapes.unwrap_or(if cuda { Shapes::MODEL } else { Shapes::EMU });
    let (warmup, repeats) = if cuda { (3, repeats.max(1)) } else { (0, 1) };
    // untimed copy over 2 x 128 MiB between repeats: evicts L2 (50 MB on H100) so every
    // timed launch reads its inputs from device memory
    let flush = if cuda { Some((gpu.zeros::<f32>(32 << 20)?, gpu.zeros::<f32>(32 << 20)?)) } else { None };
    println!("device {} shapes B={} T={} C={} NH={} F={} V={} L={}; {} repeats{}", gpu.name(), s.b, s.t, s.c, s.nh, s.f, s.v, s.l, repeats,
        if cuda { ", median, L2 flushed before each" } else { " (emu: proves each case runs; timings mean nothing)" });
    println!("{:<30} {:<30} {:>9} {:>8} {:>8} {:>6} {:>6}", "case", "shape", "ms", "GB/s", "TFLOP/s", "%copy", "%sgemm");
    let mut results: Vec<Result1> = Vec::new();
    let (mut copy_gbps, mut sgemm_tflops) = (None, None);
    const REFS: [&str; 2] = ["copy", "cublas_sgemm 8192"];
    for (name, setup) in cases {
        if !REFS.contains(&name) && filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let na_row = |results: &mut Vec<Result1>, shape: String, why: &str| {
            println!("{name:<30} {shape:<30} {:>9} {:>8} {:>8} {:>6} {:>6} {why}", "n/a", "n/a", "n/a", "", "");
            results.push(Result1 { name: name.into(), shape, ms: 0.0, gbps: 0.0, tflops: 0.0, na: true });
        };
        // a library reference (cuBLAS) that fails is an n/a row, never the end of the table
        let library = name.starts_with("cublas");
        let case = match setup(gpu, &s) {
            Ok(c) => c,
            Err(e) if library => {
                na_row(&mut results, String::new(), &format!("({e:#})"));
                continue;
            }
            Err(e) => return Err(e.context(format!("bench {name}: setup"))),
        };
        if case.na {
            na_row(&mut results, case.shape, "");
            continue;
        }
        let timed = (|| -> Result<Vec<f64>> {
            for _ in 0..warmup {
                (case.run)(gpu)?;
            }
            let mut times = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                if let Some((a, b)) = &flush {
                    launch_copy(gpu, a, b)?;
                }
                times.push(gpu.time_ms(|| (case.run)(gpu))?);
            }
            gpu.synchronize()?;
            Ok(times)
        })();
        drop(case.run); // free the case's buffers before the next one allocates
        let mut times = match timed {
            Ok(t) => t,
            Err(e) if library => {
                na_row(&mut results, case.shape, &format!("({e:#})"));
                continue;
            }
            Err(e) => return Err(e.context(format!("bench {name}"))),
        };
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        let gbps = case.bytes / (ms * 1e-3) / 1e9;
        let tflops = case.flops / (ms * 1e-3) / 1e12;
        match name {
            "copy" => copy_gbps = Some(gbps),
            "cublas_sgemm 8192" => sgemm_tflops = Some(tflops),
            _ => {}
        }
        let pct_copy = copy_gbps.map_or(String::new(), |c| format!("{:.0}%", 100.0 * gbps / c));
        let compute = case.flops > 0.0;
        let pct_sgemm = match sgemm_tflops {
            Some(r) if compute => format!("{:.0}%", 100.0 * tflops / r),
            _ => String::new(),
        };
        let tf = if compute { format!("{tflops:.2}") } else { "-".into() };
        println!("{name:<30} {:<30} {ms:>9.4} {gbps:>8.1} {tf:>8} {pct_copy:>6} {pct_sgemm:>6}", case.shape);
        results.push(Result1 { name: name.into(), shape: case.shape, ms, gbps, tflops, na: false });
    }
    print_tc_vs_cublas(&results);
    println!("BENCHJSON {}", serde_json::to_string(&results)?);
    Ok(results)
}

/// One preset's shape for [`step_bench`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepResult {
    pub preset: String,
    pub loss: String,
    pub b: usize,
    pub t: usize,
    pub params: usize,
    pub steps: usize,
    /// Median and fastest wall-clock time of one `train_step`, device synchronized.
    pub ms_median: f64,
    pub ms_min: f64,
    /// B x T positions (padding included) per second, at the median.
    pub tokens_per_s: f64,
    /// Valid (unpadded) tokens per second, at the median.
    pub valid_tokens_per_s: f64,
    /// Seconds for one epoch of the 25,000 IMDB training reviews at this shape: ceil(25000 / B)
    /// steps at the median (a real epoch mixes lengths up to T).
    pub epoch_s_est: f64,
}

/// Review `i` of a synthetic batch at length T has `T - (i * 7919) mod (3T/4)` valid
/// tokens (between T/4 + 1 and T; the first is full length). Same formula in
/// `benches/pytorch_reference.py`.
pub fn step_len(i: usize, t: usize) -> usize {
    let span = (3 * t / 4).max(1);
    t - (i * 7919) % span
}

/// A synthetic batch: B reviews padded to T, lengths [`step_len`], ids [`zipf_ids`]
/// (padding 0), labels alternating 0, 1.
pub fn step_batch(b: usize, t: usize, vocab: usize, seed: u64) -> Batch {
    let mut ids = vec![0u32; b * t];
    let lens: Vec<u32> = (0..b).map(|i| step_len(i, t) as u32).collect();
    let draws = zipf_ids(b * t, vocab, seed);
    for i in 0..b {
        let l = lens[i] as usize;
        ids[i * t..i * t + l].copy_from_slice(&draws[i * t..i * t + l]);
    }
    Batch { ids, lens, labels: (0..b).map(|i| (i % 2) as u8).collect(), batch_size: b, seq_len: t }
}

/// The model of a training preset (`gpu`, `nanogpt`, ...) at vocabulary `vocab`, max length T.
pub fn preset_model(preset: crate::cli::setup::Preset, vocab: usize, t: usize, loss: Loss) -> ModelConfig {
    let h = preset.hyper();
    ModelConfig { vocab, d_model: h.d_model, n_layer: h.n_layer, n_head: h.n_head, d_ff: h.d_ff, max_len: t, dropout: h.dropout, loss, precision: Default::default() }
}

/// Time `steps` training steps as the trainer runs them (`GpuEngine::queue_step`: forward,
/// backward, norm, statistics summed on the device, clip, AdamW, with the step's host
/// work: batch upload, embedding order; the statistics are read back once at the end) of
/// `cfg` at B x T on `gpu`, after `warmup` untimed steps; four synthetic batches in turn.
/// Each step is timed on the wall clock up to a device synchronize.
/// `graphs`: through the CUDA graph path (`GpuEngine::use_graphs`; every batch has the
/// same shape, so step 1 runs directly, step 2 is captured, the rest replay; warm up
/// at least 2 steps to time replays only); an error if no step replayed.
#[allow(clippy::too_many_arguments)]
pub fn step_bench(gpu: Gpu, label: &str, cfg: &ModelConfig, b: usize, t: usize, steps: usize, warmup: usize, graphs: bool) -> Result<StepResult> {
    let batches: Vec<Batch> = (0..4).map(|i| step_batch(b, t, cfg.vocab, 100 + i)).collect();
    let mut engine = crate::model::gpu::GpuEngine::new(gpu, cfg, &OptimConfig::default(), 1, 1)
        .with_context(|| format!("step bench {label}: building the model"))?;
    engine.use_graphs(graphs);
    let params = engine.model.layout.total;
    use crate::train::engine::Engine;
    let mut times = Vec::with_capacity(steps);
    let mut totals = crate::train::engine::StepTotals::default();
    for i in 0..warmup + steps.max(1) {
        let t0 = std::time::Instant::now();
        engine.queue_step(&batches[i % 4], 1e-4, i as u64 + 1, &mut totals).with_context(|| format!("step bench {label}: step {}", i + 1))?;
        engine.gpu.synchronize()?;
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    engine.flush_totals(&mut totals)?;
    if graphs && engine.graph_counts().replayed == 0 {
        bail!("step bench {label}: no step replayed a captured graph ({:?})", engine.graph_counts());
    }
    if let Some(bad) = totals.nonfinite {
        bail!("step bench {label}: step {} gave loss {} and gradient norm {}", bad.step, bad.loss, bad.grad_norm);
    }
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    let valid: usize = batches.iter().map(|x| x.valid_tokens()).sum::<usize>() / batches.len();
    Ok(StepResult {
        preset: label.into(),
        loss: cfg.loss.name().into(),
        b,
        t,
        params,
        steps: times.len(),
        ms_median: ms,
        ms_min: times[0],
        tokens_per_s: (b * t) as f64 / (ms * 1e-3),
        valid_tokens_per_s: valid as f64 / (ms * 1e-3),
        epoch_s_est: 25000usize.div_ceil(b) as f64 * ms * 1e-3,
    })
}

/// Print the step results as a table, then one line `STEPJSON [...]`.
pub fn print_steps(device: &str, results: &[StepResult]) -> Result<()> {
    println!("training step on {device} (median wall-clock ms per queued training step, device synchronized)");
    println!("{:<10} {:>4} {:>4} {:>5} {:>11} {:>9} {:>9} {:>12} {:>12} {:>9}", "preset", "loss", "B", "T", "params", "ms", "ms min", "tok/s", "valid tok/s", "epoch s");
    for r in results {
        println!(
            "{:<10} {:>4} {:>4} {:>5} {:>11} {:>9.2} {:>9.2} {:>12.0} {:>12.0} {:>9.1}",
            r.preset, r.loss, r.b, r.t, r.params, r.ms_median, r.ms_min, r.tokens_per_s, r.valid_tokens_per_s, r.epoch_s_est
        );
    }
    println!("STEPJSON {}", serde_json::to_string(results)?);
    Ok(())
}

// ---- tensor-core GEMMs against cuBLAS at the same precision ---------------------------

/// A preset's linear layers, (name, IC, OC, rows): `rows` false is the head (N = B rows).
fn preset_gemms(preset: &str) -> [(&'static str, usize, usize, bool); 5] {
    let (c, f) = if preset == "gpu" { (256, 1024) } else { (384, 1536) };
    [("qkv", c, 3 * c, true), ("attn_proj", c, c, true), ("fc", c, f, true), ("fc_proj", f, c, true), ("head", c, 2, false)]
}

/// Shape (N, IC, OC) of `preset`'s GEMM `gemm` (see [`preset_gemms`]) at `s`'s tokens.
fn gemm_shape(s: &Shapes, preset: &str, gemm: &str) -> (usize, usize, usize) {
    let &(_, ic, oc, rows) = preset_gemms(preset).iter().find(|g| g.0 == gemm).expect("a known GEMM");
    (if rows { s.n() } else { s.b }, ic, oc)
}

/// `matmul_forward_prec` (backward: `matmul_backward_prec`, dinp + dweight + dbias) at
/// `preset`'s GEMM `gemm` in `prec`; flops and bytes as the fp32 rows count them.
fn tc_case(gpu: &Gpu, s: &Shapes, preset: &str, gemm: &str, prec: ops::matmul::Precision, backward: bool) -> Result<Case> {
    let (n, ic, oc) = gemm_shape(s, preset, gemm);
    let mut case = if backward { matmul_backward(gpu, n, ic, oc)? } else { matmul_forward(gpu, n, ic, oc)? };
    let (inp, w, b, dout) = (rand_buf(gpu, n * ic, 1)?, rand_buf(gpu, oc * ic, 2)?, rand_buf(gpu, oc, 3)?, rand_buf(gpu, n * oc, 4)?);
    let (out, dinp, dw) = (gpu.zeros::<f32>(n * oc)?, gpu.zeros::<f32>(n * ic)?, gpu.zeros::<f32>(oc * ic)?);
    let scratch = gpu.zeros::<f32>(ops::matmul::matmul_backward_scratch_len(n, ic, oc))?;
    case.run = if backward {
        Box::new(move |g| ops::matmul::matmul_backward_prec(g, prec, &dinp, &dw, Some(&b), &scratch, &dout, &inp, &w, n, ic, oc))
    } else {
        Box::new(move |g| ops::matmul::matmul_forward_prec(g, prec, &out, &inp, &w, Some(&b), n, ic, oc))
    };
    Ok(case)
}

/// cuBLAS `cublasGemmEx` doing what [`tc_case`] does at the same shape and precision:
/// forward out = inp W^T (+ nothing: cuBLAS adds no bias); backward dinp = dout W and
/// dweight += dout^T inp, two calls (no dbias). TF32: f32 buffers, CUBLAS_COMPUTE_32F_FAST_TF32;
/// bf16: bf16 copies of the inputs (converted once, untimed, as an autocast framework keeps
/// them), f32 outputs, CUBLAS_COMPUTE_32F. "n/a" on emu, without libcublas, or when cuBLAS
/// refuses the call (the error is printed; the benchmark goes on).
fn cublas_gemm_ex(gpu: &Gpu, s: &Shapes, preset: &str, gemm: &str, prec: ops::matmul::Precision, backward: bool) -> Result<Case> {
    use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t::*, cudaDataType};
    let (n, ic, oc) = gemm_shape(s, preset, gemm);
    let shape = format!("N={n} IC={ic} OC={oc}");
    let flops = if backward { 4.0 } else { 2.0 } * (n * ic * oc) as f64;
    let bytes = F * if backward { (n * oc + 2 * n * ic + 3 * oc * ic) as f64 } else { (n * ic + oc * ic + n * oc) as f64 };
    let na = || Ok(Case { shape: shape.clone(), bytes, flops, run: Box::new(|_| Ok(())), na: true });
    if !gpu.is_cuda() {
        return na();
    }
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        eprintln!("bench: libcublas not found on the library path: cuBLAS rows are n/a");
        return na();
    }
    let bf16 = prec == ops::matmul::Precision::Bf16;
    // inputs: f32 (tf32) or bf16 copies; outputs f32
    let input = |len: usize, seed: u64| -> Result<crate::device::Buf<u16>> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let host: Vec<u16> = (0..len).map(|_| half::bf16::from_f32(rng.normal(1.0) as f32).to_bits()).collect();
        gpu.upload(&host)
    };
    let (inp32, w32, dout32) = (rand_buf(gpu, n * ic, 1)?, rand_buf(gpu, oc * ic, 2)?, rand_buf(gpu, n * oc, 4)?);
    let (inp16, w16, dout16) = if bf16 { (input(n * ic, 1)?, input(oc * ic, 2)?, input(n * oc, 4)?) } else { (gpu.zeros(1)?, gpu.zeros(1)?, gpu.zeros(1)?) };
    let addr = |a32: &crate::device::Buf<f32>, a16: &crate::device::Buf<u16>| if bf16 { a16.addr() } else { a32.addr() };
    let (inp, w, dout) = (addr(&inp32, &inp16), addr(&w32, &w16), addr(&dout32, &dout16));
    let (out, dinp, dw) = (gpu.zeros::<f32>(n * oc)?, gpu.zeros::<f32>(n * ic)?, gpu.zeros::<f32>(oc * ic)?);
    let in_type = if bf16 { cudaDataType::CUDA_R_16BF } else { cudaDataType::CUDA_R_32F };
    let compute = if bf16 { cublasComputeType_t::CUBLAS_COMPUTE_32F } else { cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32 };
    let handle = Cublas::new(gpu)?;
    let (n_, ic_, oc_) = (n as i32, ic as i32, oc as i32);
    // row-major X (r, c) is column-major X^T (c, r) with leading dimension c
    let gemm_ex = move |ta, tb, m: i32, nn: i32, k: i32, a: u64, lda: i32, b: u64, ldb: i32, beta: f32, c: u64, ldc: i32| {
        let alpha = 1.0f32;
        unsafe {
            cudarc::cublas::result::gemm_ex(
                handle.0, ta, tb, m, nn, k, &alpha as *const f32 as *const _, a as *const _, in_type, lda, b as *const _, in_type, ldb,
                &beta as *const f32 as *const _, c as *mut _, cudaDataType::CUDA_R_32F, ldc, compute, cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .map_err(|e| anyhow::anyhow!("cublasGemmEx {prec}: {e:?}"))
    };
    let run = move || -> Result<()> {
        if backward {
            // dinp^T (IC, N) = W^T (IC, OC) dout^T (OC, N)
            gemm_ex(CUBLAS_OP_N, CUBLAS_OP_N, ic_, n_, oc_, w, ic_, dout, oc_, 0.0, dinp.addr(), ic_)?;
            // dweight^T (IC, OC) += inp^T (IC, N) dout (N, OC)
            gemm_ex(CUBLAS_OP_N, CUBLAS_OP_T, ic_, oc_, n_, inp, ic_, dout, oc_, 1.0, dw.addr(), ic_)
        } else {
            // out^T (OC, N) = W (OC, IC) inp^T (IC, N)
            gemm_ex(CUBLAS_OP_T, CUBLAS_OP_N, oc_, n_, ic_, w, ic_, inp, ic_, 0.0, out.addr(), oc_)
        }
    };
    // one trial call: a refusal (an unsupported type on this GPU) is an n/a row, not an abort
    if let Err(e) = run().and_then(|_| gpu.synchronize()) {
        eprintln!("bench: cuBLAS {prec} {preset}.{gemm}: {e:#}: n/a");
        return na();
    }
    let keep = (inp32, w32, dout32, inp16, w16, dout16);
    Ok(Case {
        shape,
        bytes,
        flops,
        na: false,
        run: Box::new(move |_| {
            let _ = &keep;
            run()
        }),
    })
}

/// One row per (precision, direction) of a preset's GEMM: ours then cuBLAS's.
macro_rules! tc_rows {
    ($preset:literal, $gemm:literal) => {
        [
            (concat!("tc_tf32 fwd ", $preset, ".", $gemm), (|g, s| tc_case(g, s, $preset, $gemm, ops::matmul::Precision::Tf32, false)) as Setup),
            (concat!("cublas_tf32 fwd ", $preset, ".", $gemm), |g, s| cublas_gemm_ex(g, s, $preset, $gemm, ops::matmul::Precision::Tf32, false)),
            (concat!("tc_bf16 fwd ", $preset, ".", $gemm), |g, s| tc_case(g, s, $preset, $gemm, ops::matmul::Precision::Bf16, false)),
            (concat!("cublas_bf16 fwd ", $preset, ".", $gemm), |g, s| cublas_gemm_ex(g, s, $preset, $gemm, ops::matmul::Precision::Bf16, false)),
            (concat!("tc_tf32 bwd ", $preset, ".", $gemm), |g, s| tc_case(g, s, $preset, $gemm, ops::matmul::Precision::Tf32, true)),
            (concat!("cublas_tf32 bwd ", $preset, ".", $gemm), |g, s| cublas_gemm_ex(g, s, $preset, $gemm, ops::matmul::Precision::Tf32, true)),
            (concat!("tc_bf16 bwd ", $preset, ".", $gemm), |g, s| tc_case(g, s, $preset, $gemm, ops::matmul::Precision::Bf16, true)),
            (concat!("cublas_bf16 bwd ", $preset, ".", $gemm), |g, s| cublas_gemm_ex(g, s, $preset, $gemm, ops::matmul::Precision::Bf16, true)),
        ]
    };
}

/// The tensor-core rows: every linear layer of the `gpu` and `nanogpt` presets at B x T
/// tokens, forward and backward, TF32 and bf16, each followed by cuBLAS at the same
/// precision and shape ([`print_tc_vs_cublas`] sets them side by side).
pub fn tc_cases() -> Vec<(&'static str, Setup)> {
    [
        tc_rows!("gpu", "qkv"), tc_rows!("gpu", "attn_proj"), tc_rows!("gpu", "fc"), tc_rows!("gpu", "fc_proj"), tc_rows!("gpu", "head"),
        tc_rows!("nanogpt", "qkv"), tc_rows!("nanogpt", "attn_proj"), tc_rows!("nanogpt", "fc"), tc_rows!("nanogpt", "fc_proj"),
        tc_rows!("nanogpt", "head"),
    ]
    .concat()
}

/// After the table: each tensor-core row's TFLOP/s next to cuBLAS's at the same precision,
/// shape and direction, and the ratio (target: >= 70%). Rows without both numbers say n/a.
pub fn print_tc_vs_cublas(results: &[Result1]) {
    let ours: Vec<&Result1> = results.iter().filter(|r| r.name.starts_with("tc_")).collect();
    if ours.is_empty() {
        return;
    }
    println!("tensor-core GEMMs vs cuBLAS (same precision, shape, direction; target >= 70%)");
    println!("{:<30} {:<26} {:>9} {:>9} {:>8}", "case", "shape", "TFLOP/s", "cuBLAS", "%cuBLAS");
    for r in ours {
        let twin = format!("cublas_{}", &r.name[3..]);
        let c = results.iter().find(|c| c.name == twin);
        let (cub, pct) = match c {
            Some(c) if !c.na && !r.na && c.tflops > 0.0 => (format!("{:.2}", c.tflops), format!("{:.0}%", 100.0 * r.tflops / c.tflops)),
            _ => ("n/a".into(), "n/a".into()),
        };
        println!("{:<30} {:<26} {:>9.2} {:>9} {:>8}", r.name, r.shape, r.tflops, cub, pct);
    }
}
