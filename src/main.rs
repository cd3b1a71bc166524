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
    /// Train one model (one loss, one seed) and write a run folder
    Train(cli::train::Args),
    /// The paper's protocol: N runs per loss, the table, a significance test, figures
    Experiment(cli::experiment::Args),
    /// Accuracy of a run's checkpoint on a data set
    Eval(cli::eval::Args),
    /// Label and probability for texts (arguments, --file or standard input)
    Predict(cli::predict::Args),
    /// Classify texts over HTTP: JSON API, dynamic batching, Prometheus metrics
    Serve(cli::serve::Args),
    /// Show the build's nvcc and PTX arch, the CUDA driver and GPU, and the emulator
    Info(cli::info::Args),
    /// Statistics of a data source: counts, token lengths, reviews per movie, padding
    Data(cli::data::Args),
    /// Time the kernels at the model's shapes (GB/s, TFLOP/s, fraction of copy bandwidth)
    Bench(cli::bench::Args),
}

/// Writing to a closed pipe (`cudaenc info --kernels | head -1`) ends the process
/// quietly, as it does for other command-line tools: Rust ignores SIGPIPE by default,
/// which turns the write into an error and `println!` into a panic. Every file cudaenc
/// writes is renamed into place, so dying at any write leaves no half file.
#[cfg(unix)]
fn default_sigpipe() {
    extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13; // the same number on Linux and macOS
    const SIG_DFL: usize = 0;
    // SAFETY: restores the default disposition of one signal before any thread starts
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

fn main() {
    #[cfg(unix)]
    default_sigpipe();
    let result = match Cli::parse().cmd {
        Cmd::Train(a) => cli::train::run(a),
        Cmd::Experiment(a) => cli::experiment::run(a),
        Cmd::Eval(a) => cli::eval::run(a),
        Cmd::Predict(a) => cli::predict::run(a),
        Cmd::Serve(a) => cli::serve::run(a),
        Cmd::Info(a) => cli::info::run(a),
        Cmd::Data(a) => cli::data::run(a),
        Cmd::Bench(a) => cli::bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
