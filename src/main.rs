//! `cudaenc`: the command line. Each subcommand lives in `src/cli/<cmd>.rs`; this file
//! only dispatches and reports errors.
use clap::{Parser, Subcommand};
use cudaenc::cli;

#[derive(Parser)]
#[command(name = "cudaenc", version, about = "Train small transformer text classifiers with hand-written CUDA kernels")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the build's nvcc and PTX arch, the CUDA driver and GPU, and the emulator
    Info(cli::info::Args),
    /// Time the kernels at the model's shapes (GB/s, TFLOP/s, fraction of copy bandwidth)
    Bench(cli::bench::Args),
}

fn main() {
    let result = match Cli::parse().cmd {
        Cmd::Info(a) => cli::info::run(a),
        Cmd::Bench(a) => cli::bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
