//! Reading IMDB in the official layout: an extracted `aclImdb/` directory, or a `.tar.gz`
//! archive (the official `aclImdb_v1.tar.gz`, or any archive with the same layout) read as a
//! stream, skipping everything that is not a labeled review or a `urls_*.txt` file
//! (`train/unsup/`, the `.feat` bag-of-words files, `imdb.vocab`, README...).
//!
//! Layout: `{train,test}/{pos,neg}/<id>_<rating>.txt` and `{train,test}/urls_{pos,neg}.txt`,
//! where line `id` (0-based) of `urls_<label>.txt` is the movie page of review `id`.
//!
//! Text handling (see docs/data.md):
//! - invalid UTF-8 is replaced by U+FFFD (`String::from_utf8_lossy`); the reviews affected
//!   are counted in [`ReadReport::invalid_utf8`] and reported, never rejected;
//! - every `<br />` (also `<br/>` and `<br>`) becomes a newline;
//! - a review that is empty or only whitespace after that is skipped (the model needs at
//!   least one token); skipped reviews are counted in [`ReadReport::empty_skipped`] and
//!   still count as present for the id checks.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The two halves of the data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Train = 0,
    Test = 1,
}

impl Part {
    pub const ALL: [Part; 2] = [Part::Train, Part::Test];
    pub fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Test => "test",
        }
    }
    fn parse(s: &str) -> Option<Part> {
        match s {
            "train" => Some(Part::Train),
            "test" => Some(Part::Test),
            _ => None,
        }
    }
}

/// Label folder names, indexed by label (0 negative, 1 positive).
pub const LABEL_NAMES: [&str; 2] = ["neg", "pos"];

fn parse_label(s: &str) -> Option<u8> {
    match s {
        "neg" => Some(0),
        "pos" => Some(1),
        _ => None,
    }
}

/// One review as read, before tokenization (text already cleaned).
#[derive(Clone, Debug)]
pub struct RawReview {
    pub part: Part,
    /// 1 positive, 0 negative (from the folder).
    pub label: u8,
    /// 1..=10 (from the file name).
    pub rating: u8,
    /// From the file name; line number in `urls_<label>.txt`.
    pub id: u32,
    /// Index into [`RawCorpus::movies`].
    pub movie: u32,
    pub text: String,
}

/// What was read and what was done to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Reviews kept, `[part][label]`.
    pub counts: [[usize; 2]; 2],
    /// Reviews whose bytes were not valid UTF-8 (invalid sequences replaced by U+FFFD).
    pub invalid_utf8: usize,
    /// Reviews skipped because they were empty (or only whitespace).
    pub empty_skipped: usize,
    /// Reviews that contained at least one `<br />` (replaced by a newline).
    pub with_br: usize,
    /// Archive entries or files that are not part of the labeled layout (skipped).
    pub other_entries: usize,
}

impl ReadReport {
    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }
    /// Human-readable warnings (empty if none).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.invalid_utf8 > 0 {
            w.push(format!(
                "{} review(s) contained invalid UTF-8; invalid bytes were replaced by U+FFFD",
                self.invalid_utf8
            ));
        }
        if self.empty_skipped > 0 {
            w.push(format!("{} empty review(s) skipped", self.empty_skipped));
        }
        w
    }
}

/// Reviews of both parts, sorted by (part, label, id), and the movie table.
#[derive(Clone, Debug, Default)]
pub struct RawCorpus {
    pub reviews: Vec<RawReview>,
    /// Distinct movie URLs; [`RawReview::movie`] indexes this.
    pub movies: Vec<String>,
    pub report: ReadReport,
}

/// Clean one review's bytes: lossy UTF-8, `<br />` -> newline.
/// Returns (text, had invalid UTF-8, had `<br />`).
pub fn clean_text(bytes: &[u8]) -> (String, bool, bool) {
    let (s, invalid) = match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), false),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
    };
    if !s.contains("<br") {
        return (s, invalid, false);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    let mut had = false;
    while let Some(pos) = rest.find("<br") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        let tag = ["<br />", "<br/>", "<br>"].iter().find(|t| after.starts_with(**t));
        match tag {
            Some(t) => {
                out.push('\n');
                rest = &after[t.len()..];
                had = true;
            }
            None => {
                out.push_str("<br");
                rest = &after[3..];
            }
        }
    }
    out.push_str(rest);
    (out, invalid, had)
}

