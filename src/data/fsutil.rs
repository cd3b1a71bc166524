//! File helpers: atomic writes and SHA-256 of files.

use anyhow::{Context, Result};
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

/// A temporary path next to `path` (same folder, so a rename is atomic).
pub fn temp_path(path: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}.{nanos}", std::process::id()))
}

/// Remove the temporary files (`temp_path` names) of `names` in `dir` that a killed
/// process left: only names of exactly that form (`.<name>.tmp.<pid>.<nanos>`) whose
/// process no longer runs (no `/proc/<pid>`), so a write in progress elsewhere and files
/// cudaenc did not create are left alone. Returns how many were removed.
pub fn remove_stale_temps(dir: &Path, names: &[&str]) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let stale = names.iter().any(|name| {
            let Some(rest) = file.strip_prefix(&format!(".{name}.tmp.")) else { return false };
            let Some((pid, nanos)) = rest.split_once('.') else { return false };
            let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            numeric(pid) && numeric(nanos) && !Path::new(&format!("/proc/{pid}")).exists()
        });
        if stale && e.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Write `path` through a temporary file and rename it into place; on any error the
/// temporary file is removed and `path` is untouched.
pub fn atomic_write<F>(path: &Path, f: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>,
{
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = temp_path(path);
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        f(&mut w).with_context(|| format!("writing {}", tmp.display()))?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only `.<name>.tmp.<pid>.<nanos>` of a listed name whose process is gone is removed:
    /// pid 4194305 is above Linux's largest pid_max (2^22), so it never runs.
    #[test]
    fn only_stale_temporary_copies_of_the_named_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let dead = ".results.json.tmp.4194305.17";
        let keep = [
            format!(".results.json.tmp.{me}.17"), // a write in progress (this process)
            ".results.json.tmp.notes".to_string(), // not cudaenc's form
            ".results.json.tmp.4194305.".to_string(),
            ".other.json.tmp.4194305.17".to_string(), // not a listed name
            "results.json".to_string(),
        ];
        for f in keep.iter().map(String::as_str).chain([dead]) {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join(".report.md.tmp.4194305.3")).unwrap(); // a folder: left alone
        assert_eq!(remove_stale_temps(dir.path(), &["results.json", "report.md"]), 1);
        assert!(!dir.path().join(dead).exists());
        for f in &keep {
            assert!(dir.path().join(f).exists(), "{f} was removed");
        }
        assert!(dir.path().join(".report.md.tmp.4194305.3").is_dir());
        assert_eq!(remove_stale_temps(&dir.path().join("missing"), &["results.json"]), 0);
    }
}
