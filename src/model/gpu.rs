//! The classifier on a [`Gpu`] (cuda or emu): every step a kernel launch, sequenced by
//! hand like `reference::model` (function for function, same order, same names).
//!
//! Device memory, allocated once: parameters, gradients and the AdamW moments `m`, `v`
//! (one buffer each, in the layout of `model::params`; named tensors are views), and the
//! activations for the largest (B, T) seen so far (grown, never shrunk, when a batch is
//! larger). `GpuEngine` drives it through the trainer's [`Engine`] trait.
//!
//! Determinism: every kernel in the step is deterministic (no float atomics whose order
//! varies; embedding backward sums in the host-built order), so two runs of the same
//! steps on the same device are bit-identical.

use anyhow::{ensure, Result};

use crate::config::{Loss, ModelConfig, OptimConfig};
use crate::device::{Buf, Gpu, Staging, StepGraph, View};
use crate::model::params::{idx, init_params, ParamLayout};
use crate::model::Batch;
use crate::ops::adamw::{adamw_schedule, adamw_table, adamw_update_tensors};
use crate::ops::attention::{attention_backward_prec, attention_forward_prec};
use crate::ops::embedding::{embedding_backward, embedding_dropout_forward, embedding_order_parts};
use crate::ops::gelu::{gelu_backward, gelu_forward};
use crate::ops::gradnorm::{global_norm, GLOBAL_NORM_MAX_BLOCKS};
use crate::ops::layernorm::{layernorm_backward_scratch_len, layernorm_forward, residual_layernorm_backward, residual_layernorm_forward};
use crate::ops::loss::{mean_loss, sigmoid_bce_backward, sigmoid_bce_forward_launch, softmax_ce_backward, softmax_ce_forward_launch};
use crate::ops::matmul::{matmul_backward_prec, matmul_backward_scratch_len, matmul_forward_prec};
use crate::ops::steptotals::step_totals_add;
use crate::ops::meanpool::{meanpool_backward, meanpool_forward};
use crate::reference::model::DropoutSeeds;
use crate::train::engine::{Engine, StepStats, StepTotals, STEP_TOTALS_SLOTS};

/// Capacity of the activation buffers: rows N = B*T, reviews B, attention log-sum-exp B*NH*T.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cap {
    n: usize,
    b: usize,
    lse: usize,
}

impl Cap {
    fn covers(&self, need: &Cap) -> bool {
        self.n >= need.n && self.b >= need.b && self.lse >= need.lse
    }
    fn max(&self, o: &Cap) -> Cap {
        Cap { n: self.n.max(o.n), b: self.b.max(o.b), lse: self.lse.max(o.lse) }
    }
}

/// Activations (what the forward keeps for the backward) and scratch, as in
/// `reference::model::Acts`. Per-layer tensors are stacked (L, ...). Sized for `cap`;
/// the current batch uses a prefix (views of exact length).
struct Acts {
    x0: Buf<f32>,          // (B,T,C) residual stream entering layer 0: dropout(wte[ids])
    ln1: Buf<f32>,         // (L,B,T,C)
    ln1_mean: Buf<f32>,    // (L,B,T)
    ln1_rstd: Buf<f32>,    // (L,B,T)
    qkv: Buf<f32>,         // (L,B,T,3C)
    lse: Buf<f32>,         // (L,B,NH,T) attention log-sum-exp per query
    atty: Buf<f32>,        // (L,B,T,C)
    res_attn: Buf<f32>,    // (L,B,T,C)
    ln2: Buf<f32>,         // (L,B,T,C)
    ln2_mean: Buf<f32>,    // (L,B,T)
    ln2_rstd: Buf<f32>,    // (L,B,T)
    fch: Buf<f32>,         // (L,B,T,F)
    fch_gelu: Buf<f32>,    // (L,B,T,F)
    res_ffn: Buf<f32>,     // (L,B,T,C)
    lnf: Buf<f32>,         // (B,T,C)
    lnf_mean: Buf<f32>,    // (B,T)
    lnf_rstd: Buf<f32>,    // (B,T)
    pooled: Buf<f32>,      // (B,C)
    logits: Buf<f32>,      // (B,K)
    probs: Buf<f32>,       // (B,K)
    losses: Buf<f32>,      // (B)
    branch: Buf<f32>,      // (B,T,C) a branch's output before dropout
    dres: Buf<f32>,        // (B,T,C) gradient of the residual stream (accumulates)
    dbranch: Buf<f32>,     // (B,T,C)
    dln: Buf<f32>,         // (B,T,C)
    datty: Buf<f32>,       // (B,T,C)
    dqkv: Buf<f32>,        // (B,T,3C)
    dfch: Buf<f32>,        // (B,T,F)
    dfch_gelu: Buf<f32>,   // (B,T,F)
    dpooled: Buf<f32>,     // (B,C)
    dlogits: Buf<f32>,     // (B,K)
    // the batch is not here: it is one staged upload, `GpuModel::input`
}

