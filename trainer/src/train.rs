//! The NormSoftmax training loop and its run directory.
//!
//! A run directory holds `config.toml` (every setting, resolved), `metrics.jsonl` (one line per
//! step and one per evaluation), `loss.png`, and `checkpoints/epoch-NNNN/` with the model, the
//! proxies and both optimizers' state. `resume` continues after the last complete checkpoint
//! and, on the CPU, reaches exactly the state an uninterrupted run would.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::{Module, ParamGroup};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::{
    self, ClassBalancedSampler, DataSpec, Dataset, Loader, LoaderOptions, Preprocess,
};
use crate::evaluate::evaluate_model;
use crate::loss::{ClassSubset, NormSoftmax};
use crate::model::{Backbone, EmbeddingModel, l2_normalize};
use crate::weights;

pub const CONFIG_FILE: &str = "config.toml";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const PLOT_FILE: &str = "loss.png";
pub const CHECKPOINTS_DIR: &str = "checkpoints";
const MODEL_FILE: &str = "model.bpk";
const PROXIES_FILE: &str = "proxies.bpk";
const OPTIMIZER_FILE: &str = "optimizer.bin";
const PROXY_OPTIMIZER_FILE: &str = "proxy-optimizer.bin";
const PROGRESS_FILE: &str = "progress.json";

/// One line of metrics.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricsLine {
    Step {
        step: u64,
        epoch: usize,
        loss: f64,
        lr: f64,
        images_per_second: f64,
    },
    Eval {
        step: u64,
        epoch: usize,
        eval: serde_json::Value,
    },
}

/// Written last into a checkpoint folder: its presence marks the checkpoint complete.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Progress {
    epoch: usize,
    step: u64,
}

/// The state being trained.
#[allow(missing_debug_implementations)] // burn's optimizer state has no Debug
pub struct Trainee {
    pub model: EmbeddingModel,
    pub criterion: NormSoftmax,
    optimizer: ModuleOptimizer,
    proxy_optimizer: ModuleOptimizer,
}

impl Trainee {
    /// A model and its proxies with fresh SGD state.
    pub fn new(
        model: EmbeddingModel,
        criterion: NormSoftmax,
        momentum: f64,
        weight_decay: f64,
    ) -> Self {
        Self {
            model,
            criterion,
            optimizer: sgd(momentum, weight_decay),
            proxy_optimizer: sgd(momentum, weight_decay),
        }
    }

    /// The loss on a batch without learning from it (BatchNorm still updates its running
    /// statistics, as in any training-mode forward).
    pub fn loss(&self, images: Tensor<4>, labels: &[usize]) -> f64 {
        let embeddings = self.model.forward(images).detach();
        self.criterion
            .forward(embeddings, labels, None)
            .into_scalar::<f64>()
    }

    /// One SGD step on a batch; returns the updated state and the batch's loss. In warm-up
    /// only the head and the proxies learn.
    pub fn step(
        self,
        images: Tensor<4>,
        labels: &[usize],
        subset: Option<&ClassSubset>,
        lr: f64,
        proxy_lr_multiplier: f64,
        warm: bool,
    ) -> (Self, f64) {
        self.step_data_parallel(&[], images, labels, subset, lr, proxy_lr_multiplier, warm)
    }

