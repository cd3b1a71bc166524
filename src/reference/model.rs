//! The whole classifier on the CPU, generic over f32 / f64, sequenced by hand (llm.c
//! style, no autograd): `forward` is the list of op calls of docs/design.md layer by
//! layer, `backward` the same list in reverse. Activations are sized for the batch's
//! (B, T) and kept for the backward pass; parameters are passed in (one flat buffer in
//! the layout of `model::params`), gradients live here in the same layout.
//!
//! Gradient rule: `zero_grad` at the start of each optimizer step; `backward` *adds* the
//! gradient of this batch's mean loss (see `model::params` for accumulation).

use rayon::prelude::*;

use super::attention::{attention_backward, attention_forward};
use super::dropout::{dropout_backward, dropout_forward};
use super::embedding::{embedding_backward, embedding_forward};
use super::gelu::{gelu_backward, gelu_forward};
use super::layernorm::{layernorm_backward, layernorm_forward};
use super::loss::{sigmoid_bce_backward, sigmoid_bce_forward, softmax_ce_backward, softmax_ce_forward};
use super::matmul::{matmul_backward, matmul_forward};
use super::meanpool::{meanpool_backward, meanpool_forward};
use super::residual::residual_forward;
use super::Float;
use crate::config::{Loss, ModelConfig};
use crate::model::params::{idx, ParamLayout};
use crate::model::Batch;
use crate::rng::derive_seed;

/// One seed per dropout site for one step: site 0 is the embedding, `1 + 2l` the
/// attention branch of layer l, `2 + 2l` its FFN branch (docs/design.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropoutSeeds(pub Vec<u64>);

impl DropoutSeeds {
    pub fn for_step(run_seed: u64, step: u64, n_layer: usize) -> Self {
        DropoutSeeds((0..1 + 2 * n_layer as u64).map(|site| derive_seed(run_seed, step, site)).collect())
    }
    pub fn embedding(&self) -> u64 {
        self.0[0]
    }
    pub fn attn(&self, l: usize) -> u64 {
        self.0[1 + 2 * l]
    }
    pub fn ffn(&self, l: usize) -> u64 {
        self.0[2 + 2 * l]
    }
}

/// Everything the forward pass keeps for the backward pass, plus scratch.
/// Per-layer tensors are stacked: (L, ...).
#[derive(Default)]
struct Acts<T> {
    emb: Vec<T>,       // (B,T,C) wte[ids] before dropout
    x0: Vec<T>,        // (B,T,C) residual stream entering layer 0
    ln1: Vec<T>,       // (L,B,T,C)
    ln1_mean: Vec<T>,  // (L,B,T)
    ln1_rstd: Vec<T>,  // (L,B,T)
    qkv: Vec<T>,       // (L,B,T,3C)
    lse: Vec<T>,       // (L,B,NH,T) attention log-sum-exp per query
    atty: Vec<T>,      // (L,B,T,C) attention output
    res_attn: Vec<T>,  // (L,B,T,C) x + dropout(attn_proj)
    ln2: Vec<T>,       // (L,B,T,C)
    ln2_mean: Vec<T>,  // (L,B,T)
    ln2_rstd: Vec<T>,  // (L,B,T)
    fch: Vec<T>,       // (L,B,T,F)
    fch_gelu: Vec<T>,  // (L,B,T,F)
    res_ffn: Vec<T>,   // (L,B,T,C) x + dropout(fc_proj)
    lnf: Vec<T>,       // (B,T,C)
    lnf_mean: Vec<T>,  // (B,T)
    lnf_rstd: Vec<T>,  // (B,T)
    pooled: Vec<T>,    // (B,C)
    logits: Vec<T>,    // (B,K)
    probs: Vec<T>,     // (B,K)
    losses: Vec<T>,    // (B)
    branch: Vec<T>,    // (B,T,C) scratch: a branch's output before dropout
    branch_drop: Vec<T>, // (B,T,C) scratch: after dropout
    // backward scratch
    dres: Vec<T>,      // (B,T,C) gradient of the residual stream (accumulates)
    dbranch: Vec<T>,   // (B,T,C)
    dln: Vec<T>,       // (B,T,C)
    datty: Vec<T>,     // (B,T,C)
    dqkv: Vec<T>,      // (B,T,3C)
    dfch: Vec<T>,      // (B,T,F)
    dfch_gelu: Vec<T>, // (B,T,F)
    dpooled: Vec<T>,   // (B,C)
    dlogits: Vec<T>,   // (B,K)
}