impl Acts {
    fn new(gpu: &Gpu, cfg: &ModelConfig, cap: Cap) -> Result<Acts> {
        let (c, f, l, k) = (cfg.d_model, cfg.d_ff, cfg.n_layer, cfg.loss.outputs());
        let Cap { n, b, lse } = cap;
        let z = |len: usize| gpu.zeros::<f32>(len);
        Ok(Acts {
            x0: z(n * c)?,
            ln1: z(l * n * c)?,
            ln1_mean: z(l * n)?,
            ln1_rstd: z(l * n)?,
            qkv: z(l * n * 3 * c)?,
            lse: z(l * lse)?,
            atty: z(l * n * c)?,
            res_attn: z(l * n * c)?,
            ln2: z(l * n * c)?,
            ln2_mean: z(l * n)?,
            ln2_rstd: z(l * n)?,
            fch: z(l * n * f)?,
            fch_gelu: z(l * n * f)?,
            res_ffn: z(l * n * c)?,
            lnf: z(n * c)?,
            lnf_mean: z(n)?,
            lnf_rstd: z(n)?,
            pooled: z(b * c)?,
            logits: z(b * k)?,
            probs: z(b * k)?,
            losses: z(b)?,
            branch: z(n * c)?,
            dres: z(n * c)?,
            dbranch: z(n * c)?,
            dln: z(n * c)?,
            datty: z(n * c)?,
            dqkv: z(n * 3 * c)?,
            dfch: z(n * f)?,
            dfch_gelu: z(n * f)?,
            dpooled: z(b * c)?,
            dlogits: z(b * k)?,
        })
    }
}

/// The batch on the device: the parts of one staged upload, in upload order. Every part's
/// size depends only on (B, T) and the model, so the same shape always packs at the same
/// offsets of the same device buffer: a step's launches have the same argument bits for
/// every batch of one shape, which is what lets a captured CUDA graph replay them.
struct BatchInput<'a> {
    ids: View<'a, u32>,        // (B,T)
    lens: View<'a, u32>,       // (B)
    labels: View<'a, u8>,      // (B)
    emb_pos: View<'a, u32>,    // (B*T) valid positions sorted by id (embedding backward order), zero-padded
    emb_starts: View<'a, u32>, // (B*T) start of each distinct id's run in emb_pos, zero-padded
    emb_um: View<'a, u32>,     // (2) U distinct ids, M valid positions
    seeds: View<'a, u64>,      // (1+2L) the step's dropout seeds (`DropoutSeeds` order; 0 when not training)
    sched: View<'a, f32>,      // (3) AdamW [lr, bc1, bc2] of the step (`adamw_schedule`; 0 when not training)
    step: View<'a, u64>,       // (1) the 1-based step number (0 when not training)
}

/// What one step reads from device memory rather than from kernel arguments, uploaded
/// with its batch: the values that change from step to step at one shape. A captured
/// CUDA graph of the step (`GpuEngine`'s graph path) replays with the new values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepScalars {
    /// Dropout seeds, one per site (`DropoutSeeds`); None: no dropout (evaluation).
    pub seeds: Option<DropoutSeeds>,
    /// AdamW's [lr, bc1, bc2] (`ops::adamw::adamw_schedule`); zeros outside training.
    pub sched: [f32; 3],
    /// The 1-based optimizer step (0 outside training).
    pub step: u64,
}

impl StepScalars {
    /// A training step: its dropout seeds, learning rate and bias corrections.
    pub fn train(run_seed: u64, step: u64, n_layer: usize, lr: f32, o: &OptimConfig) -> Result<StepScalars> {
        Ok(StepScalars { seeds: Some(DropoutSeeds::for_step(run_seed, step, n_layer)), sched: adamw_schedule(lr, o.beta1, o.beta2, step)?, step })
    }
}

/// The first `len` elements of a buffer (the current batch's part).
fn head<T: bytemuck::Pod>(buf: &Buf<T>, len: usize) -> View<'_, T> {
    buf.view(0, len)
}

/// Layer `l` of a stacked activation whose per-layer size (for this batch) is `n`.
fn layer(buf: &Buf<f32>, l: usize, n: usize) -> View<'_, f32> {
    buf.view(l * n, n)
}

/// The model on a device: parameters, gradients, AdamW moments, activations.
pub struct GpuModel {
    pub cfg: ModelConfig,
    pub layout: ParamLayout,
    /// Parameters, gradients (accumulated by `backward`), AdamW m and v: one buffer each.
    pub params: Buf<f32>,
    pub grads: Buf<f32>,
    pub m: Buf<f32>,
    pub v: Buf<f32>,
    /// Label smoothing (CE) / target smoothing (BCE) of the loss, in [0, 1); 0: none.
    pub label_smoothing: f32,
    acts: Option<Acts>,
    cap: Cap,
    b: usize,
    t: usize,
    /// The current batch on the device: one buffer, filled by one staged copy per batch
    /// (parts in the order of [`BatchInput`]).
    input: Staging,
    /// Whether the last batch was loaded with dropout (training): the backward applies the
    /// same masks (the seeds are in the upload).
    dropout_on: bool,
    norm: Buf<f32>,
    norm_scratch: Buf<f32>,
    /// AdamW's per-tensor table (`ops::adamw::adamw_table` of the layout), uploaded once.
    adamw_ends: Buf<u32>,
    adamw_decay: Buf<u32>,
    /// Workspace of the split weight-gradient reductions (matmul_backward and
    /// layernorm_backward partial sums), shared by every backward launch (one stream, one
    /// launch at a time); sized by `backward_scratch_len` for the largest batch so far.
    bwd_scratch: Buf<f32>,
    /// Reallocations of `acts` or `bwd_scratch` so far (see `buffers_key`).
    reallocs: u64,
}

