//! Finding the data: `--data PATH`, then `CUDAENC_DATA`, then the cache directory, else a
//! download of the official archive (progress bar, resume of a partial file, SHA-256 check,
//! atomic move into the cache).

use super::fsutil::sha256_file;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Canonical address of the official archive.
pub const OFFICIAL_URL: &str = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz";
/// SHA-256 of the official `aclImdb_v1.tar.gz` (84,125,825 bytes).
pub const OFFICIAL_SHA256: &str = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe";
pub const OFFICIAL_SIZE: u64 = 84_125_825;
/// SHA-256 of the labeled subset `aclImdb-labeled.tar.gz` (same layout, no unsup/feature files).
pub const LABELED_SHA256: &str = "8864ad7916213cf5a8cfe0d5672530ec725cc4e4d6d6170143e090069f800a7a";
/// File name of the downloaded archive in the cache directory.
pub const ARCHIVE_NAME: &str = "aclImdb_v1.tar.gz";

/// Environment variables.
pub const ENV_DATA: &str = "CUDAENC_DATA";
pub const ENV_CACHE: &str = "CUDAENC_CACHE";
/// Overrides the download address (tests, mirrors).
pub const ENV_DATA_URL: &str = "CUDAENC_DATA_URL";
/// Overrides the expected SHA-256 of the download (only with a mirror of another file).
pub const ENV_DATA_SHA256: &str = "CUDAENC_DATA_SHA256";

/// Is this checksum one of the two known archives (official or labeled subset)?
pub fn is_known_archive(sha256: &str) -> bool {
    sha256 == OFFICIAL_SHA256 || sha256 == LABELED_SHA256
}

/// Where the reviews come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// The small corpus embedded in the program (`--data demo`), see `data::demo`.
    Demo,
    /// An extracted `aclImdb/` directory (or its parent).
    Dir(PathBuf),
    /// A `.tar.gz` in the aclImdb layout.
    Archive(PathBuf),
}

