//! IMDB: find/download, read, tokenize, cache, split, batches. See docs/data.md.
//!
//! Typical use (the trainer):
//! ```no_run
//! use cudaenc::data::{self, BatchConfig, BatchPlan, Truncate, TruncatePolicy};
//! let loc = data::Locator::from_env()?;
//! let source = loc.resolve(None)?;                       // --data, CUDAENC_DATA, cache, download
//! let ds = data::load(&source, &data::LoadOptions::cached(&loc.cache_dir))?;
//! let split = data::paper_split(&ds, 1, 2500, 0);        // train shuffled, val sampled from test
//! let cfg = BatchConfig::new(64, Truncate::new(512, TruncatePolicy::Head));
//! let plan = BatchPlan::train(&split.train, &cfg, 1, 0); // seed 1, epoch 0
//! for batch in plan.iter(&split.train) { let _ = batch; }
//! # anyhow::Ok(())
//! ```

pub mod batch;
pub mod cache;
pub mod dataset;
pub mod demo;
pub mod fetch;
pub mod fsutil;
pub mod read;
pub mod split;
pub mod stats;
pub mod tokenize;
pub mod vocab;

pub use batch::{BatchConfig, BatchPlan};
pub use dataset::{Dataset, DatasetInfo, Review, ReviewSet};
pub use fetch::{DataSource, Locator};
pub use read::{Part, RawCorpus, ReadReport};
pub use split::{paper_split, PaperSplit, Truncate, TruncatePolicy};

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// How to load a data source.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Token cache folder (`<dir>/tokens/*.bin`); `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Ignore an existing cache file and rebuild it.
    pub rebuild_cache: bool,
    /// Print warnings (invalid UTF-8, skipped reviews, cache rebuilt) to stderr.
    pub verbose: bool,
}

impl LoadOptions {
    /// Use the token cache in `cache_dir`, verbose.
    pub fn cached(cache_dir: &Path) -> LoadOptions {
        LoadOptions { cache_dir: Some(cache_dir.to_path_buf()), rebuild_cache: false, verbose: true }
    }
}

/// Read (or load from the token cache) and tokenize a data source.
pub fn load(source: &DataSource, opts: &LoadOptions) -> Result<Dataset> {
    let (checksum, read): (String, Box<dyn Fn() -> Result<RawCorpus>>) = match source {
        DataSource::Demo => bail!("the demo corpus is not an IMDB source: use data::demo for `--data demo`"),
        DataSource::Dir(p) => {
            let p = p.clone();
            (read::dir_fingerprint(&p)?, Box::new(move || read::read_dir(&p)))
        }
        DataSource::Archive(p) => {
            let p = p.clone();
            (fsutil::sha256_file(&p)?, Box::new(move || read::read_archive(&p)))
        }
    };
    let info = DatasetInfo { source: source.to_string(), checksum: checksum.clone(), ..Default::default() };
    let warn = |m: &str| {
        if opts.verbose {
            eprintln!("warning: {m}");
        }
    };
    let key = cache::cache_key(&checksum);
    let path = opts.cache_dir.as_ref().map(|d| cache::cache_path(d, &key));
    if let (Some(path), false) = (&path, opts.rebuild_cache) {
        match cache::read(path, &key, info.clone()) {
            Ok(Some(ds)) => {
                for w in ds.info.report.warnings() {
                    warn(&w);
                }
                return Ok(ds);
            }
            Ok(None) => {}
            Err(e) => warn(&format!("token cache {} is invalid ({e:#}); rebuilding it", path.display())),
        }
    }
    let raw = read()?;
    check_known_counts(&checksum, &raw.report)?;
    for w in raw.report.warnings() {
        warn(&w);
    }
    let ds = Dataset::tokenize(raw, info)?;
    if let Some(path) = &path {
        if let Err(e) = cache::write(path, &key, &ds) {
            warn(&format!("could not write the token cache {} ({e:#})", path.display()));
        }
    }
    Ok(ds)
}

/// The two known archives hold exactly 12,500 reviews per split and label.
fn check_known_counts(checksum: &str, report: &ReadReport) -> Result<()> {
    if fetch::is_known_archive(checksum) && report.counts != [[12_500; 2]; 2] {
        bail!(
            "the IMDB archive (SHA-256 {checksum}) should hold 12,500 reviews per split and label, read {:?} ([train, test] x [neg, pos])",
            report.counts
        );
    }
    Ok(())
}
