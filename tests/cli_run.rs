//! `cudaenc train` as a user runs it, through the built binary on the demo corpus with a
//! tiny model: the run folder's life cycle (docs/design.md, "The run folder"), its lock,
//! what --resume accepts, every crash window (killed with the debug-only CUDAENC_FAULT
//! hook, which aborts the process at a named point like `kill -9`, or fails a write as a
//! full disk would), flags that are refused, and bit-identical files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tiny run every test starts from (about a second on the cpu device).
const TINY: &[&str] = &[
    "--device", "cpu", "--data", "demo", "--train-subset", "96", "--d-model", "8", "--heads", "2", "--layers", "1",
    "--max-len", "16", "--batch-size", "16", "--epochs", "2",
];

fn cudaenc(args: &[&str], fault: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cudaenc"));
    cmd.args(args).env_remove("CUDAENC_DATA").env_remove("CUDAENC_FAULT");
    if let Some(f) = fault {
        cmd.env("CUDAENC_FAULT", f);
    }
    cmd.output().expect("running cudaenc")
}

/// `flags` given as `--name value`, `--name=value` or a lone `--switch`, as (name, value).
fn pairs(flags: &[&str]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < flags.len() {
        let f = flags[i];
        if let Some((name, value)) = f.split_once('=') {
            out.push((name.to_string(), Some(value.to_string())));
        } else if flags.get(i + 1).is_some_and(|v| !v.starts_with("--")) {
            out.push((f.to_string(), Some(flags[i + 1].to_string())));
            i += 1;
        } else {
            out.push((f.to_string(), None));
        }
        i += 1;
    }
    out
}

/// `train` with the tiny settings, where `extra` flags replace the tiny ones of the same
/// name (clap refuses a flag given twice), and `--out dir`.
fn train(dir: &Path, extra: &[&str], fault: Option<&str>) -> Output {
    let extra = pairs(extra);
    let mut all: Vec<(String, Option<String>)> =
        pairs(TINY).into_iter().filter(|(n, _)| !extra.iter().any(|(e, _)| e == n)).collect();
    all.extend(extra);
    let mut args = vec!["train".to_string()];
    for (name, value) in all {
        match value {
            Some(v) => args.push(format!("{name}={v}")),
            None => args.push(name),
        }
    }
    args.extend(["--out".to_string(), dir.to_str().unwrap().to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    cudaenc(&refs, fault)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) {
    assert!(o.status.success(), "cudaenc failed ({:?}):\n{}", o.status, stderr(o));
}

/// Failed with an error message (exit 1), not a panic or a signal; returns the message.
#[track_caller]
fn fails(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected an error exit, got {:?}:\n{e}", o.status);
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// Killed by the fault hook (abort), as a kill -9 would.
#[track_caller]
fn killed(o: &Output) {
    assert!(o.status.code().is_none() && stderr(o).contains("CUDAENC_FAULT: dying"), "{:?}\n{}", o.status, stderr(o));
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn read(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// metrics.jsonl without the timing fields (they differ between any two runs).
fn metrics_without_timing(dir: &Path) -> Vec<serde_json::Value> {
    String::from_utf8(read(dir.join("metrics.jsonl")))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("train_seconds");
            o.remove("tokens_per_second");
            v
        })
        .collect()
}

#[test]
fn a_failed_run_removes_only_what_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    // a folder with the user's own file: kept, with the file, after a run that diverges
    let precious = tmp.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("notes.txt"), "x").unwrap();
    let e = fails(&train(&precious, &["--lr", "1e30"], None));
    assert!(e.contains("NaN"), "{e}");
    assert_eq!(names(&precious), ["notes.txt"], "only the run's own files are removed");
    // a folder the run created is removed with it
    let fresh = tmp.path().join("fresh");
    fails(&train(&fresh, &["--lr", "1e30"], None));
    assert!(!fresh.exists());
    // a config.json that is not a run's is never overwritten
    std::fs::write(precious.join("config.json"), "{\"mine\": 1}").unwrap();
    let e = fails(&train(&precious, &[], None));
    assert!(e.contains("not a cudaenc run configuration"), "{e}");
    assert_eq!(read(precious.join("config.json")), b"{\"mine\": 1}");
}

#[test]
fn a_run_folder_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    std::fs::create_dir(&dir).unwrap();
    let lock = cudaenc::train::trainer::RunLock::acquire(&dir).unwrap();
    let e = fails(&train(&dir, &[], None));
    assert!(e.contains("in use by another cudaenc process") && e.contains(&format!("pid {}", std::process::id())), "{e}");
    assert_eq!(names(&dir), ["run.lock"], "nothing written beside the lock");
    drop(lock);
    assert_eq!(names(&dir), Vec::<String>::new(), "the lock file goes with the lock");
    // a lock file left by a killed process holds no lock: the next run proceeds
    killed(&train(&dir, &[], Some("after-config")));
    assert!(dir.join("run.lock").exists());
    ok(&train(&dir, &[], None));
    assert_eq!(names(&dir), ["checkpoint.safetensors", "config.json", "metrics.jsonl"]);
}

