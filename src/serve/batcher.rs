//! The engine thread: the only thread that touches the device. It loads the model, then
//! takes jobs (the tokenized texts of one request) from a channel, gathers the jobs that
//! arrive within the wait window (or until the token budget is full), runs them together
//! through [`infer::predict_bucketed`] (length buckets, then length-sorted batches under
//! the token budget) and hands each job exactly its own probabilities.

use super::metrics::Metrics;
use crate::cli::eval::load_run;
use crate::cli::setup::Device;
use crate::data::Truncate;
use crate::device::DeviceKind;
use crate::infer;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The texts of one request that have tokens (already truncated), and where to answer.
pub struct Job {
    pub reviews: Vec<Vec<u32>>,
    pub reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

#[derive(Clone, Debug)]
pub struct BatchLimits {
    /// Most padded positions (B x T) per batch, and the tokens gathered before a round
    /// starts without waiting out the window.
    pub max_batch_tokens: usize,
    /// How long the first job of a round waits for others (only while more requests are
    /// admitted than the round holds).
    pub wait: Duration,
}

/// Load the run's model on `device`, report the outcome on `loaded` (the device's name
/// or the error), then serve jobs until every sender of `jobs` is gone.
pub fn engine_thread(
    run: PathBuf,
    device: DeviceKind,
    limits: BatchLimits,
    jobs: Receiver<Job>,
    metrics: Arc<Metrics>,
    loaded: oneshot::Sender<anyhow::Result<String>>,
) {
    let opened = Device::open(device).and_then(|d| load_run(&run, &d).map(|(_, e)| (d.name(), e)));
    let mut engine = match opened {
        Ok((name, engine)) => {
            let _ = loaded.send(Ok(name));
            engine
        }
        Err(e) => {
            let _ = loaded.send(Err(e));
            return;
        }
    };
    // reviews arrive truncated; a budget of B x T positions, B at most the budget itself
    let cfg = infer::batch_config(limits.max_batch_tokens, Some(limits.max_batch_tokens), Truncate::none());
    while let Ok(first) = jobs.recv() {
        let mut tokens: usize = first.reviews.iter().map(Vec::len).sum();
        let mut round = vec![first];
        let deadline = Instant::now() + limits.wait;
        while tokens < limits.max_batch_tokens {
            // wait only for requests already admitted (being read or tokenized): with none,
            // a lone request runs at once instead of waiting out the window
            let others = metrics.in_flight.load(Ordering::Acquire) > round.len();
            let left = if others { deadline.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
            let next = if left.is_zero() { jobs.try_recv().map_err(|_| RecvTimeoutError::Timeout) } else { jobs.recv_timeout(left) };
            match next {
                Ok(job) => {
                    tokens += job.reviews.iter().map(Vec::len).sum::<usize>();
                    round.push(job);
                }
                Err(_) => break,
            }
        }
        let all: Vec<&[u32]> = round.iter().flat_map(|j| j.reviews.iter().map(Vec::as_slice)).collect();
        let result = infer::predict_bucketed(engine.as_mut(), &all, &cfg, |b| {
            metrics.batch(b.batch_size, b.batch_size * b.seq_len)
        });
        match result {
            Ok(probs) => {
                let mut rest = probs.as_slice();
                for job in round {
                    let (mine, tail) = rest.split_at(job.reviews.len());
                    rest = tail;
                    // a client that went away no longer waits for its answer
                    let _ = job.reply.send(Ok(mine.to_vec()));
                }
            }
            Err(e) => {
                eprintln!("error: the model failed on a batch: {e:#}");
                for job in round {
                    let _ = job.reply.send(Err(format!("the model failed: {e:#}")));
                }
            }
        }
    }
}
