//! `cudaenc serve`: classify texts over HTTP with a run's model (see docs/serve.md).

use crate::device::DeviceKind;
use crate::serve::{self, Options};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run folder written by `cudaenc train` (config.json + checkpoint.safetensors)
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    /// Address to listen on (port 0: any free port, printed at start)
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Most padded token positions (reviews x longest review) per batch on the model;
    /// 1 turns batching off (every review alone)
    #[arg(long, default_value_t = 4096)]
    pub max_batch_tokens: usize,
    /// Milliseconds a request waits for others to share its batch
    #[arg(long, default_value_t = 2.0)]
    pub batch_wait_ms: f64,
    /// Classify requests admitted at once (queued or running); more are answered 429
    #[arg(long, default_value_t = 256)]
    pub max_concurrent: usize,
    /// Largest request body in bytes; larger ones are answered 413
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.batch_wait_ms.is_finite() && (0.0..=10_000.0).contains(&args.batch_wait_ms),
        "--batch-wait-ms must be between 0 and 10000"
    );
    serve::run(Options {
        run: args.run,
        device: args.device,
        addr: args.addr,
        max_batch_tokens: args.max_batch_tokens,
        batch_wait: Duration::from_secs_f64(args.batch_wait_ms / 1000.0),
        max_concurrent: args.max_concurrent,
        max_body_bytes: args.max_body_bytes,
    })
}
