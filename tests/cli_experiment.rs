//! `cudaenc experiment` through the built binary on the demo corpus with a tiny model:
//! each run folder is the run `train` makes from that folder's flags (so it reproduces
//! and resumes with `train` alone), and `--resume` continues an interrupted experiment,
//! keeping the finished runs.

use std::path::Path;
use std::process::{Command, Output};

const TINY: &[&str] = &[
    "--device", "cpu", "--data", "demo", "--train-subset", "96", "--d-model", "8", "--heads", "2", "--max-len", "16",
    "--batch-size", "16", "--epochs", "2",
];

fn cudaenc(args: &[&str], fault: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cudaenc"));
    cmd.args(args).env_remove("CUDAENC_DATA").env_remove("CUDAENC_FAULT");
    if let Some(f) = fault {
        cmd.env("CUDAENC_FAULT", f);
    }
    cmd.output().expect("running cudaenc")
}

fn experiment(out: &Path, extra: &[&str], fault: Option<&str>) -> Output {
    let mut args = vec!["experiment", "--runs", "2", "--losses", "bce", "--first-seed", "4"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--out", out.to_str().unwrap()]);
    cudaenc(&args, fault)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The lines of metrics.jsonl without the timing fields.
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    String::from_utf8(bytes(&dir.join("metrics.jsonl")))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| k != "train_seconds" && k != "tokens_per_second");
            v
        })
        .collect()
}

#[test]
fn experiment_runs_reproduce_with_train_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("exp");
    // killed after the first run's first epoch
    let o = experiment(&out, &[], Some("after-checkpoint-1"));
    assert!(o.status.code().is_none() && stderr(&o).contains("CUDAENC_FAULT"), "{:?} {}", o.status, stderr(&o));
    // rerunning it is refused with advice that works
    let o = experiment(&out, &[], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    // --resume: run 1 continues from epoch 1, run 2 is trained
    let o = experiment(&out, &["--resume"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming") && out.join("report.md").exists(), "{}", stderr(&o));
    // a finished experiment resumes to itself: no run is trained again; the temporary
    // copy of a report a killed process left is removed, nothing else (pid 4194305 > pid_max)
    let stale = out.join(".results.json.tmp.4194305.1");
    std::fs::write(&stale, b"{").unwrap();
    std::fs::write(out.join("my-notes.txt"), b"mine").unwrap();
    let seed4 = bytes(&out.join("bce-seed4/checkpoint.safetensors"));
    let seed5 = bytes(&out.join("bce-seed5/metrics.jsonl"));
    let o = experiment(&out, &["--resume"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("already finished").count(), 2, "{}", stderr(&o));
    assert!(bytes(&out.join("bce-seed4/checkpoint.safetensors")) == seed4);
    assert_eq!(bytes(&out.join("bce-seed5/metrics.jsonl")), seed5);
    assert!(!stale.exists() && bytes(&out.join("my-notes.txt")) == b"mine");
    let temps: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(".tmp.")).collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    // the report of a resumed experiment does not pass this invocation's time off as the
    // experiment's: it names it, and sums the training steps of every epoch of every run
    // as their metrics.jsonl recorded them (run 1's first epoch ran in the killed process)
    let report = String::from_utf8(bytes(&out.join("report.md"))).unwrap();
    assert!(report.contains("time of this invocation") && !report.contains("total time"), "{report}");
    let results: serde_json::Value = serde_json::from_slice(&bytes(&out.join("results.json"))).unwrap();
    assert_eq!(results["resumed"], true);
    let recorded: f64 = ["bce-seed4", "bce-seed5"]
        .iter()
        .flat_map(|d| String::from_utf8(bytes(&out.join(d).join("metrics.jsonl"))).unwrap().lines().map(String::from).collect::<Vec<_>>())
        .map(|l| serde_json::from_str::<serde_json::Value>(&l).unwrap()["train_seconds"].as_f64().unwrap())
        .sum();
    let summed = results["train_seconds"].as_f64().unwrap();
    assert!(recorded > 0.0 && (summed - recorded).abs() <= 1e-9 * recorded, "train_seconds {summed} against {recorded} in metrics.jsonl");
    assert!(report.contains(&format!("training steps of all runs and epochs {recorded:.1} s")), "{report}");

    // each run folder is what `train` gives with the same flags and that run's seed
    for seed in ["4", "5"] {
        let alone = tmp.path().join(format!("train-seed{seed}"));
        let mut args = vec!["train", "--loss", "bce", "--seed", seed, "--out", alone.to_str().unwrap()];
        args.extend_from_slice(TINY);
        let o = cudaenc(&args, None);
        assert!(o.status.success(), "{}", stderr(&o));
        let run = out.join(format!("bce-seed{seed}"));
        assert_eq!(metrics(&alone), metrics(&run), "seed {seed}: metrics differ from the experiment's run");
        assert!(
            bytes(&alone.join("checkpoint.safetensors")) == bytes(&run.join("checkpoint.safetensors")),
            "seed {seed}: checkpoint differs from the experiment's run"
        );
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_slice(&bytes(&alone.join("config.json"))).unwrap(),
            serde_json::from_slice(&bytes(&run.join("config.json"))).unwrap(),
        );
        assert_eq!(a, b, "seed {seed}: config.json differs");
    }
}

/// A new experiment (no --resume) in a folder that already holds a report.md or
/// results.json it did not write is refused before any run, and those files keep their
/// bytes; before, the experiment ran and replaced them (exit 0).
#[test]
fn a_new_experiment_never_overwrites_a_report_it_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["report.md", "results.json", "accuracy_curves.svg", "reliability_val.svg"] {
        let out = tmp.path().join(name.replace('.', "-"));
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join(name), b"my own notes\n").unwrap();
        let o = experiment(&out, &[], None);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {e}");
        assert!(e.contains(name) && e.contains("already exists") && !e.contains("panicked"), "{e}");
        assert_eq!(bytes(&out.join(name)), b"my own notes\n", "{name} was overwritten");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [name], "no run was started beside {name}");
    }
}
