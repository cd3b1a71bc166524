//! The HTTP routes: `POST /v1/classify`, `GET /health`, `GET /ready`, `GET /v1/model`,
//! `GET /metrics`. Errors are JSON objects `{"error": "..."}` that say what is wrong.

use super::batcher::Job;
use super::metrics::Metrics;
use crate::infer::{Prepared, TextPolicy};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// How long a classify request may take to send its body (it holds an admission slot).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the handlers share.
pub struct AppState {
    /// To the engine thread; taken (closed) at shutdown.
    pub jobs: Mutex<Option<Sender<Job>>>,
    pub policy: TextPolicy,
    pub metrics: Arc<Metrics>,
    /// The model is loaded on its device.
    pub ready: AtomicBool,
    /// The device's name, once the model is loaded.
    pub device: OnceLock<String>,
    /// `/v1/model` without the device.
    pub model_info: Value,
    pub max_concurrent: usize,
    pub max_body_bytes: usize,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/classify", post(classify))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/v1/model", get(model))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route: see /v1/classify, /health, /ready, /v1/model, /metrics") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

/// A JSON body (serde_json, without axum's `json` feature).
struct Json(Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.0.to_string()).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Count every answer by route and status for `/metrics`.
async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = match req.uri().path() {
        p @ ("/v1/classify" | "/health" | "/ready" | "/v1/model" | "/metrics") => p.to_string(),
        _ => "other".to_string(),
    };
    let response = next.run(req).await;
    state.metrics.request(&route, response.status().as_u16());
    response
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.device.get() {
        Some(device) if state.ready.load(Ordering::Acquire) => Json(json!({"ready": true, "device": device})).into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "error": "the model is loading"}))).into_response(),
    }
}

async fn model(State(state): State<Arc<AppState>>) -> Response {
    let mut info = state.model_info.clone();
    info["device"] = json!(state.device.get());
    Json(info).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// Decrements the in-flight count when the request ends, however it ends (a client that
/// disconnects drops the handler).
struct Admitted<'a>(&'a Metrics);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn classify(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let start = Instant::now();
    if !state.ready.load(Ordering::Acquire) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the model is loading: retry when GET /ready answers 200");
    }
    let metrics = &state.metrics;
    if metrics.in_flight.fetch_add(1, Ordering::AcqRel) >= state.max_concurrent {
        metrics.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("the server is busy ({} requests in progress, --max-concurrent): retry later", state.max_concurrent),
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let _admitted = Admitted(metrics);
    let body = match tokio::time::timeout(BODY_TIMEOUT, read_body(req.into_body(), state.max_body_bytes)).await {
        Ok(Ok(b)) => b,
        Ok(Err(r)) => return r,
        Err(_) => {
            let msg = format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs());
            return error(StatusCode::REQUEST_TIMEOUT, msg);
        }
    };
    let (texts, invalid_utf8) = match parse_texts(&body) {
        Ok(t) => t,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    // tokenization is CPU work: off the async workers and off the engine thread
    let st = state.clone();
    let prepared = match tokio::task::spawn_blocking(move || st.policy.prepare_all(&texts)).await {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("tokenization failed: {e}")),
    };
    let reviews: Vec<Vec<u32>> =
        prepared.iter().filter(|p| !p.ids.is_empty()).map(|p| state.policy.truncate.to_vec(&p.ids)).collect();
    let probs = if reviews.is_empty() {
        Vec::new()
    } else {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = match state.jobs.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(jobs) => jobs.send(Job { reviews, reply: tx }).is_ok(),
            None => false,
        };
        if !sent {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the model's thread is not running (the server is stopping)");
        }
        match rx.await {
            Ok(Ok(p)) => p,
            Ok(Err(msg)) => return error(StatusCode::INTERNAL_SERVER_ERROR, msg),
            Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the model's thread stopped"),
        }
    };
    match answer(&prepared, &probs, invalid_utf8) {
        Ok(v) => {
            metrics.latency(start.elapsed().as_secs_f64());
            Json(v).into_response()
        }
        Err(msg) => error(StatusCode::INTERNAL_SERVER_ERROR, msg),
    }
}

/// The body, at most `limit` bytes. Over the limit: 413, after reading (and dropping) up
/// to 16 x `limit` more so that the client, still sending, reads the answer instead of a
/// reset connection.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, Response> {
    let mut out = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| error(StatusCode::BAD_REQUEST, format!("could not read the body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            seen += data.len();
            if seen <= limit {
                out.extend_from_slice(data);
            } else if seen > limit.saturating_mul(17) {
                break;
            }
        }
    }
    if seen > limit {
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes (--max-body-bytes): send fewer or shorter texts per request"),
        );
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Err(r);
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `{"texts": ["...", ...]}` -> the texts, and whether the body had invalid UTF-8 (replaced
/// by U+FFFD as in training). Err: what is wrong with the request.
pub fn parse_texts(body: &[u8]) -> Result<(Vec<String>, bool), String> {
    const SHAPE: &str = r#"expected {"texts": ["a review", ...]}"#;
    let text = String::from_utf8_lossy(body);
    let invalid_utf8 = matches!(text, std::borrow::Cow::Owned(_));
    if text.trim().is_empty() {
        return Err(format!("the body is empty: {SHAPE}"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("the body is not valid JSON ({e}): {SHAPE}"))?;
    let Value::Object(mut obj) = v else {
        return Err(format!("the body is {}, not a JSON object: {SHAPE}", kind(&v)));
    };
    let Some(texts) = obj.remove("texts") else {
        let keys: Vec<&String> = obj.keys().collect();
        return Err(format!("missing field \"texts\" (the object has {keys:?}): {SHAPE}"));
    };
    let Value::Array(items) = texts else {
        return Err(format!("\"texts\" is {}, not a list of strings: {SHAPE}", kind(&texts)));
    };
    if items.is_empty() {
        return Err("\"texts\" is an empty list: give at least one text".into());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, t)| match t {
            Value::String(s) => Ok(s),
            other => Err(format!("texts[{i}] is {}, not a string", kind(&other))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|t| (t, invalid_utf8))
}

/// One result per text, in order: label, p(positive), tokens, truncated; or, for a text
/// without tokens, an error for that item. Err: a probability that is not a number.
fn answer(prepared: &[Prepared], probs: &[f32], invalid_utf8: bool) -> Result<Value, String> {
    let mut probs = probs.iter();
    let mut results = Vec::with_capacity(prepared.len());
    for (i, p) in prepared.iter().enumerate() {
        if p.ids.is_empty() {
            let why = if p.blank {
                "the text is empty or only whitespace after cleaning: nothing to classify"
            } else {
                "none of the text's tokens is in the model's vocabulary: nothing to classify"
            };
            results.push(json!({"label": null, "p_positive": null, "tokens": 0, "truncated": false, "error": why}));
            continue;
        }
        let &prob = probs.next().ok_or("internal: fewer probabilities than texts")?;
        if !prob.is_finite() {
            return Err(format!("the model's probability for texts[{i}] is not a number ({prob}): is the checkpoint damaged?"));
        }
        let label = if crate::reference::engine::predicted_label(prob) == 1 { "positive" } else { "negative" };
        results.push(json!({"label": label, "p_positive": prob, "tokens": p.ids.len(), "truncated": p.truncated}));
    }
    Ok(json!({"results": results, "invalid_utf8_replaced": invalid_utf8}))
}
