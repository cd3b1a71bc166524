//! `--holdout`, `--compact-vocab` / `--min-count`, `--label-smoothing` and `--dedup` end to end on a
//! small generated archive with the cpu device: the held-out set is movie-disjoint from
//! the training part, the run records its remap, and `eval` / `predict` on the compacted
//! run reproduce what training measured.
mod data_common;

use clap::Parser;
use cudaenc::cli::setup::{self, DataArgs, RunConfig};
use cudaenc::cli::{eval, experiment, predict, train};
use cudaenc::train::trainer::RunDir;
use data_common::*;
use std::collections::HashSet;
use std::path::Path;

#[derive(Parser)]
struct Cli<A: clap::Args> {
    #[command(flatten)]
    args: A,
}

fn parse<A: clap::Args>(argv: &[&str]) -> A {
    Cli::<A>::try_parse_from(std::iter::once("x").chain(argv.iter().copied())).unwrap().args
}

/// The tests of this file set CUDAENC_CACHE (process-wide): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// An archive of 40 reviews per split and label (two per movie), and a token cache
/// folder for this test only (hold `SERIAL`).
fn archive(dir: &Path) -> String {
    std::env::set_var("CUDAENC_CACHE", dir.join("cache"));
    let ar = dir.join("imdb.tar.gz");
    write_tar_gz(&ar, &corpus(40));
    ar.to_str().unwrap().to_string()
}

#[test]
fn holdout_compaction_and_smoothing_end_to_end() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = archive(tmp.path());

    // The held-out part: whole movies of the train split, none of them trained on.
    let args: DataArgs = parse(&["--data", &data, "--holdout", "15", "--val-seed", "3", "--full-test"]);
    let loaded = setup::load_data(&args, 1).unwrap();
    let movies = |s: &cudaenc::data::ReviewSet| s.reviews.iter().map(|r| r.movie).collect::<HashSet<_>>();
    assert!(movies(&loaded.train).is_disjoint(&movies(&loaded.val)), "a movie on both sides");
    assert_eq!(loaded.train.len() + loaded.val.len(), 80, "the train split, divided");
    assert_eq!(loaded.val.len(), 16, "15 rounded up to whole movies of 2 reviews");
    assert_eq!(loaded.test.as_ref().unwrap().len(), 80, "the test split untouched");
    assert_eq!(loaded.vocab, 100_277, "no compaction unless asked");

    // Train a compacted, smoothed run validated on the held-out movies.
    let run = tmp.path().join("run");
    let train_args: train::Args = parse(&[
        "--data", &data, "--holdout", "15", "--val-seed", "3", "--compact-vocab", "--min-count", "2",
        "--label-smoothing", "0.1", "--preset", "demo", "--epochs", "2", "--batch-size", "8", "--max-len", "24",
        "--device", "cpu", "--loss", "ce", "--full-test", "--out", run.to_str().unwrap(),
    ]);
    train::run(train_args).unwrap();
    let config = RunConfig::read(&run).unwrap();
    let map = config.vocab_map.clone().expect("the remap is recorded in config.json");
    assert_eq!(map.min_count, 2);
    assert_eq!(config.model.vocab, map.kept.len() + 1, "the embedding has one row per kept id plus the shared row");
    assert!(config.model.vocab < 200, "a small corpus has few ids: {}", config.model.vocab);
    assert_eq!(config.holdout, Some(15));
    assert_eq!(config.train.optim.label_smoothing, 0.1);
    let metrics = RunDir { path: run.clone() }.read_metrics().unwrap();
    let last = metrics.last().unwrap();
    let q = last.val_quality.as_ref().expect("AUC and calibration at the last epoch");
    assert!(metrics[0].val_quality.is_none(), "only the last epoch");
    assert!(last.test_quality.is_some(), "the test split was evaluated");

    // eval on the compacted run sees the same held-out reviews and ids: the same numbers.
    let m = eval::measure(&parse(&["--run", run.to_str().unwrap(), "--data", &data, "--split", "val", "--device", "cpu"])).unwrap();
    assert_eq!(m.reviews, 16);
    assert!((m.acc - last.val_acc).abs() < 1e-9, "eval {} vs training {}", m.acc, last.val_acc);
    assert!((m.loss - last.val_loss).abs() < 1e-6, "eval loss {} vs training {}", m.loss, last.val_loss);
    // the same bins (sums to 1e-12: metrics.jsonl's JSON floats parse back to within an ulp)
    for (a, b) in m.quality.calibration.bins.iter().zip(&q.calibration.bins) {
        assert_eq!((a.count, a.positives), (b.count, b.positives));
        assert!((a.sum_prob - b.sum_prob).abs() < 1e-12, "{a:?} vs {b:?}");
    }
    assert_eq!(m.quality.calibration.bins.len(), 15);
    let t = eval::measure(&parse(&["--run", run.to_str().unwrap(), "--data", &data, "--split", "test", "--device", "cpu"])).unwrap();
    assert_eq!(t.reviews, 80);
    assert!((t.acc - last.test_acc.unwrap()).abs() < 1e-9, "test: eval {} vs training {:?}", t.acc, last.test_acc);

    // predict applies the remap (an unseen word shares row 0 instead of failing).
    let p: predict::Args = parse(&["--run", run.to_str().unwrap(), "--device", "cpu", "A wonderful film.", "zyzzogeton quux"]);
    predict::run(p).unwrap();

    // bad input: clear errors
    let out = tmp.path().join("bad");
    let out = out.to_str().unwrap();
    let e = format!("{:#}", train::run(parse(&["--data", "demo", "--holdout", "5", "--device", "cpu", "--out", out])).unwrap_err());
    assert!(e.contains("--holdout needs IMDB"), "{e}");
    assert!(Cli::<train::Args>::try_parse_from(["x", "--min-count", "3"]).is_err(), "--min-count needs --compact-vocab");
    let e = format!("{:#}", train::run(parse(&["--data", &data, "--label-smoothing", "1", "--device", "cpu", "--out", out])).unwrap_err());
    assert!(e.contains("--label-smoothing"), "{e}");
    let e = format!("{:#}", train::run(parse(&["--data", &data, "--holdout", "80", "--device", "cpu", "--out", out])).unwrap_err());
    assert!(e.contains("nothing is left to train on"), "{e}");
    assert!(!Path::new(out).exists(), "no half run folder left behind");
}