#[test]
fn resume_accepts_only_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    killed(&train(&dir, &[], Some("after-checkpoint-1")));
    let config = String::from_utf8(read(dir.join("config.json"))).unwrap();
    assert!(config.contains("\"train_subset\": 96"), "config.json records --train-subset:\n{config}");
    for (flags, named) in [
        (&["--train-subset", "80"][..], "--train-subset"),
        (&["--val-seed", "3"], "--val-seed"),
        (&["--seed", "2"], "--seed"),
        (&["--lr", "0.01"], "optimization"),
        (&["--truncate", "tail"], "--truncate"),
    ] {
        let mut f = flags.to_vec();
        f.push("--resume");
        let e = fails(&train(&dir, &f, None));
        assert!(e.contains(named) && e.contains("differ"), "{flags:?}: {e}");
    }
    ok(&train(&dir, &["--resume"], None));
    assert_eq!(metrics_without_timing(&dir).len(), 2);
}

/// `--cuda-graphs` (on emu) is recorded in config.json and is part of the run: it rounds
/// the training batches' lengths, so a resume must repeat it, and one without it is refused
/// by name; with it the run resumes.
#[test]
fn resume_requires_the_same_cuda_graphs_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let emu = ["--device", "emu", "--cuda-graphs"];
    killed(&train(&dir, &emu, Some("after-checkpoint-1")));
    let config: serde_json::Value = serde_json::from_slice(&read(dir.join("config.json"))).unwrap();
    assert_eq!(config["hyper"]["cuda_graphs"], serde_json::json!(true), "config.json records --cuda-graphs");
    let e = fails(&train(&dir, &["--device", "emu", "--resume"], None));
    assert!(e.contains("--cuda-graphs") && e.contains("differ"), "{e}");
    ok(&train(&dir, &["--device", "emu", "--cuda-graphs", "--resume"], None));
    assert_eq!(metrics_without_timing(&dir).len(), 2);
}