    /// [`Trainee::step`] with the batch split across `replicas` (data parallel, as burn's
    /// multi-device learner does it): a copy of the model and the proxies per device, each
    /// computing the loss of its share in its own thread, the gradients summed on the model's
    /// device, each share's loss weighted by its share of the batch so that the sum is the
    /// whole batch's gradient, then one SGD step. BatchNorm sees each share's statistics, and
    /// its running statistics average the shares' (burn's `RunningState`). With fewer than two
    /// replicas, the plain step on the model's device.
    #[allow(clippy::too_many_arguments)]
    pub fn step_data_parallel(
        self,
        replicas: &[Device],
        images: Tensor<4>,
        labels: &[usize],
        subset: Option<&ClassSubset>,
        lr: f64,
        proxy_lr_multiplier: f64,
        warm: bool,
    ) -> (Self, f64) {
        let Trainee {
            model,
            criterion,
            mut optimizer,
            mut proxy_optimizer,
        } = self;
        let shards = replicas.len().min(labels.len());
        let (model_grads, proxy_grads, loss_value) = if shards < 2 {
            gradients(&model, &criterion, images, labels, subset, warm, 1.0)
        } else {
            let main = images.device();
            let n = labels.len();
            let results: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = replicas[..shards]
                    .iter()
                    .enumerate()
                    .map(|(i, device)| {
                        let (start, end) = (i * n / shards, (i + 1) * n / shards);
                        let model = model.clone().fork(device);
                        let criterion = criterion.clone().fork(device);
                        let images = images
                            .clone()
                            .narrow(0, start, end - start)
                            .to_device(device);
                        let labels = &labels[start..end];
                        let main = &main;
                        scope.spawn(move || {
                            let weight = (end - start) as f64 / n as f64;
                            let (model_grads, proxy_grads, loss) =
                                gradients(&model, &criterion, images, labels, subset, warm, weight);
                            (
                                model_grads.to_device(main, &model),
                                proxy_grads.to_device(main, &criterion),
                                loss * weight,
                            )
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| handle.join().expect("a data-parallel share panicked"))
                    .collect()
            });
            let mut model_sum = GradientsAccumulator::new();
            let mut proxy_sum = GradientsAccumulator::new();
            let mut loss = 0.0;
            for (model_grads, proxy_grads, share_loss) in results {
                model_sum.accumulate(&model, model_grads);
                proxy_sum.accumulate(&criterion, proxy_grads);
                loss += share_loss;
            }
            (model_sum.grads(), proxy_sum.grads(), loss)
        };
        let criterion = proxy_optimizer.step(lr * proxy_lr_multiplier, criterion, proxy_grads);
        let model = optimizer.step(lr, model, model_grads);
        (
            Trainee {
                model,
                criterion,
                optimizer,
                proxy_optimizer,
            },
            loss_value,
        )
    }
}

/// The gradients of the model and of the proxies for one batch (or one share of it, its loss
/// weighted by `weight`), and the batch's loss. In warm-up the backbone runs untracked (its
/// BatchNorm statistics still update): no backward through it, and no graph at all. A
/// detached graph is not enough: burn's autodiff keeps the nodes of a graph no backward pass
/// reaches, and a warm-up epoch then grew the process by hundreds of megabytes per step.
fn gradients(
    model: &EmbeddingModel,
    criterion: &NormSoftmax,
    images: Tensor<4>,
    labels: &[usize],
    subset: Option<&ClassSubset>,
    warm: bool,
    weight: f64,
) -> (GradientsParams, GradientsParams, f64) {
    let pooled = if warm {
        model.backbone.clone().no_grad().pooled(images)
    } else {
        model.backbone.pooled(images)
    };
    let embeddings = l2_normalize(model.head(pooled));
    let loss = criterion.forward(embeddings, labels, subset);
    let mut grads = if weight == 1.0 {
        loss.backward()
    } else {
        loss.clone().mul_scalar(weight).backward()
    };
    let loss_value = loss.into_scalar::<f64>();
    let proxy_grads = GradientsParams::from_module(&mut grads, criterion);
    let model_grads = if warm {
        GradientsParams::from_module(&mut grads, &model.embedding)
    } else {
        GradientsParams::from_grads(grads, model)
    };
    (model_grads, proxy_grads, loss_value)
}

pub fn checkpoint_dir(run: &Path, epoch: usize) -> PathBuf {
    run.join(CHECKPOINTS_DIR).join(format!("epoch-{epoch:04}"))
}

/// The last complete checkpoint's epoch, if any.
pub fn last_checkpoint(run: &Path) -> Result<Option<usize>> {
    let dir = run.join(CHECKPOINTS_DIR);
    if !dir.exists() {
        return Ok(None);
    }
    let mut last = None;
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(epoch) = name
            .to_str()
            .and_then(|n| n.strip_prefix("epoch-"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if entry.path().join(PROGRESS_FILE).exists() {
            last = last.max(Some(epoch));
        }
    }
    Ok(last)
}

/// A run's config.toml, checked as `trainer train` checks its flags (so a hand-edited one is
/// refused by every command, naming the setting).
pub fn read_config(run: &Path) -> Result<TrainConfig> {
    let path = run.join(CONFIG_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: TrainConfig = toml::from_str(&text)
        .with_context(|| format!("{}: not a valid run configuration", path.display()))?;
    // A hand-edited file is checked like the flags it came from.
    config.check().with_context(|| {
        format!(
            "{}: a setting cannot train (its flag is named)",
            path.display()
        )
    })?;
    Ok(config)
}

/// The embedding model of a run at a checkpoint (the last when `epoch` is `None`), for
/// evaluation and export.
pub fn load_model(
    run: &Path,
    epoch: Option<usize>,
    device: &Device,
) -> Result<(TrainConfig, EmbeddingModel, usize)> {
    let config = read_config(run)?;
    let epoch = match epoch {
        Some(epoch) => epoch,
        None => last_checkpoint(run)?
            .with_context(|| format!("{}: the run has no checkpoint yet", run.display()))?,
    };
    let dir = checkpoint_dir(run, epoch);
    if !dir.join(PROGRESS_FILE).exists() {
        bail!(
            "{}: no complete checkpoint for epoch {epoch}",
            dir.display()
        );
    }
    let mut model = EmbeddingModel::new(
        Backbone::new(config.backbone, device, None),
        config.embedding_dim,
        device,
    );
    load_module(&mut model, &dir.join(MODEL_FILE))?;
    Ok((config, model, epoch))
}

fn load_module<M: ModuleSnapshot>(module: &mut M, path: &Path) -> Result<()> {
    let mut store = BurnpackStore::from_file(path).allow_partial(false);
    let result = module
        .load_from(&mut store)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    if !result.errors.is_empty() {
        bail!(
            "{}: {} tensors do not fit the model: {:?}",
            path.display(),
            result.errors.len(),
            result.errors
        );
    }
    Ok(())
}

fn save_module<M: ModuleSnapshot>(module: &M, path: &Path) -> Result<()> {
    let mut store = BurnpackStore::from_file(path).overwrite(true);
    module
        .save_into(&mut store)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
}

/// SGD with classical momentum and L2 weight decay, as the recipe's PyTorch code uses.
fn sgd(momentum: f64, weight_decay: f64) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig::new(weight_decay as f32)))
        .init()
}

