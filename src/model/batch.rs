//! One batch of reviews, padded to the longest one: what every device's model reads.

/// B reviews, each padded to T tokens. Position `t` of review `b` is `ids[b * t_len + t]`;
/// positions `t >= lens[b]` are padding (their ids are ignored, conventionally 0).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// (B, T) token ids, row-major.
    pub ids: Vec<u32>,
    /// (B) number of valid tokens per review, 0 ..= T.
    pub lens: Vec<u32>,
    /// (B) labels: 1 positive, 0 negative.
    pub labels: Vec<u8>,
    /// B
    pub batch_size: usize,
    /// T
    pub seq_len: usize,
}

impl Batch {
    /// Build a batch from token lists, padding each to the longest (ids past a review's
    /// length are 0). `labels.len()` must equal `reviews.len()`.
    pub fn from_reviews(reviews: &[&[u32]], labels: &[u8]) -> Batch {
        assert_eq!(reviews.len(), labels.len(), "one label per review");
        let t = reviews.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; reviews.len() * t];
        for (b, r) in reviews.iter().enumerate() {
            ids[b * t..b * t + r.len()].copy_from_slice(r);
        }
        Batch {
            ids,
            lens: reviews.iter().map(|r| r.len() as u32).collect(),
            labels: labels.to_vec(),
            batch_size: reviews.len(),
            seq_len: t,
        }
    }

    /// Number of valid (unpadded) tokens.
    pub fn valid_tokens(&self) -> usize {
        self.lens.iter().map(|&l| l as usize).sum()
    }

    /// Fraction of the B x T positions that are padding.
    pub fn padding_fraction(&self) -> f64 {
        let total = self.batch_size * self.seq_len;
        if total == 0 {
            return 0.0;
        }
        1.0 - self.valid_tokens() as f64 / total as f64
    }
}
