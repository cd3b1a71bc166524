//! `cudaenc experiment`: the paper's protocol. N runs per loss (default 5 x {BCE, CE},
//! 10 epochs, seeds 1..=N), all on the same validation sample, then the paper's table
//! (last and best epoch, labelled), the mean with a 95% confidence interval, the
//! spread, Welch's t test between the losses, the figures (SVG) and a Markdown report.

use super::setup::{self, DataArgs, Device, HyperArgs};
use super::train::{first_free, prepare, run_one};
use crate::data::fsutil::atomic_write;
use crate::config::Loss;
use crate::device::DeviceKind;
use crate::train::metrics::RunRecord;
use crate::train::plots;
use crate::train::stats::{welch_t_test, Calibration, ProbQuality, Summary, CALIBRATION_BINS};
use crate::train::trainer::CHECKPOINT_FILE;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Runs per loss
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Losses to compare
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bce,ce")]
    pub losses: Vec<Loss>,
    /// Run r of every loss uses seed first_seed + r
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    /// Experiment folder (one run folder per run inside, plus report.md and the figures)
    /// (default: runs/experiment, numbered -2, -3, ... if taken)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the interrupted experiment in --out: finished runs are kept, the
    /// unfinished one resumes from its last checkpoint, the missing ones are trained
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub hyper: HyperArgs,
}

/// The rows of one table: per loss, a summary of a value taken from each run.
fn table(title: &str, rows: &[(Loss, Vec<f64>)]) -> String {
    let mut s = format!("### {title}\n\n| loss | runs | min | mean | median | max | spread | mean ± 95% CI |\n|---|---|---|---|---|---|---|---|\n");
    for (loss, values) in rows {
        let m = Summary::of(values);
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} ± {} |",
            loss.name().to_uppercase(),
            m.n,
            m.min,
            m.mean,
            m.median,
            m.max,
            m.spread(),
            m.mean,
            if m.ci95.is_finite() { format!("{:.2}", m.ci95) } else { "n/a".into() }
        );
    }
    s
}

/// The files an experiment writes beside its run folders, once all runs are done.
const REPORT_FILES: [&str; 6] =
    ["report.md", "results.json", "accuracy_boxplot.svg", "accuracy_curves.svg", "reliability_val.svg", "reliability_test.svg"];

pub fn run(mut args: Args) -> Result<()> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(!args.losses.is_empty(), "--losses names no loss");
    let device = Device::open(args.device)?;
    let out = match (args.out.take(), args.resume) {
        (Some(out), _) => out,
        (None, true) => anyhow::bail!("--resume needs --out: the experiment folder to continue"),
        (None, false) => first_free("runs/experiment"),
    };
    if args.resume && !out.is_dir() {
        anyhow::bail!("--resume: {} does not exist; start the experiment without --resume", out.display());
    }
    if !args.resume {
        // a new experiment writes these names at its end: never over files it did not write
        if let Some(f) = REPORT_FILES.iter().map(|f| out.join(f)).find(|p| p.exists()) {
            anyhow::bail!(
                "{} already exists: choose another --out, or --resume to continue the experiment in {}",
                f.display(),
                out.display()
            );
        }
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if args.resume {
        // a process killed while writing the report left its temporary copies
        crate::data::fsutil::remove_stale_temps(&out, &REPORT_FILES);
    }
    let t0 = Instant::now();
    let mut results: Vec<(Loss, Vec<RunRecord>)> = Vec::new();
    let mut summary = None;
    for &loss in &args.losses {
        let mut records = Vec::new();
        for r in 0..args.runs {
            let seed = args.first_seed + r as u64;
            // exactly what `train --seed <seed>` does with these flags, so that each run
            // folder's config.json reproduces (and resumes) under `train` alone
            let (loaded, preset, config) = prepare(&args.data, &args.hyper, loss, seed, &device)?;
            let dir = out.join(format!("{}-seed{seed}", loss.name()));
            let resume = args.resume && dir.join(CHECKPOINT_FILE).exists();
            let label = format!("{} run {}/{}", loss.name().to_uppercase(), r + 1, args.runs);
            eprintln!("{label}: seed {seed}, {} on {}{}", dir.display(), device.name(), if resume { " (resuming)" } else { "" });
            records.push(run_one(&device, &loaded, &config, &dir, resume, &label).with_context(|| format!("run in {}", dir.display()))?);
            summary.get_or_insert((config.hyper.clone(), preset, loaded.source.clone(), loaded.train.len(), loaded.val.len()));
        }
        results.push((loss, records));
    }
    let seconds = t0.elapsed().as_secs_f64();
    let (h, _, source, n_train, n_val) = summary.context("no run")?;
    let val = match args.data.holdout {
        Some(_) => format!("validation: {n_val} reviews of held-out movies of the train split"),
        None => format!("validation sample of {n_val} from the test split"),
    };
    let source = format!(
        "{source} ({n_train} train reviews, {val}, seed {}{})",
        args.data.val_seed(),
        if args.data.dedup { "; every review fed as its distinct token ids (--dedup)" } else { "" }
    );
    let report = write_report(&args, &out, &h, &device.name(), &source, &results, seconds)?;
    println!("{report}");
    Ok(())
}

