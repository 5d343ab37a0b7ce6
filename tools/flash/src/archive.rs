//! The flash archive: a gzip-compressed tar whose first member is a manifest of every other
//! member (path, size, sha256, executable bit) plus the target triple and a version string,
//! whose second member is an ed25519 signature of the manifest's exact bytes, and whose other
//! members are the files: `bundle/*` (the bundle directory) and `bin/lookupd`.
//!
//! Reading verifies the signature before trusting anything in the manifest, then hashes every
//! member as it is extracted into a staging directory: any changed byte of a member, of the
//! manifest or of the signature is refused, and so is a missing, extra, duplicated or misplaced
//! member. Framing bytes that carry no content (tar header fields other than name, size and
//! type; the gzip header) are not covered by the signature and are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use ed25519_dalek::SigningKey;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::elf::{elf_arch, triple_arch};
use crate::error::{FlashError, Result};
use crate::keys::{PublicKey, sign};
use crate::progress::{Counting, bytes_bar};

/// The archive format version this build writes and reads.
pub const ARCHIVE_FORMAT: u32 = 1;
/// First member: the manifest (TOML).
pub const MANIFEST_MEMBER: &str = "flash-manifest.toml";
/// Second member: the signature of the manifest's bytes (128 hex digits and a newline).
pub const SIGNATURE_MEMBER: &str = "flash-manifest.sig";
/// The appliance binary inside the archive and inside a slot.
pub const LOOKUPD_MEMBER: &str = "bin/lookupd";
/// The bundle directory inside the archive and inside a slot.
pub const BUNDLE_DIR: &str = "bundle";

/// Largest manifest or signature member read into memory; anything bigger is not ours.
const SMALL_MEMBER_LIMIT: u64 = 1 << 20;

/// One file of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveFile {
    pub sha256: String,
    pub bytes: u64,
    pub executable: bool,
}

/// The signed manifest: what the archive holds and what it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveManifest {
    pub format: u32,
    /// Free-form release name, shown by `flash status`.
    pub version: String,
    /// Target triple `bin/lookupd` was built for.
    pub target: String,
    pub created_unix: u64,
    /// Every member but the manifest and the signature, by path.
    pub files: BTreeMap<String, ArchiveFile>,
}

impl ArchiveManifest {
    /// Parses and checks manifest bytes whose signature has been verified; `what` names the
    /// source in errors.
    pub fn parse(bytes: &[u8], what: &Path) -> Result<Self> {
        let bad = |message: String| FlashError::Archive {
            path: what.to_owned(),
            message: format!("{MANIFEST_MEMBER}: {message}"),
        };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
        let manifest: ArchiveManifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if manifest.format != ARCHIVE_FORMAT {
            return Err(bad(format!(
                "archive format {} is not supported (this build reads {ARCHIVE_FORMAT})",
                manifest.format
            )));
        }
        for (name, file) in &manifest.files {
            check_member_path(name).map_err(|m| bad(format!("file {name:?}: {m}")))?;
            let hash_ok = file.sha256.len() == 64
                && file
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hash_ok {
                return Err(bad(format!(
                    "file {name:?}: sha256 is not 64 lowercase hex digits"
                )));
            }
        }
        for required in [
            LOOKUPD_MEMBER,
            &format!("{BUNDLE_DIR}/{}", bundle::MANIFEST_FILE),
        ] {
            if !manifest.files.contains_key(required) {
                return Err(bad(format!("does not list {required}")));
            }
        }
        Ok(manifest)
    }

    /// The manifest's bytes as written into the archive.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        toml::to_string(self)
            .map(String::into_bytes)
            .map_err(|e| FlashError::Archive {
                path: PathBuf::from(MANIFEST_MEMBER),
                message: e.to_string(),
            })
    }

    /// The architecture (`uname -m` name) of the target triple.
    pub fn arch(&self) -> String {
        triple_arch(&self.target)
    }

    /// Total bytes of the files.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|f| f.bytes).sum()
    }
}

/// A member path must be relative, plain (no `.`, `..`, empty or absolute parts), and not one of
/// the two reserved names: a signed archive must not be able to write outside its slot.
pub fn check_member_path(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err("not a plain relative path".into());
    }
    if name == MANIFEST_MEMBER || name == SIGNATURE_MEMBER {
        return Err("reserved name".into());
    }
    for c in Path::new(name).components() {
        if !matches!(c, Component::Normal(_)) {
            return Err("not a plain relative path".into());
        }
    }
    if name.split('/').any(|p| p == "." || p == "..") {
        return Err("not a plain relative path".into());
    }
    if name.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
        return Err("control characters or backslashes in the name".into());
    }
    Ok(())
}

