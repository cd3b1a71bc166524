//! The emulator and the shared device helpers: dropout_uniform bit-identical to
//! rng::dropout_uniform, reductions at odd block sizes, warp helpers, dynamic shared
//! memory poison, atomics; broken kernels and bad launches return errors, never hang.
//! Also: the PTX parameter parsing that checks cuda launches.
mod common;

use common::{devices, emu};
use cudaenc::device::{cuda, ptx, Arg, DeviceSlice, Gpu};
use cudaenc::rng::{dropout_uniform, SplitMix64};

fn err_of(r: anyhow::Result<()>, what: &str) -> String {
    let msg = format!("{:#}", r.expect_err(what));
    println!("{what}: {msg}");
    msg
}

#[test]
fn dropout_uniform_matches_rust_bit_for_bit() {
    for gpu in devices("dropout_uniform") {
        let mut rng = SplitMix64::new(7);
        let n = 4099;
        let mut seeds: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
        let mut idxs: Vec<u64> = (0..n).map(|i| if i % 3 == 0 { rng.next_u64() } else { i as u64 }).collect();
        seeds[0] = 0;
        idxs[0] = u64::MAX; // idx + 1 wraps
        seeds[1] = u64::MAX;
        let (s, i) = (gpu.upload(&seeds).unwrap(), gpu.upload(&idxs).unwrap());
        let out = gpu.zeros::<f32>(n).unwrap();
        gpu.launch("test_dropout_uniform", n.div_ceil(256), 256u32, 0, &[out.arg(), s.arg(), i.arg(), n.into()]).unwrap();
        let got = gpu.download(&out).unwrap();
        for k in 0..n {
            let want = dropout_uniform(seeds[k], idxs[k]);
            assert_eq!(got[k].to_bits(), want.to_bits(), "{}: seed {} idx {}", gpu.name(), seeds[k], idxs[k]);
            assert!((0.0..1.0).contains(&got[k]));
        }
    }
}

#[test]
fn block_sum_with_shared_memory_and_shuffles_at_odd_block_sizes() {
    for gpu in devices("block sum") {
        for &(block, n) in &[(1u32, 5usize), (31, 100), (33, 1000), (100, 7), (257, 3000), (1000, 1000), (1024, 5000)] {
            let blocks = 3;
            let mut rng = SplitMix64::new(block as u64);
            let x: Vec<f32> = (0..blocks * n).map(|_| rng.normal(1.0) as f32).collect();
            let (dx, out) = (gpu.upload(&x).unwrap(), gpu.zeros::<f32>(blocks).unwrap());
            gpu.launch("test_block_sum", blocks, block, 0, &[out.arg(), dx.arg(), n.into()]).unwrap();
            let got = gpu.download(&out).unwrap();
            for b in 0..blocks {
                let want: f64 = x[b * n..(b + 1) * n].iter().map(|&v| v as f64).sum();
                let scale: f64 = x[b * n..(b + 1) * n].iter().map(|&v| v.abs() as f64).sum();
                assert!((got[b] as f64 - want).abs() <= 1e-6 * scale, "{} block {block} n {n}: {} vs {want}", gpu.name(), got[b]);
            }
        }
    }
}

#[test]
fn warp_helpers() {
    for gpu in devices("warp helpers") {
        for &block in &[32u32, 96, 256, 1024] {
            let blocks = 2usize;
            let mut rng = SplitMix64::new(3);
            let x: Vec<f32> = (0..blocks * block as usize).map(|_| rng.normal(1.0) as f32).collect();
            let (dx, out) = (gpu.upload(&x).unwrap(), gpu.zeros::<f32>(3 * blocks).unwrap());
            gpu.launch("test_warp_helpers", blocks, block, 0, &[out.arg(), dx.arg()]).unwrap();
            let got = gpu.download(&out).unwrap();
            for b in 0..blocks {
                let row = &x[b * block as usize..(b + 1) * block as usize];
                let sum: f64 = row.iter().map(|&v| v as f64).sum();
                let max = row[..32].iter().cloned().fold(f32::MIN, f32::max);
                let pos = row[..32].iter().filter(|&&v| v > 0.0).count() as f32;
                assert!((got[3 * b] as f64 - sum).abs() < 1e-4, "{} sum {} vs {sum}", gpu.name(), got[3 * b]);
                assert_eq!(got[3 * b + 1], max);
                assert_eq!(got[3 * b + 2], pos);
            }
        }
    }
}

