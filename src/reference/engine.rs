//! `CpuEngine`: the `cpu` device. The f32 reference model driven through the trainer's
//! `Engine` trait: forward with dropout, backward, global norm, clip, AdamW.
//! Everything parallel runs on rayon: GEMMs (matrixmultiply, one thread each, tall ones
//! split by rows), the fused attention per review, the elementwise ops and AdamW.

use rayon::prelude::*;

use super::adamw::adamw_update;
use super::gradnorm::{clip_scale, global_norm};
use super::model::{DropoutSeeds, Model};
use crate::config::{ModelConfig, OptimConfig};
use crate::model::params::init_params;
use crate::model::Batch;
use crate::train::engine::{Engine, StepStats};

/// The predicted label for a probability of the positive class.
pub fn predicted_label(p_positive: f32) -> u8 {
    (p_positive > 0.5) as u8
}

pub struct CpuEngine {
    pub cfg: ModelConfig,
    pub optim: OptimConfig,
    /// Dropout seeds derive from it: `rng::derive_seed(run_seed, step, site)`.
    pub run_seed: u64,
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    model: Model<f32>,
}

/// AdamW elements per rayon task.
const ADAMW_CHUNK: usize = 1 << 16;

impl CpuEngine {
    /// A fresh model: parameters from `init_params(cfg, init_seed)`, moments zero.
    pub fn new(cfg: &ModelConfig, optim: &OptimConfig, init_seed: u64, run_seed: u64) -> anyhow::Result<Self> {
        cfg.validate()?;
        let params = init_params(cfg, init_seed);
        let n = params.len();
        let mut model = Model::new(cfg);
        model.label_smoothing = optim.label_smoothing as f64;
        Ok(CpuEngine {
            cfg: cfg.clone(),
            optim: optim.clone(),
            run_seed,
            params,
            m: vec![0.0; n],
            v: vec![0.0; n],
            model,
        })
    }

    /// The gradients of the last `train_step`, before the clip factor.
    pub fn grads(&self) -> &[f32] {
        &self.model.grads
    }

    fn check_batch(&self, batch: &Batch) -> anyhow::Result<()> {
        anyhow::ensure!(batch.ids.len() == batch.batch_size * batch.seq_len, "batch ids are not (B, T)");
        anyhow::ensure!(batch.lens.len() == batch.batch_size && batch.labels.len() == batch.batch_size, "batch lens/labels are not (B)");
        anyhow::ensure!(batch.lens.iter().all(|&l| l as usize <= batch.seq_len), "a review is longer than T");
        if let Some(&id) = batch.ids.iter().find(|&&id| id as usize >= self.cfg.vocab) {
            anyhow::bail!("token id {id} is outside the vocabulary ({})", self.cfg.vocab);
        }
        if let Some(&y) = batch.labels.iter().find(|&&y| y > 1) {
            anyhow::bail!("label {y} is not 0 or 1");
        }
        Ok(())
    }
}

impl Engine for CpuEngine {
    fn train_step(&mut self, batch: &Batch, lr: f32, step: u64) -> anyhow::Result<StepStats> {
        self.check_batch(batch)?;
        anyhow::ensure!(step >= 1, "optimizer steps are 1-based");
        let seeds = DropoutSeeds::for_step(self.run_seed, step, self.cfg.n_layer);
        self.model.zero_grad();
        let loss = self.model.forward(&self.params, batch, Some(&seeds));
        let correct = self
            .model
            .positive_probs()
            .iter()
            .zip(&batch.labels)
            .filter(|(&p, &y)| predicted_label(p) == y)
            .count();
        self.model.backward(&self.params, batch);
        let grad_norm = global_norm(&self.model.grads);
        anyhow::ensure!(grad_norm.is_finite(), "gradient norm is not finite at step {step} (loss {loss})");
        let scale = clip_scale(grad_norm, self.optim.grad_clip);
        let o = &self.optim;
        for t in &self.model.layout.tensors {
            let wd = if t.decay { o.weight_decay } else { 0.0 };
            let r = t.range();
            self.params[r.clone()]
                .par_chunks_mut(ADAMW_CHUNK)
                .zip(self.m[r.clone()].par_chunks_mut(ADAMW_CHUNK))
                .zip(self.v[r.clone()].par_chunks_mut(ADAMW_CHUNK))
                .zip(self.model.grads[r].par_chunks(ADAMW_CHUNK))
                .for_each(|(((p, m), v), g)| adamw_update(p, m, v, g, lr, o.beta1, o.beta2, o.eps, wd, scale, step));
        }
        Ok(StepStats { loss, grad_norm, correct })
    }

    fn predict(&mut self, batch: &Batch) -> anyhow::Result<Vec<f32>> {
        self.check_batch(batch)?;
        self.model.forward(&self.params, batch, None);
        Ok(self.model.positive_probs())
    }

    fn params(&mut self) -> anyhow::Result<Vec<f32>> {
        Ok(self.params.clone())
    }

    fn optimizer_state(&mut self) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        Ok((self.m.clone(), self.v.clone()))
    }

    fn load_state(&mut self, params: &[f32], m: &[f32], v: &[f32]) -> anyhow::Result<()> {
        let n = self.params.len();
        anyhow::ensure!(
            params.len() == n && m.len() == n && v.len() == n,
            "state has {} / {} / {} values, the model needs {n}",
            params.len(),
            m.len(),
            v.len()
        );
        self.params.copy_from_slice(params);
        self.m.copy_from_slice(m);
        self.v.copy_from_slice(v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loss;

    #[test]
    fn engine_overfits_a_tiny_batch_and_roundtrips_state() {
        for loss in [Loss::Ce, Loss::Bce] {
            let cfg = ModelConfig { vocab: 6, d_model: 16, n_layer: 1, n_head: 2, d_ff: 32, max_len: 4, dropout: 0.1, loss, precision: Default::default() };
            let mut e = CpuEngine::new(&cfg, &OptimConfig::default(), 1, 2).unwrap();
            let batch = Batch::from_reviews(&[&[1, 2], &[3, 4, 5], &[1, 3], &[2]], &[1, 0, 0, 1]);
            let first = e.train_step(&batch, 1e-2, 1).unwrap();
            let mut last = first;
            for step in 2..=60 {
                last = e.train_step(&batch, 1e-2, step).unwrap();
            }
            let probs = e.predict(&batch).unwrap();
            println!("{}: loss {} -> {}, probs {probs:?}", loss.name(), first.loss, last.loss);
            assert!(last.loss < first.loss * 0.5);
            assert!(probs.iter().zip(&batch.labels).all(|(&p, &y)| predicted_label(p) == y));
            // state round trip
            let (p, (m, v)) = (e.params().unwrap(), e.optimizer_state().unwrap());
            let mut e2 = CpuEngine::new(&cfg, &OptimConfig::default(), 99, 2).unwrap();
            e2.load_state(&p, &m, &v).unwrap();
            assert_eq!(e2.predict(&batch).unwrap(), probs);
            assert!(e2.load_state(&p[1..], &m, &v).is_err());
            let bad = Batch::from_reviews(&[&[7]], &[1]);
            assert!(e.train_step(&bad, 1e-2, 61).is_err());
        }
    }
}
