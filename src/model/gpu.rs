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
use crate::device::{Buf, Gpu, View};
use crate::model::params::{idx, init_params, ParamLayout};
use crate::model::Batch;
use crate::ops::adamw::adamw_update;
use crate::ops::attention::{attention_backward, attention_forward};
use crate::ops::dropout::{dropout_backward, dropout_forward};
use crate::ops::embedding::{embedding_backward, embedding_forward};
use crate::ops::gelu::{gelu_backward, gelu_forward};
use crate::ops::gradnorm::{global_norm, GLOBAL_NORM_MAX_BLOCKS};
use crate::ops::layernorm::{layernorm_backward, layernorm_backward_scratch_len, layernorm_forward};
use crate::ops::loss::{sigmoid_bce_backward, sigmoid_bce_forward, softmax_ce_backward, softmax_ce_forward};
use crate::ops::matmul::{matmul_backward_prec, matmul_backward_scratch_len, matmul_forward_prec};
use crate::ops::meanpool::{meanpool_backward, meanpool_forward};
use crate::ops::residual::residual_forward;
use crate::reference::embedding::embedding_backward_order;
use crate::reference::engine::predicted_label;
use crate::reference::gradnorm::clip_scale;
use crate::reference::model::DropoutSeeds;
use crate::train::engine::{Engine, StepStats};

/// Capacity of the activation buffers: rows N = B*T, reviews B, attention B*NH*T*T.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cap {
    n: usize,
    b: usize,
    att: usize,
}

impl Cap {
    fn covers(&self, need: &Cap) -> bool {
        self.n >= need.n && self.b >= need.b && self.att >= need.att
    }
    fn max(&self, o: &Cap) -> Cap {
        Cap { n: self.n.max(o.n), b: self.b.max(o.b), att: self.att.max(o.att) }
    }
}

/// Activations (what the forward keeps for the backward) and scratch, as in
/// `reference::model::Acts`. Per-layer tensors are stacked (L, ...). Sized for `cap`;
/// the current batch uses a prefix (views of exact length).
struct Acts {
    emb: Buf<f32>,         // (B,T,C) wte[ids] before dropout
    x0: Buf<f32>,          // (B,T,C) residual stream entering layer 0
    ln1: Buf<f32>,         // (L,B,T,C)
    ln1_mean: Buf<f32>,    // (L,B,T)
    ln1_rstd: Buf<f32>,    // (L,B,T)
    qkv: Buf<f32>,         // (L,B,T,3C)
    att: Buf<f32>,         // (L,B,NH,T,T)
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
    branch_drop: Buf<f32>, // (B,T,C) after dropout
    dres: Buf<f32>,        // (B,T,C) gradient of the residual stream (accumulates)
    dbranch: Buf<f32>,     // (B,T,C)
    dln: Buf<f32>,         // (B,T,C)
    datty: Buf<f32>,       // (B,T,C)
    dqkv: Buf<f32>,        // (B,T,3C)
    dfch: Buf<f32>,        // (B,T,F)
    dfch_gelu: Buf<f32>,   // (B,T,F)
    dpooled: Buf<f32>,     // (B,C)
    dlogits: Buf<f32>,     // (B,K)
    // the batch
    ids: Buf<u32>,        // (B,T)
    lens: Buf<u32>,       // (B)
    labels: Buf<u8>,      // (B)
    emb_pos: Buf<u32>,    // (B*T) positions sorted by id (embedding backward order)
    emb_starts: Buf<u32>, // (<= B*T) start of each distinct id's run
}

