//! Batched inference, shared by `cudaenc predict`, `cudaenc eval` and `cudaenc serve`:
//! texts -> cleaned and tokenized exactly as in training ([`TextPolicy::prepare`]) ->
//! length-sorted batches under a size and token budget (the data pipeline's
//! [`BatchPlan::eval`]) -> probability of the positive class per text, in input order.

use crate::cli::setup::RunConfig;
use crate::data::read::clean_text;
use crate::data::vocab::VocabMap;
use crate::data::dataset::distinct_ids;
use crate::data::{tokenize, BatchConfig, BatchPlan, Review, ReviewSet, Truncate};
use crate::model::Batch;
use crate::train::engine::Engine;
use anyhow::{ensure, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// One text as the model will read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Token ids before truncation (after the demo vocabulary remap); empty when the text
    /// has no token the model knows (empty or only whitespace after cleaning, or, for a
    /// demo model, only tokens outside its vocabulary).
    pub ids: Vec<u32>,
    /// The model reads only the first `max_len` tokens (or its truncation policy's choice).
    pub truncated: bool,
    /// The text is empty or only whitespace after cleaning (so `ids` is empty).
    pub blank: bool,
    /// The bytes were not valid UTF-8 (invalid sequences were replaced by U+FFFD).
    pub invalid_utf8: bool,
}

/// How a run's model turns text into tokens: the cleaning and tokenizer of training,
/// the demo vocabulary remap when the run has one, and the run's truncation.
#[derive(Clone, Debug)]
pub struct TextPolicy {
    pub truncate: Truncate,
    /// Demo corpus only: dense id -> cl100k id (sorted); empty: the full vocabulary.
    pub id_map: Vec<u32>,
    /// `--compact-vocab` runs: ids unseen in their training share one row.
    pub vocab_map: Option<VocabMap>,
    /// `--dedup` runs: each text is fed as its distinct token ids.
    pub dedup: bool,
}

impl TextPolicy {
    pub fn of_run(config: &RunConfig) -> Result<TextPolicy> {
        let policy = config.truncate.parse().map_err(anyhow::Error::msg)?;
        Ok(TextPolicy {
            truncate: Truncate::new(config.model.max_len, policy),
            id_map: config.id_map.clone(),
            vocab_map: config.vocab_map.clone(),
            dedup: config.dedup,
        })
    }

    /// Clean (invalid UTF-8 replaced, `<br />` -> newline, as `data::read` does for
    /// training), tokenize and remap one text.
    pub fn prepare(&self, bytes: &[u8]) -> Prepared {
        let (text, invalid_utf8, _) = clean_text(bytes);
        if text.trim().is_empty() {
            // training skips such reviews: the model has never seen one
            return Prepared { ids: Vec::new(), truncated: false, blank: true, invalid_utf8 };
        }
        let mut ids = tokenize::encode(&text);
        if !self.id_map.is_empty() {
            ids = ids.iter().filter_map(|id| self.id_map.binary_search(id).ok().map(|i| i as u32)).collect();
        }
        if self.dedup {
            // before the many-to-one compaction, as in training (`setup::load_data`)
            ids = distinct_ids(&ids);
        }
        if let Some(map) = &self.vocab_map {
            ids = ids.iter().map(|&id| map.map(id)).collect();
        }
        let truncated = self.truncate.len(ids.len()) < ids.len();
        Prepared { ids, truncated, blank: false, invalid_utf8 }
    }

    /// [`prepare`](Self::prepare) for many texts over all cores, in order.
    pub fn prepare_all<T: AsRef<[u8]> + Sync>(&self, texts: &[T]) -> Vec<Prepared> {
        texts.par_iter().with_min_len(8).map(|t| self.prepare(t.as_ref())).collect()
    }
}

/// A review set over token lists (labels 0: unknown), for [`predict_set`].
pub fn review_set<T: AsRef<[u32]>>(token_lists: &[T]) -> ReviewSet {
    let mut tokens = Vec::with_capacity(token_lists.iter().map(|t| t.as_ref().len()).sum());
    let mut reviews = Vec::with_capacity(token_lists.len());
    for (i, t) in token_lists.iter().enumerate() {
        let t = t.as_ref();
        reviews.push(Review { start: tokens.len(), len: t.len() as u32, label: 0, rating: 0, id: i as u32, movie: 0 });
        tokens.extend_from_slice(t);
    }
    ReviewSet { tokens: Arc::from(tokens), reviews }
}

/// The batching of [`predict_set`]: at most `max_batch` reviews and (when set) at most
/// `max_tokens` padded positions B x T per batch, reviews sorted by length so that little
/// is padding; `truncate` is applied to every review.
pub fn batch_config(max_batch: usize, max_tokens: Option<usize>, truncate: Truncate) -> BatchConfig {
    BatchConfig { max_tokens, ..BatchConfig::new(max_batch, truncate) }
}

/// Probability of the positive class for every review of `set`, in the set's order.
/// Every review must have at least one token.
pub fn predict_set(engine: &mut dyn Engine, set: &ReviewSet, cfg: &BatchConfig) -> Result<Vec<f32>> {
    predict_set_observed(engine, set, cfg, |_| {})
}

/// [`predict_set`], calling `observe` with each batch before it runs.
pub fn predict_set_observed(
    engine: &mut dyn Engine,
    set: &ReviewSet,
    cfg: &BatchConfig,
    mut observe: impl FnMut(&Batch),
) -> Result<Vec<f32>> {
    if let Some(r) = set.reviews.iter().position(|r| r.len == 0) {
        anyhow::bail!("review {r} has no tokens: the model needs at least one");
    }
    let plan = BatchPlan::eval(set, cfg);
    let mut probs = vec![f32::NAN; set.len()];
    for (i, idx) in plan.batches.iter().enumerate() {
        let batch = plan.batch(set, i);
        observe(&batch);
        let p = engine.predict(&batch)?;
        ensure!(p.len() == idx.len(), "the model answered {} probabilities for {} reviews", p.len(), idx.len());
        for (&r, p) in idx.iter().zip(p) {
            probs[r as usize] = p;
        }
    }
    Ok(probs)
}

/// Length bucket of a review of `len` tokens: floor(2 log2 len). Reviews of different
/// buckets (lengths apart by more than a factor of about 1.41) never share a batch in
/// [`predict_bucketed`].
pub fn length_bucket(len: usize) -> u32 {
    (2.0 * (len.max(1) as f64).log2()).floor() as u32
}

/// Probabilities for token lists (already truncated, each non-empty), in order: the
/// reviews are grouped by [`length_bucket`] and each group runs through
/// [`predict_set_observed`], so a batch of a few reviews of very different lengths does
/// not pad the short ones to the longest (the dynamic batches of `cudaenc serve`).
pub fn predict_bucketed(
    engine: &mut dyn Engine,
    reviews: &[&[u32]],
    cfg: &BatchConfig,
    mut observe: impl FnMut(&Batch),
) -> Result<Vec<f32>> {
    let mut buckets: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, r) in reviews.iter().enumerate() {
        buckets.entry(length_bucket(cfg.truncate.len(r.len()))).or_default().push(i);
    }
    let mut probs = vec![f32::NAN; reviews.len()];
    for idx in buckets.values() {
        let set = review_set(&idx.iter().map(|&i| reviews[i]).collect::<Vec<_>>());
        let p = predict_set_observed(engine, &set, cfg, &mut observe)?;
        for (&i, p) in idx.iter().zip(p) {
            probs[i] = p;
        }
    }
    Ok(probs)
}

