//! The microbenchmark harness runs every case on the emulator (reduced shapes, once each):
//! a case that fails to set up or launch is caught here, not on the GPU machine.
use cudaenc::bench;
use cudaenc::device::Gpu;

#[test]
fn every_bench_case_runs_on_emu() {
    let results = bench::run(&Gpu::emu(), None, 1, None).expect("bench on emu");
    assert_eq!(results.len(), bench::cases().len(), "one result per case");
    assert_eq!(results[0].name, "copy", "the copy reference comes first");
    assert!(results.iter().all(|r| r.ms >= 0.0 && r.gbps.is_finite()));
}

#[test]
fn bench_filter_keeps_copy_and_matching_cases() {
    let results = bench::run(&Gpu::emu(), Some("gelu"), 1, None).expect("bench on emu");
    let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["copy", "gelu_forward", "gelu_backward"]);
}
