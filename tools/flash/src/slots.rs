//! The target's layout and the A/B logic: deploy, status, rollback.
//!
//! ```text
//! PATH/trusted.pub        the public key archives must be signed with
//! PATH/state.toml         which slot is good, which one is on trial, the last outcome
//! PATH/current            symlink to slots/a or slots/b: what the device runs
//! PATH/slots/{a,b}/       flash-manifest.toml, flash-manifest.sig, bundle/*, bin/lookupd
//! PATH/arch               optional, dir targets only: the `uname -m` name of the device
//! PATH/flash.lock         locked (flock) while a deploy or rollback runs; names its holder
//! ```
//!
//! A slot is complete when its signed manifest verifies against `trusted.pub` and every file's
//! hash matches; its manifest and signature are removed before it is rewritten (files the new
//! archive does not list are removed too) and written last. `current` only ever moves to a
//! complete slot, by renaming a new symlink over it. Before the move, state.toml records
//! `trying = <slot>`; the self-test's outcome clears it. A `trying` found later means the
//! process died between the move and the outcome: the next deploy or rollback moves `current`
//! back to the good slot before anything else (the interrupted slot is then simply the inactive
//! one, which the deploy resumes and tests again), and `status` reports it as unconfirmed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::archive::{
    ArchiveManifest, MANIFEST_MEMBER, SIGNATURE_MEMBER, VerifiedArchive, open_verified,
    verify_manifest,
};
use crate::error::{FlashError, Result};
use crate::fault;
use crate::keys::{PublicKey, load_public};
use crate::progress::bytes_bar;
use crate::target::{SelftestRun, TargetLock, Transport, holder_description};

/// The trusted public key on the target.
pub const TRUSTED_KEY: &str = "trusted.pub";
/// The target's state file.
pub const STATE_FILE: &str = "state.toml";
/// The link to the active slot.
pub const CURRENT: &str = "current";

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const BOTH: [Slot; 2] = [Slot::A, Slot::B];

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    /// The slot's directory relative to the target root (also what `current` points at).
    pub fn dir(self) -> String {
        format!("slots/{}", self.name())
    }
    /// The slot `current`'s link text names, if it names one.
    pub fn from_link(text: &str) -> Option<Slot> {
        match text.trim_end_matches('/') {
            "slots/a" => Some(Slot::A),
            "slots/b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is known of one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub version: String,
    /// sha256 of the slot's flash-manifest.toml.
    pub manifest_sha256: String,
    /// `trying`, `passed`, `failed` or `interrupted`.
    pub outcome: String,
    pub at_unix: u64,
}

/// The last thing a deploy, rollback or recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `deploy`, `rollback` or `recover`.
    pub action: String,
    pub slot: Option<Slot>,
    pub version: String,
    /// `passed`, `failed` or `interrupted`.
    pub result: String,
    pub detail: String,
    pub at_unix: u64,
}

/// `state.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The last slot whose self-test passed.
    pub good: Option<Slot>,
    /// Set just before `current` moves to an untested slot; cleared with the outcome.
    pub trying: Option<Slot>,
    #[serde(default)]
    pub slots: BTreeMap<Slot, SlotRecord>,
    pub last: Option<Outcome>,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    bundle::to_hex(&sha2::Sha256::digest(bytes))
}

/// Reads state.toml (the default when absent).
pub fn read_state(t: &dyn Transport) -> Result<State> {
    let Some(bytes) = t.read(STATE_FILE)? else {
        return Ok(State::default());
    };
    let bad = |message: String| FlashError::State {
        target: t.name(),
        message,
    };
    let text = String::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
    toml::from_str(&text).map_err(|e| bad(e.to_string()))
}

/// Writes state.toml atomically (temporary, fsync, rename).
pub fn write_state(t: &dyn Transport, state: &State) -> Result<()> {
    let text = toml::to_string(state).map_err(|e| FlashError::State {
        target: t.name(),
        message: e.to_string(),
    })?;
    t.put_bytes(STATE_FILE, text.as_bytes())
}

/// The slot `current` points at; an error when it points elsewhere.
pub fn current_slot(t: &dyn Transport) -> Result<Option<Slot>> {
    match t.read_link(CURRENT)? {
        None => Ok(None),
        Some(text) => Slot::from_link(&text)
            .map(Some)
            .ok_or_else(|| FlashError::Target {
                target: t.name(),
                message: format!("{CURRENT} points at {text:?}, not at slots/a or slots/b"),
            }),
    }
}

