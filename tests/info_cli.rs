//! `cudaenc info --load` (the GPU check's first step): on a machine without a usable CUDA
//! device it fails with a clear message and a non-zero exit, never a panic; `info` alone
//! always succeeds.
use std::process::Command;

fn cudaenc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cudaenc")).args(args).output().expect("run cudaenc")
}

#[test]
fn info_load_without_a_gpu_is_a_clear_error() {
    if let Ok(gpu) = cudaenc::device::Gpu::cuda_if_present() {
        // with a GPU: every module loads and every kernel has a row
        let out = cudaenc(&["info", "--load"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "info --load on {}: {}", gpu.name(), String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("loaded ") && text.contains("embedding_backward"), "{text}");
        return;
    }
    let out = cudaenc(&["info", "--load"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(err.contains("no GPU"), "the error says why: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = cudaenc(&["info"]);
    assert!(out.status.success(), "plain info: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cuda:       unavailable"));
}
