//! The parameter layout of docs/design.md: every tensor of the model in one flat buffer,
//! llm.c style. Gradients and the AdamW moments `m`, `v` use the same layout, so one
//! offset names the same entry in all four buffers.
//!
//! Device-independent: a `ParamLayout` is offsets + shapes; the slice helpers work on any
//! `&[T]` / `&mut [T]` (host buffers of the CPU reference, or host copies of GPU buffers).
//!
//! Order (L = n_layer, K = head outputs):
//! ```text
//! wte          (V, C)
//! ln1_w        (L, C)      ln1_b        (L, C)
//! qkv_w        (L, 3C, C)  qkv_b        (L, 3C)
//! attn_proj_w  (L, C, C)   attn_proj_b  (L, C)
//! ln2_w        (L, C)      ln2_b        (L, C)
//! fc_w         (L, F, C)   fc_b         (L, F)
//! fc_proj_w    (L, C, F)   fc_proj_b    (L, C)
//! lnf_w        (C)         lnf_b        (C)
//! head_w       (K, C)      head_b       (K)
//! ```
//!
//! Gradient-accumulation rule: the gradient buffer is zeroed at the start of every
//! optimizer step (`zero`), and every backward pass *adds* its batch's gradient of the
//! *mean* loss of that batch. Accumulating several micro-batches therefore sums their
//! mean-loss gradients; a caller that wants the mean over micro-batches scales by
//! 1 / (number of micro-batches) (e.g. through AdamW's `grad_scale`).

use std::ops::Range;

use crate::config::ModelConfig;
use crate::rng::SplitMix64;

/// One named tensor inside the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamTensor {
    pub name: &'static str,
    /// Shape, outermost first; layered tensors start with L.
    pub shape: Vec<usize>,
    /// First element in the flat buffer.
    pub offset: usize,
    /// Number of elements (product of `shape`).
    pub size: usize,
    /// AdamW weight decay applies (2-D tensors: wte and the matrices).
    pub decay: bool,
    /// Number of layers if the tensor is stacked per layer (shape[0] == L), else 0.
    pub layers: usize,
}

impl ParamTensor {
    /// Where the tensor lies in the flat buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.size
    }
    /// Elements per layer of a layered tensor.
    pub fn layer_size(&self) -> usize {
        assert!(self.layers > 0, "{} is not stacked per layer", self.name);
        self.size / self.layers
    }
    /// Where layer `l` of a layered tensor lies in the flat buffer.
    pub fn layer_range(&self, l: usize) -> Range<usize> {
        assert!(l < self.layers, "{}: layer {l} out of range", self.name);
        let s = self.layer_size();
        self.offset + l * s..self.offset + (l + 1) * s
    }
    pub fn of<'a, T>(&self, buf: &'a [T]) -> &'a [T] {
        &buf[self.range()]
    }
    pub fn of_mut<'a, T>(&self, buf: &'a mut [T]) -> &'a mut [T] {
        &mut buf[self.range()]
    }
    pub fn layer<'a, T>(&self, buf: &'a [T], l: usize) -> &'a [T] {
        &buf[self.layer_range(l)]
    }
    pub fn layer_mut<'a, T>(&self, buf: &'a mut [T], l: usize) -> &'a mut [T] {
        &mut buf[self.layer_range(l)]
    }
}

/// The layout: the 18 tensors in design order, with offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    pub tensors: Vec<ParamTensor>,
    pub total: usize,
    pub vocab: usize,
    pub d_model: usize,
    pub n_layer: usize,
    pub d_ff: usize,
    pub outputs: usize,
}

