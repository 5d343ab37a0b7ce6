//! The NormSoftmax loss: cross-entropy over cosine similarities to L2-normalised class proxies,
//! divided by a temperature, optionally over a random subset of the classes.

use burn::module::{Module, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;
use rand::seq::index::sample;

use crate::model::l2_normalize;

/// The paper's temperature.
pub const DEFAULT_TEMPERATURE: f64 = 0.05;

#[derive(Module, Debug)]
pub struct NormSoftmax {
    /// One row per class; normalised on every forward, never stored normalised.
    pub proxies: Param<Tensor<2>>,
    pub temperature: f64,
}

impl NormSoftmax {
    /// Proxies drawn uniform in +-1/sqrt(d), as the public code does, from `rng` so a seed
    /// fixes them.
    pub fn new(
        classes: usize,
        dim: usize,
        temperature: f64,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Self {
        let bound = 1.0 / (dim as f32).sqrt();
        let values: Vec<f32> = (0..classes * dim)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        Self::from_proxies(
            Tensor::from_data(TensorData::new(values, [classes, dim]), device),
            temperature,
        )
    }

    pub fn from_proxies(proxies: Tensor<2>, temperature: f64) -> Self {
        Self {
            proxies: Param::from_tensor(proxies),
            temperature,
        }
    }

    pub fn classes(&self) -> usize {
        self.proxies.dims()[0]
    }

    /// Mean cross-entropy of `embeddings` (unit rows, [N, d]) against their classes.
    /// `subset` lists the classes that enter the softmax (it must contain every label);
    /// `None` uses them all.
    pub fn forward(
        &self,
        embeddings: Tensor<2>,
        labels: &[usize],
        subset: Option<&ClassSubset>,
    ) -> Tensor<1> {
        let device = embeddings.device();
        let proxies = self.proxies.val();
        let (proxies, targets) = match subset {
            Some(subset) => {
                let indices: Vec<i64> = subset.classes.iter().map(|&c| c as i64).collect();
                let indices = Tensor::<1, Int>::from_data(
                    TensorData::new(indices, [subset.classes.len()]),
                    &device,
                );
                let targets: Vec<i64> = labels
                    .iter()
                    .map(|label| subset.position(*label) as i64)
                    .collect();
                (proxies.select(0, indices), targets)
            }
            None => (proxies, labels.iter().map(|&label| label as i64).collect()),
        };
        let logits = embeddings.matmul(l2_normalize(proxies).transpose()) / self.temperature;
        let n = labels.len();
        let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
        let picked = log_softmax(logits, 1).gather(1, targets);
        picked.mean().neg()
    }
}

/// The classes of one step's softmax: those of the batch plus random others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassSubset {
    /// Sorted class indices.
    pub classes: Vec<usize>,
}

impl ClassSubset {
    /// The batch's classes plus uniformly drawn others, up to `fraction` of all `classes`
    /// (never fewer than the batch's own).
    pub fn draw(labels: &[usize], classes: usize, fraction: f64, rng: &mut impl Rng) -> Self {
        let mut chosen: Vec<usize> = labels.to_vec();
        chosen.sort_unstable();
        chosen.dedup();
        let wanted = ((fraction * classes as f64).round() as usize).clamp(chosen.len(), classes);
        let missing = wanted - chosen.len();
        if missing > 0 {
            let others: Vec<usize> = (0..classes)
                .filter(|c| chosen.binary_search(c).is_err())
                .collect();
            for index in sample(rng, others.len(), missing) {
                chosen.push(others[index]);
            }
            chosen.sort_unstable();
        }
        Self { classes: chosen }
    }

    /// Position of `class` in the subset.
    ///
    /// # Panics
    /// If the class is not in the subset: `draw` always includes the batch's labels.
    pub fn position(&self, class: usize) -> usize {
        self.classes
            .binary_search(&class)
            .expect("a batch label is always part of its class subset")
    }
}
