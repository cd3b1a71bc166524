//! The token cache: one binary file per (source checksum, tokenizer, preprocessing) key.
//!
//! Layout (little-endian, as written by this machine's `bytemuck` casts):
//! `Header` (128 bytes) | `Record` x n_reviews (16 bytes each) | u32 tokens x n_tokens |
//! movie URLs joined by '\n' (movies_bytes).
//! `Header::crc` is the CRC-32 of the header (with `crc` = 0) followed by everything after it.
//! Loading checks magic, version, key, sizes against the file length, the CRC, and every
//! field's range; anything wrong means "not a valid cache" and the caller rebuilds it.

use super::dataset::{Dataset, DatasetInfo};
use super::read::{Part, ReadReport};
use super::tokenize::{TOKENIZER_ID, VOCAB_SIZE};
use anyhow::{bail, ensure, Context, Result};
use bytemuck::{Pod, Zeroable};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: [u8; 8] = *b"CUDAENCT";
pub const VERSION: u32 = 1;
/// Names the text preprocessing in cache keys; change it when preprocessing changes.
pub const PREPROCESS_ID: &str = "utf8-lossy br-newline skip-empty sort(part,label,id)";

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Header {
    magic: [u8; 8],
    version: u32,
    crc: u32,
    key: [u8; 32],
    n_reviews: u64,
    n_tokens: u64,
    n_movies: u64,
    movies_bytes: u64,
    /// counts[part][label], invalid_utf8, empty_skipped, with_br, other_entries
    report: [u64; 8],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Record {
    len: u32,
    id: u32,
    movie: u32,
    label: u8,
    rating: u8,
    part: u8,
    _pad: u8,
}

/// The cache key for a source checksum under the current tokenizer and preprocessing.
pub fn cache_key(source_checksum: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("cudaenc token cache v{VERSION}\n{source_checksum}\n{TOKENIZER_ID}\n{PREPROCESS_ID}\n"));
    h.finalize().into()
}

/// The cache file for a key inside `cache_dir`.
pub fn cache_path(cache_dir: &Path, key: &[u8; 32]) -> PathBuf {
    cache_dir.join("tokens").join(format!("{}.bin", hex::encode(&key[..12])))
}

