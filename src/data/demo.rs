//! The demo corpus (`--data demo`): short English movie reviews generated from templates
//! by a seeded generator, embedded in the program, so that a run needs no download.
//!
//! Each review has exactly one *verdict* (an adjective like "great" / "awful" after
//! "the film was", or a verb like "loved" / "hated"), optionally negated ("was not
//! great", "didn't enjoy", "never boring"), which decides the label:
//! label = polarity(verdict) XOR negated. Around it: intensifiers ("really", "truly"),
//! neutral filler sentences, movie nouns, and aspect remarks ("the acting was weak")
//! whose polarity contrasts with the verdict after "but" or agrees with it otherwise.
//! Verdict and aspect words are disjoint vocabularies, so the label is a function of the
//! review's *bag* of tokens (the model has no positional encoding), yet no single token
//! decides it: every verdict word appears negated in about a third of its reviews, and
//! negation words appear in both classes equally.
//!
//! Tokenization: tiktoken cl100k_base, as for IMDB. `DemoData::remap` optionally maps
//! the few hundred cl100k ids the corpus uses onto a dense vocabulary 0..V' (ascending
//! cl100k id order), which makes the CPU trainer's embedding table and AdamW tiny.

use crate::rng::SplitMix64;

const NOUNS: &[&str] = &["movie", "film", "picture", "sequel", "thriller", "comedy", "drama", "remake", "story"];
const POS_VERDICT: &[&str] = &["great", "good", "excellent", "wonderful", "brilliant", "superb", "fantastic", "enjoyable", "terrific", "delightful"];
const NEG_VERDICT: &[&str] = &["bad", "awful", "terrible", "boring", "dreadful", "poor", "horrible", "disappointing", "mediocre", "painful"];
const POS_VERB: &[&str] = &["loved", "enjoyed", "liked", "adored"];
const NEG_VERB: &[&str] = &["hated", "disliked", "regretted", "resented"];
const POS_VERB_BASE: &[&str] = &["love", "enjoy", "like", "adore"];
const NEG_VERB_BASE: &[&str] = &["hate", "dislike", "regret", "resent"];
const INTENS: &[&str] = &["really", "truly", "very", "extremely", "absolutely", "quite", "so", "incredibly"];
const ASPECTS: &[&str] = &["acting", "plot", "music", "script", "cast", "ending", "dialogue", "pacing", "soundtrack", "camera work"];
const POS_ASPECT: &[&str] = &["beautiful", "stunning", "clever", "charming", "sharp", "moving", "solid", "gorgeous"];
const NEG_ASPECT: &[&str] = &["weak", "dull", "flat", "clumsy", "slow", "predictable", "messy", "thin"];
const FILLER: &[&str] = &[
    "I watched it last weekend with my family.",
    "It runs a little over two hours.",
    "My friends recommended it to me.",
    "The director also made a documentary last year.",
    "I saw it in a small theater downtown.",
    "It is based on a novel from the seventies.",
    "The trailer came out in the spring.",
    "We rented it on a rainy evening.",
    "It was shot in three different countries.",
    "The lead actor is in almost every scene.",
];

fn pick<'a>(rng: &mut SplitMix64, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len() as u64) as usize]
}

fn maybe_intens(rng: &mut SplitMix64) -> String {
    if rng.uniform() < 0.4 {
        format!("{} ", pick(rng, INTENS))
    } else {
        String::new()
    }
}

/// One review with label `label` (1 positive, 0 negative).
fn review(rng: &mut SplitMix64, label: u8) -> String {
    let negated = rng.uniform() < 0.35;
    // polarity of the verdict word: label XOR negated
    let pos_word = (label == 1) != negated;
    let noun = pick(rng, NOUNS);
    let verdict = if rng.uniform() < 0.6 {
        let adj = pick(rng, if pos_word { POS_VERDICT } else { NEG_VERDICT });
        let is = match (rng.below(2), negated) {
            (0, false) => "was",
            (_, false) => "is",
            (0, true) => pick(rng, &["was not", "wasn't", "was never"]),
            (_, true) => pick(rng, &["is not", "isn't", "is never"]),
        };
        format!("Overall the {noun} {is} {}{adj}.", maybe_intens(rng))
    } else {
        // verbs: past ("loved") or base ("love") forms; negated with "never" + past or
        // "did not" / "don't" + base, so every verb form appears in both classes
        let past = rng.below(2) == 0;
        let verb = match (past, pos_word) {
            (true, true) => pick(rng, POS_VERB),
            (true, false) => pick(rng, NEG_VERB),
            (false, true) => pick(rng, POS_VERB_BASE),
            (false, false) => pick(rng, NEG_VERB_BASE),
        };
        let neg = match (negated, past) {
            (false, _) => "",
            (true, true) => "never ",
            (true, false) => pick(rng, &["did not ", "didn't ", "do not ", "don't "]),
        };
        format!("I {neg}{}{verb} this {noun}.", maybe_intens(rng))
    };
    let mut parts: Vec<String> = Vec::new();
    if rng.uniform() < 0.6 {
        parts.push(pick(rng, FILLER).to_string());
    }
    let aspect = rng.uniform();
    if aspect < 0.35 {
        // contrast: an aspect of the other polarity, then "but" and the verdict
        let adj = pick(rng, if label == 1 { NEG_ASPECT } else { POS_ASPECT });
        let v = verdict.trim_end_matches('.');
        let v = v.replacen("Overall the", "overall the", 1);
        parts.push(format!("The {} was {}{adj}, but {v}.", pick(rng, ASPECTS), maybe_intens(rng)));
    } else if aspect < 0.65 {
        // agreement: an aspect of the same polarity, and the verdict
        let adj = pick(rng, if label == 1 { POS_ASPECT } else { NEG_ASPECT });
        parts.push(format!("The {} was {}{adj}.", pick(rng, ASPECTS), maybe_intens(rng)));
        parts.push(verdict);
    } else {
        parts.push(verdict);
    }
    if rng.uniform() < 0.4 {
        parts.push(pick(rng, FILLER).to_string());
    }
    parts.join(" ")
}

