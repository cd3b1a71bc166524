//! Whole-model checks of the CPU reference (f64): the gradient of every parameter tensor
//! against central finite differences, for both heads, with padding; and the properties
//! that pin the model's meaning.

use cudaenc::config::{Loss, ModelConfig};
use cudaenc::model::{Batch, ParamLayout};
use cudaenc::reference::gradcheck::{check_op_gradient_at, SplitMix64};
use cudaenc::reference::model::{DropoutSeeds, Model};

fn tiny(loss: Loss, dropout: f32) -> ModelConfig {
    ModelConfig { vocab: 11, d_model: 8, n_layer: 2, n_head: 2, d_ff: 16, max_len: 7, dropout, loss, precision: Default::default() }
}

/// Random parameters of order 1 (so that no gradient is trivially tiny); layer-norm
/// weights around 1.
fn random_params(cfg: &ModelConfig, seed: u64) -> Vec<f64> {
    let layout = ParamLayout::new(cfg);
    let mut rng = SplitMix64::new(seed);
    let mut p = rng.normal_vec(layout.total, 0.4);
    for t in &layout.tensors {
        if t.name.ends_with("_w") && t.name.starts_with("ln") {
            p[t.range()].iter_mut().for_each(|x| *x += 1.0);
        }
    }
    p
}

/// Four reviews of different lengths (7, 4, 1, 0), padded to T = 7 with non-zero ids.
fn padded_batch(seed: u64) -> Batch {
    let mut rng = SplitMix64::new(seed);
    let lens = [7u32, 4, 1, 0];
    let t = 7;
    let ids: Vec<u32> = (0..lens.len() * t).map(|_| rng.below(11) as u32).collect();
    Batch { ids, lens: lens.to_vec(), labels: vec![1, 0, 1, 0], batch_size: 4, seq_len: t }
}

fn loss_of(cfg: &ModelConfig, params: &[f64], batch: &Batch, seeds: Option<&DropoutSeeds>) -> f64 {
    let mut m = Model::<f64>::new(cfg);
    m.forward(params, batch, seeds)
}

fn check_model_gradient(loss: Loss, dropout: f32) {
    let cfg = tiny(loss, dropout);
    let layout = ParamLayout::new(&cfg);
    let params = random_params(&cfg, 1234);
    let batch = padded_batch(99);
    let seeds = (dropout > 0.0).then(|| DropoutSeeds::for_step(2024, 3, cfg.n_layer));
    let mut model = Model::<f64>::new(&cfg);
    model.zero_grad();
    model.forward(&params, &batch, seeds.as_ref());
    model.backward(&params, &batch);
    let grads = model.grads.clone();

    // sampled entries of every tensor: 8 random ones (all of a small tensor), plus every
    // row of wte that only padding uses (its gradient must be 0)
    let mut rng = SplitMix64::new(7);
    let mut worst = 0.0f64;
    for t in &layout.tensors {
        let mut at: Vec<(usize, usize)> = if t.size <= 8 {
            t.range().map(|i| (0, i)).collect()
        } else {
            (0..8).map(|_| (0, t.offset + rng.below(t.size as u64) as usize)).collect()
        };
        if t.name == "wte" {
            for b in 0..batch.batch_size {
                for p in 0..batch.seq_len {
                    let id = batch.ids[b * batch.seq_len + p] as usize;
                    at.push((0, t.offset + id * cfg.d_model + p % cfg.d_model));
                }
            }
        }
        let f = |a: &[Vec<f64>]| vec![loss_of(&cfg, &a[0], &batch, seeds.as_ref())];
        let report = check_op_gradient_at(f, std::slice::from_ref(&params), &[1.0], std::slice::from_ref(&grads), &at);
        let gnorm: f64 = grads[t.range()].iter().map(|g| g * g).sum::<f64>().sqrt();
        println!(
            "model {} dropout {dropout}: {:<12} {:?}: {report}, |grad| {gnorm:.3e} (tol 1e-6)",
            loss.name(),
            t.name,
            t.shape
        );
        assert!(gnorm > 0.0, "{}: gradient is identically zero", t.name);
        assert!(report.max_rel_err < 1e-6, "{} {}: {report}", loss.name(), t.name);
        worst = worst.max(report.max_rel_err);
    }
    println!("model {} dropout {dropout}: worst relative error over all tensors {worst:.3e}", loss.name());
}

#[test]
fn model_gradient_ce_matches_finite_differences() {
    check_model_gradient(Loss::Ce, 0.0);
}

#[test]
fn model_gradient_bce_matches_finite_differences() {
    check_model_gradient(Loss::Bce, 0.0);
}

#[test]
fn model_gradient_with_dropout_matches_finite_differences() {
    // the masks depend only on (seed, index): with fixed seeds the loss is smooth
    check_model_gradient(Loss::Ce, 0.3);
    check_model_gradient(Loss::Bce, 0.3);
}