/// Write `ds` to `path` atomically (temp file in the same folder, then rename).
pub fn write(path: &Path, key: &[u8; 32], ds: &Dataset) -> Result<()> {
    let mut records = Vec::with_capacity(ds.train.len() + ds.test.len());
    let mut tokens: Vec<u32> = Vec::new();
    for (part, set) in [(Part::Train, &ds.train), (Part::Test, &ds.test)] {
        for (i, r) in set.reviews.iter().enumerate() {
            records.push(Record { len: r.len, id: r.id, movie: r.movie, label: r.label, rating: r.rating, part: part as u8, _pad: 0 });
            tokens.extend_from_slice(set.tokens_of(i));
        }
    }
    let movies = ds.movies.join("\n");
    let rep = &ds.info.report;
    let mut header = Header {
        magic: MAGIC,
        version: VERSION,
        crc: 0,
        key: *key,
        n_reviews: records.len() as u64,
        n_tokens: tokens.len() as u64,
        n_movies: ds.movies.len() as u64,
        movies_bytes: movies.len() as u64,
        report: [
            rep.counts[0][0] as u64,
            rep.counts[0][1] as u64,
            rep.counts[1][0] as u64,
            rep.counts[1][1] as u64,
            rep.invalid_utf8 as u64,
            rep.empty_skipped as u64,
            rep.with_br as u64,
            rep.other_entries as u64,
        ],
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(bytemuck::bytes_of(&header));
    crc.update(bytemuck::cast_slice(&records));
    crc.update(bytemuck::cast_slice(&tokens));
    crc.update(movies.as_bytes());
    header.crc = crc.finalize();
    super::fsutil::atomic_write(path, |w| {
        w.write_all(bytemuck::bytes_of(&header))?;
        w.write_all(bytemuck::cast_slice(&records))?;
        w.write_all(bytemuck::cast_slice(&tokens))?;
        w.write_all(movies.as_bytes())?;
        Ok(())
    })
}

/// Load and validate a cache file. `Ok(None)` if it does not exist; `Err` if it exists but
/// is not a valid cache for `key` (the caller rebuilds it).
pub fn read(path: &Path, key: &[u8; 32], info: DatasetInfo) -> Result<Option<Dataset>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let file_len = file.metadata()?.len();
    let mut f = std::io::BufReader::with_capacity(1 << 20, file);
    let mut header = Header::zeroed();
    f.read_exact(bytemuck::bytes_of_mut(&mut header)).context("file shorter than its header")?;
    ensure!(header.magic == MAGIC, "not a cudaenc token cache (bad magic)");
    ensure!(header.version == VERSION, "cache version {} (expected {VERSION})", header.version);
    ensure!(header.key == *key, "cache key does not match the source/tokenizer");
    let expected = (std::mem::size_of::<Header>() as u128)
        + header.n_reviews as u128 * std::mem::size_of::<Record>() as u128
        + header.n_tokens as u128 * 4
        + header.movies_bytes as u128;
    ensure!(expected == file_len as u128, "file is {file_len} bytes, header says {expected}");
    let mut records = vec![Record::zeroed(); header.n_reviews as usize];
    f.read_exact(bytemuck::cast_slice_mut(&mut records))?;
    let mut tokens = vec![0u32; header.n_tokens as usize];
    f.read_exact(bytemuck::cast_slice_mut(&mut tokens))?;
    let mut movies = vec![0u8; header.movies_bytes as usize];
    f.read_exact(&mut movies)?;
    let stored_crc = header.crc;
    header.crc = 0;
    let mut crc = crc32fast::Hasher::new();
    crc.update(bytemuck::bytes_of(&header));
    crc.update(bytemuck::cast_slice(&records));
    crc.update(bytemuck::cast_slice(&tokens));
    crc.update(&movies);
    ensure!(crc.finalize() == stored_crc, "checksum mismatch (corrupt file)");

    let movies: Vec<String> = if movies.is_empty() {
        Vec::new()
    } else {
        String::from_utf8(movies).context("movie table is not UTF-8")?.split('\n').map(String::from).collect()
    };
    ensure!(movies.len() as u64 == header.n_movies, "movie table has {} entries, header says {}", movies.len(), header.n_movies);
    let mut sum = 0u64;
    let mut counts = [[0usize; 2]; 2];
    let mut meta = Vec::with_capacity(records.len());
    let mut lens = Vec::with_capacity(records.len());
    for r in &records {
        if r.len == 0 || r.label > 1 || r.part > 1 || !(1..=10).contains(&r.rating) || r.movie as usize >= movies.len() {
            bail!("invalid review record {r:?}");
        }
        sum += r.len as u64;
        counts[r.part as usize][r.label as usize] += 1;
        let part = if r.part == 0 { Part::Train } else { Part::Test };
        meta.push((part, r.label, r.rating, r.id, r.movie));
        lens.push(r.len);
    }
    ensure!(sum == header.n_tokens, "review lengths sum to {sum}, header says {} tokens", header.n_tokens);
    ensure!(tokens.iter().all(|&t| t < VOCAB_SIZE), "token id out of range");
    let h = header.report;
    let report = ReadReport {
        counts: [[h[0] as usize, h[1] as usize], [h[2] as usize, h[3] as usize]],
        invalid_utf8: h[4] as usize,
        empty_skipped: h[5] as usize,
        with_br: h[6] as usize,
        other_entries: h[7] as usize,
    };
    ensure!(report.counts == counts, "review counts disagree with the header");
    Ok(Some(Dataset::assemble(tokens, &meta, &lens, movies, DatasetInfo { report, from_cache: true, ..info })))
}
