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
    /// Statistics of a data source: counts, token lengths, reviews per movie, padding
    Data(cli::data::Args),
}

fn main() {
    let result = match Cli::parse().cmd {
        Cmd::Info(a) => cli::info::run(a),
        Cmd::Data(a) => cli::data::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