/// Matches every BatchNorm of both backbones (`bn`, `bn1`.. and their running statistics).
pub fn batch_norm_group() -> ParamGroup {
    ParamGroup::from_regex(r"(^|\.)bn\d*\.").expect("a valid regex")
}

/// Learning rate of an epoch: step decay by 0.1 every `lr_step` epochs.
pub fn learning_rate(config: &TrainConfig, epoch: usize) -> f64 {
    let decays = epoch.checked_div(config.lr_step).unwrap_or(0);
    config.lr * 0.1f64.powi(decays as i32)
}

/// Steps in one epoch.
pub fn steps_per_epoch(config: &TrainConfig, train_images: usize) -> usize {
    config
        .steps_per_epoch
        .unwrap_or((train_images / config.batch).max(1))
}

/// A fresh run: writes the config and trains all epochs.
pub fn train_new(config: TrainConfig, run: &Path) -> Result<()> {
    config.check()?;
    if run.join(CONFIG_FILE).exists() {
        bail!(
            "{} already holds a run: pick another --out, or continue it with --resume",
            run.display()
        );
    }
    run_epochs(&config, run, None)
}

/// Writes a fresh run's config and empty metrics, once everything it needs has loaded: a
/// missing dataset or weights leaves no half-made run behind.
fn start_run(config: &TrainConfig, run: &Path) -> Result<()> {
    fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    let text = toml::to_string_pretty(config).context("serialising the configuration")?;
    fs::write(run.join(CONFIG_FILE), text)
        .with_context(|| format!("writing {}", run.join(CONFIG_FILE).display()))?;
    fs::write(run.join(METRICS_FILE), "")
        .with_context(|| format!("writing {}", run.join(METRICS_FILE).display()))
}

/// Continues a run after its last complete checkpoint.
pub fn resume(run: &Path) -> Result<()> {
    let config = read_config(run)?;
    let last = last_checkpoint(run)?;
    if last.is_some_and(|epoch| epoch + 1 >= config.epochs) {
        tracing::info!("{}: all {} epochs are done", run.display(), config.epochs);
        return Ok(());
    }
    run_epochs(&config, run, last)
}