#[test]
fn dedup_feeds_distinct_ids_in_training_eval_and_predict() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = archive(tmp.path());

    // every set is reduced review by review, before the compaction (so a rare id counts once)
    let plain = setup::load_data(&parse(&["--data", &data, "--full-test"]), 1).unwrap();
    let args: DataArgs = parse(&["--data", &data, "--full-test", "--dedup"]);
    let loaded = setup::load_data(&args, 1).unwrap();
    let test = |l: &setup::LoadedData| l.test.clone().unwrap();
    for (a, b) in [(&plain.train, &loaded.train), (&plain.val, &loaded.val), (&test(&plain), &test(&loaded))] {
        assert_eq!(a.len(), b.len());
        assert!(b.total_tokens() < a.total_tokens(), "the generated reviews repeat tokens");
        for i in 0..a.len() {
            let want = cudaenc::data::dataset::distinct_ids(a.tokens_of(i));
            assert_eq!(b.tokens_of(i), want.as_slice(), "review {i}");
            assert_eq!(a.reviews[i].label, b.reviews[i].label);
        }
    }

    // a run records it; eval reproduces the run's numbers only by feeding the same way
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    train::run(parse(&[
        "--data", &data, "--dedup", "--preset", "demo", "--epochs", "1", "--batch-size", "8", "--max-len", "24",
        "--device", "cpu", "--loss", "bce", "--full-test", "--out", r,
    ]))
    .unwrap();
    let config = RunConfig::read(&run).unwrap();
    assert!(config.dedup, "recorded in config.json");
    let last = RunDir { path: run.clone() }.read_metrics().unwrap().last().unwrap().clone();
    let t = eval::measure(&parse(&["--run", r, "--data", &data, "--split", "test", "--device", "cpu"])).unwrap();
    assert!((t.acc - last.test_acc.unwrap()).abs() < 1e-9, "eval {} vs training {:?}", t.acc, last.test_acc);
    let v = eval::measure(&parse(&["--run", r, "--data", &data, "--split", "val", "--device", "cpu"])).unwrap();
    assert!((v.acc - last.val_acc).abs() < 1e-9 && (v.loss - last.val_loss).abs() < 1e-6, "eval {v:?} vs training {last:?}");

    // predict prepares a text the same way
    let policy = cudaenc::infer::TextPolicy::of_run(&config).unwrap();
    let p = policy.prepare(b"good good bad good movie movie");
    let ids = cudaenc::data::tokenize::encode("good good bad good movie movie");
    assert_eq!(p.ids, cudaenc::data::dataset::distinct_ids(&ids));
    assert!(p.ids.len() < ids.len());
    predict::run(parse(&["--run", r, "--device", "cpu", "A wonderful film, wonderful."])).unwrap();

    // a run trained without it: resume and eval refuse the flag instead of mixing
    let other = tmp.path().join("plain");
    let o = other.to_str().unwrap();
    let base = ["--data", &data, "--preset", "demo", "--epochs", "1", "--batch-size", "8", "--max-len", "24", "--device", "cpu", "--out", o];
    train::run(parse(&base)).unwrap();
    let e = format!("{:#}", eval::measure(&parse(&["--run", o, "--data", &data, "--split", "val", "--device", "cpu", "--dedup"])).unwrap_err());
    assert!(e.contains("--dedup"), "{e}");
    let resumed: Vec<&str> = base.iter().copied().chain(["--resume", "--dedup"]).collect();
    let e = format!("{:#}", train::run(parse(&resumed)).unwrap_err());
    assert!(e.contains("--dedup"), "{e}");
}

