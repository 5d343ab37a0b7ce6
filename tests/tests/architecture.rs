//! Rules of the house, checked: the device crates never reach training code.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

/// The crates that run on the device.
const DEVICE_CRATES: &[&str] = &["bundle", "gallery", "infer", "lookupd", "resample"];
/// What they must never depend on, directly or not.
const FORBIDDEN: &[&str] = &[
    "trainer",
    "burn",
    "burn-core",
    "burn-train",
    "tch",
    "torch-sys",
];

#[test]
fn device_crates_never_reach_training_code() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let deps: HashMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let d = n["deps"].as_array().unwrap();
            let ids = d.iter().map(|d| d["pkg"].as_str().unwrap()).collect();
            (n["id"].as_str().unwrap(), ids)
        })
        .collect();
    let mut checked = 0;
    for (id, name) in &names {
        if !DEVICE_CRATES.contains(name) || !deps.contains_key(id) {
            continue;
        }
        checked += 1;
        let mut seen = BTreeSet::new();
        let mut stack = vec![*id];
        while let Some(cur) = stack.pop() {
            for dep in deps.get(cur).into_iter().flatten() {
                if seen.insert(*dep) {
                    let dep_name = names[dep];
                    assert!(
                        !FORBIDDEN.contains(&dep_name),
                        "device crate {name} depends on {dep_name}"
                    );
                    stack.push(dep);
                }
            }
        }
    }
    assert!(
        checked >= 2,
        "the device crates were not found in the workspace"
    );
}