/// Scratch floats the backward needs for N = B*T rows: the largest split-K workspace of
/// its matmuls (qkv, attn proj, fc, fc proj at N; the head at B) and layer norms.
fn backward_scratch_len(cfg: &ModelConfig, b: usize, n: usize) -> usize {
    let (c, f, k) = (cfg.d_model, cfg.d_ff, cfg.loss.outputs());
    [
        matmul_backward_scratch_len(b, c, k),
        matmul_backward_scratch_len(n, c, 3 * c),
        matmul_backward_scratch_len(n, c, c),
        matmul_backward_scratch_len(n, c, f),
        matmul_backward_scratch_len(n, f, c),
        layernorm_backward_scratch_len(n, c),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

impl GpuModel {
    /// A model with the given parameters (layout of `model::params`), moments zero.
    pub fn new(gpu: &Gpu, cfg: &ModelConfig, params: &[f32]) -> Result<GpuModel> {
        cfg.validate()?;
        let layout = ParamLayout::new(cfg);
        ensure!(params.len() == layout.total, "{} parameters given, the model needs {}", params.len(), layout.total);
        let (ends, decay) = adamw_table(layout.tensors.iter().map(|t| (t.size, t.decay)));
        ensure!(layout.tensors.iter().enumerate().all(|(i, t)| t.offset + t.size == ends[i] as usize), "tensors are not contiguous in layout order");
        Ok(GpuModel {
            cfg: cfg.clone(),
            params: gpu.upload(params)?,
            grads: gpu.zeros(layout.total)?,
            m: gpu.zeros(layout.total)?,
            v: gpu.zeros(layout.total)?,
            layout,
            label_smoothing: 0.0,
            acts: None,
            cap: Cap::default(),
            b: 0,
            t: 0,
            input: Staging::new(),
            dropout_on: false,
            norm: gpu.zeros(1)?,
            norm_scratch: gpu.zeros(GLOBAL_NORM_MAX_BLOCKS)?,
            adamw_ends: gpu.upload(&ends)?,
            adamw_decay: gpu.upload(&decay)?,
            bwd_scratch: gpu.zeros(0)?,
            reallocs: 0,
        })
    }

    /// Tensor `i` (see `params::idx`) of a buffer in the parameter layout.
    fn pv<'a>(&self, buf: &'a Buf<f32>, i: usize) -> View<'a, f32> {
        let t = self.layout.tensor(i);
        buf.view(t.offset, t.size)
    }
    /// Layer `l` of layered tensor `i` of a buffer in the parameter layout.
    fn pl<'a>(&self, buf: &'a Buf<f32>, i: usize, l: usize) -> View<'a, f32> {
        let t = self.layout.tensor(i);
        buf.view(t.layer_range(l).start, t.layer_size())
    }

    /// The current batch's parts on the device (views of the one staged upload).
    fn batch_input(&self) -> Result<BatchInput<'_>> {
        let i = &self.input;
        Ok(BatchInput {
            ids: i.part(0)?,
            lens: i.part(1)?,
            labels: i.part(2)?,
            emb_pos: i.part(3)?,
            emb_starts: i.part(4)?,
            emb_um: i.part(5)?,
            seeds: i.part(6)?,
            sched: i.part(7)?,
            step: i.part(8)?,
        })
    }

    /// Site `site`'s dropout seed (`DropoutSeeds` order) in the current upload.
    fn seed_at<'a>(&self, input: &BatchInput<'a>, site: usize) -> View<'a, u64> {
        input.seeds.view(site, 1)
    }

    /// The shape of the current batch, (B, T).
    pub fn shape(&self) -> (usize, usize) {
        (self.b, self.t)
    }

    /// Changes whenever a batch upload reallocated a buffer a step uses (the activations,
    /// the backward's workspace, or the staged upload's device buffer), so a step captured
    /// before would use stale addresses: (reallocations so far, the upload's address).
    pub fn buffers_key(&self) -> (u64, u64) {
        use crate::device::DeviceSlice;
        (self.reallocs, self.input.part::<u8>(0).map(|p| p.addr()).unwrap_or(0))
    }

    /// Uploads of batches so far, and how many of them waited on the host for their
    /// staging buffer's previous copy (cuda; see `device::Staging::counts`).
    pub fn upload_counts(&self) -> (u64, u64) {
        self.input.counts()
    }

    pub fn zero_grad(&self, gpu: &Gpu) -> Result<()> {
        gpu.zero(&self.grads)
    }

    /// Check the batch against the model, size the activations for it and upload it (ids,
    /// lens, labels, the embedding backward order, the step's scalars) in one staged copy.
    /// Launches only after this read the batch; nothing is allocated by them.
    pub fn load_batch(&mut self, gpu: &Gpu, batch: &Batch, scalars: &StepScalars) -> Result<()> {
        let sites = 1 + 2 * self.cfg.n_layer;
        if let Some(s) = &scalars.seeds {
            ensure!(s.0.len() == sites, "one dropout seed per site");
        }
        let (b, t) = (batch.batch_size, batch.seq_len);
        ensure!(batch.ids.len() == b * t, "batch ids are not (B, T)");
        ensure!(batch.lens.len() == b && batch.labels.len() == b, "batch lens/labels are not (B)");
        ensure!(batch.lens.iter().all(|&l| l as usize <= t), "a review is longer than T");
        if let Some(&id) = batch.ids.iter().find(|&&id| id as usize >= self.cfg.vocab) {
            anyhow::bail!("token id {id} is outside the vocabulary ({})", self.cfg.vocab);
        }
        ensure!(batch.labels.iter().all(|&y| y <= 1), "labels must be 0 or 1");
        let need = Cap { n: b * t, b, lse: b * self.cfg.n_head * t };
        if self.acts.is_none() || !self.cap.covers(&need) {
            let cap = self.cap.max(&need);
            self.acts = None; // free the old buffers first
            self.acts = Some(Acts::new(gpu, &self.cfg, cap)?);
            self.cap = cap;
            self.reallocs += 1;
        }
        // the split-K workspace grows with the batch like the activations (never per launch)
        let scratch = backward_scratch_len(&self.cfg, b, b * t);
        if self.bwd_scratch.len() < scratch {
            self.bwd_scratch = gpu.zeros(0)?; // free the old one first
            self.bwd_scratch = gpu.zeros(scratch)?;
            self.reallocs += 1;
        }
        // the embedding backward order is sorted here while the device may still run the
        // previous step; then the whole batch goes up in one copy (no host wait on cuda)
        // (pos and starts padded to B*T entries: the parts' offsets depend on the shape only)
        let (pos, starts, um) = embedding_order_parts(&batch.ids, &batch.lens, t, Some(b * t))?;
        let seeds = match &scalars.seeds {
            Some(s) => s.0.clone(),
            None => vec![0u64; sites],
        };
        let parts: [&[u8]; 9] = [
            bytemuck::cast_slice(&batch.ids),
            bytemuck::cast_slice(&batch.lens),
            &batch.labels,
            bytemuck::cast_slice(&pos),
            bytemuck::cast_slice(&starts),
            bytemuck::cast_slice(&um),
            bytemuck::cast_slice(&seeds),
            bytemuck::cast_slice(&scalars.sched),
            bytemuck::bytes_of(&scalars.step),
        ];
        self.input.upload(gpu, &parts)?;
        self.b = b;
        self.t = t;
        self.dropout_on = scalars.seeds.is_some();
        Ok(())
    }

    /// Forward pass; returns the mean loss over the batch (downloads the per-review losses,
    /// so this waits for the device). `dropout`: the step's seeds (training) or None
    /// (evaluation: no dropout). Labels are read only for the loss.
    pub fn forward(&mut self, gpu: &Gpu, batch: &Batch, dropout: Option<&DropoutSeeds>) -> Result<f32> {
        self.load_batch(gpu, batch, &StepScalars { seeds: dropout.cloned(), ..StepScalars::default() })?;
        self.forward_launch(gpu)?;
        mean_loss(gpu, &head(&self.acts.as_ref().expect("forward launched").losses, self.b), self.b)
    }

    /// The forward pass of the loaded batch (`load_batch`) up to the per-review losses and
    /// probabilities: launches only, nothing read back, uploaded or allocated.
    pub fn forward_launch(&self, gpu: &Gpu) -> Result<()> {
        let (c, f, nl, nh, k) = (self.cfg.d_model, self.cfg.d_ff, self.cfg.n_layer, self.cfg.n_head, self.cfg.loss.outputs());
        ensure!(self.acts.is_some(), "forward needs a loaded batch");
        let p = if self.dropout_on { self.cfg.dropout } else { 0.0 };
        let (b, t) = (self.b, self.t);
        let n = b * t; // rows of every per-token matrix
        let (nc, n3c, nf, nlse) = (n * c, n * 3 * c, n * f, b * nh * t);
        let a = self.acts.as_ref().unwrap();
        let w = &self.params;
        let input = self.batch_input()?;
        let (ids, lens, labels) = (input.ids, input.lens, input.labels);
        let seed = |site: usize| self.seed_at(&input, site); // sites: DropoutSeeds order
        let x0 = head(&a.x0, nc);
        let branch = head(&a.branch, nc);

        embedding_dropout_forward(gpu, &x0, &ids, &self.pv(w, idx::WTE), &seed(0), p, n, c)?; // (B,T,C) gather + dropout, one pass
        // Each residual add is fused with the layer norm that reads it (dropout of the
        // branch, add, layer norm: residual_layernorm_forward): ln2 after the attention
        // residual; after the FFN residual, the next layer's ln1 or lnf. Only layer 0's ln1
        // (of x0) is a plain layer norm.
        if nl > 0 {
            layernorm_forward(gpu, &layer(&a.ln1, 0, nc), &layer(&a.ln1_mean, 0, n), &layer(&a.ln1_rstd, 0, n), &x0, &self.pl(w, idx::LN1_W, 0), &self.pl(w, idx::LN1_B, 0), n, c)?;
        }
        for l in 0..nl {
            let x = if l == 0 { x0 } else { layer(&a.res_ffn, l - 1, nc) }; //     (B,T,C)
            let ln1 = layer(&a.ln1, l, nc); // written by the previous layer's fused add (or above)
            let qkv = layer(&a.qkv, l, n3c); //                                      (B,T,3C)
            matmul_forward_prec(gpu, self.cfg.precision, &qkv, &ln1, &self.pl(w, idx::QKV_W, l), Some(&self.pl(w, idx::QKV_B, l)), n, c, 3 * c)?;
            let atty = layer(&a.atty, l, nc); //                                     (B,T,C)
            attention_forward_prec(gpu, self.cfg.precision, &atty, &layer(&a.lse, l, nlse), &qkv, &lens, b, t, c, nh)?;
            matmul_forward_prec(gpu, self.cfg.precision, &branch, &atty, &self.pl(w, idx::ATTN_PROJ_W, l), Some(&self.pl(w, idx::ATTN_PROJ_B, l)), n, c, c)?;
            let (res_attn, ln2) = (layer(&a.res_attn, l, nc), layer(&a.ln2, l, nc)); // (B,T,C)
            // res_attn = x + dropout(branch), ln2 = layernorm(res_attn)
            residual_layernorm_forward(gpu, &res_attn, &ln2, &layer(&a.ln2_mean, l, n), &layer(&a.ln2_rstd, l, n), &x, &branch, &self.pl(w, idx::LN2_W, l), &self.pl(w, idx::LN2_B, l), &seed(1 + 2 * l), p, n, c)?;
            let fch = layer(&a.fch, l, nf); //                                       (B,T,F)
            matmul_forward_prec(gpu, self.cfg.precision, &fch, &ln2, &self.pl(w, idx::FC_W, l), Some(&self.pl(w, idx::FC_B, l)), n, c, f)?;
            let fch_gelu = layer(&a.fch_gelu, l, nf); //                             (B,T,F)
            gelu_forward(gpu, &fch_gelu, &fch)?;
            matmul_forward_prec(gpu, self.cfg.precision, &branch, &fch_gelu, &self.pl(w, idx::FC_PROJ_W, l), Some(&self.pl(w, idx::FC_PROJ_B, l)), n, f, c)?;
            // res_ffn = res_attn + dropout(branch), then the next layer norm of it
            let (ln, mean, rstd, lw, lb) = if l + 1 < nl {
                let next = l + 1;
                (layer(&a.ln1, next, nc), layer(&a.ln1_mean, next, n), layer(&a.ln1_rstd, next, n), self.pl(w, idx::LN1_W, next), self.pl(w, idx::LN1_B, next))
            } else {
                (head(&a.lnf, nc), head(&a.lnf_mean, n), head(&a.lnf_rstd, n), self.pv(w, idx::LNF_W), self.pv(w, idx::LNF_B))
            };
            residual_layernorm_forward(gpu, &layer(&a.res_ffn, l, nc), &ln, &mean, &rstd, &res_attn, &branch, &lw, &lb, &seed(2 + 2 * l), p, n, c)?; // (B,T,C)
        }
        let lnf = head(&a.lnf, nc); //                                               (B,T,C)
        if nl == 0 {
            layernorm_forward(gpu, &lnf, &head(&a.lnf_mean, n), &head(&a.lnf_rstd, n), &x0, &self.pv(w, idx::LNF_W), &self.pv(w, idx::LNF_B), n, c)?;
        }
        let pooled = head(&a.pooled, b * c);
        meanpool_forward(gpu, &pooled, &lnf, &lens, b, t, c)?; //                    (B,C)
        let logits = head(&a.logits, b * k);
        matmul_forward_prec(gpu, self.cfg.precision, &logits, &pooled, &self.pv(w, idx::HEAD_W), Some(&self.pv(w, idx::HEAD_B)), b, c, k)?; // (B,K)
        let (losses, probs) = (head(&a.losses, b), head(&a.probs, b * k));
        match self.cfg.loss {
            Loss::Ce => softmax_ce_forward_launch(gpu, &losses, &probs, &logits, &labels, b, k, self.label_smoothing),
            Loss::Bce => sigmoid_bce_forward_launch(gpu, &losses, &probs, &logits, &labels, b, self.label_smoothing),
        }
    }

    /// Backward pass of the last `forward` (same batch): adds the gradient of the mean
    /// loss to `self.grads`. Launches only.
    pub fn backward(&self, gpu: &Gpu) -> Result<()> {
        ensure!(self.acts.is_some(), "backward must follow forward");
        let (c, f, nl, nh, k) = (self.cfg.d_model, self.cfg.d_ff, self.cfg.n_layer, self.cfg.n_head, self.cfg.loss.outputs());
        let p = if self.dropout_on { self.cfg.dropout } else { 0.0 };
        let (b, t) = (self.b, self.t);
        let n = b * t;
        let (nc, n3c, nf, nlse) = (n * c, n * 3 * c, n * f, b * nh * t);
        let a = self.acts.as_ref().unwrap();
        let (w, g) = (&self.params, &self.grads);
        let ws = &self.bwd_scratch;
        let input = self.batch_input()?;
        let (ids, lens, labels, pos, starts, um) = (input.ids, input.lens, input.labels, input.emb_pos, input.emb_starts, input.emb_um);
        let seed = |site: usize| self.seed_at(&input, site); // sites: DropoutSeeds order
        let (dres, dbranch, dln, datty) = (head(&a.dres, nc), head(&a.dbranch, nc), head(&a.dln, nc), head(&a.datty, nc));
        let (dqkv, dfch, dfch_gelu) = (head(&a.dqkv, n3c), head(&a.dfch, nf), head(&a.dfch_gelu, nf));
        let (dlogits, dpooled, probs) = (head(&a.dlogits, b * k), head(&a.dpooled, b * c), head(&a.probs, b * k));
        let x0 = head(&a.x0, nc);

        match self.cfg.loss {
            Loss::Ce => softmax_ce_backward(gpu, &dlogits, &probs, &labels, b, k, self.label_smoothing)?, // (B,K)
            Loss::Bce => sigmoid_bce_backward(gpu, &dlogits, &probs, &labels, b, self.label_smoothing)?,
        }
        matmul_backward_prec(gpu, self.cfg.precision, &dpooled, &self.pv(g, idx::HEAD_W), Some(&self.pv(g, idx::HEAD_B)), ws, &dlogits, &head(&a.pooled, b * c), &self.pv(w, idx::HEAD_W), b, c, k)?; // (B,C)
        meanpool_backward(gpu, &dln, &dpooled, &lens, b, t, c)?; //                  (B,T,C)
        gpu.zero(&dres)?;
        // Each layer norm's backward adds into dres and, in the same pass, writes dbranch =
        // dropout'(dres) for the dropout whose residual add it reads (residual_layernorm_backward):
        // lnf and ln1 of layer l > 0 the previous FFN branch's, ln2 the attention branch's,
        // ln1 of layer 0 the embedding's.
        let x = if nl == 0 { x0 } else { layer(&a.res_ffn, nl - 1, nc) };
        let before = |l: usize| if l == 0 { seed(0) } else { seed(2 + 2 * (l - 1)) }; // the dropout feeding layer l (embedding, or layer l-1's FFN)
        residual_layernorm_backward(gpu, &dres, &dbranch, &self.pv(g, idx::LNF_W), &self.pv(g, idx::LNF_B), ws, &dln, &x, &self.pv(w, idx::LNF_W), &head(&a.lnf_mean, n), &head(&a.lnf_rstd, n), &before(nl), p, n, c)?;
        for l in (0..nl).rev() {
            let x = if l == 0 { x0 } else { layer(&a.res_ffn, l - 1, nc) };
            // x = res_attn + dropout(z): dres flows on unchanged, dz = dropout'(dres) (in dbranch, written above)
            matmul_backward_prec(gpu, self.cfg.precision, &dfch_gelu, &self.pl(g, idx::FC_PROJ_W, l), Some(&self.pl(g, idx::FC_PROJ_B, l)), ws, &dbranch, &layer(&a.fch_gelu, l, nf), &self.pl(w, idx::FC_PROJ_W, l), n, f, c)?;
            gelu_backward(gpu, &dfch, &dfch_gelu, &layer(&a.fch, l, nf))?; //          (B,T,F)
            matmul_backward_prec(gpu, self.cfg.precision, &dln, &self.pl(g, idx::FC_W, l), Some(&self.pl(g, idx::FC_B, l)), ws, &dfch, &layer(&a.ln2, l, nc), &self.pl(w, idx::FC_W, l), n, c, f)?;
            // res_attn = x + dropout(y): dy = dropout'(dres) into dbranch
            residual_layernorm_backward(gpu, &dres, &dbranch, &self.pl(g, idx::LN2_W, l), &self.pl(g, idx::LN2_B, l), ws, &dln, &layer(&a.res_attn, l, nc), &self.pl(w, idx::LN2_W, l), &layer(&a.ln2_mean, l, n), &layer(&a.ln2_rstd, l, n), &seed(1 + 2 * l), p, n, c)?;
            matmul_backward_prec(gpu, self.cfg.precision, &datty, &self.pl(g, idx::ATTN_PROJ_W, l), Some(&self.pl(g, idx::ATTN_PROJ_B, l)), ws, &dbranch, &layer(&a.atty, l, nc), &self.pl(w, idx::ATTN_PROJ_W, l), n, c, c)?;
            attention_backward_prec(gpu, self.cfg.precision, &dqkv, &datty, &layer(&a.qkv, l, n3c), &layer(&a.atty, l, nc), &layer(&a.lse, l, nlse), &lens, b, t, c, nh)?; // (B,T,3C)
            matmul_backward_prec(gpu, self.cfg.precision, &dln, &self.pl(g, idx::QKV_W, l), Some(&self.pl(g, idx::QKV_B, l)), ws, &dqkv, &layer(&a.ln1, l, nc), &self.pl(w, idx::QKV_W, l), n, c, 3 * c)?;
            residual_layernorm_backward(gpu, &dres, &dbranch, &self.pl(g, idx::LN1_W, l), &self.pl(g, idx::LN1_B, l), ws, &dln, &x, &self.pl(w, idx::LN1_W, l), &layer(&a.ln1_mean, l, n), &layer(&a.ln1_rstd, l, n), &before(l), p, n, c)?;
        }
        // dbranch: dropout'(dres) of the embedding's dropout (written by layer 0's ln1, or lnf)
        embedding_backward(gpu, &self.pv(g, idx::WTE), &dbranch, &ids, &pos, &starts, &um, n, c)?;
        Ok(())
    }

    /// Global L2 norm of the gradients (waits for the device).
    pub fn grad_norm(&self, gpu: &Gpu) -> Result<f32> {
        global_norm(gpu, &self.norm, &self.norm_scratch, &self.grads)?;
        Ok(gpu.download(&self.norm)?[0])
    }

    /// AdamW on every tensor (weight decay where the layout says) in one launch over the
    /// whole parameter buffer, with the clip factor for `o.grad_clip` computed on the
    /// device from the norm of the last `grad_norm` / `launch_grad_norm` and folded into
    /// the read of the gradients; a non-finite norm skips the update. The learning rate and
    /// bias corrections are the loaded batch's `StepScalars::sched` (device memory).
    pub fn update(&self, gpu: &Gpu, o: &OptimConfig) -> Result<()> {
        let (ends, decay, norm) = (&self.adamw_ends, &self.adamw_decay, &self.norm);
        let sched = self.batch_input()?.sched;
        adamw_update_tensors(gpu, &self.params, &self.m, &self.v, &self.grads, ends, decay, norm, o.grad_clip, &sched, o.beta1, o.beta2, o.eps, o.weight_decay)
    }

    /// Global L2 norm of the gradients into device memory (no wait).
    pub fn launch_grad_norm(&self, gpu: &Gpu) -> Result<()> {
        global_norm(gpu, &self.norm, &self.norm_scratch, &self.grads)
    }

    /// totals (`train::engine::StepTotals` slots) += the last forward's loss and accuracy
    /// and the last gradient norm (no wait); the step number is the loaded batch's.
    pub fn add_step_totals(&self, gpu: &Gpu, totals: &Buf<f64>) -> Result<()> {
        let a = self.acts.as_ref().expect("forward first");
        let (b, k) = (self.b, self.cfg.loss.outputs());
        let input = self.batch_input()?;
        step_totals_add(gpu, totals, &head(&a.losses, b), &head(&a.probs, b * k), &input.labels, &self.norm, b, k, &input.step)
    }

    /// Per-review losses of the last forward (B).
    pub fn losses(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        gpu.download(&head(&self.acts.as_ref().expect("forward first").losses, self.b))
    }
    /// Probabilities of the last forward: CE (B, 2) softmax, BCE (B) sigmoid.
    pub fn probs(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        gpu.download(&head(&self.acts.as_ref().expect("forward first").probs, self.b * self.cfg.loss.outputs()))
    }
    /// Probability of the positive class per review, from the last forward.
    pub fn positive_probs(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let p = self.probs(gpu)?;
        Ok(match self.cfg.loss {
            Loss::Ce => p.chunks_exact(2).map(|p| p[1]).collect(),
            Loss::Bce => p,
        })
    }
}

