//! Paper split, truncation, length-bucketed batches.
use cudaenc::data::dataset::{Review, ReviewSet};
use cudaenc::data::{paper_split, BatchConfig, BatchPlan, Dataset, Truncate, TruncatePolicy};
use cudaenc::rng::SplitMix64;
use std::sync::Arc;

/// A set of `n` reviews with random lengths 1..=max; token t of review i is i*10000 + t.
fn synthetic(n: usize, max: usize, seed: u64) -> ReviewSet {
    let mut rng = SplitMix64::new(seed);
    let mut tokens = Vec::new();
    let mut reviews = Vec::new();
    for i in 0..n {
        let len = 1 + rng.below(max as u64) as usize;
        let start = tokens.len();
        tokens.extend((0..len).map(|t| (i * 10000 + t) as u32));
        reviews.push(Review { start, len: len as u32, label: (i % 2) as u8, rating: if i % 2 == 1 { 8 } else { 2 }, id: i as u32, movie: (i / 3) as u32 });
    }
    ReviewSet { tokens: Arc::from(tokens), reviews }
}

#[test]
fn truncation_policies() {
    let t: Vec<u32> = (0..20).collect();
    let head = Truncate::new(8, TruncatePolicy::Head);
    let tail = Truncate::new(8, TruncatePolicy::Tail);
    let ht = Truncate::new(8, TruncatePolicy::HeadTail);
    assert_eq!(head.to_vec(&t), (0..8).collect::<Vec<_>>());
    assert_eq!(tail.to_vec(&t), (12..20).collect::<Vec<_>>());
    assert_eq!(ht.to_vec(&t), vec![0, 1, 14, 15, 16, 17, 18, 19]);
    for tr in [head, tail, ht, Truncate::none()] {
        assert_eq!(tr.to_vec(&t[..5]), t[..5].to_vec(), "short reviews are untouched");
        assert_eq!(tr.len(20), tr.to_vec(&t).len());
    }
    assert_eq!(Truncate::none().to_vec(&t), t);
    assert_eq!("head-tail".parse::<TruncatePolicy>().unwrap(), TruncatePolicy::HeadTail);
    assert!("middle".parse::<TruncatePolicy>().is_err());
}

#[test]
fn paper_split_is_seeded() {
    let set = synthetic(300, 50, 1);
    let ds = Dataset { train: set.clone(), test: synthetic(400, 50, 2), ..Default::default() };
    let a = paper_split(&ds, 1, 100, 7);
    let b = paper_split(&ds, 2, 100, 7);
    let c = paper_split(&ds, 1, 100, 8);
    // Validation sample depends only on val_seed.
    assert_eq!(a.val.reviews, b.val.reviews);
    assert_ne!(a.val.reviews, c.val.reviews);
    assert_eq!(a.val.len(), 100);
    let mut ids: Vec<u32> = a.val.reviews.iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "drawn without replacement");
    // Train: all of train, order by seed.
    assert_eq!(a.train.len(), 300);
    assert_ne!(a.train.reviews, b.train.reviews);
    assert_eq!(a.train.reviews, paper_split(&ds, 1, 5, 0).train.reviews);
    let mut sorted = a.train.reviews.clone();
    sorted.sort_by_key(|r| r.id);
    assert_eq!(sorted, ds.train.reviews);
    assert_eq!(a.test.len(), 400);
    // Oversized request gives the whole split.
    assert_eq!(paper_split(&ds, 1, 10_000, 0).val.len(), 400);
    // Deterministic value (SplitMix64 is the same everywhere): pin the first draws.
    let first: Vec<u32> = a.val.reviews.iter().take(3).map(|r| r.id).collect();
    assert_eq!(first, paper_split(&ds, 99, 100, 7).val.reviews.iter().take(3).map(|r| r.id).collect::<Vec<_>>());
}

fn check_plan(plan: &BatchPlan, set: &ReviewSet, cfg: &BatchConfig) {
    let mut seen = vec![false; set.len()];
    let (mut valid, mut padded) = (0, 0);
    for (i, b) in plan.iter(set).enumerate() {
        assert!(b.batch_size <= cfg.batch_size && b.batch_size > 0);
        assert_eq!(b.ids.len(), b.batch_size * b.seq_len);
        // the longest review, rounded up to cfg.pad_multiple when set
        let longest = *b.lens.iter().max().unwrap() as usize;
        let m = cfg.pad_multiple.max(1);
        assert!(b.seq_len % m == 0 && b.seq_len >= longest.max(1) && b.seq_len < longest.max(1) + m, "T = {} for longest {longest}", b.seq_len);
        if let Some(m) = cfg.max_tokens {
            assert!(b.batch_size * b.seq_len <= m || b.batch_size == 1);
        }
        for (k, &r) in plan.batches[i].iter().enumerate() {
            assert!(!seen[r as usize]);
            seen[r as usize] = true;
            let want = cfg.truncate.to_vec(set.tokens_of(r as usize));
            let row = &b.ids[k * b.seq_len..(k + 1) * b.seq_len];
            assert_eq!(&row[..want.len()], &want[..]);
            assert!(row[want.len()..].iter().all(|&x| x == 0), "padding is 0");
            assert_eq!(b.lens[k] as usize, want.len());
            assert_eq!(b.labels[k], set.reviews[r as usize].label);
        }
        valid += b.valid_tokens();
        padded += b.batch_size * b.seq_len;
    }
    assert!(seen.iter().all(|&s| s), "every review exactly once");
    assert_eq!(plan.valid_tokens(), valid);
    assert_eq!(plan.padded_tokens(), padded);
    assert!((plan.padding_fraction() - (1.0 - valid as f64 / padded as f64)).abs() < 1e-12);
}