/// What an archive path or relative file path is in the layout.
enum Entry {
    Review { part: Part, label: u8, name: String },
    Urls { part: Part, label: u8 },
    Other,
}

fn classify(components: &[&str]) -> Entry {
    let n = components.len();
    if n >= 3 {
        if let (Some(part), Some(label)) = (Part::parse(components[n - 3]), parse_label(components[n - 2])) {
            return Entry::Review { part, label, name: components[n - 1].to_string() };
        }
    }
    if n >= 2 {
        if let Some(part) = Part::parse(components[n - 2]) {
            let f = components[n - 1];
            if let Some(l) = f.strip_prefix("urls_").and_then(|r| r.strip_suffix(".txt")).and_then(parse_label) {
                return Entry::Urls { part, label: l };
            }
        }
    }
    Entry::Other
}

/// `<id>_<rating>.txt` -> (id, rating).
fn parse_name(name: &str) -> Option<(u32, u8)> {
    let stem = name.strip_suffix(".txt")?;
    let (id, rating) = stem.split_once('_')?;
    Some((id.parse().ok()?, rating.parse().ok()?))
}

/// Collects entries in any order, then checks and assembles the corpus.
#[derive(Default)]
struct Collector {
    /// (part, label, id, rating, text bytes, where)
    reviews: Vec<(Part, u8, u32, u8, Vec<u8>, String)>,
    urls: HashMap<(Part, u8), Vec<String>>,
    other: usize,
}

impl Collector {
    fn add(&mut self, components: &[&str], display: &str, bytes: Vec<u8>) -> Result<()> {
        match classify(components) {
            Entry::Review { part, label, name } => {
                let (id, rating) = parse_name(&name).with_context(|| {
                    format!("{display}: review file name must be <id>_<rating>.txt")
                })?;
                self.reviews.push((part, label, id, rating, bytes, display.to_string()));
            }
            Entry::Urls { part, label } => {
                let text = String::from_utf8_lossy(&bytes);
                let lines = text.lines().map(|l| l.trim().to_string()).collect();
                if self.urls.insert((part, label), lines).is_some() {
                    bail!("{display}: urls file appears twice");
                }
            }
            Entry::Other => self.other += 1,
        }
        Ok(())
    }

