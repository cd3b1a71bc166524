//! The service's counters and histograms, rendered in the Prometheus text format
//! (version 0.0.4) by `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A Prometheus histogram: counts per upper bound (cumulative when rendered), sum, count.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram { bounds: bounds.to_vec(), counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// Seconds over which `cudaenc_reviews_per_second` is averaged.
const RATE_WINDOW_S: u64 = 10;

struct Inner {
    /// (route, status) -> requests answered
    requests: BTreeMap<(String, u16), u64>,
    /// `/v1/classify` requests answered 200, seconds from arrival to answer
    latency: Histogram,
    /// reviews per batch run on the model
    batch_size: Histogram,
    /// padded positions B x T per batch
    batch_tokens: Histogram,
    reviews: u64,
    batches: u64,
    /// reviews classified per whole second since start, the last RATE_WINDOW_S + 1 seconds
    recent: Vec<(u64, u64)>,
}

/// Everything `/metrics` shows. Shared by the HTTP handlers and the engine thread.
pub struct Metrics {
    start: Instant,
    inner: Mutex<Inner>,
    /// `/v1/classify` requests admitted and not yet answered.
    pub in_flight: AtomicUsize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let pow2 = |hi: u32| (0..=hi).map(|i| (1u64 << i) as f64).collect::<Vec<_>>();
        Metrics {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                latency: Histogram::new(&[
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
                ]),
                batch_size: Histogram::new(&pow2(10)),
                batch_tokens: Histogram::new(&pow2(18)),
                reviews: 0,
                batches: 0,
                recent: Vec::new(),
            }),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // a panic elsewhere while holding the lock leaves plain counters: still usable
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One HTTP request answered with `status` on `route`.
    pub fn request(&self, route: &str, status: u16) {
        *self.lock().requests.entry((route.to_string(), status)).or_default() += 1;
    }

    /// One `/v1/classify` request answered 200 after `seconds`.
    pub fn latency(&self, seconds: f64) {
        self.lock().latency.observe(seconds);
    }

    /// One batch of `size` reviews padded to `padded_tokens` positions, about to run.
    pub fn batch(&self, size: usize, padded_tokens: usize) {
        let now = self.start.elapsed().as_secs();
        let mut m = self.lock();
        m.batch_size.observe(size as f64);
        m.batch_tokens.observe(padded_tokens as f64);
        m.reviews += size as u64;
        m.batches += 1;
        match m.recent.last_mut() {
            Some((s, n)) if *s == now => *n += size as u64,
            _ => m.recent.push((now, size as u64)),
        }
        m.recent.retain(|&(s, _)| s + RATE_WINDOW_S >= now);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let now = self.start.elapsed().as_secs();
        let m = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP cudaenc_http_requests_total HTTP requests answered, by route and status.\n\
             # TYPE cudaenc_http_requests_total counter"
        );
        for ((route, status), n) in &m.requests {
            let _ = writeln!(out, "cudaenc_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        m.latency.render(
            &mut out,
            "cudaenc_request_duration_seconds",
            "Time from arrival to answer of /v1/classify requests answered 200.",
        );
        m.batch_size.render(&mut out, "cudaenc_batch_size", "Reviews per batch run on the model.");
        m.batch_tokens.render(&mut out, "cudaenc_batch_tokens", "Padded token positions (B x T) per batch run on the model.");
        let _ = writeln!(
            out,
            "# HELP cudaenc_queue_depth /v1/classify requests admitted and not yet answered.\n\
             # TYPE cudaenc_queue_depth gauge\ncudaenc_queue_depth {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cudaenc_reviews_total Reviews classified by the model.\n\
             # TYPE cudaenc_reviews_total counter\ncudaenc_reviews_total {}",
            m.reviews
        );
        let _ = writeln!(
            out,
            "# HELP cudaenc_batches_total Batches run on the model.\n\
             # TYPE cudaenc_batches_total counter\ncudaenc_batches_total {}",
            m.batches
        );
        // whole seconds before the current one, at most RATE_WINDOW_S of them
        let window = now.min(RATE_WINDOW_S);
        let done: u64 = m.recent.iter().filter(|&&(s, _)| s < now && s + window >= now).map(|&(_, n)| n).sum();
        let rate = if window == 0 { 0.0 } else { done as f64 / window as f64 };
        let _ = writeln!(
            out,
            "# HELP cudaenc_reviews_per_second Reviews classified per second over the last {RATE_WINDOW_S} whole seconds.\n\
             # TYPE cudaenc_reviews_per_second gauge\ncudaenc_reviews_per_second {rate}"
        );
        out
    }
}
