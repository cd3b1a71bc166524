//! `cudaenc data`: statistics of a data source (counts, token lengths, movies, padding).

use crate::data::{self, stats, BatchConfig, BatchPlan, Dataset, Locator, Part, Truncate, TruncatePolicy};
use anyhow::{bail, Result};
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Data source: an aclImdb/ directory, a .tar.gz in its layout, or `demo`.
    /// Default: $CUDAENC_DATA, then the cache directory, else download the official archive.
    #[arg(long)]
    pub data: Option<String>,
    /// Cache directory (downloaded archive, token cache). Default: $CUDAENC_CACHE or the
    /// system cache directory + /cudaenc.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the token cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Rebuild the token cache even if a valid one exists.
    #[arg(long)]
    pub rebuild_cache: bool,
    /// Never download; fail if the data is not found.
    #[arg(long)]
    pub no_download: bool,
    /// Maximum review length in tokens for the batching statistics (0: no truncation).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Truncation policy: head, tail or head-tail.
    #[arg(long, default_value_t = TruncatePolicy::Head)]
    pub truncate: TruncatePolicy,
    /// Batch size for the padding statistics.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Optional token budget per batch (B x T).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Validation reviews drawn from the test split.
    #[arg(long, default_value_t = 2500)]
    pub val_size: usize,
    /// Seed of the validation sample.
    #[arg(long, default_value_t = 0)]
    pub val_seed: u64,
    /// Run seed (train order, batch order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Histogram bin width in tokens.
    #[arg(long, default_value_t = 64)]
    pub hist_bin: usize,
    /// Histogram upper limit (longer reviews share the last bin).
    #[arg(long, default_value_t = 1024)]
    pub hist_max: usize,
    /// Every review as its distinct token ids, as `train --dedup` feeds them: the
    /// lengths, the histogram and the padding are those of the deduplicated reviews.
    #[arg(long)]
    pub dedup: bool,
}

pub fn run(args: Args) -> Result<()> {
    let t0 = Instant::now();
    let mut loc = Locator::from_env()?;
    if let Some(d) = &args.cache_dir {
        loc.cache_dir = d.clone();
    }
    loc.allow_download = !args.no_download;
    let source = loc.resolve(args.data.as_deref())?;
    if source == data::DataSource::Demo {
        bail!(
            "`cudaenc data` reports on IMDB sources; `demo` is the small corpus built into cudaenc \
             ({} training and {} validation reviews, no test split). Give --data with an aclImdb/ folder \
             or a .tar.gz in its layout",
            super::setup::DEMO_TRAIN,
            super::setup::DEMO_VAL
        );
    }
    let opts = data::LoadOptions {
        cache_dir: if args.no_cache { None } else { Some(loc.cache_dir.clone()) },
        rebuild_cache: args.rebuild_cache,
        verbose: true,
    };
    let ds = data::load(&source, &opts)?;
    let load_s = t0.elapsed().as_secs_f64();
    println!(
        "source: {}\nchecksum: {}\nloaded in {:.3} s ({})",
        ds.info.source,
        ds.info.checksum,
        load_s,
        if ds.info.from_cache { "token cache" } else { "read + tokenized, cache written" }
    );
    print!("{}", report(&ds, &args));
    Ok(())
}

