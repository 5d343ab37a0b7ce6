//! Opening the parts of a bundle one by one, each checked against the manifest; shared by
//! [`crate::Appliance::open`] and [`crate::selftest`].

use std::path::Path;

use bundle::{BundleError, GALLERY_FILE, LABELS_FILE, Manifest};
use gallery::Gallery;
use infer::{Backend, GpuTuning, LoadOptions, Model};

use crate::error::{ApplianceError, Result};

/// Refuses a manifest that does not list the model, the gallery and the labels.
pub(crate) fn require_listed(dir: &Path, manifest: &Manifest) -> Result<()> {
    for name in [manifest.model.file.as_str(), GALLERY_FILE, LABELS_FILE] {
        if !manifest.files.contains_key(name) {
            return Err(BundleError::NotListed {
                path: Manifest::path_in(dir),
                name: name.to_owned(),
            }
            .into());
        }
    }
    Ok(())
}

/// The sha256 of the model file as the manifest records it: the hash the gallery must carry.
pub(crate) fn model_hash(dir: &Path, manifest: &Manifest) -> Result<[u8; 32]> {
    let entry = manifest
        .files
        .get(&manifest.model.file)
        .ok_or_else(|| BundleError::NotListed {
            path: Manifest::path_in(dir),
            name: manifest.model.file.clone(),
        })?;
    let bytes = bundle::from_hex(&entry.sha256)?;
    bytes.try_into().map_err(|_| {
        BundleError::Inconsistent {
            field: format!("files.{:?}.sha256", manifest.model.file),
            message: "not 32 bytes".into(),
        }
        .into()
    })
}

/// Opens (memory-maps and fully validates) the gallery, and checks that it was built for this
/// manifest: the same code width and the model's sha256.
pub(crate) fn open_gallery(
    dir: &Path,
    manifest: &Manifest,
    model_hash: &[u8; 32],
) -> Result<Gallery> {
    let path = dir.join(GALLERY_FILE);
    let gallery = Gallery::open(&path).map_err(|error| ApplianceError::Gallery {
        path: path.clone(),
        error,
    })?;
    if gallery.code_bits() != manifest.model.code_bits {
        return Err(ApplianceError::GalleryMismatch {
            path,
            message: format!(
                "codes of {} bits, the manifest's model.code_bits is {}",
                gallery.code_bits(),
                manifest.model.code_bits
            ),
        });
    }
    if gallery.model_hash() != model_hash {
        return Err(ApplianceError::GalleryMismatch {
            path,
            message: format!(
                "built for model sha256 {}, but {} has sha256 {}: the codes come from another model",
                bundle::to_hex(gallery.model_hash()),
                manifest.model.file,
                bundle::to_hex(model_hash)
            ),
        });
    }
    Ok(gallery)
}

/// Loads the model with the input size of the manifest and checks its interface against the
/// manifest: input `3 x size x size`, an embedding of `embedding_dim` values. `tuning` shapes
/// the GPU plan (the gpu runtime only).
pub(crate) fn load_model(
    dir: &Path,
    manifest: &Manifest,
    runtime: Backend,
    tuning: GpuTuning,
    max_batch: usize,
) -> Result<Model> {
    let path = dir.join(&manifest.model.file);
    let side = manifest.model.input_size as usize;
    let options = LoadOptions {
        backend: runtime,
        max_batch,
        input_hw: Some((side, side)),
        tuning,
        ..LoadOptions::default()
    };
    let model = Model::load(&path, &options).map_err(|error| ApplianceError::Model {
        path: path.clone(),
        error,
    })?;
    let want_input = [manifest.model.channels as usize, side, side];
    if model.input_shape() != want_input {
        return Err(ApplianceError::ModelMismatch {
            path,
            message: format!(
                "input shape {:?}, the manifest says {want_input:?} (model.channels, model.input_size)",
                model.input_shape()
            ),
        });
    }
    let width: usize = model.output_shape().iter().product();
    if width != manifest.model.embedding_dim as usize {
        return Err(ApplianceError::ModelMismatch {
            path,
            message: format!(
                "output of {width} values ({:?}), the manifest's model.embedding_dim is {}",
                model.output_shape(),
                manifest.model.embedding_dim
            ),
        });
    }
    Ok(model)
}