/// The CPU model: configuration, layout, activations for the last forward, gradients.
pub struct Model<T: Float> {
    pub cfg: ModelConfig,
    pub layout: ParamLayout,
    /// Gradients in the parameter layout (accumulated by `backward`).
    pub grads: Vec<T>,
    /// Label smoothing (CE) / target smoothing (BCE) of the loss, in [0, 1); 0: none.
    pub label_smoothing: f64,
    acts: Acts<T>,
    b: usize,
    t: usize,
    /// Seeds of the last forward's dropout, if any (the backward applies the same masks).
    seeds: Option<DropoutSeeds>,
}

fn resize<T: Float>(v: &mut Vec<T>, n: usize) {
    v.resize(n, T::zero());
}

fn layer<T>(v: &[T], l: usize, n: usize) -> &[T] {
    &v[l * n..(l + 1) * n]
}

fn layer_mut<T>(v: &mut [T], l: usize, n: usize) -> &mut [T] {
    &mut v[l * n..(l + 1) * n]
}

impl<T: Float> Model<T> {
    pub fn new(cfg: &ModelConfig) -> Self {
        cfg.validate().expect("valid model config");
        let layout = ParamLayout::new(cfg);
        Model {
            cfg: cfg.clone(),
            grads: vec![T::zero(); layout.total],
            layout,
            label_smoothing: 0.0,
            acts: Acts::default(),
            b: 0,
            t: 0,
            seeds: None,
        }
    }

    pub fn zero_grad(&mut self) {
        self.grads.par_chunks_mut(1 << 16).for_each(|g| g.fill(T::zero()));
    }

    /// Per-review probabilities of the last forward: CE (B, 2) softmax, BCE (B) sigmoid.
    pub fn probs(&self) -> &[T] {
        &self.acts.probs
    }
    /// Logits of the last forward (B, K).
    pub fn logits(&self) -> &[T] {
        &self.acts.logits
    }
    /// Per-review losses of the last forward (B).
    pub fn losses(&self) -> &[T] {
        &self.acts.losses
    }
    /// Probability of the positive class per review, from the last forward.
    pub fn positive_probs(&self) -> Vec<T> {
        match self.cfg.loss {
            Loss::Ce => self.acts.probs.chunks_exact(2).map(|p| p[1]).collect(),
            Loss::Bce => self.acts.probs.clone(),
        }
    }

    fn ensure(&mut self, b: usize, t: usize) {
        let (c, f, l, nh, k) = (self.cfg.d_model, self.cfg.d_ff, self.cfg.n_layer, self.cfg.n_head, self.cfg.loss.outputs());
        let (n, a) = (b * t, &mut self.acts);
        for v in [&mut a.emb, &mut a.x0, &mut a.lnf, &mut a.branch, &mut a.branch_drop, &mut a.dres, &mut a.dbranch, &mut a.dln, &mut a.datty] {
            resize(v, n * c);
        }
        for v in [&mut a.ln1, &mut a.atty, &mut a.res_attn, &mut a.ln2, &mut a.res_ffn] {
            resize(v, l * n * c);
        }
        for v in [&mut a.ln1_mean, &mut a.ln1_rstd, &mut a.ln2_mean, &mut a.ln2_rstd] {
            resize(v, l * n);
        }
        resize(&mut a.lnf_mean, n);
        resize(&mut a.lnf_rstd, n);
        resize(&mut a.qkv, l * n * 3 * c);
        resize(&mut a.lse, l * b * nh * t);
        resize(&mut a.fch, l * n * f);
        resize(&mut a.fch_gelu, l * n * f);
        resize(&mut a.dqkv, n * 3 * c);
        resize(&mut a.dfch, n * f);
        resize(&mut a.dfch_gelu, n * f);
        resize(&mut a.pooled, b * c);
        resize(&mut a.dpooled, b * c);
        resize(&mut a.logits, b * k);
        resize(&mut a.probs, b * k);
        resize(&mut a.dlogits, b * k);
        resize(&mut a.losses, b);
        self.b = b;
        self.t = t;
    }