/// The target's trusted key, if installed.
pub fn trusted_key(t: &dyn Transport) -> Result<Option<PublicKey>> {
    let Some(bytes) = t.read(TRUSTED_KEY)? else {
        return Ok(None);
    };
    let what = Path::new(TRUSTED_KEY);
    PublicKey::from_text(&String::from_utf8_lossy(&bytes), what).map(Some)
}

/// A slot as found on the target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotStatus {
    pub slot: Option<Slot>,
    /// Whether the slot has a manifest at all.
    pub present: bool,
    /// Signature verified and every file's hash matches.
    pub verified: bool,
    /// What keeps it from verifying.
    pub problem: Option<String>,
    pub version: Option<String>,
    pub target: Option<String>,
    pub manifest_sha256: Option<String>,
    /// Member path to sha256, as the signed manifest lists them.
    pub files: BTreeMap<String, String>,
    /// What state.toml records of the slot.
    pub record: Option<SlotRecord>,
}

/// Reads and verifies one slot: its signed manifest against `key`, then every file's hash.
pub fn inspect_slot(t: &dyn Transport, slot: Slot, key: Option<&PublicKey>) -> Result<SlotStatus> {
    let dir = slot.dir();
    let mut status = SlotStatus {
        slot: Some(slot),
        ..SlotStatus::default()
    };
    let manifest_bytes = t.read(&format!("{dir}/{MANIFEST_MEMBER}"))?;
    let signature = t.read(&format!("{dir}/{SIGNATURE_MEMBER}"))?;
    let (Some(manifest_bytes), Some(signature)) = (manifest_bytes, signature) else {
        status.problem = Some("empty or incomplete (no signed manifest)".into());
        return Ok(status);
    };
    status.present = true;
    status.manifest_sha256 = Some(sha256_hex(&manifest_bytes));
    let Some(key) = key else {
        status.problem = Some(format!("no {TRUSTED_KEY} on the target to verify with"));
        return Ok(status);
    };
    let what = Path::new(&dir).join(MANIFEST_MEMBER);
    let manifest = match verify_manifest(&manifest_bytes, &signature, key, &what) {
        Ok(m) => m,
        Err(e) => {
            status.problem = Some(e.to_string());
            return Ok(status);
        }
    };
    status.version = Some(manifest.version.clone());
    status.target = Some(manifest.target.clone());
    status.files = manifest
        .files
        .iter()
        .map(|(k, v)| (k.clone(), v.sha256.clone()))
        .collect();
    let names: Vec<String> = manifest
        .files
        .keys()
        .map(|n| format!("{dir}/{n}"))
        .collect();
    let found = t.hashes(&names)?;
    for ((name, entry), hash) in manifest.files.iter().zip(found) {
        match hash {
            None => {
                status.problem = Some(format!("{name} is missing"));
                return Ok(status);
            }
            Some(h) if h != entry.sha256 => {
                status.problem = Some(format!(
                    "{name}: sha256 {h}, the manifest says {}",
                    entry.sha256
                ));
                return Ok(status);
            }
            Some(_) => {}
        }
    }
    status.verified = true;
    Ok(status)
}

/// `flash status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub target: String,
    pub arch: String,
    pub trusted_key: Option<String>,
    /// The slot `current` points at.
    pub active: Option<Slot>,
    pub good: Option<Slot>,
    /// A slot `current` was switched to whose self-test outcome was never recorded.
    pub unconfirmed: Option<Slot>,
    pub slots: Vec<SlotStatus>,
    pub last: Option<Outcome>,
    /// A deploy or rollback running now: the holder of the target's lock.
    pub locked_by: Option<String>,
}

/// Reads everything and changes nothing.
pub fn status(t: &dyn Transport) -> Result<StatusReport> {
    let key = trusted_key(t)?;
    let state = read_state(t)?;
    let active = current_slot(t)?;
    let mut slots = Vec::new();
    for slot in Slot::BOTH {
        let mut s = inspect_slot(t, slot, key.as_ref())?;
        s.record = state.slots.get(&slot).cloned();
        slots.push(s);
    }
    Ok(StatusReport {
        target: t.name(),
        arch: t.arch()?,
        trusted_key: key.map(|k| k.fingerprint()),
        active,
        good: state.good,
        unconfirmed: state.trying,
        slots,
        last: state.last,
        locked_by: t.held_by()?,
    })
}

