//! Tokenization and the on-disk token cache (validated on load, rebuilt when corrupt).
mod data_common;
use cudaenc::data::{self, cache, tokenize, DataSource, Dataset, LoadOptions};
use data_common::*;
use std::path::Path;

fn opts(dir: &Path) -> LoadOptions {
    LoadOptions { cache_dir: Some(dir.to_path_buf()), rebuild_cache: false, verbose: false }
}

fn same(a: &Dataset, b: &Dataset) {
    assert_eq!(a.movies, b.movies);
    assert_eq!(a.info.report, b.info.report);
    assert_eq!(a.info.checksum, b.info.checksum);
    for (x, y) in [(&a.train, &b.train), (&a.test, &b.test)] {
        assert_eq!(x.reviews, y.reviews);
        for i in 0..x.len() {
            assert_eq!(x.tokens_of(i), y.tokens_of(i));
        }
    }
}

fn cache_files(dir: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir.join("tokens")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => vec![],
    }
}

#[test]
fn tokenizer_is_cl100k() {
    assert_eq!(tokenize::encode("hello world"), vec![15339, 1917]);
    // Special-token text is ordinary text.
    assert!(tokenize::encode("<|endoftext|>").len() > 1);
    let many: Vec<String> = (0..200).map(|i| format!("review number {i}")).collect();
    let all = tokenize::encode_all(&many);
    for (t, s) in all.iter().zip(&many) {
        assert_eq!(*t, tokenize::encode(s));
    }
}

#[test]
fn cache_round_trip_and_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let ar = tmp.path().join("a.tar.gz");
    write_tar_gz(&ar, &corpus(8));
    let cdir = tmp.path().join("cache");
    let src = DataSource::Archive(ar.clone());
    let first = data::load(&src, &opts(&cdir)).unwrap();
    assert!(!first.info.from_cache);
    assert_eq!(first.train.len(), 16);
    assert_eq!(first.test.len(), 16);
    assert!(first.train.reviews.iter().all(|r| r.len > 0));
    let files = cache_files(&cdir);
    assert_eq!(files.len(), 1, "one cache file, no temp files: {files:?}");
    let second = data::load(&src, &opts(&cdir)).unwrap();
    assert!(second.info.from_cache);
    same(&first, &second);
    // Without a cache: the same data.
    let nocache = data::load(&src, &LoadOptions::default()).unwrap();
    same(&first, &nocache);

    // Corruptions: a flipped token byte, a truncated file, garbage, a bad magic.
    let good = std::fs::read(&files[0]).unwrap();
    let n = good.len();
    let corruptions: Vec<Vec<u8>> = vec![
        { let mut b = good.clone(); b[n - 200] ^= 1; b },
        good[..n - 7].to_vec(),
        good[..50].to_vec(),
        vec![],
        { let mut b = good.clone(); b[0] = b'X'; b },
        { let mut b = good.clone(); b[64] ^= 0xff; b }, // n_reviews field
    ];
    for (i, bad) in corruptions.into_iter().enumerate() {
        std::fs::write(&files[0], &bad).unwrap();
        let key = cache::cache_key(&first.info.checksum);
        assert!(cache::read(&files[0], &key, Default::default()).is_err(), "corruption {i} not detected");
        let again = data::load(&src, &opts(&cdir)).unwrap();
        assert!(!again.info.from_cache, "corruption {i}: must rebuild");
        same(&first, &again);
        assert_eq!(std::fs::read(&files[0]).unwrap(), good, "corruption {i}: cache rewritten");
    }
    // rebuild_cache ignores a valid cache.
    let o = LoadOptions { rebuild_cache: true, ..opts(&cdir) };
    assert!(!data::load(&src, &o).unwrap().info.from_cache);
}

#[test]
fn cache_is_keyed_by_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let cdir = tmp.path().join("cache");
    let a = tmp.path().join("a.tar.gz");
    let b = tmp.path().join("b.tar.gz");
    write_tar_gz(&a, &corpus(4));
    write_tar_gz(&b, &corpus(5));
    let da = data::load(&DataSource::Archive(a.clone()), &opts(&cdir)).unwrap();
    let db = data::load(&DataSource::Archive(b), &opts(&cdir)).unwrap();
    assert_ne!(da.info.checksum, db.info.checksum);
    assert_eq!((da.train.len(), db.train.len()), (8, 10));
    assert_eq!(cache_files(&cdir).len(), 2);
    // A directory source works too (keyed by a fingerprint of its files).
    write_dir(&tmp.path().join("d"), &corpus(4));
    let dd = data::load(&DataSource::Dir(tmp.path().join("d")), &opts(&cdir)).unwrap();
    assert!(dd.info.checksum.starts_with("dir:"));
    assert_eq!(dd.train.reviews, da.train.reviews);
    assert!(data::load(&DataSource::Dir(tmp.path().join("d")), &opts(&cdir)).unwrap().info.from_cache);
    // Same content -> same tokens; demo is not an IMDB source.
    assert!(data::load(&DataSource::Demo, &opts(&cdir)).is_err());
}

#[test]
fn unwritable_cache_is_only_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let ar = tmp.path().join("a.tar.gz");
    write_tar_gz(&ar, &corpus(3));
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    // cache dir is a file: writing fails, loading still works.
    let ds = data::load(&DataSource::Archive(ar), &opts(&blocker)).unwrap();
    assert_eq!(ds.train.len(), 6);
}
