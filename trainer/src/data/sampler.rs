//! The recipe's class-balanced sampler: `batch / images_per_class` distinct classes per batch,
//! `images_per_class` images of each drawn with replacement.

use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};

use super::DataError;

/// Stirs a seed and a step (and more) into one 64-bit seed (splitmix64 finaliser per word), so
/// that every step gets an unrelated random stream that depends on nothing but its inputs.
pub(crate) fn mix(words: &[u64]) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    for &w in words {
        h ^= w;
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
    }
    h
}

/// Salts the sampler's streams apart from the augmentation's, which share the user's seed.
const SAMPLER_SALT: u64 = 0x5a4d_504c_4552_0001;

/// Draws batches of sample indices. Batch `step` depends only on (labels, seed, step), so a run
/// resumed at step N (see [`ClassBalancedSampler::set_step`]) draws what an uninterrupted run
/// would have.
#[derive(Debug, Clone)]
pub struct ClassBalancedSampler {
    /// Sample indices of each class that has any.
    classes: Vec<Vec<usize>>,
    batch: usize,
    images_per_class: usize,
    seed: u64,
    step: u64,
    num_samples: usize,
}

impl ClassBalancedSampler {
    /// `labels[i]` is sample i's class. Fails when `batch` is not a positive multiple of
    /// `images_per_class` or there are fewer classes (with images) than a batch needs.
    pub fn new(
        labels: &[usize],
        batch: usize,
        images_per_class: usize,
        seed: u64,
    ) -> Result<Self, DataError> {
        if images_per_class == 0 || batch == 0 || !batch.is_multiple_of(images_per_class) {
            return Err(DataError::Config(format!(
                "batch {batch} must be a positive multiple of images per class {images_per_class}"
            )));
        }
        let num_classes = labels.iter().max().map_or(0, |m| m + 1);
        let mut classes = vec![Vec::new(); num_classes];
        for (i, &l) in labels.iter().enumerate() {
            classes[l].push(i);
        }
        classes.retain(|c| !c.is_empty());
        let per_batch = batch / images_per_class;
        if classes.len() < per_batch {
            return Err(DataError::Config(format!(
                "a batch of {batch} at {images_per_class} per class needs {per_batch} classes; the labels have {}",
                classes.len()
            )));
        }
        Ok(Self {
            classes,
            batch,
            images_per_class,
            seed,
            step: 0,
            num_samples: labels.len(),
        })
    }

    /// The step the next [`next_batch`](Self::next_batch) draws.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Continues from `step` (e.g. a checkpoint's), as if `step` batches had been drawn.
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// Skips `n` batches.
    pub fn skip(&mut self, n: u64) {
        self.step += n;
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    pub fn images_per_class(&self) -> usize {
        self.images_per_class
    }

    /// The recipe's epoch: N / batch batches (at least one).
    pub fn batches_per_epoch(&self) -> usize {
        (self.num_samples / self.batch).max(1)
    }

    /// The batch at the current step, then moves to the next step.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let batch = self.batch_at(self.step);
        self.step += 1;
        batch
    }

    /// The batch of any step, without moving: `images_per_class` consecutive indices per class.
    pub fn batch_at(&self, step: u64) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(mix(&[SAMPLER_SALT, self.seed, step]));
        let chosen = index::sample(
            &mut rng,
            self.classes.len(),
            self.batch / self.images_per_class,
        );
        let mut out = Vec::with_capacity(self.batch);
        for c in chosen {
            let members = &self.classes[c];
            out.extend(
                (0..self.images_per_class).map(|_| members[rng.random_range(0..members.len())]),
            );
        }
        out
    }
}
