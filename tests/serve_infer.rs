//! The batched inference path (`src/infer.rs`) that predict, eval and serve share:
//! batched probabilities equal single-review ones (cpu device, 1e-6) whatever the
//! batching, in input order; texts are prepared exactly as training prepares them.

use cudaenc::config::{Loss, ModelConfig, OptimConfig};
use cudaenc::data::read::clean_text;
use cudaenc::data::{tokenize, Truncate, TruncatePolicy};
use cudaenc::infer::{self, TextPolicy};
use cudaenc::model::Batch;
use cudaenc::reference::engine::CpuEngine;
use cudaenc::rng::SplitMix64;
use cudaenc::train::engine::Engine;

/// Reviews of awkward lengths 1..=40 (some over max_len), random ids below `vocab`.
fn reviews(vocab: u64, n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| (0..1 + rng.below(40)).map(|_| rng.below(vocab) as u32).collect()).collect()
}

#[test]
fn batched_probabilities_equal_single_review_ones() {
    for (loss, policy) in [(Loss::Bce, TruncatePolicy::Head), (Loss::Ce, TruncatePolicy::HeadTail)] {
        let cfg = ModelConfig { vocab: 57, d_model: 16, n_layer: 2, n_head: 2, d_ff: 24, max_len: 23, dropout: 0.1, loss, precision: Default::default() };
        let mut engine = CpuEngine::new(&cfg, &OptimConfig::default(), 7, 7).unwrap();
        let truncate = Truncate::new(cfg.max_len, policy);
        let texts = reviews(57, 53, 11);
        let single: Vec<f32> = texts
            .iter()
            .map(|t| engine.predict(&Batch::from_reviews(&[&truncate.to_vec(t)], &[0])).unwrap()[0])
            .collect();
        let spread = single.iter().cloned().fold(f32::MIN, f32::max) - single.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 1e-3, "the reviews' probabilities barely differ ({spread}): the test could not see a mix-up");
        let set = infer::review_set(&texts);
        for (max_batch, max_tokens) in [(64, None), (5, None), (64, Some(60)), (7, Some(1)), (1, None)] {
            let batched = infer::predict_set(&mut engine, &set, &infer::batch_config(max_batch, max_tokens, truncate)).unwrap();
            assert_eq!(batched.len(), texts.len());
            for (i, (b, s)) in batched.iter().zip(&single).enumerate() {
                assert!((b - s).abs() <= 1e-6, "{loss:?} batch {max_batch}/{max_tokens:?} review {i}: batched {b} single {s}");
            }
        }
        // serve's path: length buckets first, on already-truncated reviews
        let truncated: Vec<Vec<u32>> = texts.iter().map(|t| truncate.to_vec(t)).collect();
        let refs: Vec<&[u32]> = truncated.iter().map(Vec::as_slice).collect();
        let mut shapes = Vec::new();
        let cfg_b = infer::batch_config(512, Some(512), Truncate::none());
        let bucketed = infer::predict_bucketed(&mut engine, &refs, &cfg_b, |b| shapes.push(b.lens.clone())).unwrap();
        for (i, (b, s)) in bucketed.iter().zip(&single).enumerate() {
            assert!((b - s).abs() <= 1e-6, "{loss:?} bucketed review {i}: batched {b} single {s}");
        }
        for lens in &shapes {
            let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
            assert_eq!(infer::length_bucket(*lo as usize), infer::length_bucket(*hi as usize), "{lens:?}");
        }
        assert!(shapes.len() > 1 && shapes.len() < texts.len());
    }
}

#[test]
fn batches_respect_the_token_budget_and_sort_by_length() {
    let cfg = ModelConfig { vocab: 30, d_model: 8, n_layer: 1, n_head: 2, d_ff: 16, max_len: 16, dropout: 0.0, loss: Loss::Bce, precision: Default::default() };
    let mut engine = CpuEngine::new(&cfg, &OptimConfig::default(), 1, 1).unwrap();
    let texts = reviews(30, 41, 3);
    let set = infer::review_set(&texts);
    let mut seen = Vec::new();
    let cfg_b = infer::batch_config(100, Some(50), Truncate::new(16, TruncatePolicy::Head));
    infer::predict_set_observed(&mut engine, &set, &cfg_b, |b| seen.push((b.batch_size, b.seq_len))).unwrap();
    assert_eq!(seen.iter().map(|s| s.0).sum::<usize>(), texts.len());
    for &(b, t) in &seen {
        assert!(b * t <= 50 || b == 1, "batch {b} x {t} is over the budget of 50");
        assert!(t <= 16);
    }
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "batches are not in length order: {seen:?}");
    // a review without tokens is an error, not a silent answer
    let empty = infer::review_set(&[vec![1u32], vec![]]);
    assert!(infer::predict_set(&mut engine, &empty, &cfg_b).is_err());
}

#[test]
fn texts_are_prepared_as_training_prepares_them() {
    let policy = TextPolicy { truncate: Truncate::new(5, TruncatePolicy::Head), id_map: Vec::new(), vocab_map: None, dedup: false };
    let raw: &[u8] = b"Great film.<br /><br />Loved \xff it, really loved it a lot.";
    let p = policy.prepare(raw);
    let (cleaned, invalid, had_br) = clean_text(raw);
    assert!(invalid && had_br && cleaned.contains("\n\n") && cleaned.contains('\u{FFFD}'));
    assert_eq!(p.ids, tokenize::encode(&cleaned));
    assert!(p.invalid_utf8 && p.truncated && !p.blank && p.ids.len() > 5);
    let short = policy.prepare(b"Fine.");
    assert!(!short.truncated && !short.invalid_utf8 && short.ids == tokenize::encode("Fine."));
    for blank in [&b""[..], b"  \n\t ", b"<br /> <br/>"] {
        let b = policy.prepare(blank);
        assert!(b.blank && b.ids.is_empty(), "{blank:?}");
    }
    // a demo model's vocabulary: ids are remapped, unknown ones dropped
    let known = tokenize::encode(" good");
    let demo = TextPolicy { truncate: Truncate::none(), id_map: vec![known[0]], vocab_map: None, dedup: false };
    assert_eq!(demo.prepare(b"good good").ids, vec![0]); // "good" is not " good"
    assert!(demo.prepare(b" good").ids == vec![0]);
    let unknown = demo.prepare(b"zebra");
    assert!(unknown.ids.is_empty() && !unknown.blank);
    let all = policy.prepare_all(&[&b"a"[..], b"", b"Fine."]);
    assert_eq!(all[2], short);
    assert!(all[1].blank);
}

#[test]
fn loss_and_accuracy_refuse_non_finite_probabilities() {
    let (loss, acc) = cudaenc::train::trainer::loss_and_accuracy(&[0.9, 0.2, 0.6], &[1, 0, 0]).unwrap();
    let want = -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln()) / 3.0;
    assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
    assert!((acc - 200.0 / 3.0).abs() < 1e-9);
    assert!(cudaenc::train::trainer::loss_and_accuracy(&[0.9, f32::NAN], &[1, 0]).is_err());
    assert!(cudaenc::train::trainer::loss_and_accuracy(&[], &[]).is_err());
}
