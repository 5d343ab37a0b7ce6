//! The real `lookupd` binary, run as a user would.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn lookupd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lookupd"))
        .args(args)
        .env("LOOKUPD_LOG", "warn")
        .output()
        .expect("run lookupd")
}

/// Succeeds; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = lookupd(args);
    assert!(
        out.status.success(),
        "lookupd {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fails with an error, not a panic; returns (stdout, stderr).
pub fn fails(args: &[&str]) -> (String, String) {
    let out = lookupd(args);
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(
        !out.status.success(),
        "lookupd {args:?} should fail: {stdout}"
    );
    assert!(
        !stderr.contains("panicked"),
        "lookupd {args:?} panicked: {stderr}"
    );
    (stdout, stderr)
}

/// Fails, and says `needle` on stderr.
pub fn fails_with(args: &[&str], needle: &str) {
    let (_, err) = fails(args);
    assert!(
        err.contains(needle),
        "lookupd {args:?}: expected {needle:?} in: {err}"
    );
}

/// Writes `data` as an .npy array of `shape` (the commands' inputs).
pub fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) {
    use npyz::WriterBuilder;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(
            std::fs::File::create(path).unwrap(),
        ))
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}
