//! `trainer`: the workstation side of the product-lookup appliance.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use trainer::backend::Backend;
use trainer::config::TrainConfig;
use trainer::data::{DataSpec, Preprocess};
use trainer::model::BackboneKind;
use trainer::{bench, classify, evaluate, publish, synth, train, weights};

#[derive(Parser, Debug)]
#[command(
    name = "trainer",
    version,
    about = "NormSoftmax metric learning for the product-lookup appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train an embedding model with NormSoftmax (or continue one with --resume).
    Train(Box<TrainArgs>),
    /// Get pretrained backbone weights into the cache and print their path.
    FetchWeights {
        #[arg(long, default_value = "efficientnet-lite0")]
        backbone: BackboneKind,
        /// Convert this PyTorch checkpoint (legacy or zip format) instead of downloading; the
        /// only way for resnet50, whose weights users bring.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// ImageNet top-5 of photographs with the imported classifier: checks a weight import.
    Classify {
        #[arg(long, default_value = "efficientnet-lite0")]
        backbone: BackboneKind,
        /// Weights file (.bpk or a PyTorch checkpoint); default: the cache.
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long, default_value = "flex")]
        backend: Backend,
        /// Print one JSON array instead of text.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Evaluate a run's checkpoint on its test split: Recall@K, NMI, R-precision and MAP@R,
    /// for the float embeddings (cosine) and the binary codes (Hamming).
    Eval {
        /// The run to evaluate (or use --pretrained).
        #[arg(required_unless_present = "pretrained")]
        run: Option<PathBuf>,
        /// Evaluate the ImageNet-pretrained backbone untouched (pooling and LayerNorm, no
        /// fine-tuning) on --data: the baseline a run should beat.
        #[arg(long, conflicts_with = "run", requires = "data")]
        pretrained: Option<BackboneKind>,
        /// With --pretrained: KIND:PATH of the data whose test split is evaluated.
        #[arg(long)]
        data: Option<String>,
        /// With --pretrained: input side and resize.
        #[arg(long, default_value_t = 224)]
        image_size: u32,
        #[arg(long, default_value_t = 256)]
        resize: u32,
        /// Epoch of the checkpoint (0-based); default: the last.
        #[arg(long)]
        checkpoint: Option<usize>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also write embeddings.npy, codes.npy and labels.npy here.
        #[arg(long)]
        dump: Option<PathBuf>,
        /// Backend to embed with; default: the run's.
        #[arg(long)]
        backend: Option<Backend>,
    },
    /// Export a run as a bundle: model.onnx (checked against the burn model on real images
    /// before anything is written) and manifest.toml.
    Export {
        run: PathBuf,
        /// The bundle directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Epoch of the checkpoint (0-based); default: the last.
        #[arg(long)]
        checkpoint: Option<usize>,
    },
    /// Embed catalogue images with the device runtime (firmware/infer) on the bundle's model
    /// and write the bundle's gallery.gal and labels.tsv.
    Gallery {
        #[arg(long)]
        bundle: PathBuf,
        /// Every image of a dataset (KIND:PATH), the class name as the SKU.
        #[arg(long, conflicts_with = "images", required_unless_present = "images")]
        data: Option<String>,
        /// A TSV file of `SKU<TAB>IMAGE PATH` lines.
        #[arg(long)]
        images: Option<PathBuf>,
        /// Add to the existing gallery instead of replacing it.
        #[arg(long)]
        append: bool,
        /// Inference runtime: auto (GPU if present, else CPU), gpu or cpu.
        #[arg(long, default_value = "auto")]
        runtime: infer::Backend,
    },
    /// Synthesise a retail catalogue in the folder layout: per item a clean catalogue shot and
    /// camera shots (pose, clutter, hand, light, blur, noise), plus split.txt, catalogue.tsv,
    /// queries.tsv (camera shots of the unseen half) and synth.json. Deterministic by seed.
    Synth {
        /// The directory to write: new, empty, or a previous synth output (replaced).
        #[arg(long)]
        out: PathBuf,
        /// Number of products; the first half trains, the second half is unseen.
        #[arg(long, default_value_t = 40)]
        items: usize,
        /// Camera shots per product.
        #[arg(long, default_value_t = 6)]
        views: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Side of the square images in pixels.
        #[arg(long, default_value_t = 256)]
        size: u32,
        /// Font file for the printed names; default: DejaVu from the system, else bar patterns.
        #[arg(long)]
        font: Option<PathBuf>,
        /// Print names as bar patterns, with no font: identical output on every machine.
        #[arg(long, conflicts_with = "font")]
        no_font: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Training speed (images per second) and peak memory of the training step on random
    /// images; prints one JSON line. See trainer/bench/vs_pytorch.sh for the comparison.
    Bench {
        #[arg(long, default_value = "efficientnet-lite0")]
        backbone: BackboneKind,
        #[arg(long, default_value = "flex")]
        backend: Backend,
        #[arg(long, default_value_t = 128)]
        image_size: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 100)]
        classes: usize,
    },
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Continue the run in this directory after its last checkpoint; other options are
    /// taken from its config.toml.
    #[arg(long, conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// The run directory to create.
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// KIND:PATH with KIND in cub, cars196, sop, inshop, folder, fashion-mnist.
    #[arg(long, required_unless_present = "resume")]
    data: Option<String>,
    /// Class split file for folder data (lines `train CLASS` / `test CLASS`).
    #[arg(long)]
    split: Option<PathBuf>,
    #[arg(long, default_value = "efficientnet-lite0")]
    backbone: BackboneKind,
    /// Pretrained weights (.bpk or a PyTorch checkpoint); default: the cache.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Start from random weights instead of pretrained ones.
    #[arg(long)]
    random_init: bool,
    /// Embedding width (= code bits); default: the backbone's pooled width (no linear layer).
    #[arg(long)]
    embedding_dim: Option<usize>,
    #[arg(long, default_value_t = TrainConfig::default_temperature())]
    temperature: f64,
    /// Learning-rate multiplier of the class proxies.
    #[arg(long, default_value_t = 1.0)]
    proxy_lr_multiplier: f64,
    /// Share of the classes in each step's softmax: the batch's plus random others.
    #[arg(long, default_value_t = 1.0)]
    class_fraction: f64,
    #[arg(long, default_value_t = 75)]
    batch: usize,
    /// Images per class in a batch; default: 25 for cub, cars196 and fashion-mnist, else 5.
    #[arg(long)]
    images_per_class: Option<usize>,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Steps per epoch; default: training images / batch.
    #[arg(long)]
    steps_per_epoch: Option<usize>,
    /// Epochs at the start that train only the head and the proxies.
    #[arg(long, default_value_t = 1)]
    warmup_epochs: usize,
    /// Learning rate; default: 0.001 for cub, else 0.01.
    #[arg(long)]
    lr: Option<f64>,
    /// Multiply the learning rate by 0.1 every this many epochs; default: half the epochs.
    #[arg(long)]
    lr_step: Option<usize>,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Freeze BatchNorm: running statistics, fixed scale and shift.
    #[arg(long)]
    freeze_bn: bool,
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    #[arg(long, default_value_t = 256)]
    resize: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "flex")]
    backend: Backend,
    /// Data parallel: split each batch across this many devices of the backend (GPUs 0..N;
    /// on a CPU backend, N replicas in threads), gradients averaged on the first.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Skip the evaluation after each epoch.
    #[arg(long)]
    no_eval: bool,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig> {
        let data = self.data.clone().context("--data is required")?;
        let spec: DataSpec = data.parse()?;
        let (recipe_lr, recipe_ipc) = TrainConfig::recipe_for(spec.kind.name());
        let config = TrainConfig {
            data,
            split: self.split.clone(),
            backbone: self.backbone,
            weights: self.weights.clone(),
            random_init: self.random_init,
            embedding_dim: self.embedding_dim.unwrap_or(self.backbone.features()),
            temperature: self.temperature,
            proxy_lr_multiplier: self.proxy_lr_multiplier,
            class_fraction: self.class_fraction,
            batch: self.batch,
            images_per_class: self.images_per_class.unwrap_or(recipe_ipc),
            epochs: self.epochs,
            steps_per_epoch: self.steps_per_epoch,
            warmup_epochs: self.warmup_epochs,
            lr: self.lr.unwrap_or(recipe_lr),
            lr_step: self.lr_step.unwrap_or(self.epochs.div_ceil(2).max(1)),
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            freeze_bn: self.freeze_bn,
            image_size: self.image_size,
            resize: self.resize,
            seed: self.seed,
            backend: self.backend,
            devices: self.devices,
            eval_each_epoch: !self.no_eval,
        };
        config.check()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAINER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => match &args.resume {
            Some(run) => train::resume(run),
            None => {
                let out = args.out.clone().context("--out is required")?;
                train::train_new(args.config()?, &out)
            }
        },
        Command::FetchWeights { backbone, from } => {
            let device = Backend::Flex.device()?;
            let path = match (backbone, from) {
                (_, Some(checkpoint)) => weights::install(backbone, &checkpoint, &device)?,
                (BackboneKind::EfficientnetLite0, None) => weights::fetch_lite0(&device)?,
                (BackboneKind::Resnet50, None) => bail!(
                    "resnet50 weights are not downloaded: pass your checkpoint with --from FILE (torchvision's resnet50 state dict)"
                ),
            };
            println!("{}", path.display());
            Ok(())
        }
        Command::Classify {
            backbone,
            weights: explicit,
            backend,
            json,
            images,
        } => {
            let device = backend.device()?;
            let model = weights::load_pretrained(backbone, explicit.as_deref(), &device)?;
            let predictions = classify::classify(&model, &images, &Preprocess::default(), &device)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&predictions)?);
            } else {
                for prediction in &predictions {
                    println!("{}", prediction.image.display());
                    for class in &prediction.top5 {
                        println!(
                            "  {:>4} {:>6.2}%  {}",
                            class.class,
                            100.0 * class.prob,
                            class.name.unwrap_or("")
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Eval {
            run,
            pretrained,
            data,
            image_size,
            resize,
            checkpoint,
            json,
            dump,
            backend,
        } => {
            let report = match (run, pretrained, data) {
                (Some(run), _, _) => evaluate_run(&run, checkpoint, backend, dump.as_deref())?,
                (None, Some(kind), Some(data)) => evaluate_pretrained(
                    kind,
                    &data,
                    Preprocess::new(image_size, resize)?,
                    backend.unwrap_or(Backend::Flex),
                    dump.as_deref(),
                )?,
                _ => bail!("give a run, or --pretrained BACKBONE with --data KIND:PATH"),
            };
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        }
        Command::Export {
            run,
            out,
            checkpoint,
        } => {
            let report = publish::export_run(&run, checkpoint, &out)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Gallery {
            bundle,
            data,
            images,
            append,
            runtime,
        } => {
            let catalogue = match (data, images) {
                (Some(data), None) => publish::Catalogue::Data(data.parse()?),
                (None, Some(list)) => publish::Catalogue::List(list),
                _ => bail!("give exactly one of --data and --images"),
            };
            let report = publish::build_gallery(&bundle, &catalogue, append, runtime)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Synth {
            out,
            items,
            views,
            seed,
            size,
            font,
            no_font,
            json,
        } => {
            let font = match (font, no_font) {
                (Some(path), _) => synth::FontChoice::File(path),
                (None, true) => synth::FontChoice::Bars,
                (None, false) => synth::FontChoice::System,
            };
            let report = synth::synthesize(&synth::SynthOptions {
                out,
                items,
                views,
                seed,
                size,
                font,
                progress: !json,
            })?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{}: {} items ({} train, {} unseen), {} images at {} px, seed {}, in {:.1} s",
                    report.out.display(),
                    report.items,
                    report.train_items,
                    report.test_items,
                    report.images,
                    report.size,
                    report.seed,
                    report.seconds
                );
            }
            Ok(())
        }
        Command::Bench {
            backbone,
            backend,
            image_size,
            batch,
            steps,
            warmup,
            classes,
        } => {
            trainer::config::check_image_batch(batch, image_size)?;
            if steps == 0 || classes == 0 {
                bail!("--steps and --classes must be positive");
            }
            let settings = bench::BenchSettings {
                backbone,
                backend,
                image_size,
                batch,
                steps,
                warmup,
                classes,
            };
            println!(
                "{}",
                serde_json::to_string(&bench::bench_training(&settings)?)?
            );
            Ok(())
        }
    }
}

/// `trainer eval`: the metrics of a checkpoint, and optionally the files to recompute them.
/// `trainer eval --pretrained`: the untouched ImageNet backbone as the baseline.
fn evaluate_pretrained(
    kind: BackboneKind,
    data: &str,
    preprocess: Preprocess,
    backend: Backend,
    dump: Option<&std::path::Path>,
) -> Result<serde_json::Value> {
    let device = backend.device()?;
    let backbone = weights::load_pretrained(kind, None, &device)?;
    let model = trainer::model::EmbeddingModel::new(backbone, kind.features(), &device);
    let mut value = evaluate_and_dump(&model, &data.parse()?, preprocess, &device, dump)?;
    value["pretrained"] = serde_json::json!(kind);
    value["data"] = serde_json::json!(data);
    Ok(value)
}

/// Evaluates `model` on the test split of `spec`, writes the dump if asked, and returns the
/// report as JSON with the image count and the embedding width.
fn evaluate_and_dump(
    model: &trainer::model::EmbeddingModel,
    spec: &DataSpec,
    preprocess: Preprocess,
    device: &trainer::burn::tensor::Device,
    dump: Option<&std::path::Path>,
) -> Result<serde_json::Value> {
    let dataset = trainer::data::load(spec)?;
    let (report, embedded) =
        evaluate::evaluate_model(model, &dataset, preprocess, spec.kind, device)?;
    if let Some(dir) = dump {
        evaluate::dump(dir, &embedded)?;
    }
    let mut value = serde_json::to_value(&report)?;
    value["images"] = serde_json::json!(embedded.labels.len());
    value["embedding_dim"] = serde_json::json!(embedded.dim);
    Ok(value)
}

fn evaluate_run(
    run: &std::path::Path,
    checkpoint: Option<usize>,
    backend: Option<Backend>,
    dump: Option<&std::path::Path>,
) -> Result<serde_json::Value> {
    let config = train::read_config(run)?;
    let device = backend.unwrap_or(config.backend).device()?;
    let (config, model, epoch) = train::load_model(run, checkpoint, &device)?;
    let preprocess = Preprocess::new(config.image_size, config.resize)?;
    let mut value = evaluate_and_dump(
        &model,
        &train::data_spec(&config)?,
        preprocess,
        &device,
        dump,
    )?;
    value["run"] = serde_json::json!(run);
    value["epoch"] = serde_json::json!(epoch);
    value["data"] = serde_json::json!(config.data);
    Ok(value)
}
