//! Load benchmark of `cudaenc serve` on loopback (not a test): reviews/s and p50/p95/p99
//! latency at several concurrencies with real IMDB test reviews, one review per request,
//! dynamic batching on and off, against offline batched inference (what `cudaenc eval`
//! runs) on the same reviews in this process. See docs/serve.md.
//!
//! cargo build --release && cargo run --release --example serve_load -- \
//!     --run RUN --data ../shared/data/aclImdb-labeled.tar.gz [--reviews 2000] \
//!     [--concurrency 1,16,64] [--device cpu] [--soak-seconds 0]
//!
//! It starts `target/release/cudaenc serve` (or `--bin`) on 127.0.0.1 with a free port,
//! twice: batching on (`--max-batch-tokens`, `--batch-wait-ms`, default as the server's) and off (`--max-batch-tokens 1 --batch-wait-ms 0`:
//! every review alone). Every answer is checked against the offline probability (1e-5).
//! `--soak-seconds S`: afterwards S seconds at the highest concurrency with batching on,
//! the server's resident memory sampled every 10 s.

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use cudaenc::cli::eval::load_run;
use cudaenc::cli::setup::Device;
use cudaenc::data::read::{read_archive, read_dir, Part};
use cudaenc::device::DeviceKind;
use cudaenc::infer::{self, TextPolicy};
use cudaenc::model::Batch;
use cudaenc::rng::SplitMix64;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Run folder of the model to serve
    #[arg(long)]
    run: PathBuf,
    /// IMDB archive or aclImdb/ directory (its test split is used)
    #[arg(long)]
    data: PathBuf,
    /// Test reviews sent at each concurrency (a seeded sample)
    #[arg(long, default_value_t = 2000)]
    reviews: usize,
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
    /// The cudaenc binary to start
    #[arg(long, default_value = "target/release/cudaenc")]
    bin: PathBuf,
    #[arg(long, default_value_t = 0)]
    soak_seconds: u64,
    /// The server's --max-batch-tokens with batching on
    #[arg(long, default_value_t = 4096)]
    max_batch_tokens: usize,
    /// The server's --batch-wait-ms with batching on
    #[arg(long, default_value_t = 2.0)]
    batch_wait_ms: f64,
    /// Skip the batching-off server
    #[arg(long)]
    only_on: bool,
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(args: &Args, extra: &[&str]) -> Result<Server> {
        let mut child = Command::new(&args.bin)
            .args(["serve", "--addr", "127.0.0.1:0", "--max-concurrent", "4096", "--device"])
            .arg(format!("{:?}", args.device).to_lowercase())
            .arg("--run")
            .arg(&args.run)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", args.bin.display()))?;
        let mut lines = std::io::BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let mut url = None;
        for line in lines.by_ref() {
            let line = line?;
            if let Some(rest) = line.split("listening on ").nth(1) {
                url = rest.split_whitespace().next().map(str::to_string);
            }
            if line.contains("ready") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        let url = url.context("the server printed no address")?;
        Ok(Server { child, url })
    }

    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

struct Level {
    concurrency: usize,
    reviews_per_s: f64,
    p50: f64,
    p95: f64,
    p99: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Send every review once, `c` clients at a time, one review per request; check answers.
fn load(server: &Server, texts: &[String], want: &[f32], c: usize, until: Option<Instant>) -> Result<Level> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let lat: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..c)
            .map(|_| {
                s.spawn(|| -> Result<Vec<f64>> {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                    let mut lat = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let done = match until {
                            Some(t) => Instant::now() >= t,
                            None => k >= texts.len(),
                        };
                        if done {
                            return Ok(lat);
                        }
                        let i = k % texts.len();
                        let body = serde_json::json!({ "texts": [&texts[i]] }).to_string();
                        let t0 = Instant::now();
                        let resp = agent.post(&format!("{}/v1/classify", server.url)).send_string(&body)?;
                        let v: serde_json::Value = serde_json::from_str(&resp.into_string()?)?;
                        lat.push(t0.elapsed().as_secs_f64());
                        let p = v["results"][0]["p_positive"].as_f64().context("no probability")?;
                        ensure!((p - want[i] as f64).abs() <= 1e-5, "review {i}: served {p}, offline {}", want[i]);
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client panicked")).collect::<Result<Vec<_>>>()
    })?;
    let wall = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = lat.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    Ok(Level {
        concurrency: c,
        reviews_per_s: all.len() as f64 / wall,
        p50: percentile(&all, 0.5) * 1e3,
        p95: percentile(&all, 0.95) * 1e3,
        p99: percentile(&all, 0.99) * 1e3,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.bin.is_file(), "{} not found: run `cargo build --release` first (or give --bin)", args.bin.display());
    let corpus = if args.data.is_dir() { read_dir(&args.data)? } else { read_archive(&args.data)? };
    let mut test: Vec<String> = corpus.reviews.into_iter().filter(|r| r.part == Part::Test).map(|r| r.text).collect();
    ensure!(!test.is_empty(), "no test reviews in {}", args.data.display());
    let mut rng = SplitMix64::new(2026);
    for i in (1..test.len()).rev() {
        test.swap(i, rng.below(i as u64 + 1) as usize);
    }
    test.truncate(args.reviews);
    let texts = test;

    // offline: tokenize + batched inference in this process, as `cudaenc eval` runs it
    let device = Device::open(args.device)?;
    let (config, mut engine) = load_run(&args.run, &device)?;
    let policy = TextPolicy::of_run(&config)?;
    let t0 = Instant::now();
    let prepared = policy.prepare_all(&texts);
    let tokenize_s = t0.elapsed().as_secs_f64();
    if prepared.iter().any(|p| p.ids.is_empty()) {
        bail!("a sampled review has no tokens");
    }
    let set = infer::review_set(&prepared.iter().map(|p| p.ids.as_slice()).collect::<Vec<_>>());
    let cfg = infer::batch_config(config.train.batch_size, None, policy.truncate);
    let t1 = Instant::now();
    let want = infer::predict_set(engine.as_mut(), &set, &cfg)?;
    let model_s = t1.elapsed().as_secs_f64();
    let n = texts.len() as f64;
    println!(
        "offline batched (batch {}): {:.0} reviews/s with tokenization, {:.0} reviews/s model only",
        config.train.batch_size,
        n / (tokenize_s + model_s),
        n / model_s
    );
    // single-review compute time: batch of one, tokens ready
    let k = texts.len().min(300);
    let t2 = Instant::now();
    for p in &prepared[..k] {
        let ids = policy.truncate.to_vec(&p.ids);
        engine.predict(&Batch::from_reviews(&[&ids], &[0]))?;
    }
    let single_ms = t2.elapsed().as_secs_f64() * 1e3 / k as f64;
    let tok_ms = tokenize_s * 1e3 / n;
    println!("single review: {single_ms:.2} ms model + {tok_ms:.2} ms tokenization (mean of {k})");
    drop(engine);

    println!("\n| batching | concurrency | reviews/s | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|---|");
    let on = ["--max-batch-tokens".to_string(), args.max_batch_tokens.to_string(), "--batch-wait-ms".into(), args.batch_wait_ms.to_string()];
    let on: Vec<&str> = on.iter().map(String::as_str).collect();
    let modes = [("on", &on[..]), ("off", &["--max-batch-tokens", "1", "--batch-wait-ms", "0"][..])];
    for (name, extra) in &modes[..if args.only_on { 1 } else { 2 }] {
        let server = Server::start(&args, extra)?;
        load(&server, &texts[..texts.len().min(64)], &want, 8, None)?; // warm-up
        for &c in &args.concurrency {
            let l = load(&server, &texts, &want, c, None)?;
            println!(
                "| {name} | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
                l.concurrency, l.reviews_per_s, l.p50, l.p95, l.p99
            );
        }
    }

    if args.soak_seconds > 0 {
        let c = args.concurrency.iter().copied().max().unwrap_or(64);
        let server = Server::start(&args, &on)?;
        println!("\nsoak: {} s at concurrency {c}, batching on; server memory (VmRSS)", args.soak_seconds);
        let end = Instant::now() + Duration::from_secs(args.soak_seconds);
        std::thread::scope(|s| -> Result<()> {
            let h = s.spawn(|| load(&server, &texts, &want, c, Some(end)));
            let t0 = Instant::now();
            while Instant::now() < end {
                println!("  t={:>4.0}s rss={} KiB", t0.elapsed().as_secs_f64(), server.rss_kib().unwrap_or(0));
                std::thread::sleep(Duration::from_secs(10).min(end.saturating_duration_since(Instant::now())));
            }
            let l = h.join().expect("soak panicked")?;
            println!(
                "  end rss={} KiB; {:.0} reviews/s, p50 {:.1} ms, p99 {:.1} ms",
                server.rss_kib().unwrap_or(0),
                l.reviews_per_s,
                l.p50,
                l.p99
            );
            Ok(())
        })?;
    }
    Ok(())
}