/// What to do with one file of the slot.
#[derive(Debug, Clone, Serialize)]
pub struct FilePlan {
    pub path: String,
    pub bytes: u64,
    /// `write`, `keep` when the slot already holds it (a resumed deploy), or `remove` for a
    /// file the archive does not list (left by an earlier release or an interrupted write).
    pub action: String,
}

/// What a deploy did or (with `--dry-run`) would do.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub ok: bool,
    pub dry_run: bool,
    pub target: String,
    pub version: String,
    pub archive_target: String,
    /// The slot written and tested.
    pub slot: Slot,
    /// The slot that was active before.
    pub previous: Option<Slot>,
    pub install_key: bool,
    /// An unconfirmed switch undone first (see the module doc).
    pub recovered: Option<String>,
    pub files: Vec<FilePlan>,
    pub selftest: Option<SelftestRun>,
    pub rolled_back: bool,
    /// `passed`, `failed`, or `planned` for a dry run.
    pub result: String,
    pub message: String,
}

/// How long a deploy or rollback waits on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A self-test still running after this long is killed and fails (and is rolled back).
    pub selftest_timeout: Duration,
    /// How long to wait for another deploy or rollback's lock on the target.
    pub lock_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            selftest_timeout: Duration::from_secs(300),
            lock_wait: Duration::from_secs(10),
        }
    }
}

/// What `deploy` needs.
#[derive(Debug)]
pub struct DeployOptions<'a> {
    pub archive: &'a Path,
    /// KEYDIR/public: installed as the target's trusted key on the first deploy.
    pub trust_key: Option<&'a Path>,
    pub dry_run: bool,
    pub progress: bool,
    pub limits: Limits,
}

/// Takes the target's lock for `action` (see [`crate::target::LOCK_FILE`]).
fn lock(t: &dyn Transport, action: &str, limits: Limits) -> Result<TargetLock> {
    t.lock(&holder_description(action), limits.lock_wait)
}

