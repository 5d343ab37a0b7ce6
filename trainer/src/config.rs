//! The resolved training configuration, stored as `config.toml` in every run.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::data::DataSpec;
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

/// The largest `--image-size` (the paper trains at 224).
pub const MAX_IMAGE_SIZE: u32 = 1024;

/// The most float32 values a batch of images may hold (4 GiB): beyond it a batch is refused
/// before anything is allocated, instead of an allocation that aborts.
const MAX_BATCH_VALUES: usize = 1 << 30;

/// Checks a batch of `batch` square RGB images of side `image_size` for training or its
/// benchmark: side 32 (the backbones' downsampling) to [`MAX_IMAGE_SIZE`], the batch within
/// 4 GiB.
pub fn check_image_batch(batch: usize, image_size: usize) -> Result<()> {
    if !(32..=MAX_IMAGE_SIZE as usize).contains(&image_size) {
        bail!("--image-size must be from 32 to {MAX_IMAGE_SIZE}, got {image_size}");
    }
    let side = image_size;
    if batch == 0 || batch > MAX_BATCH_VALUES / (3 * side * side) {
        bail!(
            "--batch must be from 1 to {} at --image-size {image_size} (a batch of images holds \
             at most {MAX_BATCH_VALUES} values), got {batch}",
            MAX_BATCH_VALUES / (3 * side * side)
        );
    }
    Ok(())
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

    /// Refuses settings that could never train or make a gallery, before any data is read.
    /// Messages name the settings by their `trainer train` flags; a run's config.toml holds
    /// the same names with underscores.
    pub fn check(&self) -> Result<()> {
        self.data.parse::<DataSpec>()?;
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if self.steps_per_epoch == Some(0) || self.lr_step == 0 {
            bail!("--steps-per-epoch and --lr-step must be at least 1");
        }
        if !(self.class_fraction > 0.0 && self.class_fraction <= 1.0) {
            bail!(
                "--class-fraction must be in (0, 1], got {}",
                self.class_fraction
            );
        }
        check_image_batch(self.batch, self.image_size as usize)?;
        if self.resize < self.image_size || self.resize > 2 * MAX_IMAGE_SIZE {
            bail!(
                "--resize ({}) must be at least --image-size ({}) and at most {}",
                self.resize,
                self.image_size,
                2 * MAX_IMAGE_SIZE
            );
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            bail!("--temperature must be positive, got {}", self.temperature);
        }
        // The codes go into a gallery: its widths are whole bytes within its bounds.
        let (min_bits, max_bits) = (
            gallery::MIN_CODE_BITS as usize,
            gallery::MAX_CODE_BITS as usize,
        );
        let dim = self.embedding_dim;
        if !(min_bits..=max_bits).contains(&dim) || !dim.is_multiple_of(8) {
            bail!(
                "--embedding-dim must be a multiple of 8 from {min_bits} to {max_bits} (the code \
                 widths a gallery holds), got {dim}"
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("--momentum must be in [0, 1), got {}", self.momentum);
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("--lr must be positive, got {}", self.lr);
        }
        for (flag, value) in [
            ("--weight-decay", self.weight_decay),
            ("--proxy-lr-multiplier", self.proxy_lr_multiplier),
        ] {
            if !(value >= 0.0 && value.is_finite()) {
                bail!("{flag} must be at least 0, got {value}");
            }
        }
        if self.images_per_class == 0 || !self.batch.is_multiple_of(self.images_per_class) {
            bail!(
                "--batch ({}) must be a positive multiple of --images-per-class ({})",
                self.batch,
                self.images_per_class
            );
        }
        if self.devices == 0 || self.devices > self.batch {
            bail!(
                "--devices must be between 1 and --batch ({}), got {}",
                self.batch,
                self.devices
            );
        }
        Ok(())
    }
}
