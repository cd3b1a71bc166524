//! `cudaenc data` on a small generated archive.
mod data_common;
use clap::Parser;
use cudaenc::cli::data::{report, run, Args};
use cudaenc::data::{self, DataSource, LoadOptions};
use data_common::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

#[test]
fn data_command_reports_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let ar = tmp.path().join("a.tar.gz");
    write_tar_gz(&ar, &corpus(30));
    let cache = tmp.path().join("cache");
    let argv = ["x", "--data", ar.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap(), "--no-download",
        "--val-size", "10", "--batch-size", "8", "--max-len", "16", "--truncate", "head-tail"];
    let args = Cli::parse_from(argv).args;
    run(args.clone()).unwrap();
    run(args.clone()).unwrap(); // from the cache
    let ds = data::load(&DataSource::Archive(ar.clone()), &LoadOptions::default()).unwrap();
    let r = report(&ds, &args);
    for want in ["train     30 / 30", "test      30 / 30", "median", "histogram", "max 2 reviews per movie",
        "share 1 movie(s)", "validation 10 from test", "length-bucketed train", "head-tail"] {
        assert!(r.contains(want), "missing '{want}' in:\n{r}");
    }
    // --dedup: the lengths are those of each review's distinct ids (counted here on
    // their own), fewer than with repeats, and the report says so
    let dedup = Cli::parse_from(argv.iter().copied().chain(["--dedup"])).args;
    run(dedup.clone()).unwrap();
    let rd = report(&ds, &dedup);
    let distinct: usize = (0..ds.train.len()).map(|i| ds.train.tokens_of(i).iter().collect::<std::collections::HashSet<_>>().len()).sum();
    let all: usize = (0..ds.train.len()).map(|i| ds.train.tokens_of(i).len()).sum();
    assert!(distinct < all, "the generated reviews repeat ids: {distinct} distinct of {all}");
    let line = |r: &str| r.lines().find(|l| l.trim_start().starts_with("train ") && l.contains('%')).map(String::from);
    assert_eq!(line(&rd).unwrap().split_whitespace().nth(1), Some(distinct.to_string().as_str()), "{rd}");
    assert_eq!(line(&r).unwrap().split_whitespace().nth(1), Some(all.to_string().as_str()), "{r}");
    assert!(rd.contains("--dedup") && !r.contains("--dedup"));
    // Bad input: a clear error, not a panic.
    let bad = Cli::parse_from(["x", "--data", "/no/such.tar.gz", "--no-download"]).args;
    assert!(format!("{:#}", run(bad).unwrap_err()).contains("no such file"));
    assert!(Cli::try_parse_from(["x", "--truncate", "middle"]).is_err());
}