fn write_report(
    args: &Args,
    out: &std::path::Path,
    h: &setup::Hyper,
    device: &str,
    source: &str,
    results: &[(Loss, Vec<RunRecord>)],
    seconds: f64,
) -> Result<String> {
    let pick = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Vec<(Loss, Vec<f64>)> {
        results.iter().map(|(l, rs)| (*l, rs.iter().filter_map(f).collect())).collect()
    };
    let last = pick(&|r| r.last().map(|e| e.val_acc));
    let best = pick(&|r| r.best().map(|e| e.val_acc));
    let test = pick(&|r| r.last().and_then(|e| e.test_acc));
    let mut md = String::new();
    let _ = writeln!(md, "# cudaenc experiment\n");
    // the training steps' time of every epoch of every run, whichever invocation ran it
    let train_seconds: f64 = results.iter().flat_map(|(_, rs)| rs).flat_map(|r| &r.epochs).map(|e| e.train_seconds).sum();
    let time = if args.resume {
        format!(
            "time of this invocation {seconds:.1} s (it resumed an earlier one, whose time is not in it); \
             training steps of all runs and epochs {train_seconds:.1} s"
        )
    } else {
        format!("total time {seconds:.1} s (training steps {train_seconds:.1} s)")
    };
    let _ = writeln!(md, "{} runs per loss, {} epochs, device {device}, data {source}, {time}.\n", args.runs, h.epochs);
    let _ = writeln!(
        md,
        "Model: width {}, {} layers, {} heads, FFN {}, dropout {}, token drop {}{}, type drop {}, max len {}, batch {}, lr {}, weight decay {}, label smoothing {}, EMA {}.\n",
        h.d_model,
        h.n_layer,
        h.n_head,
        h.d_ff,
        h.dropout,
        h.token_drop,
        h.token_drop_end.map(|e| format!(" to {e} at the last step")).unwrap_or_default(),
        h.type_drop,
        h.max_len,
        h.batch_size,
        h.lr,
        h.weight_decay,
        h.label_smoothing,
        if h.ema > 0.0 { h.ema.to_string() } else { "off".to_string() }
    );
    md += &table("Validation accuracy (%) after the last epoch", &last);
    md += "\n";
    md += &table("Validation accuracy (%) at each run's best epoch (chosen on validation: optimistic)", &best);
    if test.iter().all(|(_, v)| !v.is_empty()) && !test.is_empty() {
        md += "\n";
        md += &table("Whole test split accuracy (%) after the last epoch", &test);
    }
    if let [(la, a), (lb, b)] = last.as_slice() {
        md += "\n### Significance (last epoch, Welch's t test)\n\n";
        match welch_t_test(a, b) {
            Some(w) => {
                let _ = writeln!(
                    md,
                    "{} - {}: t = {:.3}, {:.1} degrees of freedom, two-sided p = {:.3}{}",
                    la.name().to_uppercase(),
                    lb.name().to_uppercase(),
                    w.t,
                    w.dof,
                    w.p_two_sided,
                    if w.p_two_sided < 0.05 { " (significant at 5%)" } else { " (not significant at 5%)" }
                );
            }
            None => md += "not computable (fewer than two runs per loss, or no variance)\n",
        }
    }
    md += "\n### Runs\n\n| loss | seed | last val acc | best val acc (epoch) | test acc | seconds |\n|---|---|---|---|---|---|\n";
    for (loss, records) in results {
        for r in records {
            let (Some(l), Some(b)) = (r.last(), r.best()) else { continue };
            let secs: f64 = r.epochs.iter().map(|e| e.train_seconds).sum();
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.2} ({}) | {} | {:.1} |",
                loss.name().to_uppercase(),
                r.seed,
                l.val_acc,
                b.val_acc,
                b.epoch,
                l.test_acc.map(|t| format!("{t:.2}")).unwrap_or_else(|| "-".into()),
                secs
            );
        }
    }
    md += &quality_section(out, results)?;
    // figures: box plot of last-epoch accuracies; curves of each loss's best run
    let groups: Vec<(String, Vec<f64>)> = last.iter().map(|(l, v)| (l.name().to_uppercase(), v.clone())).collect();
    plots::box_plot(&out.join("accuracy_boxplot.svg"), "Validation accuracy after the last epoch", &groups)?;
    let best_runs: Vec<(String, &RunRecord)> = results
        .iter()
        .filter_map(|(l, rs)| {
            rs.iter()
                .max_by(|a, b| {
                    let acc = |r: &RunRecord| r.last().map_or(f64::NEG_INFINITY, |e| e.val_acc);
                    acc(a).total_cmp(&acc(b))
                })
                .map(|r| (format!("{} seed {}", l.name().to_uppercase(), r.seed), r))
        })
        .collect();
    plots::accuracy_curves(&out.join("accuracy_curves.svg"), "Best run of each loss", &best_runs)?;
    md += "\nFigures: `accuracy_boxplot.svg`, `accuracy_curves.svg`.\n";
    let json = serde_json::json!({
        "device": device,
        "data": source,
        "seconds": seconds,
        "resumed": args.resume,
        "train_seconds": train_seconds,
        "hyper": h,
        "runs": results.iter().map(|(_, rs)| rs).collect::<Vec<_>>(),
    });
    let json = serde_json::to_string_pretty(&json)?;
    atomic_write(&out.join("results.json"), |w| w.write_all(json.as_bytes()))?;
    atomic_write(&out.join("report.md"), |w| w.write_all(md.as_bytes()))?;
    Ok(md)
}