#[test]
fn dynamic_shared_memory_is_poisoned_and_works() {
    let gpu = emu();
    let n = 300usize;
    let out = gpu.zeros::<f32>(2 * n).unwrap();
    gpu.launch("test_dynamic_shared", 1u32, 64u32, (n * 4) as u32, &[out.arg(), n.into()]).unwrap();
    let got = gpu.download(&out).unwrap();
    assert!(got[..n].iter().all(|v| v.is_nan()), "unwritten dynamic shared memory must read as NaN on emu");
    for i in 0..n {
        assert_eq!(got[n + i], (n - 1 - i) as f32);
    }
}

#[test]
fn atomics_across_parallel_blocks() {
    for gpu in devices("atomics") {
        let (cnt, sum, mx) = (gpu.zeros::<i32>(1).unwrap(), gpu.zeros::<f32>(1).unwrap(), gpu.zeros::<i32>(1).unwrap());
        gpu.launch("test_atomics", 64u32, 128u32, 0, &[cnt.arg(), sum.arg(), mx.arg()]).unwrap();
        assert_eq!(gpu.download(&cnt).unwrap()[0], 64 * 128);
        assert_eq!(gpu.download(&sum).unwrap()[0], (64 * 128) as f32);
        assert_eq!(gpu.download(&mx).unwrap()[0], 64 * 128 - 1);
    }
}

#[test]
fn broken_kernels_are_errors_not_hangs() {
    let gpu = emu();
    let out = gpu.zeros::<f32>(64).unwrap();
    let msg = err_of(gpu.launch("test_broken_divergent_barrier", 2u32, 64u32, 0, &[out.arg()]), "divergent barrier");
    assert!(msg.contains("test_broken_divergent_barrier") && msg.contains("barrier divergence"), "{msg}");
    assert!(msg.contains("testing.cu:"), "should name the source lines: {msg}");
    let msg = err_of(gpu.launch("test_broken_shuffle_dead_lane", 1u32, 32u32, 0, &[out.arg()]), "dead lane");
    assert!(msg.contains("test_broken_shuffle_dead_lane") && msg.contains("lane 5"), "{msg}");
    // a full-mask shuffle in a block of 16 threads names lanes that do not exist
    let msg = err_of(gpu.launch("test_warp_helpers", 1u32, 16u32, 0, &[out.arg(), out.arg()]), "missing lanes");
    assert!(msg.contains("does not exist"), "{msg}");
    // the emulator still works after errors
    let x = gpu.upload(&[1.0f32; 40]).unwrap();
    let s = gpu.zeros::<f32>(1).unwrap();
    gpu.launch("test_block_sum", 1u32, 40u32, 0, &[s.arg(), x.arg(), 40usize.into()]).unwrap();
    assert_eq!(gpu.download(&s).unwrap()[0], 40.0);
}