    fn finish(self, source: &str) -> Result<RawCorpus> {
        let mut report = ReadReport { other_entries: self.other, ..Default::default() };
        let mut seen: [[Vec<bool>; 2]; 2] = Default::default();
        let mut problems: Vec<String> = Vec::new();
        for part in Part::ALL {
            for label in 0..2u8 {
                let folder = format!("{}/{}", part.name(), LABEL_NAMES[label as usize]);
                let n_here = self.reviews.iter().filter(|r| r.0 == part && r.1 == label).count();
                if n_here == 0 {
                    problems.push(format!("no reviews in {folder}/ (missing folder?)"));
                }
                match self.urls.get(&(part, label)) {
                    None => problems.push(format!(
                        "missing {}/urls_{}.txt (it names the movie of each review)",
                        part.name(),
                        LABEL_NAMES[label as usize]
                    )),
                    Some(lines) => seen[part as usize][label as usize] = vec![false; lines.len()],
                }
            }
        }
        if !problems.is_empty() {
            bail!("{source} is not in the aclImdb layout ({{train,test}}/{{pos,neg}}/<id>_<rating>.txt, {{train,test}}/urls_{{pos,neg}}.txt): {}", problems.join("; "));
        }
        // Movie table: distinct URLs in (part, label, line) order.
        let mut movie_index: HashMap<&str, u32> = HashMap::new();
        let mut movies: Vec<String> = Vec::new();
        let mut url_movie: HashMap<(Part, u8), Vec<u32>> = HashMap::new();
        for part in Part::ALL {
            for label in 0..2u8 {
                let lines = &self.urls[&(part, label)];
                let v = lines
                    .iter()
                    .map(|u| {
                        *movie_index.entry(u.as_str()).or_insert_with(|| {
                            movies.push(u.clone());
                            (movies.len() - 1) as u32
                        })
                    })
                    .collect();
                url_movie.insert((part, label), v);
            }
        }
        let mut bad: Vec<String> = Vec::new();
        for (part, label, id, rating, _, at) in &self.reviews {
            let s = &mut seen[*part as usize][*label as usize];
            match s.get_mut(*id as usize) {
                None => bad.push(format!(
                    "{at}: id {id} has no line in {}/urls_{}.txt ({} lines)",
                    part.name(),
                    LABEL_NAMES[*label as usize],
                    s.len()
                )),
                Some(true) => bad.push(format!("{at}: review id {id} appears twice")),
                Some(f) => *f = true,
            }
            let ok = match label {
                1 => (7..=10).contains(rating),
                _ => (1..=4).contains(rating),
            };
            if !ok {
                bad.push(format!(
                    "{at}: rating {rating} does not match label {} (neg: 1-4, pos: 7-10)",
                    LABEL_NAMES[*label as usize]
                ));
            }
        }
        for part in Part::ALL {
            for label in 0..2 {
                let s = &seen[part as usize][label];
                let missing: Vec<usize> = (0..s.len()).filter(|&i| !s[i]).collect();
                if !missing.is_empty() {
                    let shown: Vec<String> = missing.iter().take(5).map(|i| i.to_string()).collect();
                    bad.push(format!(
                        "{}/{}: {} review(s) listed in urls_{}.txt are missing (ids {}{})",
                        part.name(),
                        LABEL_NAMES[label],
                        missing.len(),
                        LABEL_NAMES[label],
                        shown.join(", "),
                        if missing.len() > 5 { ", ..." } else { "" }
                    ));
                }
            }
        }
        if !bad.is_empty() {
            let n = bad.len();
            bad.truncate(10);
            bail!(
                "{source}: {n} problem(s) in the data: {}{}",
                bad.join("; "),
                if n > 10 { "; ..." } else { "" }
            );
        }
        let cleaned: Vec<(String, bool, bool)> = self.reviews.par_iter().map(|r| clean_text(&r.4)).collect();
        let mut reviews = Vec::with_capacity(self.reviews.len());
        for ((part, label, id, rating, _, _), (text, invalid, had_br)) in self.reviews.into_iter().zip(cleaned) {
            report.invalid_utf8 += invalid as usize;
            report.with_br += had_br as usize;
            if text.trim().is_empty() {
                report.empty_skipped += 1;
                continue;
            }
            report.counts[part as usize][label as usize] += 1;
            let movie = url_movie[&(part, label)][id as usize];
            reviews.push(RawReview { part, label, rating, id, movie, text });
        }
        reviews.sort_by_key(|r| (r.part, r.label, r.id));
        Ok(RawCorpus { reviews, movies, report })
    }
}

/// Read a `.tar.gz` archive in the aclImdb layout as a stream.
pub fn read_archive(path: &Path) -> Result<RawCorpus> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_archive_from(std::io::BufReader::with_capacity(1 << 20, file), &path.display().to_string())
}

/// Read a gzip-compressed tar stream in the aclImdb layout. `source` names it in errors.
pub fn read_archive_from<R: Read>(reader: R, source: &str) -> Result<RawCorpus> {
    let gz = flate2::read::MultiGzDecoder::new(reader);
    let mut ar = tar::Archive::new(gz);
    let mut col = Collector::default();
    let corrupt = || format!("reading archive {source}: truncated or corrupt (not a complete .tar.gz?)");
    for entry in ar.entries().with_context(corrupt)? {
        let mut entry = entry.with_context(corrupt)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().with_context(corrupt)?.into_owned();
        let comps: Vec<String> = path.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let refs: Vec<&str> = comps.iter().map(|s| s.as_str()).collect();
        if matches!(classify(&refs), Entry::Other) {
            col.other += 1;
            continue; // not read: tar skips its data
        }
        let mut bytes = Vec::with_capacity(entry.header().size().unwrap_or(0) as usize);
        entry.read_to_end(&mut bytes).with_context(corrupt)?;
        col.add(&refs, &path.display().to_string(), bytes)?;
    }
    // Read to the end of the gzip stream so that its trailer (CRC-32, length) is checked:
    // an archive cut after the tar end marker is still reported.
    std::io::copy(&mut ar.into_inner(), &mut std::io::sink()).with_context(corrupt)?;
    col.finish(source)
}

