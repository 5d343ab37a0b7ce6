//! The whole system, as a device would live it: synthesise a tiny catalogue, train a few steps,
//! export the bundle, enrol the catalogue, sign and pack it with `flash`, deploy it A/B to a
//! device, run `lookupd selftest` and `lookupd run` from the deployed slot there (over ssh for an
//! `ssh://` device) on camera frames with button presses, and check the reported items.
//!
//! Hardware in the loop: the scenario runs against the rig the environment names
//! (`LOOKUP_HIL_CAMERA`, `LOOKUP_HIL_TRIGGER`, `LOOKUP_HIL_PRESS_TIMEOUT_S`, `LOOKUP_HIL_LED`,
//! `LOOKUP_HIL_TARGET`, `LOOKUP_HIL_RUNTIME`; see `system_tests::rig`), each part not named
//! emulated, and prints which rig it used. A second test runs the same scenario on an emulated
//! ssh device (a real sshd on 127.0.0.1), so the ssh path is covered end to end without one.
//!
//! `cargo hil` runs this suite with its output shown.

use std::path::Path;

use serde_json::Value;
use system_tests::binary;
use system_tests::button::Operator;
use system_tests::device::Device;
use system_tests::pipeline::{
    Button, StdinPresses, expected_sku, json_of, lookup_session, read_list, run_args, run_command,
    run_tool, run_tool_env, stage_frames, train_briefly,
};
use system_tests::rig::{Rig, Trigger};

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary paths")
}

#[test]
fn a_deployed_bundle_names_the_products_it_was_given() {
    scenario(Rig::from_env());
}

#[test]
fn the_same_on_an_emulated_ssh_device() {
    scenario(Rig::emulated_ssh());
}

fn scenario(mut rig: Rig) {
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
    train_briefly(&trainer, &data, &run, 1).unwrap();
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

    // Release: sign and pack with a lookupd binary for the device, deploy A/B.
    let target = rig.target_spec();
    let ssh_options = rig.ssh_options();
    let device = Device::from_target(&target, &ssh_options).unwrap();
    let arch = device.arch().unwrap();
    run_tool(&flash, &["keygen", "--out", path(&keys)]).unwrap();
    let (archive, private) = (dir("release.flash"), keys.join("private"));
    let mut pack = vec![
        "pack",
        "--bundle",
        path(&bundle),
        "--key",
        path(&private),
        "--out",
        path(&archive),
    ];
    let triple = format!("{arch}-unknown-linux-gnu");
    if arch == std::env::consts::ARCH {
        pack.extend(["--target", "host", "--lookupd", path(&lookupd)]);
    } else {
        println!("the device is {arch}: flash pack builds lookupd for {triple}");
        pack.extend(["--target", &triple]);
    }
    run_tool(&flash, &pack).unwrap();
    let flash_env = [("FLASH_SSH_OPTIONS", ssh_options.as_str())];
    let deployed = run_tool_env(
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
        &flash_env,
    )
    .unwrap();
    println!("deploy: {}", json_of(&deployed).unwrap()["message"]);
    let status =
        json_of(&run_tool_env(&flash, &["status", "--to", &target, "--json"], &flash_env).unwrap())
            .unwrap();
    assert!(
        status["active"].is_string() && status["active"] == status["good"],
        "the deployed slot is not active and confirmed: {status}"
    );

    // Device: the deployed slot's own binary checks its bundle, then runs the appliance.
    let device_bundle = device.current("bundle");
    let runtime = rig.runtime.clone();
    let selftest = run_command(&mut device.lookupd(&[
        "selftest".into(),
        "--bundle".into(),
        device_bundle.clone(),
        "--runtime".into(),
        runtime.clone(),
        "--json".into(),
    ]))
    .unwrap();
    let selftest = json_of(&selftest).unwrap();
    assert!(selftest["ok"] == true, "{selftest}");
    println!(
        "selftest on the device ({}): ok, backend {}",
        device.current("bin/lookupd"),
        selftest["backend"]
    );

    let shots = read_list(&catalogue, "catalogue.tsv").unwrap();
    let frames = dir("frames");
    let n = stage_frames(&shots, &frames, 5).unwrap();
    // The replay camera's frames, where the device reads them (copied there over ssh).
    let staged = match rig.camera {
        Some(_) => None,
        None => Some(device.stage(&frames).unwrap()),
    };
    let camera = match (&rig.camera, &staged) {
        (Some(real), _) => real.clone(),
        (None, Some(staged)) => format!("file://{}?step", staged.path()),
        (None, None) => unreachable!("frames are staged without a real camera"),
    };
    let gpio = rig.gpio_trigger();
    let mut flags = vec![
        "--camera",
        &camera,
        "--trigger",
        "stdin",
        "--runtime",
        &runtime,
    ];
    if let Some(gpio) = &gpio {
        flags.extend(["--trigger", gpio]);
    }
    if let Some(led) = &rig.led {
        flags.extend(["--led", led]);
    }
    // What each press shows: the replay camera steps through the staged frames in name order.
    let mut names: Vec<String> = std::fs::read_dir(&frames)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let hints = names
        .iter()
        .map(|name| match &rig.camera {
            Some(_) => "hold a catalogue item under the camera".to_string(),
            None => format!(
                "the replay camera shows {}",
                expected_sku(name).unwrap_or(name)
            ),
        })
        .collect();
    let mut operator;
    let mut scripted = StdinPresses;
    let button: &mut dyn Button = match &mut rig.trigger {
        Trigger::Real(spec) => {
            operator = Operator {
                trigger: spec.clone(),
                timeout: Rig::press_timeout(),
                hints,
            };
            &mut operator
        }
        Trigger::Sim(sim) => sim,
        Trigger::Scripted(_) => &mut scripted,
    };
    let mut started = Value::Null;
    let reports = lookup_session(
        device.lookupd(&run_args(&device_bundle, &flags)),
        n,
        button,
        |line| {
            if line["event"] == "started" {
                started = line.clone();
            }
            if line["event"] != "lookup" {
                println!("lookupd: {line}");
            }
        },
    )
    .unwrap();

    // lookupd ran on the device, from the deployed slot, on the frames staged there.
    assert_eq!(started["bundle"], device_bundle.as_str(), "{started}");
    assert_eq!(started["camera"], camera.as_str(), "{started}");
    if let Some(staged) = staged {
        let at = staged.path().to_string();
        staged.remove().unwrap();
        if let Device::Ssh(ssh) = &device {
            // The temporary copy is gone (a local device read the frames where they were).
            assert!(
                !device.exists(&at).unwrap(),
                "{at} is still on the device after the run"
            );
            println!(
                "frames copied with scp to {at} on {} for the run, removed after it",
                ssh.url
            );
        }
    }

    assert_eq!(reports.len(), n, "one report per press");
    let trigger = rig.reported_trigger();
    for r in &reports {
        assert_eq!(
            r.trigger, trigger,
            "{}: started by {:?}",
            r.frame, r.trigger
        );
    }
    if rig.camera.is_some() {
        println!(
            "real camera: {} lookups reported, each started by {trigger} (items not checked)",
            reports.len()
        );
        return;
    }
    for r in &reports {
        // The catalogue shot itself: its own item is among the exact matches (a barely trained
        // model may give two products the same code, which tie at distance 0).
        let want = expected_sku(&r.frame).unwrap();
        assert!(
            r.hits.iter().any(|(sku, d)| sku == want && *d == 0),
            "{}: {:?}",
            r.frame,
            r.hits
        );
    }
    println!(
        "{} lookups on the device, each started by {trigger} and naming its product",
        reports.len()
    );
}
