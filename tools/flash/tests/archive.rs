//! Packing, and every way an archive can be wrong: tampered members, manifest and signature,
//! unsigned, wrong key, wrong architecture, missing and extra members. Each is refused with a
//! message naming the problem, and the target is left exactly as it was.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use common::*;

struct Fixture {
    dir: tempfile::TempDir,
    private: PathBuf,
    public: PathBuf,
    archive: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = keys(dir.path(), "main");
        let bundle = dir.path().join("bundle");
        bundle_fixture::build_bundle(&bundle, "v1");
        let archive = dir.path().join("v1.flash");
        pack(&bundle, &private, &stub_lookupd(true), "v1", &archive);
        Fixture {
            dir,
            private,
            public,
            archive,
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// A target that has had one good deploy (so it trusts the main key).
    fn deployed_target(&self, name: &str) -> PathBuf {
        let root = self.path(name);
        fs::create_dir_all(&root).unwrap();
        flash_ok(&[
            "deploy",
            self.archive.to_str().unwrap(),
            "--to",
            &format!("dir:{}", root.display()),
            "--trust-key",
            self.public.to_str().unwrap(),
        ]);
        root
    }
}

/// Every path under `root` with its content hash or link text: what "unchanged" means.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_symlink() {
                out.insert(rel, format!("-> {}", fs::read_link(&p).unwrap().display()));
            } else if meta.is_dir() {
                out.insert(rel.clone(), "dir".into());
                walk(root, &p, out);
            } else {
                out.insert(rel, sha256(&p));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

fn read_members(archive: &Path) -> Vec<(String, Vec<u8>, u32)> {
    let file = fs::File::open(archive).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes, mode)
        })
        .collect()
}

fn write_members(archive: &Path, members: &[(String, Vec<u8>, u32)]) {
    let file = fs::File::create(archive).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    for (name, bytes, mode) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

fn deploy_args<'a>(archive: &'a str, target: &'a str) -> Vec<&'a str> {
    vec!["deploy", archive, "--to", target]
}

#[test]
fn pack_writes_manifest_signature_then_every_file() {
    let f = Fixture::new();
    let members = read_members(&f.archive);
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "flash-manifest.toml",
            "flash-manifest.sig",
            "bundle/manifest.toml",
            "bundle/gallery.gal",
            "bundle/labels.tsv",
            "bundle/model.onnx",
            "bin/lookupd"
        ]
    );
    let manifest: toml::Table =
        toml::from_str(std::str::from_utf8(&members[0].1).unwrap()).unwrap();
    assert_eq!(manifest["version"].as_str(), Some("v1"));
    assert_eq!(
        manifest["target"].as_str().unwrap().split('-').next(),
        Some(std::env::consts::ARCH)
    );
    let files = manifest["files"].as_table().unwrap();
    for (name, bytes, _) in &members[2..] {
        let entry = &files[name.as_str()];
        use sha2::Digest;
        assert_eq!(
            entry["sha256"].as_str().unwrap(),
            bundle::to_hex(&sha2::Sha256::digest(bytes))
        );
        assert_eq!(entry["bytes"].as_integer().unwrap() as usize, bytes.len());
    }
    assert_eq!(files["bin/lookupd"]["executable"].as_bool(), Some(true));
}