/// Tensor indices into `ParamLayout::tensors` (design order).
pub mod idx {
    pub const WTE: usize = 0;
    pub const LN1_W: usize = 1;
    pub const LN1_B: usize = 2;
    pub const QKV_W: usize = 3;
    pub const QKV_B: usize = 4;
    pub const ATTN_PROJ_W: usize = 5;
    pub const ATTN_PROJ_B: usize = 6;
    pub const LN2_W: usize = 7;
    pub const LN2_B: usize = 8;
    pub const FC_W: usize = 9;
    pub const FC_B: usize = 10;
    pub const FC_PROJ_W: usize = 11;
    pub const FC_PROJ_B: usize = 12;
    pub const LNF_W: usize = 13;
    pub const LNF_B: usize = 14;
    pub const HEAD_W: usize = 15;
    pub const HEAD_B: usize = 16;
    pub const COUNT: usize = 17;
}

impl ParamLayout {
    pub fn new(cfg: &ModelConfig) -> ParamLayout {
        let (v, c, l, f, k) = (cfg.vocab, cfg.d_model, cfg.n_layer, cfg.d_ff, cfg.loss.outputs());
        // (name, shape, decay, layered)
        let spec: [(&'static str, Vec<usize>, bool, bool); idx::COUNT] = [
            ("wte", vec![v, c], true, false),
            ("ln1_w", vec![l, c], false, true),
            ("ln1_b", vec![l, c], false, true),
            ("qkv_w", vec![l, 3 * c, c], true, true),
            ("qkv_b", vec![l, 3 * c], false, true),
            ("attn_proj_w", vec![l, c, c], true, true),
            ("attn_proj_b", vec![l, c], false, true),
            ("ln2_w", vec![l, c], false, true),
            ("ln2_b", vec![l, c], false, true),
            ("fc_w", vec![l, f, c], true, true),
            ("fc_b", vec![l, f], false, true),
            ("fc_proj_w", vec![l, c, f], true, true),
            ("fc_proj_b", vec![l, c], false, true),
            ("lnf_w", vec![c], false, false),
            ("lnf_b", vec![c], false, false),
            ("head_w", vec![k, c], true, false),
            ("head_b", vec![k], false, false),
        ];
        let mut offset = 0;
        let tensors = spec
            .into_iter()
            .map(|(name, shape, decay, layered)| {
                let size = shape.iter().product();
                let t = ParamTensor { name, shape, offset, size, decay, layers: if layered { l } else { 0 } };
                offset += size;
                t
            })
            .collect();
        ParamLayout { tensors, total: offset, vocab: v, d_model: c, n_layer: l, d_ff: f, outputs: k }
    }

    pub fn get(&self, name: &str) -> Option<&ParamTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
    pub fn tensor(&self, i: usize) -> &ParamTensor {
        &self.tensors[i]
    }
    /// All tensors as shared slices, in design order (index with `idx::*`).
    pub fn views<'a, T>(&self, buf: &'a [T]) -> Vec<&'a [T]> {
        assert_eq!(buf.len(), self.total, "buffer does not match the parameter layout");
        self.tensors.iter().map(|t| &buf[t.range()]).collect()
    }
    /// All tensors as disjoint mutable slices, in design order (index with `idx::*`).
    pub fn views_mut<'a, T>(&self, buf: &'a mut [T]) -> Vec<&'a mut [T]> {
        assert_eq!(buf.len(), self.total, "buffer does not match the parameter layout");
        let mut out = Vec::with_capacity(self.tensors.len());
        let mut rest = buf;
        for t in &self.tensors {
            let (head, tail) = rest.split_at_mut(t.size);
            out.push(head);
            rest = tail;
        }
        out
    }
}

/// Layer `l` of a layered tensor's slice (as returned by `views`): `n_layer` equal parts.
pub fn layer_of<T>(s: &[T], l: usize, n_layer: usize) -> &[T] {
    let n = s.len() / n_layer;
    &s[l * n..(l + 1) * n]
}

/// Mutable layer `l` of a layered tensor's slice.
pub fn layer_of_mut<T>(s: &mut [T], l: usize, n_layer: usize) -> &mut [T] {
    let n = s.len() / n_layer;
    &mut s[l * n..(l + 1) * n]
}

