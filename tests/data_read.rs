//! Reading the aclImdb layout from directories and archives, and what bad input gives.
mod data_common;
use cudaenc::data::read::{self, clean_text};
use cudaenc::data::Part;
use data_common::*;

fn err_of(r: anyhow::Result<cudaenc::data::RawCorpus>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

#[test]
fn archive_and_directory_read_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let files = corpus(6);
    let ar = tmp.path().join("a.tar.gz");
    write_tar_gz(&ar, &files);
    write_dir(&tmp.path().join("x"), &files);
    let a = read::read_archive(&ar).unwrap();
    let d = read::read_dir(&tmp.path().join("x")).unwrap();
    let d2 = read::read_dir(&tmp.path().join("x/aclImdb")).unwrap();
    assert_eq!(a.report.counts, [[6, 6], [6, 6]]);
    assert_eq!(a.report, d.report);
    assert_eq!(a.movies, d.movies);
    for (x, y) in a.reviews.iter().zip(&d.reviews).chain(a.reviews.iter().zip(&d2.reviews)) {
        assert_eq!((x.part, x.label, x.id, x.rating, x.movie, &x.text), (y.part, y.label, y.id, y.rating, y.movie, &y.text));
    }
    // Sorted by (part, label, id); label from the folder, rating and id from the name.
    let r = &a.reviews[0];
    assert_eq!((r.part, r.label, r.id, r.rating), (Part::Train, 0, 0, 1));
    let r = &a.reviews[6 + 3];
    assert_eq!((r.part, r.label, r.id, r.rating), (Part::Train, 1, 3, 10));
    assert!(r.text.contains("wonderful"));
    // <br /> replaced by newlines.
    assert_eq!(a.report.with_br, 4 * 2);
    assert!(a.reviews[0].text.contains("film.\n\nI mean"), "{}", a.reviews[0].text);
    assert!(a.reviews.iter().all(|r| !r.text.contains("<br")));
    // Movies from urls lines: 3 per (part,label) of 6 reviews, one shared -> 11 distinct.
    assert_eq!(a.movies.len(), 11);
    let train_pos0 = a.reviews.iter().find(|r| r.part == Part::Train && r.label == 1 && r.id == 0).unwrap();
    let test_neg0 = a.reviews.iter().find(|r| r.part == Part::Test && r.label == 0 && r.id == 1).unwrap();
    assert_eq!(train_pos0.movie, test_neg0.movie);
    assert!(a.movies[train_pos0.movie as usize].contains("train-pos-0"));
}

#[test]
fn official_extras_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = corpus(3);
    official_extras(&mut files);
    let ar = tmp.path().join("a.tar.gz");
    write_tar_gz(&ar, &files);
    let a = read::read_archive(&ar).unwrap();
    assert_eq!(a.report.counts, [[3, 3], [3, 3]]);
    assert_eq!(a.report.other_entries, 6);
}

#[test]
fn missing_folders_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = corpus(3);
    remove_prefix(&mut files, "aclImdb/test/neg/");
    write_dir(&tmp.path().join("d"), &files);
    let e = err_of(read::read_dir(&tmp.path().join("d")));
    assert!(e.contains("missing folder") && e.contains("test/neg/"), "{e}");
    let ar = tmp.path().join("a.tar.gz");
    write_tar_gz(&ar, &files);
    let e = err_of(read::read_archive(&ar));
    assert!(e.contains("no reviews in test/neg/"), "{e}");
    let e = err_of(read::read_dir(tmp.path().join("nothing").as_path()));
    assert!(e.contains("no train/ or test/ folder"), "{e}");
}

#[test]
fn missing_urls_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = corpus(3);
    remove_prefix(&mut files, "aclImdb/train/urls_pos.txt");
    let ar = tmp.path().join("a.tar.gz");
    write_tar_gz(&ar, &files);
    let e = err_of(read::read_archive(&ar));
    assert!(e.contains("missing train/urls_pos.txt"), "{e}");
}

