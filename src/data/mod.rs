//! Data: IMDB pipeline (another part) and the embedded demo corpus.

pub mod demo;