/// The `emu` and `cuda` devices' [`Engine`]: a [`GpuModel`] on its [`Gpu`].
pub struct GpuEngine {
    pub gpu: Gpu,
    pub model: GpuModel,
    pub optim: OptimConfig,
    /// Dropout seeds derive from it: `rng::derive_seed(run_seed, step, site)`.
    pub run_seed: u64,
    /// Device totals of the steps queued since the last `flush_totals`, and scratch
    /// totals for one `train_step` (`StepTotals` slots).
    queued: Buf<f64>,
    one_step: Buf<f64>,
    /// `--cuda-graphs`: the step's launches captured per shape and replayed (None: off).
    graphs: Option<StepGraphs>,
}

/// The training step's captured graphs, by (B, T, which totals buffer). A shape's first
/// step runs its launches directly (loading any kernel module on the way), its second is
/// captured and then launched, every later one replays the graph. A batch whose upload
/// reallocates a buffer (a larger shape than any before) drops every graph, since they
/// hold the old addresses.
#[derive(Default)]
struct StepGraphs {
    by_shape: std::collections::HashMap<(usize, usize, bool), Option<StepGraph>>,
    /// `GpuModel::buffers_key` when the graphs were captured.
    key: (u64, u64),
    counts: GraphCounts,
}

/// What the graph path did so far (`GpuEngine::graph_counts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphCounts {
    /// Steps whose launches ran directly (a shape's first step, or graphs off).
    pub direct: u64,
    /// Graphs captured.
    pub captured: u64,
    /// Steps that replayed a graph captured at an earlier step.
    pub replayed: u64,
    /// Times every graph was dropped because a buffer was reallocated.
    pub invalidated: u64,
}