/// Kill at each point of an epoch's end (metrics renamed, checkpoint renamed), resume,
/// and end with the files of an uninterrupted run: the checkpoint byte for byte, the
/// metrics without their timings. A full disk at either write leaves a folder that
/// resumes, or in epoch 1 one that reruns.
#[test]
fn every_crash_window_resumes_to_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    ok(&train(&straight, &[], None));
    let want_ckpt = read(straight.join("checkpoint.safetensors"));
    let want_metrics = metrics_without_timing(&straight);
    assert_eq!(want_metrics.len(), 2);
    // a second identical run writes the same checkpoint bytes
    let again = tmp.path().join("again");
    ok(&train(&again, &[], None));
    assert!(read(again.join("checkpoint.safetensors")) == want_ckpt, "two identical runs, different checkpoint bytes");

    for (i, fault) in ["after-metrics-2", "after-checkpoint-1", "after-metrics-1", "after-config", "checkpoint-2", "metrics-2", "checkpoint-1"]
        .into_iter()
        .enumerate()
    {
        let dir = tmp.path().join(format!("crash{i}"));
        let first = train(&dir, &[], Some(fault));
        if fault.starts_with("after-") {
            killed(&first);
        } else {
            let e = fails(&first);
            assert!(e.contains("No space left on device") && e.contains("saving epoch"), "{fault}: {e}");
        }
        let epoch_done = ["after-metrics-2", "after-checkpoint-1", "checkpoint-2", "metrics-2"].contains(&fault);
        if epoch_done {
            let lines_before = metrics_without_timing(&dir);
            ok(&train(&dir, &["--resume"], None));
            // the lines of the epochs the checkpoint covers are kept byte for byte
            assert_eq!(metrics_without_timing(&dir)[0], lines_before[0], "{fault}");
        } else {
            if dir.exists() {
                let e = fails(&train(&dir, &["--resume"], None));
                assert!(e.contains("no epoch finished yet"), "{fault}: {e}");
            }
            ok(&train(&dir, &[], None));
        }
        assert!(read(dir.join("checkpoint.safetensors")) == want_ckpt, "{fault}: the checkpoint differs from the uninterrupted run's");
        assert_eq!(metrics_without_timing(&dir), want_metrics, "{fault}");
        assert_eq!(names(&dir), ["checkpoint.safetensors", "config.json", "metrics.jsonl"], "{fault}: no temporary file left");
    }
    // a finished run resumes to itself, and metrics.jsonl is rewritten with the same bytes
    let bytes = read(straight.join("metrics.jsonl"));
    let o = train(&straight, &["--resume"], None);
    ok(&o);
    assert!(stderr(&o).contains("already finished"), "{}", stderr(&o));
    assert_eq!(read(straight.join("metrics.jsonl")), bytes);
    // and a new run into it is refused, with the advice to resume
    assert!(fails(&train(&straight, &[], None)).contains("--resume"));
}

#[test]
fn bad_settings_are_refused_before_the_run_folder_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    for (flags, want) in [
        (&["--grad-clip", "inf"][..], "--grad-clip"),
        (&["--grad-clip", "NaN"], "--grad-clip"),
        (&["--grad-clip=-1"], "--grad-clip"),
        (&["--min-lr=-5"], "--min-lr"),
        (&["--min-lr", "1e30"], "--min-lr"),
        (&["--weight-decay=-5"], "--weight-decay"),
        (&["--weight-decay", "inf"], "--weight-decay"),
        (&["--train-subset", "1"], "both classes"),
        (&["--layers", "1000000000"], "memory"),
        (&["--d-model", "100000", "--heads", "1"], "memory"),
        (&["--full-test"], "no test split"),
        (&["--val-size", "10"], "--val-size"),
        (&["--data", ""], "--data is empty"),
        (&["--cuda-graphs"], "--cuda-graphs"), // TINY runs on the cpu device
    ] {
        let e = fails(&train(&dir, flags, None));
        assert!(e.contains(want), "{flags:?}: {e}");
        assert!(!dir.exists(), "{flags:?}: the run folder was written");
    }
    // --grad-clip 0 (off) is a valid setting, recorded as a number and usable later
    ok(&train(&dir, &["--grad-clip", "0", "--epochs", "1"], None));
    let cfg: serde_json::Value = serde_json::from_slice(&read(dir.join("config.json"))).unwrap();
    assert_eq!(cfg["train"]["optim"]["grad_clip"], serde_json::json!(0.0));
    ok(&cudaenc(&["eval", "--run", dir.to_str().unwrap(), "--device", "cpu", "--split", "val"], None));
}