impl Acts {
    fn new(gpu: &Gpu, cfg: &ModelConfig, cap: Cap) -> Result<Acts> {
        let (c, f, l, k) = (cfg.d_model, cfg.d_ff, cfg.n_layer, cfg.loss.outputs());
        let Cap { n, b, att } = cap;
        let z = |len: usize| gpu.zeros::<f32>(len);
        Ok(Acts {
            emb: z(n * c)?,
            x0: z(n * c)?,
            ln1: z(l * n * c)?,
            ln1_mean: z(l * n)?,
            ln1_rstd: z(l * n)?,
            qkv: z(l * n * 3 * c)?,
            att: z(l * att)?,
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
            branch_drop: z(n * c)?,
            dres: z(n * c)?,
            dbranch: z(n * c)?,
            dln: z(n * c)?,
            datty: z(n * c)?,
            dqkv: z(n * 3 * c)?,
            dfch: z(n * f)?,
            dfch_gelu: z(n * f)?,
            dpooled: z(b * c)?,
            dlogits: z(b * k)?,
            ids: gpu.zeros(n)?,
            lens: gpu.zeros(b)?,
            labels: gpu.zeros(b)?,
            emb_pos: gpu.zeros(n)?,
            emb_starts: gpu.zeros(n)?,
        })
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
    acts: Option<Acts>,
    cap: Cap,
    b: usize,
    t: usize,
    /// Number of distinct ids of the current batch (embedding backward's grid).
    n_unique: usize,
    /// Seeds of the last forward's dropout, if any (the backward applies the same masks).
    seeds: Option<DropoutSeeds>,
    norm: Buf<f32>,
    norm_scratch: Buf<f32>,
    /// Workspace of the split weight-gradient reductions (matmul_backward and
    /// layernorm_backward partial sums), shared by every backward launch (one stream, one
    /// launch at a time); sized by `backward_scratch_len` for the largest batch so far.
    bwd_scratch: Buf<f32>,
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
        Ok(GpuModel {
            cfg: cfg.clone(),
            params: gpu.upload(params)?,
            grads: gpu.zeros(layout.total)?,
            m: gpu.zeros(layout.total)?,
            v: gpu.zeros(layout.total)?,
            layout,
            acts: None,
            cap: Cap::default(),
            b: 0,
            t: 0,
            n_unique: 0,
            seeds: None,
            norm: gpu.zeros(1)?,
            norm_scratch: gpu.zeros(GLOBAL_NORM_MAX_BLOCKS)?,
            bwd_scratch: gpu.zeros(0)?,
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

    pub fn zero_grad(&self, gpu: &Gpu) -> Result<()> {
        gpu.zero(&self.grads)
    }

    /// Check the batch against the model, size the activations for it and upload it
    /// (ids, lens, labels, the embedding backward order).
    fn load_batch(&mut self, gpu: &Gpu, batch: &Batch) -> Result<()> {
        let (b, t) = (batch.batch_size, batch.seq_len);
        ensure!(batch.ids.len() == b * t, "batch ids are not (B, T)");
        ensure!(batch.lens.len() == b && batch.labels.len() == b, "batch lens/labels are not (B)");
        ensure!(batch.lens.iter().all(|&l| l as usize <= t), "a review is longer than T");
        if let Some(&id) = batch.ids.iter().find(|&&id| id as usize >= self.cfg.vocab) {
            anyhow::bail!("token id {id} is outside the vocabulary ({})", self.cfg.vocab);
        }
        ensure!(batch.labels.iter().all(|&y| y <= 1), "labels must be 0 or 1");
        let need = Cap { n: b * t, b, att: b * self.cfg.n_head * t * t };
        if self.acts.is_none() || !self.cap.covers(&need) {
            let cap = self.cap.max(&need);
            self.acts = None; // free the old buffers first
            self.acts = Some(Acts::new(gpu, &self.cfg, cap)?);
            self.cap = cap;
        }
        // the split-K workspace grows with the batch like the activations (never per launch)
        let scratch = backward_scratch_len(&self.cfg, b, b * t);
        if self.bwd_scratch.len() < scratch {
            self.bwd_scratch = gpu.zeros(0)?; // free the old one first
            self.bwd_scratch = gpu.zeros(scratch)?;
        }
        let a = self.acts.as_ref().unwrap();
        let n = b * t;
        gpu.write(&head(&a.ids, n), &batch.ids)?;
        gpu.write(&head(&a.lens, b), &batch.lens)?;
        gpu.write(&head(&a.labels, b), &batch.labels)?;
        let (pos, starts) = embedding_backward_order(&batch.ids);
        gpu.write(&head(&a.emb_pos, n), &pos)?;
        gpu.write(&head(&a.emb_starts, starts.len()), &starts)?;
        self.n_unique = starts.len();
        self.b = b;
        self.t = t;
        Ok(())
    }

    /// Forward pass; returns the mean loss over the batch (the loss launcher downloads
    /// the per-review losses, so this waits for the device). `dropout`: the step's seeds
    /// (training) or None (evaluation: no dropout). Labels are read only for the loss.
    pub fn forward(&mut self, gpu: &Gpu, batch: &Batch, dropout: Option<&DropoutSeeds>) -> Result<f32> {
        let (c, f, nl, nh, k) = (self.cfg.d_model, self.cfg.d_ff, self.cfg.n_layer, self.cfg.n_head, self.cfg.loss.outputs());
        if let Some(s) = dropout {
            ensure!(s.0.len() == 1 + 2 * nl, "one dropout seed per site");
        }
        self.load_batch(gpu, batch)?;
        self.seeds = dropout.cloned();
        let p = if dropout.is_some() { self.cfg.dropout } else { 0.0 };
        let seed = |f: &dyn Fn(&DropoutSeeds) -> u64| dropout.map(f).unwrap_or(0);
        let (b, t) = (self.b, self.t);
        let n = b * t; // rows of every per-token matrix
        let (nc, n3c, nf, natt) = (n * c, n * 3 * c, n * f, b * nh * t * t);
        let a = self.acts.as_ref().unwrap();
        let w = &self.params;
        let (ids, lens, labels) = (head(&a.ids, n), head(&a.lens, b), head(&a.labels, b));
        let x0 = head(&a.x0, nc);
        let (branch, branch_drop) = (head(&a.branch, nc), head(&a.branch_drop, nc));

        embedding_forward(gpu, &head(&a.emb, nc), &ids, &self.pv(w, idx::WTE), n, c)?; // (B,T,C)
        dropout_forward(gpu, &x0, &head(&a.emb, nc), seed(&|s| s.embedding()), p)?;
        for l in 0..nl {
            let x = if l == 0 { x0 } else { layer(&a.res_ffn, l - 1, nc) }; //     (B,T,C)
            let ln1 = layer(&a.ln1, l, nc);
            layernorm_forward(gpu, &ln1, &layer(&a.ln1_mean, l, n), &layer(&a.ln1_rstd, l, n), &x, &self.pl(w, idx::LN1_W, l), &self.pl(w, idx::LN1_B, l), n, c)?;
            let qkv = layer(&a.qkv, l, n3c); //                                      (B,T,3C)
            matmul_forward_prec(gpu, self.cfg.precision, &qkv, &ln1, &self.pl(w, idx::QKV_W, l), Some(&self.pl(w, idx::QKV_B, l)), n, c, 3 * c)?;
            let atty = layer(&a.atty, l, nc); //                                     (B,T,C)
            attention_forward(gpu, &atty, &layer(&a.att, l, natt), &qkv, &lens, b, t, c, nh)?;
            matmul_forward_prec(gpu, self.cfg.precision, &branch, &atty, &self.pl(w, idx::ATTN_PROJ_W, l), Some(&self.pl(w, idx::ATTN_PROJ_B, l)), n, c, c)?;
            dropout_forward(gpu, &branch_drop, &branch, seed(&|s| s.attn(l)), p)?;
            let res_attn = layer(&a.res_attn, l, nc); //                             (B,T,C)
            residual_forward(gpu, &res_attn, &x, &branch_drop)?;
            let ln2 = layer(&a.ln2, l, nc);
            layernorm_forward(gpu, &ln2, &layer(&a.ln2_mean, l, n), &layer(&a.ln2_rstd, l, n), &res_attn, &self.pl(w, idx::LN2_W, l), &self.pl(w, idx::LN2_B, l), n, c)?;
            let fch = layer(&a.fch, l, nf); //                                       (B,T,F)
            matmul_forward_prec(gpu, self.cfg.precision, &fch, &ln2, &self.pl(w, idx::FC_W, l), Some(&self.pl(w, idx::FC_B, l)), n, c, f)?;
            let fch_gelu = layer(&a.fch_gelu, l, nf); //                             (B,T,F)
            gelu_forward(gpu, &fch_gelu, &fch)?;
            matmul_forward_prec(gpu, self.cfg.precision, &branch, &fch_gelu, &self.pl(w, idx::FC_PROJ_W, l), Some(&self.pl(w, idx::FC_PROJ_B, l)), n, f, c)?;
            dropout_forward(gpu, &branch_drop, &branch, seed(&|s| s.ffn(l)), p)?;
            residual_forward(gpu, &layer(&a.res_ffn, l, nc), &res_attn, &branch_drop)?; // (B,T,C)
        }
        let x = if nl == 0 { x0 } else { layer(&a.res_ffn, nl - 1, nc) };
        let lnf = head(&a.lnf, nc);
        layernorm_forward(gpu, &lnf, &head(&a.lnf_mean, n), &head(&a.lnf_rstd, n), &x, &self.pv(w, idx::LNF_W), &self.pv(w, idx::LNF_B), n, c)?; // (B,T,C)
        let pooled = head(&a.pooled, b * c);
        meanpool_forward(gpu, &pooled, &lnf, &lens, b, t, c)?; //                    (B,C)
        let logits = head(&a.logits, b * k);
        matmul_forward_prec(gpu, self.cfg.precision, &logits, &pooled, &self.pv(w, idx::HEAD_W), Some(&self.pv(w, idx::HEAD_B)), b, c, k)?; // (B,K)
        let (losses, probs) = (head(&a.losses, b), head(&a.probs, b * k));
        match self.cfg.loss {
            Loss::Ce => softmax_ce_forward(gpu, &losses, &probs, &logits, &labels, b, k),
            Loss::Bce => sigmoid_bce_forward(gpu, &losses, &probs, &logits, &labels, b),
        }
    }

    /// Backward pass of the last `forward` (same batch): adds the gradient of the mean
    /// loss to `self.grads`.
    pub fn backward(&mut self, gpu: &Gpu) -> Result<()> {
        ensure!(self.acts.is_some(), "backward must follow forward");
        let (c, f, nl, nh, k) = (self.cfg.d_model, self.cfg.d_ff, self.cfg.n_layer, self.cfg.n_head, self.cfg.loss.outputs());
        let seeds = self.seeds.clone();
        let p = if seeds.is_some() { self.cfg.dropout } else { 0.0 };
        let seed = |f: &dyn Fn(&DropoutSeeds) -> u64| seeds.as_ref().map(f).unwrap_or(0);
        let (b, t) = (self.b, self.t);
        let n = b * t;
        let (nc, n3c, nf, natt) = (n * c, n * 3 * c, n * f, b * nh * t * t);
        let a = self.acts.as_ref().unwrap();
        let (w, g) = (&self.params, &self.grads);
        let ws = &self.bwd_scratch;
        let (ids, lens, labels) = (head(&a.ids, n), head(&a.lens, b), head(&a.labels, b));
        let (dres, dbranch, dln, datty) = (head(&a.dres, nc), head(&a.dbranch, nc), head(&a.dln, nc), head(&a.datty, nc));
        let (dqkv, dfch, dfch_gelu) = (head(&a.dqkv, n3c), head(&a.dfch, nf), head(&a.dfch_gelu, nf));
        let (dlogits, dpooled, probs) = (head(&a.dlogits, b * k), head(&a.dpooled, b * c), head(&a.probs, b * k));
        let x0 = head(&a.x0, nc);

        match self.cfg.loss {
            Loss::Ce => softmax_ce_backward(gpu, &dlogits, &probs, &labels, b, k)?, // (B,K)
            Loss::Bce => sigmoid_bce_backward(gpu, &dlogits, &probs, &labels, b)?,
        }
        matmul_backward_prec(gpu, self.cfg.precision, &dpooled, &self.pv(g, idx::HEAD_W), Some(&self.pv(g, idx::HEAD_B)), ws, &dlogits, &head(&a.pooled, b * c), &self.pv(w, idx::HEAD_W), b, c, k)?; // (B,C)
        meanpool_backward(gpu, &dln, &dpooled, &lens, b, t, c)?; //                  (B,T,C)
        gpu.zero(&dres)?;
        let x = if nl == 0 { x0 } else { layer(&a.res_ffn, nl - 1, nc) };
        layernorm_backward(gpu, &dres, &self.pv(g, idx::LNF_W), &self.pv(g, idx::LNF_B), ws, &dln, &x, &self.pv(w, idx::LNF_W), &head(&a.lnf_mean, n), &head(&a.lnf_rstd, n), n, c)?;
        for l in (0..nl).rev() {
            let x = if l == 0 { x0 } else { layer(&a.res_ffn, l - 1, nc) };
            // x = res_attn + dropout(z): dres flows on unchanged, dz = dropout'(dres)
            dropout_backward(gpu, &dbranch, &dres, seed(&|s| s.ffn(l)), p)?; //      (B,T,C)
            matmul_backward_prec(gpu, self.cfg.precision, &dfch_gelu, &self.pl(g, idx::FC_PROJ_W, l), Some(&self.pl(g, idx::FC_PROJ_B, l)), ws, &dbranch, &layer(&a.fch_gelu, l, nf), &self.pl(w, idx::FC_PROJ_W, l), n, f, c)?;
            gelu_backward(gpu, &dfch, &dfch_gelu, &layer(&a.fch, l, nf))?; //          (B,T,F)
            matmul_backward_prec(gpu, self.cfg.precision, &dln, &self.pl(g, idx::FC_W, l), Some(&self.pl(g, idx::FC_B, l)), ws, &dfch, &layer(&a.ln2, l, nc), &self.pl(w, idx::FC_W, l), n, c, f)?;
            layernorm_backward(gpu, &dres, &self.pl(g, idx::LN2_W, l), &self.pl(g, idx::LN2_B, l), ws, &dln, &layer(&a.res_attn, l, nc), &self.pl(w, idx::LN2_W, l), &layer(&a.ln2_mean, l, n), &layer(&a.ln2_rstd, l, n), n, c)?;
            // res_attn = x + dropout(y)
            dropout_backward(gpu, &dbranch, &dres, seed(&|s| s.attn(l)), p)?;
            matmul_backward_prec(gpu, self.cfg.precision, &datty, &self.pl(g, idx::ATTN_PROJ_W, l), Some(&self.pl(g, idx::ATTN_PROJ_B, l)), ws, &dbranch, &layer(&a.atty, l, nc), &self.pl(w, idx::ATTN_PROJ_W, l), n, c, c)?;
            attention_backward(gpu, &dqkv, &datty, &layer(&a.qkv, l, n3c), &layer(&a.att, l, natt), &lens, b, t, c, nh)?; // (B,T,3C)
            matmul_backward_prec(gpu, self.cfg.precision, &dln, &self.pl(g, idx::QKV_W, l), Some(&self.pl(g, idx::QKV_B, l)), ws, &dqkv, &layer(&a.ln1, l, nc), &self.pl(w, idx::QKV_W, l), n, c, 3 * c)?;
            layernorm_backward(gpu, &dres, &self.pl(g, idx::LN1_W, l), &self.pl(g, idx::LN1_B, l), ws, &dln, &x, &self.pl(w, idx::LN1_W, l), &layer(&a.ln1_mean, l, n), &layer(&a.ln1_rstd, l, n), n, c)?;
        }
        dropout_backward(gpu, &dbranch, &dres, seed(&|s| s.embedding()), p)?; //     (B,T,C)
        let (pos, starts) = (head(&a.emb_pos, n), head(&a.emb_starts, self.n_unique));
        embedding_backward(gpu, &self.pv(g, idx::WTE), &dbranch, &ids, &pos, &starts, n, c)?;
        Ok(())
    }

    /// Global L2 norm of the gradients (waits for the device).
    pub fn grad_norm(&self, gpu: &Gpu) -> Result<f32> {
        global_norm(gpu, &self.norm, &self.norm_scratch, &self.grads)?;
        Ok(gpu.download(&self.norm)?[0])
    }

    /// AdamW on every tensor (weight decay where the layout says), with the clip factor
    /// `grad_scale` folded into the read of the gradients. `step` is 1-based.
    pub fn update(&self, gpu: &Gpu, o: &OptimConfig, lr: f32, grad_scale: f32, step: u64) -> Result<()> {
        for (i, t) in self.layout.tensors.iter().enumerate() {
            let wd = if t.decay { o.weight_decay } else { 0.0 };
            let (p, m, v, g) = (self.pv(&self.params, i), self.pv(&self.m, i), self.pv(&self.v, i), self.pv(&self.grads, i));
            adamw_update(gpu, &p, &m, &v, &g, lr, o.beta1, o.beta2, o.eps, wd, grad_scale, step)?;
        }
        Ok(())
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
}

impl GpuEngine {
    /// A fresh model: parameters from `init_params(cfg, init_seed)`, moments zero.
    pub fn new(gpu: Gpu, cfg: &ModelConfig, optim: &OptimConfig, init_seed: u64, run_seed: u64) -> Result<Self> {
        let model = GpuModel::new(&gpu, cfg, &init_params(cfg, init_seed))?;
        Ok(GpuEngine { gpu, model, optim: optim.clone(), run_seed })
    }

    /// The gradients of the last `train_step`, before the clip factor.
    pub fn grads(&self) -> Result<Vec<f32>> {
        self.gpu.download(&self.model.grads)
    }
}

impl Engine for GpuEngine {
    fn train_step(&mut self, batch: &Batch, lr: f32, step: u64) -> Result<StepStats> {
        ensure!(step >= 1, "optimizer steps are 1-based");
        let (gpu, model) = (&self.gpu, &mut self.model);
        let seeds = DropoutSeeds::for_step(self.run_seed, step, model.cfg.n_layer);
        model.zero_grad(gpu)?;
        let loss = model.forward(gpu, batch, Some(&seeds))?;
        model.backward(gpu)?;
        let grad_norm = model.grad_norm(gpu)?; // waits for the backward
        let correct = model
            .positive_probs(gpu)?
            .iter()
            .zip(&batch.labels)
            .filter(|(&p, &y)| predicted_label(p) == y)
            .count();
        ensure!(grad_norm.is_finite(), "gradient norm is not finite at step {step} (loss {loss})");
        let scale = clip_scale(grad_norm, self.optim.grad_clip);
        model.update(gpu, &self.optim, lr, scale, step)?;
        Ok(StepStats { loss, grad_norm, correct })
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
