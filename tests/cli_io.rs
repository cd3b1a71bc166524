//! `cudaenc eval`, `predict`, `info` and `data` as a user runs them, through the built
//! binary: a NaN model is an error and never a number, closed pipes end quietly, a wrong
//! --run fails before standard input is read, `eval` finds the run's own data, and the
//! messages name the thing and the fix.

mod data_common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cudaenc::cli::setup::RunConfig;
use cudaenc::cli::train::tensor_slots;
use cudaenc::model::params::ParamLayout;
use cudaenc::train::checkpoint;

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cudaenc"));
    cmd.args(args).env_remove("CUDAENC_DATA").env_remove("CUDAENC_FAULT");
    cmd
}

fn cudaenc(args: &[&str]) -> Output {
    command(args).output().expect("running cudaenc")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn fails(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected an error exit, got {:?}:\n{e}", o.status);
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// One tiny demo run shared by the tests of this file (trained once).
fn demo_run() -> &'static Path {
    static RUN: OnceLock<(tempfile::TempDir, std::path::PathBuf)> = OnceLock::new();
    &RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let o = cudaenc(&[
            "train", "--device", "cpu", "--data", "demo", "--train-subset", "96", "--d-model", "8", "--heads", "2",
            "--max-len", "16", "--batch-size", "16", "--epochs", "1", "--out", out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        (tmp, out)
    })
    .1
}

#[test]
fn a_nan_model_is_an_error_never_a_number() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("nan");
    std::fs::create_dir(&run).unwrap();
    for f in ["config.json", "checkpoint.safetensors"] {
        std::fs::copy(demo_run().join(f), run.join(f)).unwrap();
    }
    let config = RunConfig::read(&run).unwrap();
    let slots = tensor_slots(&ParamLayout::new(&config.model));
    let path = run.join("checkpoint.safetensors");
    let mut ckpt = checkpoint::load(&path, &slots).unwrap();
    ckpt.params.iter_mut().for_each(|p| *p = f32::NAN);
    checkpoint::save(&path, &slots, &ckpt).unwrap();
    let r = run.to_str().unwrap();
    let e = fails(&cudaenc(&["eval", "--run", r, "--device", "cpu", "--split", "val"]));
    assert!(e.contains("NaN") && !e.contains("accuracy"), "{e}");
    let o = cudaenc(&["predict", "--run", r, "--device", "cpu", "a wonderful film"]);
    let e = fails(&o);
    assert!(e.contains("NaN") && e.contains("broken"), "{e}");
    assert!(o.stdout.is_empty(), "nothing printed as a prediction: {}", String::from_utf8_lossy(&o.stdout));
    // the run itself still evaluates
    let o = cudaenc(&["eval", "--run", demo_run().to_str().unwrap(), "--device", "cpu", "--split", "val"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("accuracy"), "{}", stderr(&o));
}

/// Read one line of the child's output, close the pipe, and expect no panic: the
/// process ends (by SIGPIPE, as `cat` would, or by exiting 0).
fn closes_quietly(mut cmd: Command, stdin: Option<String>) {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        if let Some(text) = stdin {
            let _ = input.write_all(text.as_bytes());
        }
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap(); // drops the pipe
    assert!(!first.is_empty());
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let e = stderr(&o);
    assert!(!e.contains("panicked") && o.status.code() != Some(101), "{:?}: {e}", o.status);
}

#[test]
fn a_closed_pipe_ends_quietly() {
    closes_quietly(command(&["info", "--kernels"]), None);
    let many: String = (0..3000).map(|i| format!("review number {i} was a wonderful film\n")).collect();
    closes_quietly(command(&["predict", "--run", demo_run().to_str().unwrap(), "--device", "cpu"]), Some(many));
}

#[test]
fn predict_checks_the_run_before_reading_standard_input() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-run");
    // standard input stays open and empty: reading it first would wait forever
    let mut child = command(&["predict", "--run", missing.to_str().unwrap(), "--device", "cpu"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("predict waits on standard input with a --run that does not exist");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let e = fails(&o);
    assert!(e.contains("no-run") && e.contains("config.json"), "{e}");
    let f = tmp.path().join("texts.txt");
    std::fs::write(&f, "a fine film\n").unwrap();
    let e = fails(&cudaenc(&["predict", "--run", demo_run().to_str().unwrap(), "--file", f.to_str().unwrap(), "also this"]));
    assert!(e.contains("not both"), "{e}");
    // a folder opens but cannot be read: the message names it
    let e = fails(&cudaenc(&["predict", "--run", demo_run().to_str().unwrap(), "--file", tmp.path().to_str().unwrap()]));
    assert!(e.contains(&format!("reading texts from {}", tmp.path().display())), "{e}");
}

#[test]
fn messages_name_the_thing_and_the_fix() {
    let e = fails(&cudaenc(&["data", "--data", "demo"]));
    assert!(!e.contains("`report`") && e.contains("demo") && e.contains("--data"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let e = fails(&command(&["data", "--data", ""]).env("CUDAENC_CACHE", &cache).output().unwrap());
    assert!(e.contains("--data is empty") && !cache.exists(), "{e}");
    let r = demo_run().to_str().unwrap();
    let e = fails(&cudaenc(&["eval", "--run", r, "--device", "cpu", "--split", "test"]));
    assert!(e.contains("no test split") && e.contains("--split val"), "{e}");
}

/// A run trained on an IMDB-layout archive: `eval` without --data reads that archive
/// (recorded in config.json), not the cache or the demo corpus.
#[test]
fn eval_uses_the_runs_recorded_data() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("small-imdb.tar.gz");
    data_common::write_tar_gz(&archive, &data_common::corpus(24));
    let cache = tmp.path().join("cache");
    let run = tmp.path().join("run");
    let with_cache = |args: &[&str]| command(args).env("CUDAENC_CACHE", &cache).output().unwrap();
    let o = with_cache(&[
        "train", "--device", "cpu", "--data", archive.to_str().unwrap(), "--val-size", "8", "--d-model", "8",
        "--heads", "2", "--max-len", "16", "--batch-size", "8", "--epochs", "1", "--out", run.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (split, reviews) in [("val", "8 reviews"), ("test", "48 reviews")] {
        let o = with_cache(&["eval", "--run", run.to_str().unwrap(), "--device", "cpu", "--split", split]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && out.contains(reviews) && out.contains("small-imdb"), "{split}: {out}\n{}", stderr(&o));
    }
}

/// `eval` and `predict` given an experiment folder, or a run with no finished epoch, say
/// what the folder is and what to give instead (before: "reading .../config.json: No
/// such file" and "reading checkpoint ...: No such file").
#[test]
fn eval_and_predict_name_what_the_folder_is() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("exp");
    let run = exp.join("bce-seed1");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(demo_run().join("config.json"), run.join("config.json")).unwrap();
    for (folder, wanted) in [(&exp, "bce-seed1"), (&run, "no epoch")] {
        let f = folder.to_str().unwrap();
        for args in [vec!["eval", "--run", f, "--device", "cpu", "--split", "val"], vec!["predict", "--run", f, "--device", "cpu", "good"]] {
            let e = fails(&cudaenc(&args));
            assert!(e.contains(wanted) && !e.contains("No such file"), "{args:?}: {e}");
        }
    }
}
