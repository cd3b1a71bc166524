//! Small generated corpora in the official aclImdb layout, as a directory or a .tar.gz.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// One file of the layout: path relative to the archive root, and its bytes.
pub type Files = Vec<(String, Vec<u8>)>;

/// `n` reviews per split and label. Review `id` of movie `id / 2` (so two reviews per
/// movie); movie 0 of train/pos is also test/neg's movie 0 (one shared movie).
/// Ratings: neg 1..=4, pos 7..=10. Every third review contains `<br />`.
pub fn corpus(n: usize) -> Files {
    let mut files = Vec::new();
    for part in ["train", "test"] {
        for label in ["neg", "pos"] {
            let mut urls = String::new();
            for id in 0..n {
                let rating = if label == "neg" { 1 + id % 4 } else { 7 + id % 4 };
                let word = if label == "neg" { "terrible" } else { "wonderful" };
                let br = if id % 3 == 0 { "<br /><br />" } else { " " };
                let text = format!("Review {id} of {part}: a {word} film.{br}I mean it, {word} {}.", "really ".repeat(id % 7));
                files.push((format!("aclImdb/{part}/{label}/{id}_{rating}.txt"), text.into_bytes()));
                let movie = match (part, label, id / 2) {
                    ("test", "neg", 0) => "train-pos-0".to_string(),
                    (p, l, m) => format!("{p}-{l}-{m}"),
                };
                urls.push_str(&format!("http://www.imdb.com/title/{movie}/usercomments\n"));
            }
            files.push((format!("aclImdb/{part}/urls_{label}.txt"), urls.into_bytes()));
        }
    }
    files
}

/// What the official archive has besides the labeled reviews.
pub fn official_extras(files: &mut Files) {
    files.insert(0, ("aclImdb/README".into(), b"Large Movie Review Dataset v1.0".to_vec()));
    files.push(("aclImdb/imdb.vocab".into(), b"the\nand\n".to_vec()));
    files.push(("aclImdb/train/unsup/0_0.txt".into(), b"unlabeled".to_vec()));
    files.push(("aclImdb/train/urls_unsup.txt".into(), b"http://x\n".to_vec()));
    files.push(("aclImdb/train/labeledBow.feat".into(), b"0 0:1\n".to_vec()));
    files.push(("aclImdb/test/labeledBow.feat".into(), b"0 0:1\n".to_vec()));
}

pub fn set(files: &mut Files, path: &str, bytes: &[u8]) {
    match files.iter_mut().find(|f| f.0 == path) {
        Some(f) => f.1 = bytes.to_vec(),
        None => files.push((path.to_string(), bytes.to_vec())),
    }
}

pub fn remove_prefix(files: &mut Files, prefix: &str) {
    files.retain(|f| !f.0.starts_with(prefix));
}

/// Write a .tar.gz with directory entries, like `tar czf`.
pub fn tar_gz_bytes(files: &Files) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut dirs = std::collections::BTreeSet::new();
    for (p, _) in files {
        let mut acc = String::new();
        for c in p.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            acc.push_str(c);
            acc.push('/');
            dirs.insert(acc.clone());
        }
    }
    for d in dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, &d, std::io::empty()).unwrap();
    }
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

pub fn write_tar_gz(path: &Path, files: &Files) {
    std::fs::File::create(path).unwrap().write_all(&tar_gz_bytes(files)).unwrap();
}

pub fn write_dir(root: &Path, files: &Files) {
    for (p, data) in files {
        let full = root.join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, data).unwrap();
    }
}
