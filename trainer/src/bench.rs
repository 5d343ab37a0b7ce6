//! Training speed and memory: the real training step on random images, timed after a warm-up.
//! `trainer/bench/vs_pytorch.sh` runs it beside PyTorch's eager step on the same machine.

use std::time::Instant;

use anyhow::Result;
use burn::tensor::{Distribution, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::backend::Backend;
use crate::loss::NormSoftmax;
use crate::model::{Backbone, BackboneKind, EmbeddingModel};
use crate::train::Trainee;

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub backend: Backend,
    pub backbone: BackboneKind,
    pub image_size: usize,
    pub batch: usize,
    pub steps: usize,
    pub images_per_second: f64,
    /// The process's peak resident memory (VmHWM), warm-up included.
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct BenchSettings {
    pub backbone: BackboneKind,
    pub backend: Backend,
    pub image_size: usize,
    pub batch: usize,
    pub steps: usize,
    pub warmup: usize,
    pub classes: usize,
}

pub fn bench_training(settings: &BenchSettings) -> Result<BenchReport> {
    let device = settings.backend.device()?.autodiff();
    device.seed(0);
    let model = EmbeddingModel::new(
        Backbone::new(settings.backbone, &device, None),
        settings.backbone.features(),
        &device,
    );
    let mut rng = StdRng::seed_from_u64(0);
    let criterion = NormSoftmax::new(
        settings.classes,
        settings.backbone.features(),
        crate::loss::DEFAULT_TEMPERATURE,
        &mut rng,
        &device,
    );
    let mut trainee = Trainee::new(model, criterion, 0.9, 1e-4);
    let side = settings.image_size;
    let labels: Vec<usize> = (0..settings.batch)
        .map(|_| rng.random_range(0..settings.classes))
        .collect();
    let mut elapsed = 0.0;
    for step in 0..settings.warmup + settings.steps {
        let images = Tensor::<4>::random(
            [settings.batch, 3, side, side],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let started = Instant::now();
        let (next, loss) = trainee.step(images, &labels, None, 0.01, 1.0, false);
        trainee = next;
        if step >= settings.warmup {
            elapsed += started.elapsed().as_secs_f64();
        }
        tracing::debug!("step {step}: loss {loss}");
    }
    Ok(BenchReport {
        backend: settings.backend,
        backbone: settings.backbone,
        image_size: side,
        batch: settings.batch,
        steps: settings.steps,
        images_per_second: (settings.batch * settings.steps) as f64 / elapsed,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// VmHWM from /proc/self/status (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