/// Parses a signature member (hex) into its 64 bytes.
pub fn parse_signature(text: &[u8], what: &Path) -> Result<Vec<u8>> {
    let bad = |message: String| FlashError::BadSignature {
        path: what.to_owned(),
        key: "any key".into(),
        message,
    };
    // Exactly 128 lowercase hex digits and a newline: no byte of the member goes unchecked.
    let hex = text
        .strip_suffix(b"\n")
        .filter(|h| {
            h.len() == 128
                && h.iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        })
        .ok_or_else(|| bad("not 128 lowercase hex digits and a newline".into()))?;
    let hex = std::str::from_utf8(hex).map_err(|e| bad(e.to_string()))?;
    bundle::from_hex(hex).map_err(|e| bad(e.to_string()))
}

/// Verifies `signature_text` (the signature member) over `manifest_bytes` with `key`, then
/// parses the manifest. The one way a manifest is trusted.
pub fn verify_manifest(
    manifest_bytes: &[u8],
    signature_text: &[u8],
    key: &PublicKey,
    what: &Path,
) -> Result<ArchiveManifest> {
    let signature = parse_signature(signature_text, what)?;
    key.verify(manifest_bytes, &signature)
        .map_err(|message| FlashError::BadSignature {
            path: what.to_owned(),
            key: format!("key {}", key.fingerprint()),
            message,
        })?;
    ArchiveManifest::parse(manifest_bytes, what)
}

/// What `pack` needs.
#[derive(Debug)]
pub struct PackOptions<'a> {
    pub bundle: &'a Path,
    pub key: &'a SigningKey,
    /// The target triple `lookupd` is built for.
    pub target: &'a str,
    pub lookupd: &'a Path,
    /// Release name; by default derived from the hashes of the bundle manifest and the binary.
    pub version: Option<String>,
    pub out: &'a Path,
    pub progress: bool,
}