#[test]
fn padded_ids_change_nothing() {
    for loss in [Loss::Ce, Loss::Bce] {
        for dropout in [0.0, 0.25] {
            let cfg = tiny(loss, dropout);
            let params = random_params(&cfg, 5);
            let seeds = (dropout > 0.0).then(|| DropoutSeeds::for_step(1, 1, cfg.n_layer));
            let batch = padded_batch(3);
            let mut other = batch.clone();
            for b in 0..other.batch_size {
                for p in other.lens[b] as usize..other.seq_len {
                    other.ids[b * other.seq_len + p] = (other.ids[b * other.seq_len + p] + 5) % 11;
                }
            }
            assert_ne!(batch.ids, other.ids);
            let mut m1 = Model::<f64>::new(&cfg);
            let mut m2 = Model::<f64>::new(&cfg);
            m1.zero_grad();
            m2.zero_grad();
            let l1 = m1.forward(&params, &batch, seeds.as_ref());
            let l2 = m2.forward(&params, &other, seeds.as_ref());
            m1.backward(&params, &batch);
            m2.backward(&params, &other);
            let dp = m1.probs().iter().zip(m2.probs()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            let dg = m1.grads.iter().zip(&m2.grads).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            println!("{} dropout {dropout}: padded ids changed: |dloss| {:.1e}, max |dprob| {dp:.1e}, max |dgrad| {dg:.1e} (tol 1e-12)", loss.name(), (l1 - l2).abs());
            assert!((l1 - l2).abs() < 1e-12 && dp < 1e-12 && dg < 1e-12);
        }
    }
}

#[test]
fn permuting_valid_tokens_changes_nothing() {
    for loss in [Loss::Ce, Loss::Bce] {
        let cfg = tiny(loss, 0.0);
        let params = random_params(&cfg, 8);
        let batch = padded_batch(4);
        let mut perm = batch.clone();
        let mut rng = SplitMix64::new(12);
        for b in 0..perm.batch_size {
            let row = &mut perm.ids[b * perm.seq_len..b * perm.seq_len + perm.lens[b] as usize];
            for i in (1..row.len()).rev() {
                row.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        assert_ne!(batch.ids, perm.ids);
        let mut m = Model::<f64>::new(&cfg);
        let l1 = m.forward(&params, &batch, None);
        let p1 = m.probs().to_vec();
        let l2 = m.forward(&params, &perm, None);
        let dp = p1.iter().zip(m.probs()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        println!("{}: valid tokens permuted: |dloss| {:.1e}, max |dprob| {dp:.1e} (tol 1e-10)", loss.name(), (l1 - l2).abs());
        assert!((l1 - l2).abs() < 1e-10 && dp < 1e-10);
    }
}

#[test]
fn ce_logits_a_b_and_bce_logit_b_minus_a_give_the_same_probability() {
    let ce = tiny(Loss::Ce, 0.0);
    let bce = tiny(Loss::Bce, 0.0);
    let (lce, lbce) = (ParamLayout::new(&ce), ParamLayout::new(&bce));
    let pce = random_params(&ce, 21);
    // the same body; BCE head = difference of the CE head's rows (class 1 - class 0)
    let mut pbce = vec![0.0; lbce.total];
    let body = lce.get("head_w").unwrap().offset;
    pbce[..body].copy_from_slice(&pce[..body]);
    let (hw, hb) = (lce.get("head_w").unwrap().of(&pce), lce.get("head_b").unwrap().of(&pce));
    let c = ce.d_model;
    for i in 0..c {
        pbce[lbce.get("head_w").unwrap().offset + i] = hw[c + i] - hw[i];
    }
    pbce[lbce.get("head_b").unwrap().offset] = hb[1] - hb[0];
    let batch = padded_batch(6);
    let mut mce = Model::<f64>::new(&ce);
    let mut mbce = Model::<f64>::new(&bce);
    let l1 = mce.forward(&pce, &batch, None);
    let l2 = mbce.forward(&pbce, &batch, None);
    let (p1, p2) = (mce.positive_probs(), mbce.positive_probs());
    let dp = p1.iter().zip(&p2).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    println!("CE (a, b) vs BCE (b - a): probs {p1:?} vs {p2:?}, max diff {dp:.1e}, losses {l1} vs {l2} (tol 1e-12)");
    assert!(dp < 1e-12 && (l1 - l2).abs() < 1e-12);
}

#[test]
fn f32_model_agrees_with_f64() {
    for loss in [Loss::Ce, Loss::Bce] {
        let cfg = tiny(loss, 0.1);
        let p64 = random_params(&cfg, 31);
        let p32: Vec<f32> = p64.iter().map(|&x| x as f32).collect();
        let batch = padded_batch(2);
        let seeds = DropoutSeeds::for_step(9, 2, cfg.n_layer);
        let mut m64 = Model::<f64>::new(&cfg);
        let mut m32 = Model::<f32>::new(&cfg);
        let l64 = m64.forward(&p64, &batch, Some(&seeds));
        let l32 = m32.forward(&p32, &batch, Some(&seeds));
        m64.backward(&p64, &batch);
        m32.backward(&p32, &batch);
        let dg = m64.grads.iter().zip(&m32.grads).map(|(a, &b)| (a - b as f64).abs()).fold(0.0, f64::max);
        println!("{}: f32 vs f64 loss {l32} vs {l64}, max grad diff {dg:.2e} (tol 1e-4)", loss.name());
        assert!((l64 - l32 as f64).abs() < 1e-4 && dg < 1e-4);
    }
}