impl DataSource {
    /// Interpret a `--data` / `CUDAENC_DATA` value: `demo`, a directory or an archive file.
    pub fn parse(s: &str) -> Result<DataSource> {
        if s == "demo" {
            return Ok(DataSource::Demo);
        }
        let p = PathBuf::from(s);
        let meta = std::fs::metadata(&p).with_context(|| format!("data source {s}: no such file or directory"))?;
        if meta.is_dir() {
            Ok(DataSource::Dir(p))
        } else {
            Ok(DataSource::Archive(p))
        }
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Demo => write!(f, "demo"),
            DataSource::Dir(p) | DataSource::Archive(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How to find (and if need be download) the data.
#[derive(Clone, Debug)]
pub struct Locator {
    /// Cache directory: the downloaded archive and the token cache live here.
    pub cache_dir: PathBuf,
    /// Download address.
    pub url: String,
    /// Expected SHA-256 of the download.
    pub sha256: String,
    /// Show a progress bar while downloading.
    pub progress: bool,
    /// Allow downloading at all.
    pub allow_download: bool,
}

/// The cache directory: `CUDAENC_CACHE`, else `dirs::cache_dir()/cudaenc`.
pub fn default_cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(ENV_CACHE).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    dirs::cache_dir()
        .map(|d| d.join("cudaenc"))
        .with_context(|| format!("no cache directory on this system; set {ENV_CACHE}"))
}

impl Locator {
    /// From the environment: cache dir, `CUDAENC_DATA_URL`, `CUDAENC_DATA_SHA256`.
    pub fn from_env() -> Result<Locator> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Ok(Locator {
            cache_dir: default_cache_dir()?,
            url: env(ENV_DATA_URL).unwrap_or_else(|| OFFICIAL_URL.to_string()),
            sha256: env(ENV_DATA_SHA256).unwrap_or_else(|| OFFICIAL_SHA256.to_string()).to_lowercase(),
            progress: true,
            allow_download: true,
        })
    }

    /// The archive's place in the cache.
    pub fn cached_archive(&self) -> PathBuf {
        self.cache_dir.join(ARCHIVE_NAME)
    }

    /// Resolve with `--data` and the value of `CUDAENC_DATA` given explicitly:
    /// `data`, then `env_data`, then the cached archive, else download it.
    pub fn resolve_with(&self, data: Option<&str>, env_data: Option<&str>) -> Result<DataSource> {
        if data == Some("") {
            bail!("--data is empty: give `demo`, an aclImdb/ folder or a .tar.gz in its layout (or leave --data out)");
        }
        if let Some(d) = data.filter(|s| !s.is_empty()) {
            return DataSource::parse(d).context("--data");
        }
        if let Some(d) = env_data.filter(|s| !s.is_empty()) {
            return DataSource::parse(d).with_context(|| format!("{ENV_DATA}={d}"));
        }
        let cached = self.cached_archive();
        if cached.is_file() {
            return Ok(DataSource::Archive(cached));
        }
        if !self.allow_download {
            bail!(
                "no data: give --data PATH (aclImdb/ directory or .tar.gz) or set {ENV_DATA}; {} does not exist",
                cached.display()
            );
        }
        eprintln!("IMDB not found (no --data, no {ENV_DATA}, nothing in {}); downloading {}", self.cache_dir.display(), self.url);
        download(&self.url, &cached, &self.sha256, self.progress)?;
        Ok(DataSource::Archive(cached))
    }

    /// Resolve with `--data` and the real `CUDAENC_DATA` environment variable.
    pub fn resolve(&self, data: Option<&str>) -> Result<DataSource> {
        let env = std::env::var(ENV_DATA).ok();
        self.resolve_with(data, env.as_deref())
    }
}

/// The partial-download file for `dest` (kept between attempts for resuming).
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

/// Download `url` to `dest`: resume `dest.part` if present (HTTP Range), check SHA-256,
/// then rename into place. On a checksum mismatch the partial file is deleted and nothing
/// is left at `dest`; on a network error the partial file is kept for the next attempt.
pub fn download(url: &str, dest: &Path, sha256: &str, progress: bool) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let part = partial_path(dest);
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let mut req = agent.get(url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let (resp, offset) = match req.call() {
        Ok(r) if r.status() == 206 && have > 0 => {
            let cr = r.header("Content-Range").unwrap_or("");
            if !cr.starts_with(&format!("bytes {have}-")) {
                bail!("download {url}: server answered Range bytes={have}- with Content-Range '{cr}'");
            }
            (r, have)
        }
        Ok(r) if r.status() == 200 => (r, 0),
        Ok(r) => bail!("download {url}: unexpected HTTP status {} {}", r.status(), r.status_text()),
        Err(ureq::Error::Status(416, _)) if have > 0 => {
            // Range past the end: the partial file is (at least) complete; verify it.
            return finish_download(&part, dest, sha256, url);
        }
        Err(e) => return Err(anyhow::Error::new(e)).with_context(|| format!("download {url}")),
    };
    let total = resp.header("Content-Length").and_then(|v| v.parse::<u64>().ok()).map(|n| n + offset);
    let bar = if progress {
        let b = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_message(if offset > 0 { "resuming IMDB download" } else { "downloading IMDB" });
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_position(offset);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(offset > 0)
        .truncate(offset == 0)
        .open(&part)
        .with_context(|| format!("opening {}", part.display()))?;
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = offset;
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("download {url} interrupted after {got} bytes (run again to resume)"))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).with_context(|| format!("writing {}", part.display()))?;
        got += n as u64;
        bar.set_position(got);
    }
    file.sync_all()?;
    drop(file);
    bar.finish_and_clear();
    if let Some(t) = total {
        if got < t {
            bail!("download {url} ended after {got} of {t} bytes (run again to resume)");
        }
    }
    finish_download(&part, dest, sha256, url)
}

fn finish_download(part: &Path, dest: &Path, sha256: &str, url: &str) -> Result<()> {
    let got = sha256_file(part)?;
    if !got.eq_ignore_ascii_case(sha256) {
        let _ = std::fs::remove_file(part);
        bail!("download {url}: SHA-256 mismatch (expected {sha256}, got {got}); the download was deleted");
    }
    std::fs::rename(part, dest).with_context(|| format!("moving {} to {}", part.display(), dest.display()))?;
    Ok(())
}