impl GpuEngine {
    /// A fresh model: parameters from `init_params(cfg, init_seed)`, moments zero.
    pub fn new(gpu: Gpu, cfg: &ModelConfig, optim: &OptimConfig, init_seed: u64, run_seed: u64) -> Result<Self> {
        let mut model = GpuModel::new(&gpu, cfg, &init_params(cfg, init_seed))?;
        model.label_smoothing = optim.label_smoothing;
        let (queued, one_step) = (gpu.zeros(STEP_TOTALS_SLOTS)?, gpu.zeros(STEP_TOTALS_SLOTS)?);
        Ok(GpuEngine { gpu, model, optim: optim.clone(), run_seed, queued, one_step, graphs: None })
    }

    /// Capture each batch shape's training step as a CUDA graph (emu: a recorded list)
    /// and replay it (`--cuda-graphs`). The results are bit-identical to direct launches.
    pub fn use_graphs(&mut self, on: bool) {
        self.graphs = on.then(StepGraphs::default);
    }

    /// What the graph path did so far (all zero with graphs off).
    pub fn graph_counts(&self) -> GraphCounts {
        self.graphs.as_ref().map(|g| g.counts).unwrap_or_default()
    }

    /// The gradients of the last `train_step`, before the clip factor.
    pub fn grads(&self) -> Result<Vec<f32>> {
        self.gpu.download(&self.model.grads)
    }