/// Beyond the paper: ROC-AUC and calibration of the last epoch's probabilities, per loss
/// (mean over runs; ECE also of all runs' reviews pooled), on the validation set and, when
/// evaluated, the whole test split; one reliability diagram (SVG) per set.
fn quality_section(out: &std::path::Path, results: &[(Loss, Vec<RunRecord>)]) -> Result<String> {
    type Pick = fn(&crate::train::metrics::EpochMetrics) -> Option<&ProbQuality>;
    let sets: [(&str, &str, Pick); 2] = [
        ("validation set", "reliability_val.svg", |e| e.val_quality.as_ref()),
        ("whole test split", "reliability_test.svg", |e| e.test_quality.as_ref()),
    ];
    let mut md = String::new();
    for (name, file, pick) in sets {
        let per_loss: Vec<(Loss, Vec<&ProbQuality>)> =
            results.iter().map(|(l, rs)| (*l, rs.iter().filter_map(|r| r.last().and_then(pick)).collect())).collect();
        if per_loss.iter().any(|(_, q)| q.is_empty()) {
            continue;
        }
        let _ = writeln!(
            md,
            "\n### Beyond the paper: ROC-AUC and calibration on the {name} (last epoch)\n\n\
             ECE: expected calibration error of p(positive), {CALIBRATION_BINS} equal-width bins \
             (0 is perfect); pooled: all runs' reviews in one set of bins. Diagram: `{file}`.\n\n\
             | loss | runs | ROC-AUC mean | ROC-AUC min | ROC-AUC max | ECE mean | ECE min | ECE max | ECE pooled |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        let mut pooled = Vec::new();
        for (loss, qs) in &per_loss {
            let aucs: Vec<f64> = qs.iter().filter_map(|q| q.auc).collect();
            let eces: Vec<f64> = qs.iter().map(|q| q.ece).collect();
            let pool = Calibration::pooled(qs.iter().map(|q| &q.calibration)).context("no calibration")?;
            let auc = |f: fn(&Summary) -> f64| if aucs.is_empty() { "n/a".to_string() } else { format!("{:.4}", f(&Summary::of(&aucs))) };
            let e = Summary::of(&eces);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} |",
                loss.name().to_uppercase(),
                qs.len(),
                auc(|s| s.mean),
                auc(|s| s.min),
                auc(|s| s.max),
                e.mean,
                e.min,
                e.max,
                pool.ece()
            );
            pooled.push((loss.name().to_uppercase(), pool));
        }
        let groups: Vec<(String, &Calibration)> = pooled.iter().map(|(l, c)| (l.clone(), c)).collect();
        plots::reliability_diagram(&out.join(file), &format!("Reliability on the {name}, all runs pooled"), &groups)?;
    }
    Ok(md)
}