/// `n` reviews, balanced labels (alternating, then shuffled), the same for the same seed.
pub fn demo_corpus(seed: u64, n: usize) -> Vec<(String, u8)> {
    let mut rng = SplitMix64::new(seed ^ 0xD3E0_C0A5);
    let mut out: Vec<(String, u8)> = (0..n).map(|i| {
        let y = (i % 2) as u8;
        (review(&mut rng, y), y)
    }).collect();
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

/// A tokenized review: cl100k (or remapped) ids and the label.
pub type Example = (Vec<u32>, u8);

/// The demo corpus tokenized and split.
#[derive(Clone, Debug)]
pub struct DemoData {
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    /// Vocabulary size the model needs: 100,277 (cl100k) or the dense size after remap.
    pub vocab: usize,
    /// With remap: `dense id -> cl100k id`; empty otherwise.
    pub id_map: Vec<u32>,
}

/// cl100k_base vocabulary size including special tokens.
pub const CL100K_VOCAB: usize = 100_277;

impl DemoData {
    /// `n_train` + `n_val` reviews of `demo_corpus(seed, ..)`, tokenized with cl100k_base.
    /// `remap`: map the used ids to a dense vocabulary (see the module docs).
    pub fn new(seed: u64, n_train: usize, n_val: usize, remap: bool) -> anyhow::Result<DemoData> {
        let corpus = demo_corpus(seed, n_train + n_val);
        let bpe = tiktoken_rs::cl100k_base()?;
        let mut tok: Vec<Example> = corpus.iter().map(|(s, y)| (bpe.encode_ordinary(s), *y)).collect();
        let mut id_map = Vec::new();
        let mut vocab = CL100K_VOCAB;
        if remap {
            let mut used: Vec<u32> = tok.iter().flat_map(|(ids, _)| ids.iter().copied()).collect();
            used.sort_unstable();
            used.dedup();
            for (ids, _) in &mut tok {
                for id in ids.iter_mut() {
                    *id = used.binary_search(id).expect("every id is in the map") as u32;
                }
            }
            vocab = used.len();
            id_map = used;
        }
        let val = tok.split_off(n_train);
        Ok(DemoData { train: tok, val, vocab, id_map })
    }

    pub fn max_len(&self) -> usize {
        self.train.iter().chain(&self.val).map(|(ids, _)| ids.len()).max().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn corpus_is_seeded_and_balanced() {
        let a = demo_corpus(1, 400);
        assert_eq!(a, demo_corpus(1, 400));
        assert_ne!(a, demo_corpus(2, 400));
        assert_eq!(a.iter().filter(|(_, y)| *y == 1).count(), 200);
        for (s, y) in a.iter().take(6) {
            println!("{y} {s}");
        }
    }

    /// No token decides the label: among tokens in at least 2% of the reviews, the share
    /// of positive reviews containing it stays within [0.2, 0.8].
    #[test]
    fn no_single_token_decides_the_label() {
        let data = DemoData::new(3, 4000, 0, false).unwrap();
        let mut count: HashMap<u32, (usize, usize)> = HashMap::new();
        for (ids, y) in &data.train {
            let mut ids = ids.clone();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                let e = count.entry(id).or_default();
                e.0 += 1;
                e.1 += *y as usize;
            }
        }
        let bpe = tiktoken_rs::cl100k_base().unwrap();
        let mut worst = (0.5f64, 0u32);
        for (&id, &(n, pos)) in &count {
            if n * 50 >= data.train.len() {
                let share = pos as f64 / n as f64;
                if (share - 0.5).abs() > (worst.0 - 0.5).abs() {
                    worst = (share, id);
                }
            }
        }
        let word = bpe.decode(&[worst.1]).unwrap();
        println!("most telling token {word:?}: positive share {:.3} (bound [0.2, 0.8])", worst.0);
        assert!((0.2..=0.8).contains(&worst.0));
        println!("longest review {} tokens, vocab {}", data.max_len(), data.vocab);
    }

    #[test]
    fn remap_is_dense_and_invertible() {
        let raw = DemoData::new(5, 300, 100, false).unwrap();
        let dense = DemoData::new(5, 300, 100, true).unwrap();
        assert_eq!(raw.vocab, CL100K_VOCAB);
        assert!(dense.vocab < 1000, "{} ids", dense.vocab);
        for ((a, ya), (b, yb)) in raw.train.iter().chain(&raw.val).zip(dense.train.iter().chain(&dense.val)) {
            assert_eq!(ya, yb);
            assert!(b.iter().all(|&i| (i as usize) < dense.vocab));
            assert_eq!(a, &b.iter().map(|&i| dense.id_map[i as usize]).collect::<Vec<_>>());
        }
    }
}
