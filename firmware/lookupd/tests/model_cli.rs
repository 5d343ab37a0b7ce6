//! `lookupd embed` and `lookupd bench-model` end to end, through the real binary, on infer's
//! test models: the report's promised fields on both backends, and clear errors for bad input.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{fails_with, lookupd, ok, write_npy};

/// infer's test model `name`.
fn model(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../infer/tests/models")
        .join(format!("{name}.onnx"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// `bench-model`'s JSON report, or `None` (said on stderr) where the GPU backend has no adapter
/// and INFER_ALLOW_NO_GPU=1 allows that (as infer's tests do): CI installs lavapipe, so there a
/// GPU case always runs.
fn bench_report(args: &[&str]) -> Option<serde_json::Value> {
    let mut all = vec!["bench-model"];
    all.extend_from_slice(args);
    let out = lookupd(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        && stderr.contains("no GPU adapter")
        && std::env::var("INFER_ALLOW_NO_GPU").as_deref() == Ok("1")
    {
        eprintln!("skipped without a GPU adapter: lookupd {all:?}");
        return None;
    }
    assert!(out.status.success(), "lookupd {all:?} failed: {stderr}");
    Some(serde_json::from_slice(&out.stdout).expect("one JSON object"))
}

fn num(report: &serde_json::Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {report}"))
}

/// The fields every report has, whatever the backend.
fn check_common(r: &serde_json::Value, backend: &str, batch: u64, size: [u64; 2]) {
    assert_eq!(r["backend"], backend, "{r}");
    assert_eq!(r["batch"], batch, "{r}");
    assert_eq!(r["size"], serde_json::json!(size), "{r}");
    assert!(!r["adapter"].as_str().unwrap().is_empty(), "{r}");
    let ms = num(r, "ms_per_batch");
    assert!(ms > 0.0, "{r}");
    let img_per_s = num(r, "img_per_s");
    assert!(
        (img_per_s - batch as f64 * 1e3 / ms).abs() <= 1e-6 * img_per_s,
        "{r}"
    );
    for part in ["upload_ms", "run_ms", "readback_ms"] {
        assert!(num(r, part) >= 0.0, "{part}: {r}");
    }
    assert!(num(r, "run_ms") > 0.0, "{r}");
}

#[test]
fn bench_model_reports_time_and_memory_on_the_cpu() {
    // A model that leaves H and W symbolic runs at --size.
    let r = bench_report(&[
        "--model",
        &model("frame_head"),
        "--size",
        "11x9",
        "--batch",
        "3",
        "--iters",
        "3",
        "--backend",
        "cpu",
    ])
    .unwrap();
    check_common(&r, "cpu", 3, [11, 9]);
    assert_eq!(r["iters"], 3);
    assert!(r.get("stream").is_none(), "streams only with --stream: {r}");
    // Nothing on a GPU.
    assert_eq!(r["gpu_kernels"], 0, "{r}");
    assert_eq!(r["gpu_bytes"], 0, "{r}");
}

#[test]
fn bench_model_reports_kernels_and_shared_memory_on_the_gpu() {
    let Some(r) = bench_report(&[
        "--model",
        &model("inverted_residual"),
        "--batch",
        "2",
        "--iters",
        "2",
        "--backend",
        "gpu",
        "--profile",
        "--stream",
        "3",
    ]) else {
        return;
    };
    // A fixed-size model needs no --size; the report gives the size it ran at.
    check_common(&r, "gpu", 2, [7, 7]);
    let stream = &r["stream"];
    assert_eq!(stream["batches"], 3, "{r}");
    let ms = num(stream, "ms_per_batch");
    assert!(ms > 0.0, "{r}");
    assert!(
        (num(stream, "img_per_s") - 2e3 / ms).abs() <= 1e-6 * 2e3 / ms,
        "{r}"
    );
    let kernels = r["kernels"]
        .as_array()
        .expect("--profile lists the kernels");
    assert_eq!(kernels.len() as f64, num(&r, "gpu_kernels"), "{r}");
    for k in kernels {
        assert!(k["median_ms"].as_f64().unwrap() >= 0.0, "{r}");
        assert!(!k["kernel"].as_str().unwrap().is_empty(), "{r}");
    }
    // Activations share buffers: less than one buffer a tensor, and the total holds them and
    // the constants.
    let (total, activations, constants, unshared) = (
        num(&r, "gpu_bytes"),
        num(&r, "gpu_activation_bytes"),
        num(&r, "gpu_constant_bytes"),
        num(&r, "gpu_unshared_activation_bytes"),
    );
    assert!(activations > 0.0 && constants > 0.0, "{r}");
    assert!(activations < unshared, "{r}");
    assert!(total >= activations + constants, "{r}");
}

#[test]
fn bench_model_fuses_depthwise_convs_when_asked() {
    let path = model("inverted_residual");
    let run = |extra: &[&str]| {
        let mut args = vec!["--model", &path, "--iters", "1", "--backend", "gpu"];
        args.extend_from_slice(extra);
        bench_report(&args)
    };
    let (Some(plain), Some(fused)) = (run(&[]), run(&["--fuse-depthwise"])) else {
        return;
    };
    // Expand, depthwise and project; the last two as one kernel.
    assert_eq!(
        (&plain["fuse_depthwise"], num(&plain, "gpu_kernels")),
        (&serde_json::json!(false), 3.0),
        "{plain}"
    );
    assert_eq!(
        (&fused["fuse_depthwise"], num(&fused, "gpu_kernels")),
        (&serde_json::json!(true), 2.0),
        "{fused}"
    );
}

fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let npy = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
    (npy.shape().to_vec(), npy.into_vec().unwrap())
}

/// An input longer than `--batch` runs in batches (two in flight on the GPU) and gives what
/// one batch of it all gives.
#[test]
fn embed_runs_a_long_input_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    let values: Vec<f32> = (0..5 * 3 * 11 * 9)
        .map(|i| ((i * 29) % 23) as f32 / 11.0 - 1.0)
        .collect();
    write_npy(&x, &[5, 3, 11, 9], &values);
    let embed = |backend: &str, batch: &str, out: &str| {
        let out = dir.path().join(out);
        let o = lookupd(&[
            "embed",
            "--model",
            &model("embedding_head"),
            "--input",
            x.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--backend",
            backend,
            "--batch",
            batch,
        ]);
        (o, out)
    };
    let (o, whole) = embed("cpu", "5", "whole.npy");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (shape, want) = read_npy(&whole);
    assert_eq!(shape, [5, 64]);
    let (o, batched) = embed("gpu", "2", "batched.npy");
    let stderr = String::from_utf8_lossy(&o.stderr);
    if !o.status.success()
        && stderr.contains("no GPU adapter")
        && std::env::var("INFER_ALLOW_NO_GPU").as_deref() == Ok("1")
    {
        eprintln!("skipped without a GPU adapter");
        return;
    }
    assert!(o.status.success(), "{stderr}");
    let (shape, got) = read_npy(&batched);
    assert_eq!(shape, [5, 64]);
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff <= 1e-4, "GPU in batches of 2 against the CPU: {diff}");
}

#[test]
fn bad_models_inputs_and_arguments_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| -> PathBuf { dir.path().join(name) };
    let s = |p: PathBuf| p.to_str().unwrap().to_owned();
    let head = model("embedding_head");
    std::fs::write(file("junk.onnx"), b"not a model").unwrap();
    let bytes = std::fs::read(&head).unwrap();
    std::fs::write(file("cut.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    write_npy(&file("x.npy"), &[2, 3, 11, 9], &[0.5f32; 2 * 3 * 11 * 9]);
    write_npy(&file("x_other.npy"), &[1, 3, 12, 9], &[0.5f32; 3 * 12 * 9]);
    write_npy(&file("flat.npy"), &[4], &[0.5f32; 4]);
    write_npy(&file("empty.npy"), &[0, 3, 11, 9], &[] as &[f32]);
    let whole = std::fs::read(file("x.npy")).unwrap();
    std::fs::write(file("short.npy"), &whole[..whole.len() - 100]).unwrap();
    npyz::to_file_1d(file("ints.npy"), [1i64, 2, 3]).unwrap();
    let (x, out) = (s(file("x.npy")), s(file("y.npy")));
    let embed = |model: &str, input: &str, backend: &str| {
        vec![
            "embed".to_owned(),
            "--model".into(),
            model.into(),
            "--input".into(),
            input.into(),
            "--out".into(),
            out.clone(),
            "--backend".into(),
            backend.into(),
        ]
    };
    let bench_on = |backend: &str, model: &str, extra: &[&str]| {
        let mut v: Vec<String> = ["bench-model", "--model", model, "--backend", backend]
            .map(String::from)
            .to_vec();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let bench = |model: &str, extra: &[&str]| bench_on("cpu", model, extra);
    let mut bad_backend = bench(&head, &[]);
    bad_backend[4] = "tpu".into();
    let cases: Vec<(Vec<String>, &str)> = vec![
        // Models: missing, not ONNX, cut short, an op the GPU plan does not run.
        (embed(&s(file("none.onnx")), &x, "cpu"), "none.onnx"),
        (embed(&s(file("junk.onnx")), &x, "cpu"), "junk.onnx"),
        (embed(&s(file("cut.onnx")), &x, "cpu"), "cut.onnx"),
        (
            bench(&s(file("junk.onnx")), &["--size", "8x8"]),
            "junk.onnx",
        ),
        (bench_on("gpu", &model("unsupported"), &[]), "my_softmax"),
        // Inputs: missing, not float32, of another shape, without a batch of images.
        (embed(&head, &s(file("none.npy")), "cpu"), "none.npy"),
        (
            embed(&head, &s(file("ints.npy")), "cpu"),
            "expected dtype float32, found '<i8'",
        ),
        (
            embed(&head, &s(file("short.npy")), "cpu"),
            "shorter than its header says",
        ),
        (embed(&head, &s(file("x_other.npy")), "cpu"), "12 on axis 2"),
        (embed(&head, &s(file("flat.npy")), "cpu"), "flat.npy"),
        (
            embed(&head, &s(file("empty.npy")), "cpu"),
            "holds no samples",
        ),
        (
            [embed(&head, &x, "cpu"), vec!["--batch".into(), "0".into()]].concat(),
            "--batch must be at least 1",
        ),
        // Sizes: another than a fixed model's, one for a model without images, none for a
        // model that needs one, and malformed ones; batches and iterations of zero.
        (bench(&head, &["--size", "8x8"]), "fixed at (batch, 3x11x9)"),
        (
            bench(&model("unsupported"), &["--size", "8x8"]),
            "not an image batch",
        ),
        (bench(&model("frame_head"), &[]), "give the input size"),
        (bench(&head, &["--size", "11"]), "expected HxW"),
        (bench(&head, &["--size", "0x9"]), "not a positive integer"),
        (bench(&head, &["--batch", "0"]), "--batch"),
        (bench(&head, &["--iters", "0"]), "--iters"),
        // Batches and streams too large to hold: errors, not an allocation that aborts.
        (
            bench(&head, &["--batch", "100000000000"]),
            "max batch 100000000000",
        ),
        (
            bench(&head, &["--batch", "2", "--stream", "100000000000"]),
            "--stream 100000000000",
        ),
        (bad_backend, "tpu"),
    ];
    for (args, needle) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&args, needle);
    }
    assert!(!file("y.npy").exists(), "a failed embed wrote its output");
    // And a good run after them all.
    ok(&embed(&head, &x, "cpu")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(file("y.npy").is_file());
}
