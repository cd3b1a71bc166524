//! Finding the data and downloading it, against a tiny HTTP server on 127.0.0.1 (no network).
mod data_common;
use cudaenc::data::fetch::{self, partial_path, DataSource, Locator};
use cudaenc::data::{self, fsutil, LoadOptions};
use data_common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Serves `body` at any path. `cut_after`: close the first response after that many body
/// bytes (an interrupted download). `ranges`: honour `Range: bytes=N-` with 206.
struct Server {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn serve(body: Vec<u8>, ranges: bool, cut_after: Option<usize>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/aclImdb_v1.tar.gz", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    std::thread::spawn(move || {
        let mut first = true;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            log.lock().unwrap().push(head.clone());
            let range = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(|r| r.trim_end_matches('-').to_string()))
                .and_then(|s| s.parse::<usize>().ok());
            let (status, start) = match range {
                Some(s) if ranges && s >= body.len() => ("416 Range Not Satisfiable", body.len()),
                Some(s) if ranges => ("206 Partial Content", s),
                _ => ("200 OK", 0),
            };
            let part = &body[start..];
            let mut resp = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", part.len());
            if status.starts_with("206") {
                resp.push_str(&format!("Content-Range: bytes {start}-{}/{}\r\n", body.len() - 1, body.len()));
            }
            resp.push_str("\r\n");
            let _ = stream.write_all(resp.as_bytes());
            let n = match cut_after {
                Some(c) if first => c.min(part.len()),
                _ => part.len(),
            };
            first = false;
            let _ = stream.write_all(&part[..n]);
            let _ = stream.flush();
        }
    });
    Server { url, requests }
}

fn archive() -> (Vec<u8>, String) {
    let mut files = corpus(40);
    official_extras(&mut files);
    let bytes = tar_gz_bytes(&files);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &bytes).unwrap();
    let sha = fsutil::sha256_file(tmp.path()).unwrap();
    (bytes, sha)
}

