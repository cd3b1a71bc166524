//! `cudaenc serve` end to end: a real server process on 127.0.0.1 (ephemeral port) and a
//! real HTTP client (ureq), with a tiny model trained here on the demo corpus. Every loop
//! is bounded in count and time.

use cudaenc::cli::eval::load_run;
use cudaenc::cli::setup::Device;
use cudaenc::infer::TextPolicy;
use cudaenc::model::Batch;
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cudaenc");

/// A demo-corpus model trained once for all tests of this file (cpu device, ~seconds).
fn run_dir() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(BIN)
            .args(["train", "--data", "demo", "--device", "cpu", "--epochs", "1", "--train-subset", "600", "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "training the test model failed: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// p(positive) per text computed in this process, one review at a time (cpu device).
fn expected(texts: &[&str]) -> Vec<Option<f32>> {
    let (config, mut engine) = load_run(run_dir(), &Device::Cpu).unwrap();
    let policy = TextPolicy::of_run(&config).unwrap();
    texts
        .iter()
        .map(|t| {
            let p = policy.prepare(t.as_bytes());
            (!p.ids.is_empty()).then(|| {
                let ids = policy.truncate.to_vec(&p.ids);
                engine.predict(&Batch::from_reviews(&[&ids], &[0])).unwrap()[0]
            })
        })
        .collect()
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--device", "cpu", "--addr", "127.0.0.1:0", "--run"])
            .arg(run_dir())
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("no 'listening on' line in 30 s");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let server = Server { child, url };
        while Instant::now() < deadline {
            if get(&server, "/ready").0 == 200 {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server was not ready within 30 s");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build()
}

/// (status, body) or a transport error (no HTTP answer).
fn send(agent: &ureq::Agent, server: &Server, path: &str, body: &[u8]) -> Result<(u16, String, Option<String>), String> {
    let r = agent.post(&format!("{}{path}", server.url)).set("Content-Type", "application/json").send_bytes(body);
    match r {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
            let (status, retry) = (resp.status(), resp.header("Retry-After").map(str::to_string));
            Ok((status, resp.into_string().map_err(|e| e.to_string())?, retry))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn classify(agent: &ureq::Agent, server: &Server, texts: &[&str]) -> Result<(u16, Value), String> {
    let (status, body, _) = send(agent, server, "/v1/classify", json!({ "texts": texts }).to_string().as_bytes())?;
    Ok((status, serde_json::from_str(&body).map_err(|e| format!("answer is not JSON ({e}): {body}"))?))
}

fn get(server: &Server, path: &str) -> (u16, String) {
    match agent().get(&format!("{}{path}", server.url)).call() {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => (resp.status(), resp.into_string().unwrap()),
        Err(e) => (0, e.to_string()),
    }
}

/// Every result matches its expected probability (1e-6) and label.
fn check_results(answer: &Value, want: &[Option<f32>], what: &str) {
    let results = answer["results"].as_array().unwrap_or_else(|| panic!("{what}: no results in {answer}"));
    assert_eq!(results.len(), want.len(), "{what}: {answer}");
    for (i, (r, w)) in results.iter().zip(want).enumerate() {
        match w {
            Some(p) => {
                let got = r["p_positive"].as_f64().unwrap_or_else(|| panic!("{what}[{i}]: {r}"));
                assert!((got - *p as f64).abs() <= 1e-6, "{what}[{i}]: served {got}, single-review {p}");
                let label = if *p > 0.5 { "positive" } else { "negative" };
                assert_eq!(r["label"], label, "{what}[{i}]");
            }
            None => assert!(r["error"].is_string() && r["p_positive"].is_null(), "{what}[{i}]: {r}"),
        }
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn answers_match_predict_and_the_info_routes_work() {
    let server = Server::start(&[]);
    let long = "a wonderful film, great acting ".repeat(200);
    let texts = [
        "A wonderful film, I loved every minute of it.",
        "Dull, far too long and badly acted.<br /><br />Avoid.",
        long.as_str(),
        "   ",
        "<br />",
        "Ünïcödé and emoji 🎬 in a terrible movie",
    ];
    let (status, answer) = classify(&agent(), &server, &texts).unwrap();
    assert_eq!(status, 200, "{answer}");
    let want = expected(&texts);
    check_results(&answer, &want, "classify");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[2]["truncated"], true);
    assert_eq!(results[0]["truncated"], false);
    assert!(results[2]["tokens"].as_u64().unwrap() > 512, "{}", results[2]);
    assert!(results[3]["error"].as_str().unwrap().contains("empty"), "{}", results[3]);

    // the same texts through `cudaenc predict` (4 decimals)
    let out = Command::new(BIN).args(["predict", "--device", "cpu", "--run"]).arg(run_dir()).args(texts).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    let served: Vec<&Value> = results.iter().filter(|r| r["error"].is_null()).collect();
    assert_eq!(lines.len(), served.len(), "{lines:?}");
    for (line, r) in lines.iter().zip(served) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols[0], r["label"].as_str().unwrap(), "{line}");
        let p: f64 = cols[1].parse().unwrap();
        assert!((p - r["p_positive"].as_f64().unwrap()).abs() <= 5e-5 + 1e-9, "{line} vs {r}");
    }

    assert_eq!(get(&server, "/health").0, 200);
    let (status, ready) = get(&server, "/ready");
    assert!(status == 200 && ready.contains("\"cpu\""), "{ready}");
    let (status, model) = get(&server, "/v1/model");
    assert_eq!(status, 200);
    let model: Value = serde_json::from_str(&model).unwrap();
    let sha = cudaenc::data::fsutil::sha256_file(&run_dir().join("checkpoint.safetensors")).unwrap();
    assert_eq!(model["checkpoint"]["sha256"], sha.as_str());
    assert_eq!(model["config"]["model"]["d_model"], 32);
    assert!(model["val_acc"].as_f64().is_some() && model["epochs"].as_array().unwrap().len() == 1, "{model}");
    let (status, metrics) = get(&server, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&metrics, "cudaenc_http_requests_total{route=\"/v1/classify\",status=\"200\"}"), 1.0);
    assert_eq!(metric(&metrics, "cudaenc_reviews_total"), 4.0);
    assert_eq!(metric(&metrics, "cudaenc_request_duration_seconds_count"), 1.0);
    assert!(metric(&metrics, "cudaenc_batch_size_count") >= 1.0);
    assert_eq!(metric(&metrics, "cudaenc_queue_depth"), 0.0);
    assert!(metrics.contains("cudaenc_batch_tokens_bucket{le=\"+Inf\"}") && metrics.contains("cudaenc_reviews_per_second"));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let server = Server::start(&["--max-body-bytes", "2000"]);
    let a = agent();
    let cases: [(&[u8], u16, &str); 9] = [
        (b"{\"texts\": [\"ok\"", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[\"a\"]", 400, "not a JSON object"),
        (b"{\"text\": [\"a\"]}", 400, "missing field \\\"texts\\\""),
        (b"{\"texts\": \"a\"}", 400, "not a list"),
        (b"{\"texts\": []}", 400, "empty list"),
        (b"{\"texts\": [\"a\", 3]}", 400, "texts[1] is a number"),
        (b"{\"texts\": [\"a\", null]}", 400, "texts[1] is null"),
        (b"{\"texts\": [\"\\ud800\"]}", 400, "not valid JSON"),
    ];
    for (body, want, says) in cases {
        let (status, text, _) = send(&a, &server, "/v1/classify", body).unwrap();
        assert_eq!(status, want, "{}: {text}", String::from_utf8_lossy(body));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"].as_str().unwrap().contains(says.trim_matches('\\')) || text.contains(says), "{text} should say {says}");
    }
    // over the body limit: 413, and the server goes on
    let big = json!({ "texts": ["x".repeat(5000)] }).to_string();
    let (status, text, _) = send(&a, &server, "/v1/classify", big.as_bytes()).unwrap();
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("--max-body-bytes"));
    // invalid UTF-8 is replaced as in training, and said so
    let (status, text, _) = send(&a, &server, "/v1/classify", b"{\"texts\": [\"bad \xff film\"]}").unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["invalid_utf8_replaced"], true);
    check_results(&v, &expected(&["bad \u{FFFD} film"]), "invalid utf-8");
    // wrong route and method
    assert_eq!(get(&server, "/nope").0, 404);
    assert_eq!(get(&server, "/v1/classify").0, 405);
    let (status, answer) = classify(&a, &server, &["still fine after all that"]).unwrap();
    assert_eq!(status, 200, "{answer}");
    let (_, metrics) = get(&server, "/metrics");
    assert_eq!(metric(&metrics, "cudaenc_http_requests_total{route=\"/v1/classify\",status=\"400\"}"), 9.0);
    assert_eq!(metric(&metrics, "cudaenc_http_requests_total{route=\"/v1/classify\",status=\"413\"}"), 1.0);
}

/// Distinct texts whose probabilities differ (so a mix-up shows).
fn distinct_texts(n: usize) -> Vec<String> {
    let words = ["great", "awful", "boring", "superb", "fine", "dreadful", "lovely", "weak"];
    (0..n)
        .map(|i| {
            let k = 1 + i % 7;
            let body: Vec<&str> = (0..k).map(|j| words[(i / 7 + j * 3) % words.len()]).collect();
            format!("review {i}: {} film", body.join(" and "))
        })
        .collect()
}

#[test]
fn two_hundred_concurrent_clients_get_their_own_answers() {
    let server = Server::start(&["--max-batch-tokens", "512", "--batch-wait-ms", "5"]);
    let texts = distinct_texts(200);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = expected(&refs);
    let barrier = std::sync::Barrier::new(texts.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = refs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let (server, barrier, want, refs) = (&server, &barrier, &want, &refs);
                s.spawn(move || {
                    // some clients send two texts: their own and the next one
                    let mine: Vec<&str> = if i % 3 == 0 { vec![t, refs[(i + 1) % refs.len()]] } else { vec![t] };
                    let w: Vec<Option<f32>> = if i % 3 == 0 { vec![want[i], want[(i + 1) % want.len()]] } else { vec![want[i]] };
                    barrier.wait();
                    let (status, answer) = classify(&agent(), server, &mine).unwrap();
                    assert_eq!(status, 200, "client {i}: {answer}");
                    check_results(&answer, &w, &format!("client {i}"));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    let (_, metrics) = get(&server, "/metrics");
    assert_eq!(metric(&metrics, "cudaenc_http_requests_total{route=\"/v1/classify\",status=\"200\"}"), 200.0);
    assert_eq!(metric(&metrics, "cudaenc_reviews_total"), 200.0 + 67.0);
    // batching happened: fewer batches than reviews
    assert!(metric(&metrics, "cudaenc_batches_total") < 267.0);
}

#[test]
fn overload_answers_429_loses_nothing_and_recovers() {
    // two requests at a time, each round waits 100 ms for company: most of 40 arrive busy
    let server = Server::start(&["--max-concurrent", "2", "--batch-wait-ms", "100"]);
    let texts = distinct_texts(40);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = expected(&refs);
    let barrier = std::sync::Barrier::new(texts.len());
    let outcomes: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = refs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let (server, barrier, want) = (&server, &barrier, &want);
                s.spawn(move || {
                    barrier.wait();
                    let body = json!({ "texts": [t] }).to_string();
                    let (status, text, retry) = send(&agent(), server, "/v1/classify", body.as_bytes()).unwrap();
                    let v: Value = serde_json::from_str(&text).unwrap();
                    match status {
                        200 => check_results(&v, &want[i..=i], &format!("client {i}")),
                        429 => assert!(v["error"].as_str().unwrap().contains("busy"), "{text}"),
                        _ => panic!("client {i}: {status} {text}"),
                    }
                    (status, retry)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = outcomes.iter().filter(|o| o.0 == 200).count();
    let busy: Vec<usize> = (0..outcomes.len()).filter(|&i| outcomes[i].0 == 429).collect();
    println!("{ok} answered, {} told to retry", busy.len());
    assert!(!busy.is_empty() && ok >= 1, "{ok} answered, {} busy", busy.len());
    assert!(busy.iter().all(|&i| outcomes[i].1.as_deref() == Some("1")), "429 without Retry-After");
    // every refused request, sent again one at a time, is answered: nothing is lost
    let a = agent();
    for &i in &busy {
        let (status, answer) = classify(&a, &server, &refs[i..=i]).unwrap();
        assert_eq!(status, 200, "retry of {i}: {answer}");
        check_results(&answer, &want[i..=i], &format!("retry {i}"));
    }
    let (_, metrics) = get(&server, "/metrics");
    assert_eq!(metric(&metrics, "cudaenc_http_requests_total{route=\"/v1/classify\",status=\"429\"}"), busy.len() as f64);
    assert_eq!(metric(&metrics, "cudaenc_queue_depth"), 0.0);
}

#[test]
fn sigterm_under_load_finishes_in_flight_requests_and_exits_0() {
    use std::io::{Read, Write};
    let mut server = Server::start(&[]);
    let texts = distinct_texts(64);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = expected(&refs);
    // a request in flight at the signal: headers and half of the body now, the rest after it
    let body = json!({ "texts": refs }).to_string();
    let mut raw = std::net::TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    raw.write_all(head.as_bytes()).unwrap();
    raw.write_all(&body.as_bytes()[..body.len() / 2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&get(&server, "/metrics").1, "cudaenc_queue_depth") < 1.0 {
        assert!(Instant::now() < deadline, "the partial request was never admitted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let clients: Vec<(usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|c| {
                let (server, want, refs, answered) = (&server, &want, &refs, &answered);
                s.spawn(move || {
                    let a = agent();
                    let (mut ok, mut refused) = (0, 0);
                    for k in 0..200 {
                        let i = (c * 8 + k) % refs.len();
                        match classify(&a, server, &refs[i..=i]) {
                            Ok((status, answer)) => {
                                assert_eq!(status, 200, "{answer}");
                                check_results(&answer, &want[i..=i], "under load");
                                ok += 1;
                                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(_) => {
                                refused += 1; // the listener is closed: no answer, nothing wrong
                                break;
                            }
                        }
                    }
                    (ok, refused)
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while answered.load(std::sync::atomic::Ordering::Relaxed) < 16 {
            assert!(Instant::now() < deadline, "the load clients got no answers");
            std::thread::sleep(Duration::from_millis(5));
        }
        let killed = Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
        assert!(killed.success());
        std::thread::sleep(Duration::from_millis(300));
        raw.write_all(&body.as_bytes()[body.len() / 2..]).unwrap();
        let mut response = String::new();
        raw.read_to_string(&mut response).expect("the request in flight at the signal got no answer");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let json_body = &response[response.find("\r\n\r\n").expect("no body") + 4..];
        check_results(&serde_json::from_str(json_body).unwrap(), &want, "in flight at the signal");
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(clients.iter().map(|c| c.0).sum::<usize>() >= 16, "{clients:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the server did not exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    assert!(std::net::TcpStream::connect(server.url.trim_start_matches("http://")).is_err(), "still listening");
}