#[test]
fn truncated_or_corrupt_archive_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = tar_gz_bytes(&corpus(20));
    for cut in [10, bytes.len() / 2, bytes.len() - 3] {
        let p = tmp.path().join(format!("cut{cut}.tar.gz"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = err_of(read::read_archive(&p));
        assert!(e.contains("truncated or corrupt"), "cut at {cut}: {e}");
    }
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let p = tmp.path().join("corrupt.tar.gz");
    std::fs::write(&p, &bad).unwrap();
    let e = err_of(read::read_archive(&p));
    assert!(e.contains("truncated or corrupt"), "{e}");
    let p = tmp.path().join("plain.txt");
    std::fs::write(&p, b"this is not an archive at all").unwrap();
    assert!(err_of(read::read_archive(&p)).contains("truncated or corrupt"));
    assert!(err_of(read::read_archive(&tmp.path().join("absent.tar.gz"))).contains("opening"));
}

#[test]
fn empty_reviews_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = corpus(4);
    set(&mut files, "aclImdb/train/pos/2_9.txt", b"");
    set(&mut files, "aclImdb/test/neg/1_2.txt", b" <br /><br />\n ");
    let ar = tmp.path().join("a.tar.gz");
    write_tar_gz(&ar, &files);
    let a = read::read_archive(&ar).unwrap();
    assert_eq!(a.report.empty_skipped, 2);
    assert_eq!(a.report.counts, [[4, 3], [3, 4]]);
    assert!(a.report.warnings().iter().any(|w| w.contains("2 empty review(s) skipped")));
}

#[test]
fn invalid_utf8_is_replaced_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = corpus(3);
    set(&mut files, "aclImdb/test/pos/1_8.txt", b"caf\xe9 was \xff\xfe great");
    let ar = tmp.path().join("a.tar.gz");
    write_tar_gz(&ar, &files);
    let a = read::read_archive(&ar).unwrap();
    assert_eq!(a.report.invalid_utf8, 1);
    let r = a.reviews.iter().find(|r| r.part == Part::Test && r.label == 1 && r.id == 1).unwrap();
    assert_eq!(r.text, "caf\u{fffd} was \u{fffd}\u{fffd} great");
    assert!(a.report.warnings()[0].contains("U+FFFD"));
}

#[test]
fn inconsistent_data_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |files: &Files, want: &str| {
        let ar = tmp.path().join("a.tar.gz");
        write_tar_gz(&ar, files);
        let e = err_of(read::read_archive(&ar));
        assert!(e.contains(want), "want '{want}' in: {e}");
    };
    // A positive review rated 3.
    let mut f = corpus(3);
    f.push(("aclImdb/train/pos/3_3.txt".into(), b"odd".to_vec()));
    set(&mut f, "aclImdb/train/urls_pos.txt", b"a\nb\nc\nd\n");
    check(&f, "rating 3 does not match label pos");
    // An id without a urls line.
    let mut f = corpus(3);
    f.push(("aclImdb/test/neg/7_2.txt".into(), b"x".to_vec()));
    check(&f, "id 7 has no line in test/urls_neg.txt");
    // A review listed in urls but absent.
    let mut f = corpus(3);
    remove_prefix(&mut f, "aclImdb/train/neg/1_");
    check(&f, "train/neg: 1 review(s) listed in urls_neg.txt are missing (ids 1)");
    // Same id twice (different ratings).
    let mut f = corpus(3);
    f.push(("aclImdb/train/neg/0_4.txt".into(), b"dup".to_vec()));
    check(&f, "review id 0 appears twice");
    // A badly named file.
    let mut f = corpus(3);
    f.push(("aclImdb/train/neg/notes.txt".into(), b"x".to_vec()));
    check(&f, "review file name must be <id>_<rating>.txt");
}

#[test]
fn br_variants() {
    assert_eq!(clean_text(b"a<br />b<br/>c<br>d<bra>").0, "a\nb\nc\nd<bra>");
    assert_eq!(clean_text(b"plain"), ("plain".to_string(), false, false));
}
