//! tiktoken `cl100k_base`, one encoder per worker thread (a shared encoder scales badly,
//! see docs/toolchain.md), over all cores with rayon.

use anyhow::Result;
use rayon::prelude::*;
use std::cell::OnceCell;
use tiktoken_rs::CoreBPE;

/// Names the tokenizer in cache keys; change it when tokenization changes.
pub const TOKENIZER_ID: &str = "tiktoken-rs-0.12 cl100k_base encode_ordinary";

/// Vocabulary size of cl100k_base including special tokens (ids are `< VOCAB_SIZE`).
pub const VOCAB_SIZE: u32 = 100_277;

thread_local! {
    static ENCODER: OnceCell<CoreBPE> = const { OnceCell::new() };
}

/// Build a fresh cl100k_base encoder (~50 ms).
pub fn encoder() -> Result<CoreBPE> {
    tiktoken_rs::cl100k_base()
}

/// Tokenize one text with this thread's encoder. Special-token text such as
/// `<|endoftext|>` is encoded as ordinary text.
pub fn encode(text: &str) -> Vec<u32> {
    ENCODER.with(|cell| {
        let enc = cell.get_or_init(|| encoder().expect("cl100k_base ranks are embedded in tiktoken-rs"));
        enc.encode_ordinary(text)
    })
}

/// Tokenize many texts in parallel, in order.
pub fn encode_all<S: AsRef<str> + Sync>(texts: &[S]) -> Vec<Vec<u32>> {
    texts.par_iter().with_min_len(16).map(|t| encode(t.as_ref())).collect()
}
