//! The resolved training configuration, stored as `config.toml` in every run.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::loss::DEFAULT_TEMPERATURE;
use crate::model::BackboneKind;

/// Every setting of a run, defaults resolved, so a run can be repeated or resumed from it alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `KIND:PATH`, as given to `--data`.
    pub data: String,
    /// Class split file for `folder` data.
    pub split: Option<PathBuf>,
    pub backbone: BackboneKind,
    /// Pretrained weights; `None` takes them from the cache (`trainer fetch-weights`).
    pub weights: Option<PathBuf>,
    /// Start from random weights instead (tests, ablations).
    pub random_init: bool,
    pub embedding_dim: usize,
    pub temperature: f64,
    /// Learning-rate multiplier of the class proxies.
    pub proxy_lr_multiplier: f64,
    /// Share of all classes in each step's softmax (1 = all).
    pub class_fraction: f64,
    pub batch: usize,
    pub images_per_class: usize,
    pub epochs: usize,
    /// Steps per epoch; `None` = training images / batch.
    pub steps_per_epoch: Option<usize>,
    /// Epochs at the start that train only the head and proxies.
    pub warmup_epochs: usize,
    pub lr: f64,
    /// The learning rate is multiplied by 0.1 every `lr_step` epochs.
    pub lr_step: usize,
    pub momentum: f64,
    pub weight_decay: f64,
    /// BatchNorm uses its running statistics and its scale and shift stay fixed.
    pub freeze_bn: bool,
    pub image_size: u32,
    pub resize: u32,
    pub seed: u64,
    pub backend: Backend,
    /// Devices the batch is split across (data parallel); 1 = one device.
    #[serde(default = "one_device")]
    pub devices: usize,
    /// Evaluate on the test split after each epoch.
    pub eval_each_epoch: bool,
}

fn one_device() -> usize {
    1
}

impl TrainConfig {
    /// The recipe's defaults for a dataset kind (learning rate and images per class).
    pub fn recipe_for(kind: &str) -> (f64, usize) {
        match kind {
            "cub" => (0.001, 25),
            "cars196" => (0.01, 25),
            "fashion-mnist" => (0.01, 25),
            _ => (0.01, 5),
        }
    }

    pub fn default_temperature() -> f64 {
        DEFAULT_TEMPERATURE
    }
}