    /// One step, launched: its batch and scalars uploaded (`GpuModel::load_batch`), then
    /// [`GpuEngine::step_launches`]. Does not wait for the device (see `device::Staging`
    /// for the one rare wait of the batch upload).
    fn launch_step(&mut self, one_step: bool, batch: &Batch, lr: f32, step: u64) -> Result<()> {
        ensure!(step >= 1, "optimizer steps are 1-based");
        let scalars = StepScalars::train(self.run_seed, step, self.model.cfg.n_layer, lr, &self.optim)?;
        self.model.load_batch(&self.gpu, batch, &scalars)?;
        let Some(mut graphs) = self.graphs.take() else {
            return self.step_launches(&self.gpu, one_step);
        };
        let r = self.launch_step_graph(&mut graphs, one_step);
        self.graphs = Some(graphs);
        r
    }

    /// The loaded step through the graph cache (see [`StepGraphs`]).
    fn launch_step_graph(&self, graphs: &mut StepGraphs, one_step: bool) -> Result<()> {
        let key = self.model.buffers_key();
        if key != graphs.key {
            if graphs.by_shape.values().any(Option::is_some) {
                graphs.counts.invalidated += 1;
            }
            graphs.by_shape.clear();
            graphs.key = key;
        }
        let (b, t) = self.model.shape();
        match graphs.by_shape.get(&(b, t, one_step)) {
            None => {
                graphs.counts.direct += 1;
                graphs.by_shape.insert((b, t, one_step), None);
                self.step_launches(&self.gpu, one_step)
            }
            Some(None) => {
                let graph = self.gpu.capture(|g| self.step_launches(g, one_step))?;
                self.gpu.launch_graph(&graph)?;
                graphs.counts.captured += 1;
                graphs.by_shape.insert((b, t, one_step), Some(graph));
                Ok(())
            }
            Some(Some(graph)) => {
                graphs.counts.replayed += 1;
                self.gpu.launch_graph(graph)
            }
        }
    }

