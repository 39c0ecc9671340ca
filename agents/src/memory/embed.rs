//! Text to vectors. The default embedder is feature hashing: no model, no download, the same
//! vector for the same text on every machine and every run.

/// Turns text into a vector of a fixed dimension. Records and queries of one memory must use
/// the same embedder: the backends refuse to open a store written with another dimension.
pub trait Embedder: Send + Sync {
    fn embed(&self, text: &str) -> Vec<f32>;
    fn dim(&self) -> usize;
}

impl<E: Embedder + ?Sized> Embedder for std::sync::Arc<E> {
    fn embed(&self, text: &str) -> Vec<f32> {
        (**self).embed(text)
    }
    fn dim(&self) -> usize {
        (**self).dim()
    }
}

impl<E: Embedder + ?Sized> Embedder for Box<E> {
    fn embed(&self, text: &str) -> Vec<f32> {
        (**self).embed(text)
    }
    fn dim(&self) -> usize {
        (**self).dim()
    }
}

/// Deterministic feature hashing ("the hashing trick") of lowercase word unigrams, word bigrams
/// and the character trigrams of each word, each hashed with blake3 to one signed coordinate,
/// the sum L2-normalised. Texts sharing words (or word stems, through the trigrams: `volume`,
/// `volumes`) point the same way; unrelated texts are near orthogonal. A text without any
/// word (empty, punctuation only) is the zero vector, similar to nothing.
///
/// **Architecture Invariant:** the vector of a text depends only on the text and the
/// dimension — never on the machine, the run or the records already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingEmbedder {
    dim: usize,
}

impl HashingEmbedder {
    /// The default dimension: small enough for brute-force search over thousands of records,
    /// large enough that the features of one record rarely collide.
    pub const DEFAULT_DIM: usize = 256;

    /// An embedder of `dim` coordinates (at least 1).
    pub fn new(dim: usize) -> Self {
        HashingEmbedder { dim: dim.max(1) }
    }

    fn add(&self, v: &mut [f32], feature: &str, weight: f32) {
        let h = blake3::hash(feature.as_bytes());
        let b = h.as_bytes();
        let slot = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let sign = if b[8] & 1 == 0 { 1.0 } else { -1.0 };
        // The remainder is below `dim`, a `usize`: the cast cannot truncate.
        v[(slot % self.dim as u64) as usize] += sign * weight;
    }
}

impl Default for HashingEmbedder {
    fn default() -> Self {
        HashingEmbedder::new(Self::DEFAULT_DIM)
    }
}

/// Weights of the three kinds of features: whole words count most, word pairs carry some
/// order, trigrams catch inflections and compounds without dominating.
const UNIGRAM: f32 = 1.0;
const BIGRAM: f32 = 0.7;
const TRIGRAM: f32 = 0.4;

impl Embedder for HashingEmbedder {
    fn embed(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dim];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        for w in &words {
            self.add(&mut v, &format!("w:{w}"), UNIGRAM);
            let padded: Vec<char> = format!(" {w} ").chars().collect();
            for t in padded.windows(3) {
                let t: String = t.iter().collect();
                self.add(&mut v, &format!("c:{t}"), TRIGRAM);
            }
        }
        for pair in words.windows(2) {
            self.add(&mut v, &format!("b:{} {}", pair[0], pair[1]), BIGRAM);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut v {
                *x /= norm;
            }
        }
        v
    }

    fn dim(&self) -> usize {
        self.dim
    }
}

/// The cosine similarity of two vectors; 0 when either is zero or their lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}