fn run_epochs(config: &TrainConfig, run: &Path, resume_after: Option<usize>) -> Result<()> {
    if config.warmup_epochs >= config.epochs {
        tracing::warn!("every epoch is a warm-up epoch: only the head and the proxies train");
    }
    let base_device = config.backend.device()?;
    let device = base_device.clone().autodiff();
    device.seed(config.seed);
    let replicas: Vec<Device> = if config.devices > 1 {
        let replicas = config.backend.devices(config.devices)?;
        tracing::info!(
            "data parallel over {} devices: {replicas:?}",
            replicas.len()
        );
        replicas.into_iter().map(Device::autodiff).collect()
    } else {
        Vec::new()
    };
    let spec = data_spec(config)?;
    let dataset: Dataset = data::load(&spec)?;
    let train_split = Arc::new(dataset.train.clone());
    let labels = train_split.labels();
    let classes = train_split.num_classes();
    let steps = steps_per_epoch(config, labels.len());
    tracing::info!(
        "training {} on {} ({} images of {} classes), {} epochs of {} steps, backend {}",
        config.backbone,
        spec,
        labels.len(),
        classes,
        config.epochs,
        steps,
        config.backend
    );

    let mut trainee = match resume_after {
        Some(epoch) => restore(config, run, epoch, classes, &device)?,
        None => initial(config, classes, &device)?,
    };
    let first_epoch = resume_after.map_or(0, |epoch| epoch + 1);
    let start_step = (first_epoch * steps) as u64;
    let preprocess = Preprocess::new(config.image_size, config.resize)?;
    let mut sampler =
        ClassBalancedSampler::new(&labels, config.batch, config.images_per_class, config.seed)?;
    sampler.set_step(start_step);
    let mut batches = Loader::train(
        Arc::clone(&train_split),
        sampler,
        preprocess,
        config.seed,
        LoaderOptions::default(),
    )?;

    match resume_after {
        Some(_) => truncate_metrics_after(run, start_step)?,
        None => start_run(config, run)?,
    }
    let mut metrics = fs::OpenOptions::new()
        .append(true)
        .open(run.join(METRICS_FILE))
        .with_context(|| format!("opening {}", run.join(METRICS_FILE).display()))?;
    let total_steps = (config.epochs * steps) as u64;
    let progress = ProgressBar::new(total_steps).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps, epoch {msg} [{elapsed} < {eta}]")
            .expect("a valid template"),
    );
    progress.set_position(start_step);
    let side = config.image_size as usize;
    for epoch in first_epoch..config.epochs {
        let lr = learning_rate(config, epoch);
        let warm = epoch < config.warmup_epochs;
        progress.set_message(format!(
            "{}{}",
            epoch + 1,
            if warm {
                " (warm-up: head and proxies)"
            } else {
                ""
            }
        ));
        for _ in 0..steps {
            let started = Instant::now();
            let batch = batches
                .next()
                .context("the data loader stopped: no readable training images")?;
            let n = batch.len();
            let images =
                Tensor::<4>::from_data(TensorData::new(batch.images, [n, 3, side, side]), &device);
            let mut rng =
                StdRng::seed_from_u64(config.seed ^ batch.step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let subset = (config.class_fraction < 1.0).then(|| {
                ClassSubset::draw(&batch.labels, classes, config.class_fraction, &mut rng)
            });
            let (next, loss) = trainee.step_data_parallel(
                &replicas,
                images,
                &batch.labels,
                subset.as_ref(),
                lr,
                config.proxy_lr_multiplier,
                warm,
            );
            trainee = next;
            if !loss.is_finite() {
                bail!("step {}: the loss is {loss}; lower --lr", batch.step);
            }
            let line = MetricsLine::Step {
                step: batch.step,
                epoch,
                loss,
                lr,
                images_per_second: n as f64 / started.elapsed().as_secs_f64(),
            };
            writeln!(metrics, "{}", serde_json::to_string(&line)?)?;
            progress.inc(1);
        }
        let step = ((epoch + 1) * steps) as u64;
        if config.eval_each_epoch {
            progress.set_message(format!("{} (evaluating)", epoch + 1));
            let model = trainee.model.valid();
            let (report, _) =
                evaluate_model(&model, &dataset, preprocess, spec.kind, &base_device)?;
            tracing::info!(
                "epoch {}: R@1 float {:.4}, binary {:.4}",
                epoch + 1,
                report.float.recall(1).unwrap_or(f64::NAN),
                report.binary.recall(1).unwrap_or(f64::NAN)
            );
            let line = MetricsLine::Eval {
                step,
                epoch,
                eval: serde_json::to_value(&report)?,
            };
            writeln!(metrics, "{}", serde_json::to_string(&line)?)?;
        }
        metrics.flush()?;
        save_checkpoint(&trainee, run, epoch, step)?;
        plot_run(run)?;
    }
    progress.finish_and_clear();
    Ok(())
}

/// The data of a run, its split file attached.
pub fn data_spec(config: &TrainConfig) -> Result<DataSpec> {
    let spec: DataSpec = config.data.parse()?;
    Ok(spec.with_split(config.split.clone()))
}

fn initial(config: &TrainConfig, classes: usize, device: &Device) -> Result<Trainee> {
    let backbone = if config.random_init {
        Backbone::new(config.backbone, device, None)
    } else {
        weights::load_pretrained(config.backbone, config.weights.as_deref(), device)?
    };
    Ok(assemble(config, backbone, classes, device))
}