    /// The launches of one training step on the loaded batch: zero the gradients,
    /// forward, backward, norm, the statistics added on the device to `one_step` (for
    /// `train_step`) or else to `queued`, AdamW with the clip factor computed on the device
    /// (skipped if the norm is not finite). Everything that changes from step to step at
    /// one shape is read from device memory (the batch's `StepScalars`), so these launches
    /// have the same arguments for every batch of a shape: what a CUDA graph captures.
    fn step_launches(&self, gpu: &Gpu, one_step: bool) -> Result<()> {
        let (model, optim) = (&self.model, &self.optim);
        let totals = if one_step { &self.one_step } else { &self.queued };
        model.zero_grad(gpu)?;
        model.forward_launch(gpu)?;
        model.backward(gpu)?;
        model.launch_grad_norm(gpu)?;
        model.add_step_totals(gpu, totals)?;
        model.update(gpu, optim)
    }
}

impl Engine for GpuEngine {
    fn train_step(&mut self, batch: &Batch, lr: f32, step: u64) -> Result<StepStats> {
        self.gpu.zero(&self.one_step)?;
        self.launch_step(true, batch, lr, step)?;
        let t = StepTotals::from_slots(&self.gpu.download(&self.one_step)?);
        let grad_norm = self.gpu.download(&self.model.norm)?[0];
        // mean x B in f64 divided by B gives the f32 mean back exactly (B < 2^29)
        let loss = if t.reviews > 0 { (t.loss_sum / t.reviews as f64) as f32 } else { 0.0 };
        ensure!(grad_norm.is_finite(), "gradient norm is not finite at step {step} (loss {loss}); the update was skipped");
        Ok(StepStats { loss, grad_norm, correct: t.correct })
    }

