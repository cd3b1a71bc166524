//! The real IMDB archive, when `CUDAENC_DATA` points to it (skipped otherwise).
use cudaenc::data::{self, stats, BatchConfig, BatchPlan, DataSource, LoadOptions, Truncate, TruncatePolicy};

#[test]
fn real_imdb() {
    let Some(path) = std::env::var("CUDAENC_DATA").ok().filter(|s| !s.is_empty()) else {
        eprintln!("SKIPPED real_imdb: set CUDAENC_DATA to aclImdb_v1.tar.gz, aclImdb-labeled.tar.gz or an aclImdb/ directory");
        return;
    };
    let src = DataSource::parse(&path).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = LoadOptions { cache_dir: Some(tmp.path().into()), ..Default::default() };
    let ds = data::load(&src, &opts).unwrap();
    assert!(!ds.info.from_cache);
    assert_eq!(ds.info.report.counts, [[12_500; 2]; 2]);
    assert_eq!(ds.info.report.empty_skipped, 0);
    let m = stats::movie_stats(&ds);
    assert_eq!((m.train_movies, m.test_movies, m.shared.len()), (3456, 3581, 1));
    assert!(m.train_max_per_movie <= 30 && m.test_max_per_movie <= 30);
    let s = stats::length_stats(&stats::lengths(&ds.train));
    assert!(s.median > 150 && s.median < 300, "{s:?}");
    let cached = data::load(&src, &opts).unwrap();
    assert!(cached.info.from_cache);
    assert_eq!(cached.train.reviews, ds.train.reviews);
    assert_eq!(cached.train.tokens, ds.train.tokens);
    let split = data::paper_split(&ds, 0, 2500, 0);
    let cfg = BatchConfig::new(64, Truncate::new(512, TruncatePolicy::Head));
    let plan = BatchPlan::train(&split.train, &cfg, 0, 0);
    assert!(plan.padding_fraction() < 0.05, "{}", plan.padding_fraction());
}