/// The statistics report for a loaded data set (also usable for the demo corpus).
pub fn report(ds: &Dataset, args: &Args) -> String {
    let mut o = String::new();
    let deduplicated;
    let ds = if args.dedup {
        deduplicated = Dataset { train: ds.train.distinct(), test: ds.test.distinct(), ..ds.clone() };
        let _ = writeln!(o, "\n--dedup: every review as its distinct token ids, as `train --dedup` feeds them");
        &deduplicated
    } else {
        ds
    };
    let rep = &ds.info.report;
    let _ = writeln!(o, "\nreviews (neg / pos):");
    for p in Part::ALL {
        let set = ds.part(p);
        let neg = set.reviews.iter().filter(|r| r.label == 0).count();
        let _ = writeln!(o, "  {:<5} {:>6} / {:<6} = {:>6}", p.name(), neg, set.len() - neg, set.len());
    }
    let _ = writeln!(
        o,
        "  with <br /> (replaced by newlines): {}; invalid UTF-8 (replaced by U+FFFD): {}; empty, skipped: {}",
        rep.with_br, rep.invalid_utf8, rep.empty_skipped
    );
    let _ = writeln!(o, "\ntoken lengths (cl100k_base, untruncated; nearest-rank percentiles):");
    let _ = writeln!(
        o,
        "  {:<5} {:>9} {:>7} {:>4} {:>4} {:>4} {:>6} {:>4} {:>4} {:>4} {:>5} {:>6} {:>6} {:>6}",
        "split", "tokens", "mean", "min", "p10", "p25", "median", "p75", "p90", "p95", "p99", "max", ">256", ">512"
    );
    let mut all = Vec::new();
    for p in Part::ALL {
        let l = stats::lengths(ds.part(p));
        let s = stats::length_stats(&l);
        all.extend(l);
        let _ = writeln!(
            o,
            "  {:<5} {:>9} {:>7.1} {:>4} {:>4} {:>4} {:>6} {:>4} {:>4} {:>4} {:>5} {:>6} {:>5.1}% {:>5.1}%  >1024: {:.1}%",
            p.name(),
            s.total,
            s.mean,
            s.min,
            s.p10,
            s.p25,
            s.median,
            s.p75,
            s.p90,
            s.p95,
            s.p99,
            s.max,
            100.0 * s.over_256,
            100.0 * s.over_512,
            100.0 * s.over_1024
        );
    }
    let _ = writeln!(o, "\nhistogram of token lengths (train + test):");
    o.push_str(&stats::histogram(&all, args.hist_bin, args.hist_max, 50));

    let m = stats::movie_stats(ds);
    let _ = writeln!(o, "\nmovies: train {} (max {} reviews per movie), test {} (max {} reviews per movie), {} over 30",
        m.train_movies, m.train_max_per_movie, m.test_movies, m.test_max_per_movie, m.over_30);
    if m.shared.is_empty() {
        let _ = writeln!(o, "  train and test share no movie");
    } else {
        let names: Vec<&str> = m.shared.iter().take(5).map(|&i| ds.movies[i as usize].as_str()).collect();
        let _ = writeln!(
            o,
            "  train and test share {} movie(s) ({} train / {} test reviews): {}{}",
            m.shared.len(),
            m.shared_reviews.0,
            m.shared_reviews.1,
            names.join(", "),
            if m.shared.len() > 5 { ", ..." } else { "" }
        );
    }

    let split = data::paper_split(ds, args.seed, args.val_size, args.val_seed);
    let cfg = BatchConfig {
        max_tokens: args.max_tokens,
        ..BatchConfig::new(args.batch_size, Truncate::new(args.max_len, args.truncate))
    };
    let _ = writeln!(
        o,
        "\npaper split: train {} (shuffled, seed {}), validation {} from test (seed {}), test {}",
        split.train.len(),
        args.seed,
        split.val.len(),
        args.val_seed,
        split.test.len()
    );
    let bucketed = BatchPlan::train(&split.train, &cfg, args.seed, 0);
    let plain = BatchPlan::unsorted(&split.train, &cfg, args.seed);
    let eval = BatchPlan::eval(&split.test, &cfg);
    let fixed_t = if args.max_len > 0 { args.max_len } else { split.train.reviews.iter().map(|r| r.len as usize).max().unwrap_or(1) };
    let fixed = 1.0 - bucketed.valid_tokens() as f64 / (split.train.len() * fixed_t) as f64;
    let _ = writeln!(
        o,
        "padding at batch size {}{} (max_len {}, {}): length-bucketed train {:.1}% ({} batches), unsorted {:.1}%, all padded to {} {:.1}%; eval (sorted) on test {:.1}%",
        args.batch_size,
        args.max_tokens.map(|t| format!(", <= {t} tokens")).unwrap_or_default(),
        args.max_len,
        args.truncate,
        100.0 * bucketed.padding_fraction(),
        bucketed.len(),
        100.0 * plain.padding_fraction(),
        fixed_t,
        100.0 * fixed,
        100.0 * eval.padding_fraction()
    );
    // what --cuda-graphs costs in padding: the same batches with T rounded up to GRAPH_LEN_MULTIPLE
    let rounded = BatchPlan::train(&split.train, &BatchConfig { pad_multiple: crate::cli::setup::GRAPH_LEN_MULTIPLE, ..cfg }, args.seed, 0);
    let shapes: std::collections::BTreeSet<_> = rounded.batches.iter().zip(&rounded.seq_lens).map(|(b, &t)| (b.len(), t)).collect();
    let _ = writeln!(
        o,
        "with --cuda-graphs (T rounded up to a multiple of {}): length-bucketed train {:.1}%, {} batch shapes (B, T)",
        crate::cli::setup::GRAPH_LEN_MULTIPLE,
        100.0 * rounded.padding_fraction(),
        shapes.len()
    );
    o
}