#[test]
fn bucketed_batches_cover_everything_with_little_padding() {
    let set = synthetic(2000, 600, 3);
    for policy in [TruncatePolicy::Head, TruncatePolicy::Tail, TruncatePolicy::HeadTail] {
        let cfg = BatchConfig::new(32, Truncate::new(256, policy));
        let plan = BatchPlan::train(&set, &cfg, 5, 0);
        check_plan(&plan, &set, &cfg);
        let plain = BatchPlan::unsorted(&set, &cfg, 5);
        check_plan(&plain, &set, &cfg);
        assert!(plan.padding_fraction() < 0.05, "bucketed {}", plan.padding_fraction());
        assert!(plain.padding_fraction() > 0.15, "unsorted {}", plain.padding_fraction());
        // Seeded: same seed and epoch -> same plan; another epoch -> another order.
        assert_eq!(plan.batches, BatchPlan::train(&set, &cfg, 5, 0).batches);
        assert_ne!(plan.batches, BatchPlan::train(&set, &cfg, 5, 1).batches);
        assert_ne!(plan.batches, BatchPlan::train(&set, &cfg, 6, 0).batches);
    }
}

#[test]
fn token_budget_and_eval_order() {
    let set = synthetic(500, 300, 4);
    let cfg = BatchConfig { max_tokens: Some(2048), ..BatchConfig::new(64, Truncate::new(200, TruncatePolicy::Head)) };
    let plan = BatchPlan::train(&set, &cfg, 1, 0);
    check_plan(&plan, &set, &cfg);
    let eval = BatchPlan::eval(&set, &cfg);
    check_plan(&eval, &set, &cfg);
    assert!(eval.seq_lens.windows(2).all(|w| w[0] <= w[1]), "eval sorted by length");
    // A single review over the budget still gets its own batch.
    let big = BatchConfig { max_tokens: Some(10), ..BatchConfig::new(8, Truncate::none()) };
    let p = BatchPlan::eval(&set, &big);
    check_plan(&p, &set, &big);
    // Empty set.
    let empty = ReviewSet::default();
    assert!(BatchPlan::train(&empty, &cfg, 1, 0).is_empty());
    assert_eq!(BatchPlan::eval(&empty, &cfg).padding_fraction(), 0.0);
}

/// `pad_multiple` (what `--cuda-graphs` sets to 64): every T a multiple of it, at most one
/// multiple above the longest review, the token budget counted on the rounded T, the same
/// reviews in the same batches as without it when there is no budget, and few shapes.
#[test]
fn rounded_lengths_make_shapes_repeat() {
    let set = synthetic(3000, 500, 9);
    let base = BatchConfig::new(32, Truncate::new(512, TruncatePolicy::Head));
    let padded = BatchConfig { pad_multiple: 64, ..base };
    let (plan, plain) = (BatchPlan::train(&set, &padded, 2, 1), BatchPlan::train(&set, &base, 2, 1));
    check_plan(&plan, &set, &padded);
    assert_eq!(plan.batches, plain.batches, "rounding T does not change which reviews go together");
    assert_eq!(plan.valid_tokens(), plain.valid_tokens());
    let shapes: std::collections::BTreeSet<(usize, usize)> = plan.iter(&set).map(|b| (b.batch_size, b.seq_len)).collect();
    println!("{} batches, {} shapes (unrounded: {} lengths); padding {:.3} -> {:.3}", plan.len(), shapes.len(),
        plain.seq_lens.iter().collect::<std::collections::BTreeSet<_>>().len(), plain.padding_fraction(), plan.padding_fraction());
    assert!(shapes.len() <= 9, "at most 8 lengths up to 512 and one smaller last batch: {shapes:?}");
    let budget = BatchConfig { max_tokens: Some(4096), ..padded };
    let p = BatchPlan::train(&set, &budget, 2, 1);
    check_plan(&p, &set, &budget);
    assert_eq!(BatchConfig { pad_multiple: 64, ..base }.seq_len(0), 64, "an empty review still gets T = 64");
}
