//! `cudaenc serve`: a run's model as a JSON HTTP classification service (axum on tokio).
//! See docs/serve.md.
//!
//! - `api`: routes, request validation, answers; tokenization runs on tokio's blocking
//!   pool (rayon underneath), never on the async workers or the engine thread.
//! - `batcher`: the engine thread, the only one that touches the device (a cuda model
//!   is bound to the thread that created it); dynamic batching by tokens.
//! - `metrics`: the Prometheus text of `GET /metrics`.
//!
//! Shutdown (SIGINT or SIGTERM): stop accepting, answer every request already received,
//! close the engine thread, exit 0.

pub mod api;
pub mod batcher;
pub mod metrics;

use crate::cli::setup::RunConfig;
use crate::data::fsutil::sha256_file;
use crate::device::DeviceKind;
use crate::infer::TextPolicy;
use crate::train::trainer::RunDir;
use anyhow::{bail, ensure, Context, Result};
use api::AppState;
use batcher::BatchLimits;
use metrics::Metrics;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long shutdown waits for requests in progress before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Options {
    pub run: PathBuf,
    pub device: DeviceKind,
    pub addr: String,
    pub max_batch_tokens: usize,
    pub batch_wait: Duration,
    pub max_concurrent: usize,
    pub max_body_bytes: usize,
}

/// What `/v1/model` shows: the run's configuration, its training metrics (last epoch's
/// validation loss and accuracy first) and the checkpoint's SHA-256.
fn model_info(opts: &Options, config: &RunConfig) -> Result<serde_json::Value> {
    let ckpt = opts.run.join("checkpoint.safetensors");
    ensure!(ckpt.is_file(), "{} has no checkpoint.safetensors: was the run trained?", opts.run.display());
    let sha256 = sha256_file(&ckpt)?;
    let bytes = std::fs::metadata(&ckpt)?.len();
    let epochs = RunDir { path: opts.run.clone() }.read_metrics().unwrap_or_default();
    let last = epochs.last();
    Ok(json!({
        "run": opts.run.display().to_string(),
        "config": config,
        "loss": config.model.loss.name(),
        "max_len": config.model.max_len,
        "truncate": config.truncate,
        "val_loss": last.map(|e| e.val_loss),
        "val_acc": last.map(|e| e.val_acc),
        "epochs": epochs,
        "checkpoint": {"file": "checkpoint.safetensors", "sha256": sha256, "bytes": bytes},
    }))
}

/// Run the service until SIGINT or SIGTERM.
pub fn run(opts: Options) -> Result<()> {
    ensure!(opts.max_batch_tokens >= 1, "--max-batch-tokens must be at least 1");
    ensure!(opts.max_concurrent >= 1, "--max-concurrent must be at least 1");
    ensure!(opts.max_body_bytes >= 1, "--max-body-bytes must be at least 1");
    let config = RunConfig::read(&opts.run)?;
    let policy = TextPolicy::of_run(&config)?;
    let model_info = model_info(&opts, &config)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.min(4))
        // tokenization tasks; each thread keeps its tokenizer, so keep them few
        .max_blocking_threads(workers.max(2))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let metrics = Arc::new(Metrics::new());
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
    let state = Arc::new(AppState {
        jobs: Mutex::new(Some(jobs_tx)),
        policy,
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
        device: OnceLock::new(),
        model_info,
        max_concurrent: opts.max_concurrent,
        max_body_bytes: opts.max_body_bytes,
    });
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let limits = BatchLimits { max_batch_tokens: opts.max_batch_tokens, wait: opts.batch_wait };
    let (run_dir, device) = (opts.run.clone(), opts.device);
    let engine = std::thread::Builder::new()
        .name("cudaenc-engine".into())
        .spawn(move || batcher::engine_thread(run_dir, device, limits, jobs_rx, metrics, loaded_tx))
        .context("starting the engine thread")?;

    let outcome = rt.block_on(serve(&opts, state.clone(), loaded_rx));
    // no new jobs: the engine thread finishes the ones it has and returns
    state.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(state);
    rt.shutdown_timeout(Duration::from_secs(1));
    if engine.join().is_err() {
        bail!("the engine thread panicked");
    }
    outcome
}

async fn serve(
    opts: &Options,
    state: Arc<AppState>,
    loaded: tokio::sync::oneshot::Receiver<Result<String>>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&opts.addr)
        .await
        .with_context(|| format!("cannot listen on {}", opts.addr))?;
    let local = listener.local_addr()?;
    println!("cudaenc serve: listening on http://{local} (run {})", opts.run.display());
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load_failed = Arc::new(OnceLock::<anyhow::Error>::new());
    {
        let (state, load_failed, stop_tx) = (state.clone(), load_failed.clone(), stop_tx.clone());
        let run = opts.run.display().to_string();
        tokio::spawn(async move {
            match loaded.await {
                Ok(Ok(device)) => {
                    let _ = state.device.set(device.clone());
                    state.ready.store(true, Ordering::Release);
                    println!("cudaenc serve: model loaded on {device}; ready");
                    let _ = std::io::stdout().flush();
                }
                Ok(Err(e)) => {
                    let _ = load_failed.set(e.context(format!("loading the model of {run}")));
                    let _ = stop_tx.send(true);
                }
                Err(_) => {
                    let _ = load_failed.set(anyhow::anyhow!("the engine thread stopped while loading the model"));
                    let _ = stop_tx.send(true);
                }
            }
        });
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("cudaenc serve: shutting down: answering the requests in progress");
        let _ = stop_tx.send(true);
    });

    let mut stopped = stop_rx.clone();
    let server = axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
        let _ = stopped.wait_for(|&s| s).await;
    });
    let mut stopped = stop_rx;
    let grace = async move {
        let _ = stopped.wait_for(|&s| s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server => r.context("serving HTTP")?,
        _ = grace => bail!("requests still in progress {}s after the shutdown signal; stopped anyway", SHUTDOWN_GRACE.as_secs()),
    }
    if let Some(e) = load_failed.get() {
        bail!("{e:#}");
    }
    eprintln!("cudaenc serve: stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