    /// Forward pass; returns the mean loss over the batch. `dropout`: the step's seeds
    /// (training) or None (evaluation: no dropout). Labels are read only for the loss.
    pub fn forward(&mut self, params: &[T], batch: &Batch, dropout: Option<&DropoutSeeds>) -> T {
        let (b, t) = (batch.batch_size, batch.seq_len);
        assert_eq!(batch.ids.len(), b * t, "batch ids must be (B, T)");
        assert_eq!(batch.lens.len(), b);
        assert!(batch.lens.iter().all(|&l| l as usize <= t), "a review is longer than T");
        let (c, f, nl, nh, k) = (self.cfg.d_model, self.cfg.d_ff, self.cfg.n_layer, self.cfg.n_head, self.cfg.loss.outputs());
        self.ensure(b, t);
        let p = if dropout.is_some() { self.cfg.dropout } else { 0.0 };
        if let Some(s) = dropout {
            assert_eq!(s.0.len(), 1 + 2 * nl, "one dropout seed per site");
        }
        self.seeds = dropout.cloned();
        let seed = |f: &dyn Fn(&DropoutSeeds) -> u64| dropout.map(f).unwrap_or(0);
        let [wte, ln1_w, ln1_b, qkv_w, qkv_b, attn_proj_w, attn_proj_b, ln2_w, ln2_b, fc_w, fc_b, fc_proj_w, fc_proj_b, lnf_w, lnf_b, head_w, head_b]: [&[T]; idx::COUNT] =
            self.layout.views(params).try_into().expect("17 tensors");
        let a = &mut self.acts;
        let n = b * t; // rows of every per-token matrix
        let (nc, n3c, nf, nlse) = (n * c, n * 3 * c, n * f, b * nh * t);

        embedding_forward(&mut a.emb, &batch.ids, wte, n, c); //          (B,T,C)
        dropout_forward(&mut a.x0, &a.emb, seed(&|s| s.embedding()), p);
        for l in 0..nl {
            let x = if l == 0 { &a.x0[..] } else { layer(&a.res_ffn, l - 1, nc) }; // (B,T,C)
            let ln1 = layer_mut(&mut a.ln1, l, nc);
            layernorm_forward(ln1, layer_mut(&mut a.ln1_mean, l, n), layer_mut(&mut a.ln1_rstd, l, n), x, layer(ln1_w, l, c), layer(ln1_b, l, c), n, c);
            let qkv = layer_mut(&mut a.qkv, l, n3c); //                   (B,T,3C)
            matmul_forward(qkv, ln1, layer(qkv_w, l, 3 * c * c), Some(layer(qkv_b, l, 3 * c)), n, c, 3 * c);
            let atty = layer_mut(&mut a.atty, l, nc); //                  (B,T,C)
            attention_forward(atty, layer_mut(&mut a.lse, l, nlse), qkv, &batch.lens, b, t, c, nh);
            matmul_forward(&mut a.branch, atty, layer(attn_proj_w, l, c * c), Some(layer(attn_proj_b, l, c)), n, c, c);
            dropout_forward(&mut a.branch_drop, &a.branch, seed(&|s| s.attn(l)), p);
            let res_attn = layer_mut(&mut a.res_attn, l, nc); //          (B,T,C)
            residual_forward(res_attn, x, &a.branch_drop);
            let ln2 = layer_mut(&mut a.ln2, l, nc);
            layernorm_forward(ln2, layer_mut(&mut a.ln2_mean, l, n), layer_mut(&mut a.ln2_rstd, l, n), res_attn, layer(ln2_w, l, c), layer(ln2_b, l, c), n, c);
            let fch = layer_mut(&mut a.fch, l, nf); //                    (B,T,F)
            matmul_forward(fch, ln2, layer(fc_w, l, f * c), Some(layer(fc_b, l, f)), n, c, f);
            let fch_gelu = layer_mut(&mut a.fch_gelu, l, nf); //          (B,T,F)
            gelu_forward(fch_gelu, fch);
            matmul_forward(&mut a.branch, fch_gelu, layer(fc_proj_w, l, c * f), Some(layer(fc_proj_b, l, c)), n, f, c);
            dropout_forward(&mut a.branch_drop, &a.branch, seed(&|s| s.ffn(l)), p);
            residual_forward(layer_mut(&mut a.res_ffn, l, nc), res_attn, &a.branch_drop); // (B,T,C)
        }
        let x = if nl == 0 { &a.x0[..] } else { layer(&a.res_ffn, nl - 1, nc) };
        layernorm_forward(&mut a.lnf, &mut a.lnf_mean, &mut a.lnf_rstd, x, lnf_w, lnf_b, n, c); // (B,T,C)
        meanpool_forward(&mut a.pooled, &a.lnf, &batch.lens, b, t, c); //     (B,C)
        matmul_forward(&mut a.logits, &a.pooled, head_w, Some(head_b), b, c, k); // (B,K)
        match self.cfg.loss {
            Loss::Ce => softmax_ce_forward(&mut a.losses, &mut a.probs, &a.logits, &batch.labels, b, k, self.label_smoothing),
            Loss::Bce => sigmoid_bce_forward(&mut a.losses, &mut a.probs, &a.logits, &batch.labels, b, self.label_smoothing),
        }
    }