/// The model, its proxies (seeded) and fresh optimizers around `backbone`.
fn assemble(config: &TrainConfig, backbone: Backbone, classes: usize, device: &Device) -> Trainee {
    let mut model = EmbeddingModel::new(backbone, config.embedding_dim, device);
    if config.freeze_bn {
        model = model.freeze_group(batch_norm_group());
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let criterion = NormSoftmax::new(
        classes,
        config.embedding_dim,
        config.temperature,
        &mut rng,
        device,
    );
    Trainee::new(model, criterion, config.momentum, config.weight_decay)
}

fn restore(
    config: &TrainConfig,
    run: &Path,
    epoch: usize,
    classes: usize,
    device: &Device,
) -> Result<Trainee> {
    let dir = checkpoint_dir(run, epoch);
    let mut trainee = assemble(
        config,
        Backbone::new(config.backbone, device, None),
        classes,
        device,
    );
    load_module(&mut trainee.model, &dir.join(MODEL_FILE))?;
    load_module(&mut trainee.criterion, &dir.join(PROXIES_FILE))?;
    trainee.optimizer = load_optimizer(config, &dir.join(OPTIMIZER_FILE))?;
    trainee.proxy_optimizer = load_optimizer(config, &dir.join(PROXY_OPTIMIZER_FILE))?;
    tracing::info!("resumed from {}", dir.display());
    Ok(trainee)
}

fn load_optimizer(config: &TrainConfig, path: &Path) -> Result<ModuleOptimizer> {
    sgd(config.momentum, config.weight_decay)
        .load(path)
        .map_err(|error| anyhow::anyhow!("{}: {error:?}", path.display()))
}

fn save_optimizer(optimizer: &ModuleOptimizer, path: &Path) -> Result<()> {
    optimizer
        .save(path)
        .map_err(|error| anyhow::anyhow!("{}: {error:?}", path.display()))
}

fn save_checkpoint(trainee: &Trainee, run: &Path, epoch: usize, step: u64) -> Result<()> {
    let dir = checkpoint_dir(run, epoch);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    save_module(&trainee.model, &dir.join(MODEL_FILE))?;
    save_module(&trainee.criterion, &dir.join(PROXIES_FILE))?;
    save_optimizer(&trainee.optimizer, &dir.join(OPTIMIZER_FILE))?;
    save_optimizer(&trainee.proxy_optimizer, &dir.join(PROXY_OPTIMIZER_FILE))?;
    // Last: a checkpoint without this file is incomplete and ignored by resume.
    let progress = serde_json::to_string(&Progress { epoch, step })?;
    fs::write(dir.join(PROGRESS_FILE), progress)
        .with_context(|| format!("writing {}", dir.display()))?;
    Ok(())
}

/// Drops metric lines at or past `step`, written by an interrupted epoch that will be redone.
fn truncate_metrics_after(run: &Path, step: u64) -> Result<()> {
    let lines = read_metrics(run)?;
    let kept: Vec<String> = lines
        .iter()
        .filter(|line| match line {
            MetricsLine::Step { step: s, .. } => *s < step,
            MetricsLine::Eval { step: s, .. } => *s <= step,
        })
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    fs::write(run.join(METRICS_FILE), text)?;
    Ok(())
}

pub fn read_metrics(run: &Path) -> Result<Vec<MetricsLine>> {
    let path = run.join(METRICS_FILE);
    let file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut lines = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        lines.push(
            serde_json::from_str(&line).with_context(|| {
                format!("{}:{}: not a metrics line", path.display(), number + 1)
            })?,
        );
    }
    Ok(lines)
}

fn plot_run(run: &Path) -> Result<()> {
    let lines = read_metrics(run)?;
    let loss: Vec<(u64, f64)> = lines
        .iter()
        .filter_map(|line| match line {
            MetricsLine::Step { step, loss, .. } => Some((*step, *loss)),
            MetricsLine::Eval { .. } => None,
        })
        .collect();
    let recall: Vec<(u64, f64)> = lines
        .iter()
        .filter_map(|line| match line {
            MetricsLine::Eval { step, eval, .. } => eval["float"]["recall_at_k"]["1"]
                .as_f64()
                .map(|r| (*step, r)),
            MetricsLine::Step { .. } => None,
        })
        .collect();
    crate::plot::draw(&run.join(PLOT_FILE), &loss, &recall)?;
    Ok(())
}