    fn queue_step(&mut self, batch: &Batch, lr: f32, step: u64, _totals: &mut StepTotals) -> Result<()> {
        self.launch_step(false, batch, lr, step)
    }

    fn flush_totals(&mut self, totals: &mut StepTotals) -> Result<()> {
        totals.add(&StepTotals::from_slots(&self.gpu.download(&self.queued)?));
        self.gpu.zero(&self.queued)
    }

    fn predict(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.model.forward(&self.gpu, batch, None)?;
        self.model.positive_probs(&self.gpu)
    }

    fn params(&mut self) -> Result<Vec<f32>> {
        self.gpu.download(&self.model.params)
    }

    fn optimizer_state(&mut self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((self.gpu.download(&self.model.m)?, self.gpu.download(&self.model.v)?))
    }

    fn load_state(&mut self, params: &[f32], m: &[f32], v: &[f32]) -> Result<()> {
        let n = self.model.layout.total;
        ensure!(
            params.len() == n && m.len() == n && v.len() == n,
            "state has {} / {} / {} values, the model needs {n}",
            params.len(),
            m.len(),
            v.len()
        );
        self.gpu.write(&self.model.params, params)?;
        self.gpu.write(&self.model.m, m)?;
        self.gpu.write(&self.model.v, v)?;
        Ok(())
    }
}