/// Find the `aclImdb` root under `path`: `path` itself if it holds `train/` or `test/`,
/// else `path/aclImdb`.
pub fn find_root(path: &Path) -> Option<PathBuf> {
    if path.join("train").is_dir() || path.join("test").is_dir() {
        return Some(path.to_path_buf());
    }
    let sub = path.join("aclImdb");
    if sub.is_dir() {
        return Some(sub);
    }
    None
}

/// Read an extracted `aclImdb/` directory (or its parent).
pub fn read_dir(path: &Path) -> Result<RawCorpus> {
    let root = find_root(path).with_context(|| {
        format!("{}: no train/ or test/ folder here or in aclImdb/ (expected an extracted aclImdb directory)", path.display())
    })?;
    let mut missing = Vec::new();
    for part in Part::ALL {
        for l in LABEL_NAMES {
            let d = root.join(part.name()).join(l);
            if !d.is_dir() {
                missing.push(format!("{}/{}/", part.name(), l));
            }
        }
    }
    if !missing.is_empty() {
        bail!("{}: missing folder(s) {}", root.display(), missing.join(", "));
    }
    let mut files: Vec<(Vec<String>, PathBuf)> = Vec::new();
    for part in Part::ALL {
        for l in LABEL_NAMES {
            let dir = root.join(part.name()).join(l);
            let listing = || format!("listing {} (is it readable?)", dir.display());
            for e in std::fs::read_dir(&dir).with_context(listing)? {
                let e = e.with_context(listing)?;
                if e.file_type().with_context(|| format!("reading {}", e.path().display()))?.is_file() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    files.push((vec![part.name().into(), l.into(), name], e.path()));
                }
            }
            let urls = root.join(part.name()).join(format!("urls_{l}.txt"));
            if urls.is_file() {
                files.push((vec![part.name().into(), format!("urls_{l}.txt")], urls));
            }
        }
    }
    let contents: Vec<Result<Vec<u8>>> = files
        .par_iter()
        .map(|(_, p)| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect();
    let mut col = Collector::default();
    for ((comps, p), bytes) in files.iter().zip(contents) {
        let refs: Vec<&str> = comps.iter().map(|s| s.as_str()).collect();
        col.add(&refs, &p.display().to_string(), bytes?)?;
    }
    col.finish(&root.display().to_string())
}

/// A cheap fingerprint of an extracted directory (SHA-256 over the sorted relative paths,
/// sizes and modification times of its review and urls files), used as the cache key
/// instead of a content checksum.
pub fn dir_fingerprint(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let root = find_root(path).with_context(|| format!("{}: not an aclImdb directory", path.display()))?;
    let mut items: Vec<String> = Vec::new();
    for part in Part::ALL {
        for l in LABEL_NAMES {
            for rel in [format!("{}/{}", part.name(), l), format!("{}/urls_{l}.txt", part.name())] {
                let p = root.join(&rel);
                let meta = match std::fs::metadata(&p) {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                if meta.is_dir() {
                    let listing = || format!("listing {} (is it readable?)", p.display());
                    for e in std::fs::read_dir(&p).with_context(listing)? {
                        let e = e.with_context(listing)?;
                        let m = e.metadata().with_context(|| format!("reading {}", e.path().display()))?;
                        items.push(format!("{}/{}\t{}\t{:?}", rel, e.file_name().to_string_lossy(), m.len(), m.modified().ok()));
                    }
                } else {
                    items.push(format!("{}\t{}\t{:?}", rel, meta.len(), meta.modified().ok()));
                }
            }
        }
    }
    items.sort();
    let mut h = Sha256::new();
    for i in &items {
        h.update(i.as_bytes());
        h.update(b"\n");
    }
    Ok(format!("dir:{}", hex::encode(h.finalize())))
}