/// Verifies the archive against the target's key and architecture, then (unless dry-run) writes
/// the inactive slot, reads it back, switches, self-tests, and rolls back on failure. Every
/// refusal happens before the target changes. A failed self-test is an `Ok` report with
/// `ok: false`; errors are for everything else. Unless dry-run, it holds the target's lock from
/// the archive's verification on.
pub fn deploy(t: &dyn Transport, opts: &DeployOptions) -> Result<DeployReport> {
    // 1. The key: the target's, or the one offered for a first deploy.
    let installed = trusted_key(t)?;
    let offered = opts.trust_key.map(load_public).transpose()?;
    let (key, install_key) = match (installed, offered) {
        (Some(k), None) => (k, false),
        (Some(k), Some(o)) if k == o => (k, false),
        (Some(k), Some(o)) => {
            return Err(FlashError::Untrusted {
                message: format!(
                    "target {} trusts key {}, not the offered {}; a device's trusted key is not replaced by a deploy",
                    t.name(),
                    k.fingerprint(),
                    o.fingerprint()
                ),
            });
        }
        (None, Some(o)) => (o, true),
        (None, None) => {
            return Err(FlashError::Untrusted {
                message: format!(
                    "target {} has no {TRUSTED_KEY}; pass --trust-key KEYDIR/public on the first deploy",
                    t.name()
                ),
            });
        }
    };

    // 2. The archive: signature, every member, the bundle, then the architecture.
    let staging = tempfile::Builder::new()
        .prefix("flash-staging-")
        .tempdir()
        .map_err(|e| FlashError::io(std::env::temp_dir(), e))?;
    let archive = open_verified(opts.archive, &key, staging.path(), opts.progress)?;
    let target_arch = t.arch()?;
    if target_arch != archive.manifest.arch() {
        return Err(FlashError::WrongArch {
            archive: archive.manifest.target.clone(),
            archive_arch: archive.manifest.arch(),
            target: t.name(),
            target_arch,
        });
    }
    tracing::info!(version = %archive.manifest.version, target = %t.name(), "archive verified");
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock(t, "deploy", opts.limits)?)
    };

    // 3. Where things stand.
    let mut state = read_state(t)?;
    let mut current = current_slot(t)?;
    let mut recovered = None;
    if let Some(trying) = state.trying {
        let message = format!(
            "a switch to slot {trying} was never confirmed (interrupted deploy); {}",
            match (current == Some(trying), state.good) {
                (true, Some(good)) => format!("moving {CURRENT} back to slot {good}"),
                (true, None) => format!("removing {CURRENT} (no slot ever passed)"),
                (false, _) => "clearing the mark".to_owned(),
            }
        );
        tracing::warn!("{message}");
        if !opts.dry_run {
            current = recover(t, &mut state, current, &key)?;
        }
        recovered = Some(message);
    }
    let slot = current.map_or(Slot::A, Slot::other);

    // 4. The plan: which files the slot already holds, and which it holds that the archive
    // does not list (left by an earlier release or an interrupted write): the slot becomes
    // exactly the archive.
    let names: Vec<&String> = archive.manifest.files.keys().collect();
    let rels: Vec<String> = names
        .iter()
        .map(|n| format!("{}/{n}", slot.dir()))
        .collect();
    let found = t.hashes(&rels)?;
    let mut files: Vec<FilePlan> = names
        .iter()
        .zip(&found)
        .map(|(name, hash)| {
            let entry = &archive.manifest.files[*name];
            FilePlan {
                path: (*name).clone(),
                bytes: entry.bytes,
                action: if hash.as_deref() == Some(entry.sha256.as_str()) {
                    "keep"
                } else {
                    "write"
                }
                .into(),
            }
        })
        .collect();
    let sealing = [MANIFEST_MEMBER, SIGNATURE_MEMBER];
    files.extend(
        t.list_files(&slot.dir())?
            .into_iter()
            .filter(|f| !archive.manifest.files.contains_key(f) && !sealing.contains(&f.as_str()))
            .map(|path| FilePlan {
                path,
                bytes: 0,
                action: "remove".into(),
            }),
    );
    let count = |action: &str| files.iter().filter(|f| f.action == action).count();
    let plan_summary = format!(
        "write {} of {} files into slot {slot}{}",
        count("write"),
        archive.manifest.files.len(),
        match count("remove") {
            0 => String::new(),
            n => format!(" (and remove {n} it holds that the archive does not list)"),
        }
    );
    let mut report = DeployReport {
        ok: true,
        dry_run: opts.dry_run,
        target: t.name(),
        version: archive.manifest.version.clone(),
        archive_target: archive.manifest.target.clone(),
        slot,
        previous: current,
        install_key,
        recovered,
        files,
        selftest: None,
        rolled_back: false,
        result: "planned".into(),
        message: String::new(),
    };
    if opts.dry_run {
        report.message =
            format!("would {plan_summary}, switch {CURRENT} to it, and run the self-test");
        return Ok(report);
    }
    tracing::info!("plan: {plan_summary}");

    // 5. Write the inactive slot.
    if install_key {
        t.put_bytes(TRUSTED_KEY, key.to_text().as_bytes())?;
    }
    // Unseal first: a slot without its manifest is never taken for complete.
    t.remove(&format!("{}/{SIGNATURE_MEMBER}", slot.dir()))?;
    t.remove(&format!("{}/{MANIFEST_MEMBER}", slot.dir()))?;
    for stale in report.files.iter().filter(|f| f.action == "remove") {
        t.remove(&format!("{}/{}", slot.dir(), stale.path))?;
    }
    write_slot(t, &archive, slot, &report.files, opts.progress)?;

    // 6. Read back.
    fault::point("readback");
    let found = t.hashes(&rels)?;
    for (name, hash) in names.iter().zip(found) {
        let expected = &archive.manifest.files[*name].sha256;
        if hash.as_deref() != Some(expected.as_str()) {
            return Err(FlashError::Slot {
                target: t.name(),
                slot: slot.name().into(),
                message: format!(
                    "read-back of {name}: sha256 {}, expected {expected}; {CURRENT} was not switched",
                    hash.as_deref().unwrap_or("(missing)")
                ),
            });
        }
    }
    // 7. Seal: manifest, then signature, both read back.
    let dir = slot.dir();
    t.put_bytes(&format!("{dir}/{MANIFEST_MEMBER}"), &archive.manifest_bytes)?;
    fault::point("seal");
    t.put_bytes(&format!("{dir}/{SIGNATURE_MEMBER}"), &archive.signature)?;
    let sealed = inspect_slot(t, slot, Some(&key))?;
    if !sealed.verified {
        return Err(FlashError::Slot {
            target: t.name(),
            slot: slot.name().into(),
            message: format!(
                "does not verify after writing: {}; {CURRENT} was not switched",
                sealed.problem.unwrap_or_default()
            ),
        });
    }

    // 8. Switch, test, keep or roll back.
    let record = SlotRecord {
        version: archive.manifest.version.clone(),
        manifest_sha256: sha256_hex(&archive.manifest_bytes),
        outcome: "trying".into(),
        at_unix: now_unix(),
    };
    let run = trial(
        t,
        &mut state,
        (current, slot),
        record,
        "deploy",
        opts.limits.selftest_timeout,
    )?;
    report.ok = run.passed;
    report.rolled_back = !run.passed;
    report.result = if run.passed { "passed" } else { "failed" }.into();
    report.message = if run.passed {
        format!("slot {slot} is active and passed the self-test")
    } else {
        match current {
            Some(prev) => format!("the self-test failed; rolled back to slot {prev}"),
            None => format!("the self-test failed; no previous slot, {CURRENT} removed"),
        }
    };
    report.selftest = Some(run);
    Ok(report)
}