#[test]
fn experiment_report_has_auc_and_calibration_per_loss() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = archive(tmp.path());
    let out = tmp.path().join("exp");
    let args: experiment::Args = parse(&[
        "--data", &data, "--holdout", "15", "--runs", "2", "--losses", "bce,ce", "--preset", "demo", "--epochs", "1",
        "--batch-size", "8", "--max-len", "24", "--device", "cpu", "--full-test", "--out", out.to_str().unwrap(),
    ]);
    experiment::run(args).unwrap();
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for want in [
        "held-out movies of the train split",
        "ROC-AUC and calibration on the validation set (last epoch)",
        "ROC-AUC and calibration on the whole test split (last epoch)",
        "| BCE | 2 |",
        "| CE | 2 |",
    ] {
        assert!(report.contains(want), "missing '{want}' in:\n{report}");
    }
    // results.json says what the runs were fed, as the report's first line does
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let fed = json["data"].as_str().unwrap();
    assert!(fed.contains("held-out movies of the train split") && !fed.contains("--dedup"), "{fed}");
    // the pooled ECE of the report is the ECE of the runs' bins added up
    let pooled = |loss: &str| {
        let cals: Vec<_> = (1..=2)
            .map(|seed| {
                let m = RunDir { path: out.join(format!("{loss}-seed{seed}")) }.read_metrics().unwrap();
                m.last().unwrap().test_quality.clone().unwrap().calibration
            })
            .collect();
        cudaenc::train::stats::Calibration::pooled(&cals).unwrap().ece()
    };
    for loss in ["bce", "ce"] {
        let row = format!("| {} | 2 |", loss.to_uppercase());
        let line = report.split("whole test split (last epoch)").nth(1).unwrap().lines().find(|l| l.starts_with(&row)).unwrap();
        let last: f64 = line.trim_end_matches('|').rsplit('|').next().unwrap().trim().parse().unwrap();
        assert!((last - pooled(loss)).abs() < 5e-5, "{loss}: report {last} vs pooled {}", pooled(loss));
    }
    for svg in ["reliability_val.svg", "reliability_test.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(text.contains("BCE (ECE") && text.contains("CE (ECE"), "{svg}");
    }
}
