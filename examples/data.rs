//! Temporary stand-in for `cudaenc data` until the subcommand is wired into main.rs:
//! `cargo run --release --example data -- --data PATH`.
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: cudaenc::cli::data::Args,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = cudaenc::cli::data::run(cli.args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
