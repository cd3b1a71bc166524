//! `cudaenc`: the command line. Each subcommand lives in `src/cli/<cmd>.rs`.

fn main() {
    eprintln!("cudaenc: no subcommands are wired yet");
    std::process::exit(2);
}