    /// Backward pass of the last `forward` (same params and batch): adds the gradient of
    /// the mean loss to `self.grads`.
    pub fn backward(&mut self, params: &[T], batch: &Batch) {
        let (b, t) = (batch.batch_size, batch.seq_len);
        assert!(b == self.b && t == self.t, "backward must follow forward on the same batch");
        let (c, f, nl, nh, k) = (self.cfg.d_model, self.cfg.d_ff, self.cfg.n_layer, self.cfg.n_head, self.cfg.loss.outputs());
        let seeds = self.seeds.clone();
        let p = if seeds.is_some() { self.cfg.dropout } else { 0.0 };
        let seed = |f: &dyn Fn(&DropoutSeeds) -> u64| seeds.as_ref().map(f).unwrap_or(0);
        let [_wte, ln1_w, _ln1_b, qkv_w, _qkv_b, attn_proj_w, _attn_proj_b, ln2_w, _ln2_b, fc_w, _fc_b, fc_proj_w, _fc_proj_b, lnf_w, _lnf_b, head_w, _head_b]: [&[T]; idx::COUNT] =
            self.layout.views(params).try_into().expect("17 tensors");
        let [d_wte, d_ln1_w, d_ln1_b, d_qkv_w, d_qkv_b, d_attn_proj_w, d_attn_proj_b, d_ln2_w, d_ln2_b, d_fc_w, d_fc_b, d_fc_proj_w, d_fc_proj_b, d_lnf_w, d_lnf_b, d_head_w, d_head_b]: [&mut [T]; idx::COUNT] =
            self.layout.views_mut(&mut self.grads).try_into().expect("17 tensors");
        let a = &mut self.acts;
        let n = b * t;
        let (nc, n3c, nf, nlse) = (n * c, n * 3 * c, n * f, b * nh * t);

        match self.cfg.loss {
            Loss::Ce => softmax_ce_backward(&mut a.dlogits, &a.probs, &batch.labels, b, k, self.label_smoothing), // (B,K)
            Loss::Bce => sigmoid_bce_backward(&mut a.dlogits, &a.probs, &batch.labels, b, self.label_smoothing),
        }
        matmul_backward(&mut a.dpooled, d_head_w, Some(d_head_b), &a.dlogits, &a.pooled, head_w, b, c, k); // (B,C)
        meanpool_backward(&mut a.dln, &a.dpooled, &batch.lens, b, t, c); //    (B,T,C)
        a.dres.fill(T::zero());
        let x = if nl == 0 { &a.x0[..] } else { layer(&a.res_ffn, nl - 1, nc) };
        layernorm_backward(&mut a.dres, d_lnf_w, d_lnf_b, &a.dln, x, lnf_w, &a.lnf_mean, &a.lnf_rstd, n, c);
        for l in (0..nl).rev() {
            let x = if l == 0 { &a.x0[..] } else { layer(&a.res_ffn, l - 1, nc) };
            // x = res_attn + dropout(z): dres flows on unchanged, dz = dropout'(dres)
            dropout_backward(&mut a.dbranch, &a.dres, seed(&|s| s.ffn(l)), p); // (B,T,C)
            matmul_backward(&mut a.dfch_gelu, layer_mut(d_fc_proj_w, l, c * f), Some(layer_mut(d_fc_proj_b, l, c)), &a.dbranch, layer(&a.fch_gelu, l, nf), layer(fc_proj_w, l, c * f), n, f, c);
            gelu_backward(&mut a.dfch, &a.dfch_gelu, layer(&a.fch, l, nf)); // (B,T,F)
            matmul_backward(&mut a.dln, layer_mut(d_fc_w, l, f * c), Some(layer_mut(d_fc_b, l, f)), &a.dfch, layer(&a.ln2, l, nc), layer(fc_w, l, f * c), n, c, f);
            layernorm_backward(&mut a.dres, layer_mut(d_ln2_w, l, c), layer_mut(d_ln2_b, l, c), &a.dln, layer(&a.res_attn, l, nc), layer(ln2_w, l, c), layer(&a.ln2_mean, l, n), layer(&a.ln2_rstd, l, n), n, c);
            // res_attn = x + dropout(y)
            dropout_backward(&mut a.dbranch, &a.dres, seed(&|s| s.attn(l)), p);
            matmul_backward(&mut a.datty, layer_mut(d_attn_proj_w, l, c * c), Some(layer_mut(d_attn_proj_b, l, c)), &a.dbranch, layer(&a.atty, l, nc), layer(attn_proj_w, l, c * c), n, c, c);
            attention_backward(&mut a.dqkv, &a.datty, layer(&a.qkv, l, n3c), layer(&a.atty, l, nc), layer(&a.lse, l, nlse), &batch.lens, b, t, c, nh); // (B,T,3C)
            matmul_backward(&mut a.dln, layer_mut(d_qkv_w, l, 3 * c * c), Some(layer_mut(d_qkv_b, l, 3 * c)), &a.dqkv, layer(&a.ln1, l, nc), layer(qkv_w, l, 3 * c * c), n, c, 3 * c);
            layernorm_backward(&mut a.dres, layer_mut(d_ln1_w, l, c), layer_mut(d_ln1_b, l, c), &a.dln, x, layer(ln1_w, l, c), layer(&a.ln1_mean, l, n), layer(&a.ln1_rstd, l, n), n, c);
        }
        dropout_backward(&mut a.dbranch, &a.dres, seed(&|s| s.embedding()), p); // (B,T,C)
        embedding_backward(d_wte, &a.dbranch, &batch.ids, n, c);
    }
}