/// Verifies the bundle and the binary's architecture, then writes the signed archive to
/// `opts.out` (through `<out>.tmp` and a rename, so a failed pack leaves no half archive).
pub fn pack(opts: &PackOptions) -> Result<ArchiveManifest> {
    let bundle_manifest =
        bundle::Manifest::open(opts.bundle).map_err(|error| FlashError::Bundle {
            path: opts.bundle.to_owned(),
            error,
        })?;
    let binary_arch = elf_arch(opts.lookupd)?;
    if binary_arch != triple_arch(opts.target) {
        return Err(FlashError::Binary {
            path: opts.lookupd.to_owned(),
            message: format!(
                "built for {binary_arch}, but the archive's target is {} ({})",
                opts.target,
                triple_arch(opts.target)
            ),
        });
    }

    // Members in a fixed order: bundle manifest, bundle files by name, then the binary.
    let mut sources: Vec<(String, PathBuf, bool)> = vec![(
        format!("{BUNDLE_DIR}/{}", bundle::MANIFEST_FILE),
        bundle::Manifest::path_in(opts.bundle),
        false,
    )];
    for name in bundle_manifest.files.keys() {
        sources.push((
            format!("{BUNDLE_DIR}/{name}"),
            opts.bundle.join(name),
            false,
        ));
    }
    sources.push((LOOKUPD_MEMBER.into(), opts.lookupd.to_owned(), true));

    let total: u64 = sources
        .iter()
        .map(|(_, p, _)| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = bytes_bar(total, "hashing", opts.progress);
    let mut files = BTreeMap::new();
    for (name, path, executable) in &sources {
        check_member_path(name).map_err(|message| FlashError::Member {
            path: opts.out.to_owned(),
            member: name.clone(),
            message,
        })?;
        let (sha256, bytes) =
            hash_reader(open(path)?, &bar).map_err(|e| FlashError::io(path, e))?;
        tracing::debug!(member = %name, bytes, %sha256, "hashed");
        files.insert(
            name.clone(),
            ArchiveFile {
                sha256,
                bytes,
                executable: *executable,
            },
        );
    }
    bar.finish_and_clear();

    let created_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let version = opts.version.clone().unwrap_or_else(|| {
        let bundle_hash = &files[&format!("{BUNDLE_DIR}/{}", bundle::MANIFEST_FILE)].sha256;
        let binary_hash = &files[LOOKUPD_MEMBER].sha256;
        format!("b{}.l{}", &bundle_hash[..10], &binary_hash[..10])
    });
    let manifest = ArchiveManifest {
        format: ARCHIVE_FORMAT,
        version,
        target: opts.target.to_owned(),
        created_unix,
        files,
    };
    let manifest_bytes = manifest.to_bytes()?;
    let signature = format!("{}\n", bundle::to_hex(&sign(opts.key, &manifest_bytes)));

    let tmp = tmp_path(opts.out);
    let result = write_archive(
        opts,
        &manifest,
        &manifest_bytes,
        signature.as_bytes(),
        &sources,
        &tmp,
    );
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    fs::rename(&tmp, opts.out).map_err(|e| FlashError::io(opts.out, e))?;
    Ok(manifest)
}

fn write_archive(
    opts: &PackOptions,
    manifest: &ArchiveManifest,
    manifest_bytes: &[u8],
    signature: &[u8],
    sources: &[(String, PathBuf, bool)],
    tmp: &Path,
) -> Result<()> {
    let io_err = |e| FlashError::io(tmp, e);
    let file = File::create(tmp).map_err(io_err)?;
    let mut tar = tar::Builder::new(GzEncoder::new(BufWriter::new(file), Compression::default()));
    let mtime = manifest.created_unix;
    append(
        &mut tar,
        MANIFEST_MEMBER,
        manifest_bytes.len() as u64,
        0o644,
        mtime,
        manifest_bytes,
    )
    .map_err(io_err)?;
    append(
        &mut tar,
        SIGNATURE_MEMBER,
        signature.len() as u64,
        0o644,
        mtime,
        signature,
    )
    .map_err(io_err)?;
    let bar = bytes_bar(manifest.total_bytes(), "packing", opts.progress);
    for (name, path, _) in sources {
        let entry = &manifest.files[name];
        let mode = if entry.executable { 0o755 } else { 0o644 };
        // Hash what goes into the archive again: a file changed since it was hashed would
        // otherwise be packed under a signature that does not match it.
        let mut reader = Hashing::new(Counting {
            inner: open(path)?,
            bar: &bar,
        });
        append(
            &mut tar,
            name,
            entry.bytes,
            mode,
            mtime,
            (&mut reader).take(entry.bytes),
        )
        .map_err(|e| FlashError::io(path, e))?;
        if reader.count != entry.bytes || reader.hex() != entry.sha256 {
            return Err(FlashError::Member {
                path: opts.out.to_owned(),
                member: name.clone(),
                message: format!("{} changed while it was being packed", path.display()),
            });
        }
    }
    bar.finish_and_clear();
    let gz = tar.into_inner().map_err(io_err)?;
    let file = gz.finish().map_err(io_err)?;
    let file = file.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    mode: u32,
    mtime: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(mtime);
    tar.append_data(&mut header, name, data)
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| FlashError::io(path, e))
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// A reader that hashes and counts what passes through it.
#[derive(Debug)]
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    pub count: u64,
}

impl<R> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn hex(&self) -> String {
        bundle::to_hex(&self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// sha256 (hex) and length of everything `reader` yields.
pub(crate) fn hash_reader(reader: impl Read, bar: &ProgressBar) -> io::Result<(String, u64)> {
    let mut hashing = Hashing::new(Counting { inner: reader, bar });
    io::copy(&mut hashing, &mut io::sink())?;
    Ok((hashing.hex(), hashing.count))
}

/// An archive whose signature and every member verified, extracted into a staging directory.
#[derive(Debug)]
pub struct VerifiedArchive {
    pub manifest: ArchiveManifest,
    /// The manifest member's exact bytes (copied into the slot with the signature).
    pub manifest_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    /// Holds every file at its member path.
    pub staging: PathBuf,
}

impl VerifiedArchive {
    /// Where member `name` was extracted.
    pub fn file(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }
}

/// Reads the first two members only: the manifest bytes and the signature text. For
/// `flash deploy` to say what an archive is before it has a key to verify it with.
pub fn read_head(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let file = open(path)?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut entries = tar.entries().map_err(|e| damaged(path, e))?;
    head_members(&mut entries, path)
}

/// The first two members of an archive being read: the manifest's bytes and the signature.
fn head_members<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    path: &Path,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let manifest =
        read_small(entries, MANIFEST_MEMBER, path)?.ok_or_else(|| FlashError::Archive {
            path: path.to_owned(),
            message: format!("not a flash archive: the first member is not {MANIFEST_MEMBER}"),
        })?;
    let signature =
        read_small(entries, SIGNATURE_MEMBER, path)?.ok_or_else(|| FlashError::Unsigned {
            path: path.to_owned(),
            member: SIGNATURE_MEMBER,
        })?;
    Ok((manifest, signature))
}

fn damaged(path: &Path, e: io::Error) -> FlashError {
    FlashError::Archive {
        path: path.to_owned(),
        message: format!("damaged or not a gzip-compressed tar: {e}"),
    }
}

/// The next member, which must be the regular file `name` of at most [`SMALL_MEMBER_LIMIT`]
/// bytes; `None` when the archive has no next member or the next one is another.
fn read_small<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    name: &str,
    path: &Path,
) -> Result<Option<Vec<u8>>> {
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    let mut entry = entry.map_err(|e| damaged(path, e))?;
    if entry.path_bytes().as_ref() != name.as_bytes() {
        return Ok(None);
    }
    if entry.header().entry_type() != tar::EntryType::Regular {
        return Err(FlashError::Member {
            path: path.to_owned(),
            member: name.into(),
            message: "not a regular file".into(),
        });
    }
    if entry.size() > SMALL_MEMBER_LIMIT {
        return Err(FlashError::Member {
            path: path.to_owned(),
            member: name.into(),
            message: format!("{} bytes, too large", entry.size()),
        });
    }
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| damaged(path, e))?;
    Ok(Some(bytes))
}