fn write_slot(
    t: &dyn Transport,
    archive: &VerifiedArchive,
    slot: Slot,
    plan: &[FilePlan],
    progress: bool,
) -> Result<()> {
    let total = plan
        .iter()
        .filter(|f| f.action == "write")
        .map(|f| f.bytes)
        .sum();
    let bar = bytes_bar(total, "deploying", progress);
    for file in plan {
        if file.action != "write" {
            tracing::debug!(file = %file.path, "already in the slot");
            continue;
        }
        tracing::debug!(file = %file.path, bytes = file.bytes, slot = %slot, "writing");
        bar.set_message(file.path.clone());
        let entry = &archive.manifest.files[&file.path];
        t.put(
            &format!("{}/{}", slot.dir(), file.path),
            &archive.file(&file.path),
            entry.executable,
            &bar,
            &mut || fault::point("write"),
        )?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Moves `current` to `to` (recording the trial first), runs the self-test there, and records
/// the outcome; on failure moves `current` back to `from` (or removes it when there is none).
fn trial(
    t: &dyn Transport,
    state: &mut State,
    (from, to): (Option<Slot>, Slot),
    mut record: SlotRecord,
    action: &str,
    selftest_timeout: Duration,
) -> Result<SelftestRun> {
    state.trying = Some(to);
    state.slots.insert(to, record.clone());
    write_state(t, state)?;
    fault::point("switch");
    t.switch_link(CURRENT, &to.dir(), &mut || fault::point("switch"))?;
    fault::point("switch");
    tracing::info!(slot = %to, "switched; running the self-test");

    fault::point("selftest");
    let run = t.selftest(&to.dir(), selftest_timeout)?;
    fault::point("selftest");
    if !run.passed {
        tracing::error!(slot = %to, output = %run.output, "self-test failed");
        match from {
            Some(prev) => t.switch_link(CURRENT, &prev.dir(), &mut || fault::point("rollback"))?,
            None => t.remove(CURRENT)?,
        }
    }
    record.outcome = if run.passed { "passed" } else { "failed" }.into();
    record.at_unix = now_unix();
    if run.passed {
        state.good = Some(to);
    } else if state.good == Some(to) {
        state.good = from;
    }
    state.trying = None;
    state.last = Some(Outcome {
        action: action.into(),
        slot: Some(to),
        version: record.version.clone(),
        result: record.outcome.clone(),
        detail: if run.passed {
            String::new()
        } else {
            format!("exit {:?}: {}", run.exit_code, run.output.trim())
        },
        at_unix: record.at_unix,
    });
    state.slots.insert(to, record);
    write_state(t, state)?;
    Ok(run)
}

/// Undoes an unconfirmed switch: `current` back to the good slot (if it verifies) or removed,
/// the interrupted slot marked, `trying` cleared. Returns where `current` now points.
fn recover(
    t: &dyn Transport,
    state: &mut State,
    current: Option<Slot>,
    key: &PublicKey,
) -> Result<Option<Slot>> {
    let Some(trying) = state.trying else {
        return Ok(current);
    };
    let mut now = current;
    if current == Some(trying) {
        let good = state
            .good
            .filter(|g| *g != trying)
            .map(|g| inspect_slot(t, g, Some(key)).map(|s| (g, s.verified)))
            .transpose()?;
        match good {
            Some((g, true)) => {
                t.switch_link(CURRENT, &g.dir(), &mut || {})?;
                now = Some(g);
            }
            _ => {
                t.remove(CURRENT)?;
                now = None;
            }
        }
    }
    let version = state
        .slots
        .get(&trying)
        .map(|r| r.version.clone())
        .unwrap_or_default();
    if let Some(r) = state.slots.get_mut(&trying) {
        r.outcome = "interrupted".into();
        r.at_unix = now_unix();
    }
    state.trying = None;
    state.last = Some(Outcome {
        action: "recover".into(),
        slot: Some(trying),
        version,
        result: "interrupted".into(),
        detail: format!(
            "switch to slot {trying} never confirmed; {CURRENT} now {}",
            now.map_or("absent".to_owned(), |s| format!("slot {s}"))
        ),
        at_unix: now_unix(),
    });
    write_state(t, state)?;
    Ok(now)
}

/// `flash rollback`.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub ok: bool,
    pub target: String,
    pub from: Option<Slot>,
    pub to: Slot,
    pub version: Option<String>,
    pub recovered: bool,
    pub selftest: SelftestRun,
    pub message: String,
}

/// Switches `current` to the other slot if that slot verifies (signature and every hash) and
/// passes the self-test there; otherwise leaves or puts `current` back. Holds the target's
/// lock once it has found its key.
pub fn rollback(t: &dyn Transport, limits: Limits) -> Result<RollbackReport> {
    let key = trusted_key(t)?.ok_or_else(|| FlashError::Untrusted {
        message: format!(
            "target {} has no {TRUSTED_KEY}; nothing was deployed",
            t.name()
        ),
    })?;
    let _lock = lock(t, "rollback", limits)?;
    let mut state = read_state(t)?;
    let mut current = current_slot(t)?;
    let recovered = state.trying.is_some();
    if recovered {
        current = recover(t, &mut state, current, &key)?;
    }
    let to = match current {
        Some(c) => c.other(),
        None => state.good.unwrap_or(Slot::A),
    };
    let status = inspect_slot(t, to, Some(&key))?;
    if !status.verified {
        return Err(FlashError::Slot {
            target: t.name(),
            slot: to.name().into(),
            message: format!(
                "cannot roll back to it: {}",
                status.problem.unwrap_or_default()
            ),
        });
    }
    if let Some(target) = &status.target {
        let arch = t.arch()?;
        if crate::elf::triple_arch(target) != arch {
            return Err(FlashError::WrongArch {
                archive: target.clone(),
                archive_arch: crate::elf::triple_arch(target),
                target: t.name(),
                target_arch: arch,
            });
        }
    }
    let record = SlotRecord {
        version: status.version.clone().unwrap_or_default(),
        manifest_sha256: status.manifest_sha256.clone().unwrap_or_default(),
        outcome: "trying".into(),
        at_unix: now_unix(),
    };
    let run = trial(
        t,
        &mut state,
        (current, to),
        record,
        "rollback",
        limits.selftest_timeout,
    )?;
    let message = if run.passed {
        format!("slot {to} is active and passed the self-test")
    } else {
        format!("slot {to} failed the self-test; {CURRENT} left as it was")
    };
    Ok(RollbackReport {
        ok: run.passed,
        target: t.name(),
        from: current,
        to,
        version: status.version,
        recovered,
        selftest: run,
        message,
    })
}

/// Signed manifests of archives are what a slot holds; handy for callers that only need it.
pub fn slot_manifest(
    t: &dyn Transport,
    slot: Slot,
    key: &PublicKey,
) -> Result<Option<ArchiveManifest>> {
    let dir = slot.dir();
    let (Some(m), Some(s)) = (
        t.read(&format!("{dir}/{MANIFEST_MEMBER}"))?,
        t.read(&format!("{dir}/{SIGNATURE_MEMBER}"))?,
    ) else {
        return Ok(None);
    };
    verify_manifest(&m, &s, key, &Path::new(&dir).join(MANIFEST_MEMBER)).map(Some)
}
