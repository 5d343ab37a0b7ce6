//! The whole system, as a device would live it: synthesise a tiny catalogue, train a few steps,
//! export the bundle, enrol the catalogue, sign and pack it with `flash`, deploy it A/B into a
//! target, run `lookupd selftest` and `lookupd run` from the deployed slot on camera frames with
//! triggers, and check the reported items.
//!
//! Hardware in the loop: the same scenario runs against a real rig when the environment names
//! one, else against the emulated rig, and the test prints which:
//! - `LOOKUP_HIL_CAMERA` (`/dev/video0` or any camera URI): frames from a real camera instead of
//!   the replay camera (the items shown cannot be known: every lookup must still be reported);
//! - `LOOKUP_HIL_TRIGGER` (`gpio:gpiochip0:17:active-low`): a real button, alongside the script;
//! - `LOOKUP_HIL_LED` (`gpiochip0:18`): the status LED;
//! - `LOOKUP_HIL_TARGET` (`dir:PATH`; `ssh://` targets are deployed to and checked with `flash
//!   status`): where the bundle is deployed; default a temporary directory.
//!
//! `cargo hil` runs this suite with its output shown.

use std::path::{Path, PathBuf};

use system_tests::binary;
use system_tests::pipeline::{json_of, lookup_run_with, read_list, run_tool, stage_frames};

/// The rig a run uses: each part real when the environment names it.
struct Rig {
    camera: Option<String>,
    trigger: Option<String>,
    led: Option<String>,
    target: Option<String>,
}

impl Rig {
    fn from_env() -> Rig {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Rig {
            camera: var("LOOKUP_HIL_CAMERA").map(|c| {
                if c.contains("://") {
                    c
                } else {
                    format!("v4l2://{c}")
                }
            }),
            trigger: var("LOOKUP_HIL_TRIGGER"),
            led: var("LOOKUP_HIL_LED"),
            target: var("LOOKUP_HIL_TARGET"),
        }
    }

    fn describe(&self) -> String {
        let part = |real: &Option<String>, emulated: &str| match real {
            Some(v) => format!("REAL {v}"),
            None => format!("emulated ({emulated})"),
        };
        format!(
            "rig: camera {}; trigger {}; LED {}; target {}",
            part(&self.camera, "replay camera, one frame per trigger"),
            part(&self.trigger, "scripted stdin presses"),
            part(&self.led, "none"),
            part(&self.target, "a temporary directory"),
        )
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary paths")
}

#[test]
fn a_deployed_bundle_names_the_products_it_was_given() {
    let rig = Rig::from_env();
    println!("{}", rig.describe());
    let (trainer, lookupd, flash) = (
        binary("trainer", "trainer"),
        binary("lookupd", "lookupd"),
        binary("flash", "flash"),
    );
    let work = tempfile::tempdir().unwrap();
    let dir = |name: &str| work.path().join(name);
    let (catalogue, run, bundle, keys) = (dir("catalogue"), dir("run"), dir("bundle"), dir("keys"));

    // Workstation: catalogue, a few training steps, the bundle, the gallery of every item.
    run_tool(
        &trainer,
        &[
            "synth",
            "--out",
            path(&catalogue),
            "--items",
            "6",
            "--views",
            "2",
            "--size",
            "64",
            "--seed",
            "3",
            "--no-font",
        ],
    )
    .unwrap();
    let data = format!("folder:{}", catalogue.display());
    run_tool(
        &trainer,
        &[
            "train",
            "--data",
            &data,
            "--out",
            path(&run),
            "--epochs",
            "2",
            "--warmup-epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--batch",
            "6",
            "--images-per-class",
            "2",
            "--image-size",
            "64",
            "--resize",
            "72",
            "--embedding-dim",
            "128",
            "--no-eval",
        ],
    )
    .unwrap();
    run_tool(&trainer, &["export", path(&run), "--out", path(&bundle)]).unwrap();
    let list = catalogue.join("catalogue.tsv");
    let gallery = json_of(
        &run_tool(
            &trainer,
            &[
                "gallery",
                "--bundle",
                path(&bundle),
                "--images",
                path(&list),
                "--runtime",
                "cpu",
            ],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(gallery["items"], 6, "{gallery}");

    // Release: sign and pack with the lookupd binary for this machine, deploy A/B.
    run_tool(&flash, &["keygen", "--out", path(&keys)]).unwrap();
    let archive = dir("release.flash");
    run_tool(
        &flash,
        &[
            "pack",
            "--bundle",
            path(&bundle),
            "--key",
            path(&keys.join("private")),
            "--target",
            "host",
            "--lookupd",
            path(&lookupd),
            "--out",
            path(&archive),
        ],
    )
    .unwrap();
    let target = rig.target.clone().unwrap_or_else(|| {
        std::fs::create_dir_all(dir("device")).unwrap();
        format!("dir:{}", dir("device").display())
    });
    let deployed = run_tool(
        &flash,
        &[
            "deploy",
            path(&archive),
            "--to",
            &target,
            "--trust-key",
            path(&keys.join("public")),
            "--json",
        ],
    )
    .unwrap();
    println!("deploy: {}", deployed.trim());
    let status =
        json_of(&run_tool(&flash, &["status", "--to", &target, "--json"]).unwrap()).unwrap();
    println!("status: {status}");
    let Some(device) = target.strip_prefix("dir:").map(PathBuf::from) else {
        // An ssh target: deploy ran the self-test there; the lookups below need the device's
        // own camera, so this rig stops at the confirmed deploy.
        assert!(status.to_string().contains("good"), "{status}");
        println!("ssh target: deployed and self-tested there (see status); lookups run on it");
        return;
    };

    // Device: the deployed slot's own binary checks its bundle, then runs the appliance.
    let slot = device.join("current");
    let (device_lookupd, device_bundle) = (slot.join("bin/lookupd"), slot.join("bundle"));
    let selftest = run_tool(
        &device_lookupd,
        &[
            "selftest",
            "--bundle",
            path(&device_bundle),
            "--runtime",
            "cpu",
            "--json",
        ],
    )
    .unwrap();
    assert!(json_of(&selftest).unwrap()["ok"] == true, "{selftest}");

    let shots = read_list(&catalogue, "catalogue.tsv").unwrap();
    let frames = dir("frames");
    let n = stage_frames(&shots, &frames, 5).unwrap();
    let camera = rig
        .camera
        .clone()
        .unwrap_or_else(|| format!("file://{}?step", frames.display()));
    let mut flags = vec![
        "--camera",
        &camera,
        "--trigger",
        "stdin",
        "--runtime",
        "cpu",
    ];
    if let Some(trigger) = &rig.trigger {
        flags.extend(["--trigger", trigger]);
    }
    if let Some(led) = &rig.led {
        flags.extend(["--led", led]);
    }
    let reports = lookup_run_with(&device_lookupd, &device_bundle, &flags, n, |line| {
        if line["event"] != "lookup" {
            println!("lookupd: {line}");
        }
    })
    .unwrap();
    assert_eq!(reports.len(), n, "one report per trigger");
    if rig.camera.is_some() {
        println!(
            "real camera: {} lookups reported (items not checked)",
            reports.len()
        );
        return;
    }
    for r in &reports {
        // The catalogue shot itself: its own item is among the exact matches (a barely trained
        // model may give two products the same code, which tie at distance 0).
        let want = system_tests::pipeline::expected_sku(&r.frame).unwrap();
        assert!(
            r.hits.iter().any(|(sku, d)| sku == want && *d == 0),
            "{}: {:?}",
            r.frame,
            r.hits
        );
    }
    println!("{} lookups, each naming its product", reports.len());
}