#[test]
fn pack_refuses_a_bad_bundle_a_wrong_binary_and_a_wrong_key() {
    let f = Fixture::new();
    let bundle = f.path("bundle");
    let out = f.path("x.flash");
    let args = |lookupd: &Path, target: &str, key: &Path| -> Vec<String> {
        [
            "pack",
            "--bundle",
            bundle.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--target",
            target,
            "--lookupd",
            lookupd.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let run = |a: Vec<String>, needles: &[&str]| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        flash_fails(&a, needles);
        assert!(!out.exists(), "a refused pack left {}", out.display());
    };
    // A binary of this machine is not an aarch64 (or x86_64) binary.
    let other = if std::env::consts::ARCH == "aarch64" {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-unknown-linux-gnu"
    };
    run(
        args(&stub_lookupd(true), other, &f.private),
        &["built for", other],
    );
    // Not an ELF at all.
    run(
        args(&bundle.join("labels.tsv"), "host", &f.private),
        &["not an ELF"],
    );
    run(
        args(&stub_lookupd(true), "host", &f.path("nokey/private")),
        &["nokey/private"],
    );
    // A bundle file changed after the manifest was written.
    let mut labels = fs::read(bundle.join("labels.tsv")).unwrap();
    labels.push(b'\n');
    fs::write(bundle.join("labels.tsv"), labels).unwrap();
    run(
        args(&stub_lookupd(true), "host", &f.private),
        &["labels.tsv"],
    );
    fs::remove_file(bundle.join("gallery.gal")).unwrap();
    run(
        args(&stub_lookupd(true), "host", &f.private),
        &["gallery.gal"],
    );
}

#[test]
fn first_deploy_needs_a_trusted_key_and_never_replaces_one() {
    let f = Fixture::new();
    let root = f.path("target");
    fs::create_dir_all(&root).unwrap();
    let target = format!("dir:{}", root.display());
    flash_fails(
        &deploy_args(f.archive.to_str().unwrap(), &target),
        &["no trusted.pub", "--trust-key"],
    );
    assert!(snapshot(&root).is_empty());
    // A tampered archive with --trust-key still installs nothing.
    let mut members = read_members(&f.archive);
    members[3].1[100] ^= 1;
    let bad = f.path("bad.flash");
    write_members(&bad, &members);
    let mut a = deploy_args(bad.to_str().unwrap(), &target);
    a.extend(["--trust-key", f.public.to_str().unwrap()]);
    flash_fails(&a, &["bundle/gallery.gal", "tampered"]);
    assert!(snapshot(&root).is_empty(), "{:?}", snapshot(&root));

    let root = f.deployed_target("t2");
    let target = format!("dir:{}", root.display());
    let (_, other_public) = keys(f.dir.path(), "other");
    let before = snapshot(&root);
    let mut a = deploy_args(f.archive.to_str().unwrap(), &target);
    a.extend(["--trust-key", other_public.to_str().unwrap()]);
    flash_fails(&a, &["trusts key", "not replaced"]);
    assert_eq!(snapshot(&root), before);
}

#[test]
fn tampered_unsigned_wrong_key_and_wrong_arch_are_refused_before_the_target_changes() {
    let f = Fixture::new();
    let root = f.deployed_target("target");
    let target = format!("dir:{}", root.display());
    let before = snapshot(&root);
    let members = read_members(&f.archive);
    let bad = f.path("bad.flash");
    let refuse = |label: &str, needles: &[&str]| {
        let all = flash_fails(&deploy_args(bad.to_str().unwrap(), &target), needles);
        assert_eq!(
            snapshot(&root),
            before,
            "{label} changed the target:\n{all}"
        );
    };

    // One flipped bit in each member, the manifest and the signature included; first, middle
    // and last byte of each.
    for i in 0..members.len() {
        let len = members[i].1.len();
        for at in [0, len / 2, len - 1] {
            let mut m = members.clone();
            m[i].1[at] ^= 0x01;
            write_members(&bad, &m);
            let name = &members[i].0;
            let needles: &[&str] = match i {
                0 | 1 => &["signature does not verify"],
                _ => &[name.as_str(), "tampered"],
            };
            refuse(&format!("flipping byte {at} of {name}"), needles);
        }
    }
    // A member of another length (truncated), a member missing, an extra member, a duplicate.
    let mut m = members.clone();
    m[5].1.pop();
    write_members(&bad, &m);
    refuse("truncating the model", &["bundle/model.onnx", "bytes"]);
    let mut m = members.clone();
    m.remove(4);
    write_members(&bad, &m);
    refuse("removing the labels", &["bundle/labels.tsv", "missing"]);
    let mut m = members.clone();
    m.push(("bin/extra".into(), b"#!/bin/sh\n".to_vec(), 0o755));
    write_members(&bad, &m);
    refuse("adding a member", &["bin/extra", "not listed"]);
    let mut m = members.clone();
    m.push(m[6].clone());
    write_members(&bad, &m);
    refuse("repeating a member", &["bin/lookupd", "twice"]);
    let mut m = members.clone();
    m.swap(0, 1);
    write_members(&bad, &m);
    refuse("reordering", &["not a flash archive"]);

    // Unsigned: the signature member removed, or empty.
    let mut m = members.clone();
    m.remove(1);
    write_members(&bad, &m);
    refuse("removing the signature", &["unsigned"]);
    let mut m = members.clone();
    m[1].1.clear();
    write_members(&bad, &m);
    refuse("emptying the signature", &["signature"]);

    // The manifest edited (a hash replaced to match a tampered member) and re-signed by
    // another key.
    let (other_private, _) = keys(f.dir.path(), "other");
    let other_bundle = f.path("bundle");
    let other = f.path("other.flash");
    pack(
        &other_bundle,
        &other_private,
        &stub_lookupd(true),
        "v1",
        &other,
    );
    fs::copy(&other, &bad).unwrap();
    refuse(
        "signing with another key",
        &["signature does not verify", "key"],
    );
    // A signature from another archive (same key) over a different manifest.
    let v2 = f.path("v2.flash");
    pack(&other_bundle, &f.private, &stub_lookupd(true), "v2", &v2);
    let mut m = members.clone();
    m[1] = read_members(&v2)[1].clone();
    write_members(&bad, &m);
    refuse(
        "another archive's signature",
        &["signature does not verify"],
    );

    // Bytes of the compressed file itself: gzip's checksum or the tar reader refuses them.
    let raw = fs::read(&f.archive).unwrap();
    for at in [20, raw.len() / 3, raw.len() / 2, raw.len() - 6] {
        let mut r = raw.clone();
        r[at] ^= 0x10;
        fs::write(&bad, r).unwrap();
        let out = flash(&deploy_args(bad.to_str().unwrap(), &target), &[]);
        assert!(!out.status.success(), "byte {at} flipped: accepted");
        assert!(out.status.code().is_some(), "{}", text(&out));
        assert_eq!(snapshot(&root), before);
    }
    fs::write(&bad, &raw[..raw.len() / 2]).unwrap();
    refuse("a truncated archive", &["damaged"]);
    fs::write(&bad, b"not an archive").unwrap();
    refuse("garbage", &["damaged"]);
    fs::remove_file(&bad).unwrap();
    refuse("a missing archive", &["bad.flash"]);

    // Wrong architecture: a dir target whose `arch` file names another machine.
    fs::copy(&f.archive, &bad).unwrap();
    let other_arch = if std::env::consts::ARCH == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    };
    fs::write(root.join("arch"), format!("{other_arch}\n")).unwrap();
    let before_arch = snapshot(&root);
    let all = flash_fails(
        &deploy_args(bad.to_str().unwrap(), &target),
        &["architecture mismatch", other_arch],
    );
    assert_eq!(snapshot(&root), before_arch, "{all}");
}

#[test]
fn bad_target_specs_are_named() {
    let f = Fixture::new();
    for spec in [
        "/plain/path",
        "dir:",
        "ssh://host",
        "ssh://h:70000/x",
        "ftp://x/y",
    ] {
        flash_fails(
            &deploy_args(f.archive.to_str().unwrap(), spec),
            &["bad target", spec],
        );
        flash_fails(&["status", "--to", spec], &["bad target"]);
    }
}
