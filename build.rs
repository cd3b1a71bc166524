//! Build the kernels twice from the same `kernels/*.cu`:
//! 1. nvcc -> PTX (embedded via `$OUT_DIR/ptx.rs`, copied to `target/<profile>/ptx/`),
//!    when an nvcc is found: $NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, PATH, then the
//!    project-local `.toolchain/` that `scripts/install-cuda-toolchain` fills.
//!    No nvcc: a warning, no PTX; the emu and cpu devices still work.
//! 2. cc -> the host emulator (kernels/emu/runtime.cpp + every .cu as C++), linked whole.
//!    CUDAENC_EMU_ASAN=1 builds it with AddressSanitizer (scripts/emu-asan).
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    let mut c: Vec<PathBuf> = Vec::new();
    if let Some(p) = env::var_os("NVCC") {
        c.push(p.into());
    }
    for v in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = env::var_os(v) {
            c.push(Path::new(&p).join("bin/nvcc"));
        }
    }
    if let Some(path) = env::var_os("PATH") {
        c.extend(env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    c.push(root.join(".toolchain/nvidia/cu13/bin/nvcc"));
    c.into_iter().find(|p| p.is_file())
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=kernels");
    for v in ["NVCC", "CUDA_HOME", "CUDA_PATH", "CUDAENC_PTX_ARCH", "CUDAENC_EMU_ASAN", "CUDAENC_EMU_UCONTEXT"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let mut cus: Vec<PathBuf> = fs::read_dir(root.join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    cus.sort();

    // 1. PTX
    let arch = env::var("CUDAENC_PTX_ARCH").unwrap_or_else(|_| "compute_80".into());
    let nvcc = find_nvcc(&root);
    let ptx_dir = out.ancestors().nth(3).unwrap().join("ptx"); // target/<profile>/ptx
    let mut rs = String::new();
    let mut modules = String::new();
    let mut version = String::new();
    if let Some(nvcc) = &nvcc {
        let v = Command::new(nvcc).arg("--version").output().expect("run nvcc --version");
        version = String::from_utf8_lossy(&v.stdout).lines().last().unwrap_or("").trim().to_string();
        fs::create_dir_all(&ptx_dir).unwrap();
        for cu in &cus {
            let stem = cu.file_stem().unwrap().to_str().unwrap();
            let ptx = out.join(format!("{stem}.ptx"));
            let o = Command::new(nvcc)
                .args(["-ptx", &format!("-arch={arch}"), "-std=c++17", "-lineinfo", "-o"])
                .arg(&ptx)
                .arg(cu)
                .output()
                .expect("run nvcc");
            if !o.status.success() {
                panic!("nvcc failed on {}:\n{}", cu.display(), String::from_utf8_lossy(&o.stderr));
            }
            fs::copy(&ptx, ptx_dir.join(format!("{stem}.ptx"))).unwrap();
            writeln!(modules, "    ({stem:?}, include_str!({:?})),", ptx.display().to_string()).unwrap();
        }
    } else {
        println!("cargo:warning=no nvcc found (NVCC, CUDA_HOME, CUDA_PATH, PATH, .toolchain/): building without PTX; --device cuda will not work. Run scripts/install-cuda-toolchain to get one.");
    }
    let nvcc_s = nvcc.as_ref().map(|p| p.display().to_string());
    writeln!(rs, "/// nvcc used for the PTX, or None (no PTX embedded).\npub const NVCC: Option<&str> = {nvcc_s:?};").unwrap();
    writeln!(rs, "/// `nvcc --version`, last line.\npub const NVCC_VERSION: &str = {version:?};").unwrap();
    writeln!(rs, "/// Virtual architecture of the embedded PTX.\npub const PTX_ARCH: &str = {arch:?};").unwrap();
    writeln!(rs, "/// (module name = .cu file stem, PTX text).\npub const PTX_MODULES: &[(&str, &str)] = &[\n{modules}];").unwrap();
    fs::write(out.join("ptx.rs"), rs).unwrap();

    // 2. host emulator
    let asan = env::var("CUDAENC_EMU_ASAN").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .debug(true)
        .warnings(false)
        .flag("-fno-strict-aliasing")
        .flag("-fstack-clash-protection")
        .link_lib_modifier("+whole-archive") // keep the registrations
        .file(root.join("kernels/emu/runtime.cpp"));
    if env::var_os("CUDAENC_EMU_UCONTEXT").is_some() {
        b.define("CUDAENC_EMU_UCONTEXT", None);
    }
    if asan {
        b.flag("-fsanitize=address").flag("-fno-omit-frame-pointer");
        println!("cargo:rustc-link-lib=dylib=asan");
    }
    b.compile("cudaenc_emu_runtime");
    let mut k = cc::Build::new();
    k.cpp(true).std("c++17").opt_level(2).debug(true).warnings(false)
        .flag("-fno-strict-aliasing").flag("-fstack-clash-protection")
        .flag("-x").flag("c++")
        .link_lib_modifier("+whole-archive");
    if asan {
        k.flag("-fsanitize=address").flag("-fno-omit-frame-pointer");
    }
    for cu in &cus {
        k.file(cu);
    }
    k.compile("cudaenc_emu_kernels");
}