#[test]
fn bad_launches_are_errors_naming_the_kernel() {
    let gpu = emu();
    let out = gpu.zeros::<f32>(4).unwrap();
    let msg = err_of(gpu.launch("no_such_kernel", 1u32, 1u32, 0, &[]), "unknown kernel");
    assert!(msg.contains("no_such_kernel"));
    let msg = err_of(gpu.launch("test_block_sum", 1u32, 1025u32, 0, &[out.arg(), out.arg(), 4usize.into()]), "block too big");
    assert!(msg.contains("test_block_sum") && msg.contains("1025"), "{msg}");
    let msg = err_of(gpu.launch("test_block_sum", 1u32, 32u32, 0, &[out.arg(), out.arg(), Arg::U64(4)]), "u64 for int");
    assert!(msg.contains("test_block_sum") && msg.contains("argument 2"), "{msg}");
    let msg = err_of(gpu.launch("test_block_sum", 1u32, 32u32, 0, &[out.arg(), out.arg()]), "too few");
    assert!(msg.contains("test_block_sum") && msg.contains("takes 3"), "{msg}");
}

#[test]
fn launches_from_many_threads_at_once() {
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                let gpu = Gpu::emu();
                for k in 0..20 {
                    let n = 100 + t * 10 + k;
                    let x = gpu.upload(&vec![1.0f32; n]).unwrap();
                    let o = gpu.zeros::<f32>(1).unwrap();
                    gpu.launch("test_block_sum", 1u32, 64u32, 0, &[o.arg(), x.arg(), n.into()]).unwrap();
                    assert_eq!(gpu.download(&o).unwrap()[0], n as f32);
                }
            });
        }
    });
}

#[test]
fn views_address_inside_a_buffer() {
    let gpu = emu();
    let buf = gpu.upload(&(0..100).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let v = buf.view(10, 20);
    assert_eq!(gpu.download(&v).unwrap(), (10..30).map(|i| i as f32).collect::<Vec<_>>());
    gpu.write(&v.view(5, 2), &[-1.0, -2.0]).unwrap();
    let all = gpu.download(&buf).unwrap();
    assert_eq!(&all[14..17], &[14.0, -1.0, -2.0]);
    let o = gpu.zeros::<f32>(1).unwrap();
    gpu.launch("test_block_sum", 1u32, 32u32, 0, &[o.arg(), v.arg(), 4usize.into()]).unwrap();
    assert_eq!(gpu.download(&o).unwrap()[0], 10.0 + 11.0 + 12.0 + 13.0);
    assert!(v.len() == 20 && DeviceSlice::len(&buf) == 100);
}

#[test]
fn ptx_parameter_lists_check_cuda_launches() {
    if ptx::PTX_MODULES.is_empty() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: built without nvcc, no PTX to parse");
        return;
    }
    let mut entries = std::collections::HashMap::new();
    for (m, text) in ptx::PTX_MODULES {
        cuda::parse_entries(m, text, &mut entries);
    }
    let (module, params) = &entries["layernorm_forward"];
    assert_eq!(*module, "layernorm");
    let sizes: Vec<(usize, bool)> = params.iter().map(|p| (p.bytes, p.float)).collect();
    assert_eq!(sizes, [(8, false), (8, false), (8, false), (8, false), (8, false), (8, false), (4, false), (4, false)]);
    let a = Arg::Ptr(0);
    let good = [a, a, a, a, a, a, 1i32.into(), 2i32.into()];
    cuda::check_args("layernorm_forward", params, &good).unwrap();
    let e = cuda::check_args("layernorm_forward", params, &good[..7]).unwrap_err().to_string();
    assert!(e.contains("layernorm_forward") && e.contains("takes 8"), "{e}");
    let bad = [a, a, a, a, a, a, 1i32.into(), 2.0f32.into()];
    let e = cuda::check_args("layernorm_forward", params, &bad).unwrap_err().to_string();
    assert!(e.contains("argument 7"), "{e}");
    // every registered emulator kernel has a PTX entry with the same parameter sizes
    for name in cudaenc::device::emu::kernel_names() {
        assert!(entries.contains_key(&name), "{name} missing from the PTX");
    }
    let (_, p) = &entries["test_dropout_uniform"];
    assert_eq!(p.iter().map(|p| p.bytes).collect::<Vec<_>>(), [8, 8, 8, 4]);
}
