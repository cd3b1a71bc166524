//! The microbenchmark harness runs every case on the emulator (reduced shapes, once each):
//! a case that fails to set up or launch is caught here, not on the GPU machine.
use cudaenc::bench;
use cudaenc::config::{Loss, ModelConfig};
use cudaenc::device::Gpu;

#[test]
fn every_bench_case_runs_on_emu() {
    let results = bench::run(&Gpu::emu(), None, 1, None).expect("bench on emu");
    assert_eq!(results.len(), bench::cases().len(), "one result per case");
    assert_eq!(results[0].name, "copy", "the copy reference comes first");
    assert_eq!(results[1].name, "cublas_sgemm 8192", "then the SGEMM reference");
    for r in &results {
        // cuBLAS exists only on cuda: n/a on emu, everything else runs
        assert_eq!(r.na, r.name.starts_with("cublas"), "{}", r.name);
        assert!(r.ms >= 0.0 && r.gbps.is_finite(), "{}", r.name);
    }
}

#[test]
fn bench_filter_keeps_references_and_matching_cases() {
    let results = bench::run(&Gpu::emu(), Some("gelu"), 1, None).expect("bench on emu");
    let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["copy", "cublas_sgemm 8192", "gelu_forward", "gelu_backward"]);
}

#[test]
fn step_bench_runs_on_emu() {
    let cfg = ModelConfig { vocab: 500, d_model: 16, n_layer: 1, n_head: 2, d_ff: 32, max_len: 8, dropout: 0.1, loss: Loss::Bce, precision: Default::default() };
    let r = bench::step_bench(Gpu::emu(), "tiny", &cfg, 2, 8, 1, 0, false).expect("step bench on emu");
    assert_eq!((r.b, r.t, r.steps), (2, 8, 1));
    assert!(r.ms_median > 0.0 && r.tokens_per_s.is_finite());
    // through the graph path: the timed step is a replay (else an error)
    let g = bench::step_bench(Gpu::emu(), "tiny-graphs", &cfg, 2, 8, 1, 2, true).expect("graph step bench on emu");
    assert_eq!((g.b, g.t, g.steps), (2, 8, 1));
    assert!(bench::step_bench(Gpu::emu(), "tiny-graphs", &cfg, 2, 8, 1, 0, true).is_err(), "one step: nothing replayed");
}

#[test]
fn step_batches_are_valid_and_match_the_pytorch_formula() {
    let b = bench::step_batch(64, 256, 100_277, 1);
    assert_eq!(b.lens[0], 256, "the first review is full length");
    assert!(b.lens.iter().all(|&l| (65..=256).contains(&l)));
    assert!(b.ids.iter().all(|&id| id < 100_277));
    // padding is id 0; benches/pytorch_reference.py uses the same lengths
    assert!(b.ids[(1..256).map(|t| 256 + t).find(|&i| i - 256 >= b.lens[1] as usize).unwrap()] == 0);
    assert_eq!(bench::step_len(1, 256), 256 - 7919 % 192);
    let ids = bench::zipf_ids(16384, 100_277, 7);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert!((1000..10000).contains(&distinct.len()), "{} distinct ids in a batch", distinct.len());
}

#[test]
fn a_failing_cublas_case_is_an_na_row_and_the_table_goes_on() {
    // the GPU check's kernel table must survive a cuBLAS that cannot be loaded or fails:
    // a failing library case is an n/a row, the cases after it still run
    fn failing_cublas(_: &Gpu, _: &bench::Shapes) -> anyhow::Result<bench::Case> {
        anyhow::bail!("cublas: create handle: CUBLAS_STATUS_NOT_INITIALIZED (simulated)")
    }
    let mut cases: Vec<(&'static str, bench::Setup)> = bench::cases().into_iter().filter(|(n, _)| *n == "copy" || n.starts_with("gelu")).collect();
    cases.insert(1, ("cublas_sgemm 8192", failing_cublas));
    let results = bench::run_cases(&Gpu::emu(), cases, None, 1, None).expect("a cuBLAS failure must not abort the table");
    let names: Vec<(&str, bool)> = results.iter().map(|r| (r.name.as_str(), r.na)).collect();
    assert_eq!(names, [("copy", false), ("cublas_sgemm 8192", true), ("gelu_forward", false), ("gelu_backward", false)]);

    // a failing kernel case (ours) is still an error that names it
    fn failing_kernel(_: &Gpu, _: &bench::Shapes) -> anyhow::Result<bench::Case> {
        anyhow::bail!("simulated")
    }
    let err = bench::run_cases(&Gpu::emu(), vec![("copy", bench::cases()[0].1), ("gelu_forward", failing_kernel)], None, 1, None)
        .expect_err("our kernel failing is an error");
    assert!(format!("{err:#}").contains("gelu_forward"), "{err:#}");
}