/// Verifies the archive at `path` against `key` and extracts it into `staging` (an empty
/// directory). Refuses, naming the problem: a damaged container, a missing signature, a
/// signature that does not verify, a member not listed, listed twice, missing, of another size
/// or hash, or not a regular file, and a bundle that does not verify.
pub fn open_verified(
    path: &Path,
    key: &PublicKey,
    staging: &Path,
    progress: bool,
) -> Result<VerifiedArchive> {
    let file = open(path)?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut entries = tar.entries().map_err(|e| damaged(path, e))?;
    let (manifest_bytes, signature) = head_members(&mut entries, path)?;
    let manifest = verify_manifest(&manifest_bytes, &signature, key, path)?;

    let member_err = |member: &str, message: String| FlashError::Member {
        path: path.to_owned(),
        member: member.to_owned(),
        message,
    };
    let bar = bytes_bar(manifest.total_bytes(), "verifying", progress);
    let mut seen = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| damaged(path, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(listed) = manifest.files.get(&name) else {
            return Err(member_err(
                &name,
                "not listed in the signed manifest".into(),
            ));
        };
        if !seen.insert(name.clone()) {
            return Err(member_err(&name, "appears twice".into()));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(member_err(&name, "not a regular file".into()));
        }
        if entry.size() != listed.bytes {
            return Err(member_err(
                &name,
                format!(
                    "{} bytes, the signed manifest says {}",
                    entry.size(),
                    listed.bytes
                ),
            ));
        }
        let dest = staging.join(&name);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| FlashError::io(parent, e))?;
        }
        let mut out = BufWriter::new(File::create(&dest).map_err(|e| FlashError::io(&dest, e))?);
        let mut reader = Hashing::new(Counting {
            inner: entry,
            bar: &bar,
        });
        io::copy(&mut reader, &mut out).map_err(|e| damaged(path, e))?;
        out.flush().map_err(|e| FlashError::io(&dest, e))?;
        if reader.count != listed.bytes || reader.hex() != listed.sha256 {
            return Err(member_err(
                &name,
                format!(
                    "sha256 {} ({} bytes), the signed manifest says {} ({} bytes): tampered or damaged",
                    reader.hex(),
                    reader.count,
                    listed.sha256,
                    listed.bytes
                ),
            ));
        }
        if listed.executable {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
                .map_err(|e| FlashError::io(&dest, e))?;
        }
    }
    bar.finish_and_clear();
    // Drain the gzip stream to its end so its CRC and length are checked too.
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(|e| damaged(path, e))?;
    if let Some(missing) = manifest.files.keys().find(|n| !seen.contains(*n)) {
        return Err(member_err(
            missing,
            "listed in the signed manifest but missing".into(),
        ));
    }
    let bundle_dir = staging.join(BUNDLE_DIR);
    bundle::Manifest::open(&bundle_dir).map_err(|error| FlashError::Bundle {
        path: bundle_dir.clone(),
        error,
    })?;
    Ok(VerifiedArchive {
        manifest,
        manifest_bytes,
        signature,
        staging: staging.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths() {
        for good in ["bin/lookupd", "bundle/model.onnx", "a"] {
            check_member_path(good).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "bundle/../../x",
            "a//b",
            "a/",
            "./a",
            "flash-manifest.sig",
            "a\nb",
        ] {
            assert!(check_member_path(bad).is_err(), "{bad:?} accepted");
        }
    }
}