fn locator(cache: &Path, url: &str, sha: &str) -> Locator {
    Locator { cache_dir: cache.to_path_buf(), url: url.into(), sha256: sha.into(), progress: false, allow_download: true }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn clean_download_then_cached() {
    let (bytes, sha) = archive();
    let srv = serve(bytes.clone(), true, None);
    let tmp = tempfile::tempdir().unwrap();
    let loc = locator(tmp.path(), &srv.url, &sha);
    let src = loc.resolve_with(None, None).unwrap();
    assert_eq!(src, DataSource::Archive(tmp.path().join(fetch::ARCHIVE_NAME)));
    assert_eq!(std::fs::read(loc.cached_archive()).unwrap(), bytes);
    assert_eq!(listing(tmp.path()), vec![fetch::ARCHIVE_NAME.to_string()]);
    // The downloaded archive reads.
    let ds = data::load(&src, &LoadOptions { cache_dir: Some(tmp.path().into()), ..Default::default() }).unwrap();
    assert_eq!(ds.train.len(), 80);
    // Second resolve finds it in the cache without the server.
    let n = srv.requests.lock().unwrap().len();
    assert_eq!(loc.resolve_with(None, None).unwrap(), src);
    assert_eq!(srv.requests.lock().unwrap().len(), n);
}

#[test]
fn interrupted_download_resumes() {
    let (bytes, sha) = archive();
    let srv = serve(bytes.clone(), true, Some(bytes.len() / 3));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join(fetch::ARCHIVE_NAME);
    let e = fetch::download(&srv.url, &dest, &sha, false).unwrap_err();
    assert!(format!("{e:#}").contains("resume"), "{e:#}");
    let part = partial_path(&dest);
    let have = std::fs::metadata(&part).unwrap().len() as usize;
    assert!(have > 0 && have < bytes.len(), "partial file kept: {have}");
    assert!(!dest.exists());
    fetch::download(&srv.url, &dest, &sha, false).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(!part.exists());
    let reqs = srv.requests.lock().unwrap();
    assert!(reqs[1].to_ascii_lowercase().contains(&format!("range: bytes={have}-")), "{}", reqs[1]);
}

#[test]
fn resume_against_a_server_without_ranges_restarts() {
    let (bytes, sha) = archive();
    let srv = serve(bytes.clone(), false, None);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join(fetch::ARCHIVE_NAME);
    std::fs::write(partial_path(&dest), &bytes[..100]).unwrap();
    fetch::download(&srv.url, &dest, &sha, false).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[test]
fn complete_partial_file_is_verified() {
    let (bytes, sha) = archive();
    let srv = serve(bytes.clone(), true, None);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join(fetch::ARCHIVE_NAME);
    std::fs::write(partial_path(&dest), &bytes).unwrap();
    fetch::download(&srv.url, &dest, &sha, false).unwrap(); // 416 -> verify -> move
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[test]
fn checksum_mismatch_leaves_nothing() {
    let (bytes, _) = archive();
    let srv = serve(bytes.clone(), true, None);
    let tmp = tempfile::tempdir().unwrap();
    let loc = locator(tmp.path(), &srv.url, fetch::OFFICIAL_SHA256);
    let e = loc.resolve_with(None, None).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("SHA-256 mismatch") && msg.contains(fetch::OFFICIAL_SHA256), "{msg}");
    assert!(listing(tmp.path()).is_empty(), "cache must be empty: {:?}", listing(tmp.path()));
    // Also when resuming from a partial file.
    std::fs::write(partial_path(&loc.cached_archive()), &bytes[..50]).unwrap();
    assert!(loc.resolve_with(None, None).is_err());
    assert!(listing(tmp.path()).is_empty());
}

#[test]
fn unreachable_server_is_a_clear_error() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x.tar.gz", l.local_addr().unwrap());
    drop(l);
    let tmp = tempfile::tempdir().unwrap();
    let e = locator(tmp.path(), &url, "00").resolve_with(None, None).unwrap_err();
    assert!(format!("{e:#}").contains("download http://127.0.0.1"), "{e:#}");
    assert!(!tmp.path().join(fetch::ARCHIVE_NAME).exists());
}

#[test]
fn resolution_order() {
    let tmp = tempfile::tempdir().unwrap();
    let ar = tmp.path().join("given.tar.gz");
    write_tar_gz(&ar, &corpus(2));
    let dir = tmp.path().join("extracted");
    write_dir(&dir, &corpus(2));
    let cache = tmp.path().join("cache");
    // Port 9 on loopback: nothing listens; download must not be reached in these cases.
    let mut loc = locator(&cache, "http://127.0.0.1:9/none", "00");
    let a = ar.to_str().unwrap();
    let d = dir.to_str().unwrap();
    assert_eq!(loc.resolve_with(Some(a), Some(d)).unwrap(), DataSource::Archive(ar.clone()));
    assert_eq!(loc.resolve_with(None, Some(d)).unwrap(), DataSource::Dir(dir.clone()));
    assert_eq!(loc.resolve_with(Some("demo"), Some(d)).unwrap(), DataSource::Demo);
    assert_eq!(loc.resolve_with(None, Some("demo")).unwrap(), DataSource::Demo);
    let e = loc.resolve_with(Some("/no/such/path"), None).unwrap_err();
    assert!(format!("{e:#}").contains("no such file or directory"), "{e:#}");
    // Nothing given, nothing cached, downloads off -> clear error.
    loc.allow_download = false;
    let e = loc.resolve_with(None, None).unwrap_err();
    assert!(format!("{e:#}").contains("give --data PATH"), "{e:#}");
    // Cached archive is found.
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::copy(&ar, loc.cached_archive()).unwrap();
    assert_eq!(loc.resolve_with(None, None).unwrap(), DataSource::Archive(loc.cached_archive()));
}