/// Initial parameters per docs/design.md: seeded SplitMix64 with Box-Muller normals;
/// wte, qkv_w, fc_w, head_w ~ N(0, 0.02); attn_proj_w, fc_proj_w ~ N(0, 0.02 / sqrt(2L));
/// biases 0; layer-norm weights 1. Tensors are drawn in layout order from one stream.
pub fn init_params(cfg: &ModelConfig, seed: u64) -> Vec<f32> {
    let layout = ParamLayout::new(cfg);
    let mut buf = vec![0.0f32; layout.total];
    let mut rng = SplitMix64::new(seed);
    let proj_std = 0.02 / (2.0 * cfg.n_layer.max(1) as f64).sqrt();
    for t in &layout.tensors {
        let dst = &mut buf[t.range()];
        match t.name {
            "attn_proj_w" | "fc_proj_w" => dst.iter_mut().for_each(|x| *x = rng.normal(proj_std) as f32),
            "wte" | "qkv_w" | "fc_w" | "head_w" => dst.iter_mut().for_each(|x| *x = rng.normal(0.02) as f32),
            "ln1_w" | "ln2_w" | "lnf_w" => dst.fill(1.0),
            _ => dst.fill(0.0),
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loss;

    pub fn tiny(loss: Loss) -> ModelConfig {
        ModelConfig { vocab: 11, d_model: 8, n_layer: 2, n_head: 2, d_ff: 16, max_len: 9, dropout: 0.0, loss, precision: Default::default() }
    }

    #[test]
    fn layout_is_contiguous_in_design_order() {
        let cfg = tiny(Loss::Ce);
        let lay = ParamLayout::new(&cfg);
        let names: Vec<_> = lay.tensors.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "wte", "ln1_w", "ln1_b", "qkv_w", "qkv_b", "attn_proj_w", "attn_proj_b", "ln2_w", "ln2_b",
                "fc_w", "fc_b", "fc_proj_w", "fc_proj_b", "lnf_w", "lnf_b", "head_w", "head_b"
            ]
        );
        let mut off = 0;
        for t in &lay.tensors {
            assert_eq!(t.offset, off, "{}", t.name);
            off += t.size;
        }
        assert_eq!(off, lay.total);
        let (v, c, l, f) = (11, 8, 2, 16);
        let expect = v * c + l * (4 * c + 3 * c * c + 3 * c + c * c + c + f * c + f + c * f + c) + 2 * c + 2 * c + 2;
        assert_eq!(lay.total, expect);
        assert_eq!(lay.get("qkv_w").unwrap().layer_range(1).len(), 3 * c * c);
        assert_eq!(ParamLayout::new(&tiny(Loss::Bce)).total, expect - c - 1);
        let decayed: Vec<_> = lay.tensors.iter().filter(|t| t.decay).map(|t| t.name).collect();
        assert_eq!(decayed, ["wte", "qkv_w", "attn_proj_w", "fc_w", "fc_proj_w", "head_w"]);
    }

    #[test]
    fn init_is_seeded_and_follows_design() {
        let cfg = ModelConfig { vocab: 300, d_model: 32, n_layer: 2, n_head: 4, d_ff: 128, ..tiny(Loss::Ce) };
        let a = init_params(&cfg, 7);
        assert_eq!(a, init_params(&cfg, 7));
        assert_ne!(a, init_params(&cfg, 8));
        let lay = ParamLayout::new(&cfg);
        let std = |name: &str| {
            let s = lay.get(name).unwrap().of(&a);
            (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
        };
        assert!((std("wte") - 0.02).abs() < 0.001, "wte std {}", std("wte"));
        assert!((std("fc_proj_w") - 0.01).abs() < 0.001, "fc_proj_w std {}", std("fc_proj_w"));
        assert!(lay.get("ln1_w").unwrap().of(&a).iter().all(|&x| x == 1.0));
        assert!(lay.get("qkv_b").unwrap().of(&a).iter().all(|&x| x == 0.0));
    }
}
