//! The appliance self-test: every check a bundle must pass before the device trusts it (run by
//! `lookupd selftest`, and by the deploy tool after it switches slots).

use std::path::{Path, PathBuf};

use bundle::{Manifest, Preprocessor, SELFTEST_SIDE, selftest_pattern};
use serde::Serialize;

use crate::enrol::{self, Pending};
use crate::parts;
use crate::skus;

/// One check of the self-test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `manifest`, `files`, `gallery`, `labels`, `model` or `selftest-code`.
    pub name: &'static str,
    pub ok: bool,
    /// What was found; for a failure, what is wrong and in which file.
    pub detail: String,
}

/// The result of [`selftest`]: each check in the order run.
#[derive(Clone, Debug, Serialize)]
pub struct SelfTestReport {
    pub bundle: PathBuf,
    /// The runtime the model ran on (`gpu` or `cpu`), once it loaded.
    pub backend: Option<String>,
    pub checks: Vec<Check>,
}

impl SelfTestReport {
    /// Whether every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// The check named `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn push(&mut self, name: &'static str, result: Result<String, String>) -> bool {
        let ok = result.is_ok();
        let detail = result.unwrap_or_else(|e| e);
        self.checks.push(Check { name, ok, detail });
        ok
    }
}

/// Checks the bundle in `dir` without changing it; every problem is a failed check, so this
/// never fails itself. The checks, each run as far as the ones before allow:
///
/// * `manifest`: `manifest.toml` reads and is consistent; without it nothing else runs;
/// * `files`: the model, gallery and labels are listed, and every listed file has its size and
///   sha256 (an enrolment interrupted by a crash, which the next open completes, is accepted
///   and described);
/// * `gallery`: the gallery validates completely (headers, geometry, checksums, padding), has
///   the manifest's code width and the model's sha256;
/// * `labels`: `labels.tsv` is valid and labels every gallery item;
/// * `model`: the model loads on `runtime` with the manifest's input size and embedding width;
/// * `selftest-code`: the built-in pattern, rendered at [`SELFTEST_SIDE`] pixels, preprocessed
///   (on the gpu backend by the GPU's frame kernel, as lookups are) and embedded, gives a code within the manifest's `selftest.max_hamming` of its
///   `selftest.expected_code`; a manifest without `[selftest]` fails.
pub fn selftest(dir: impl AsRef<Path>, runtime: infer::Backend) -> SelfTestReport {
    let dir = dir.as_ref();
    let mut report = SelfTestReport {
        bundle: dir.to_path_buf(),
        backend: None,
        checks: Vec::new(),
    };
    let manifest = match Manifest::read(dir).and_then(|m| m.check().map(|()| m)) {
        Ok(m) => m,
        Err(e) => {
            report.push("manifest", Err(e.to_string()));
            return report;
        }
    };
    report.push(
        "manifest",
        Ok(format!(
            "format {}, backbone {}, {}-bit codes, input {}x{}",
            manifest.format_version,
            manifest.backbone,
            manifest.model.code_bits,
            manifest.model.input_size,
            manifest.model.input_size
        )),
    );

    let mut pending: Option<Pending> = None;
    let files = parts::require_listed(dir, &manifest)
        .and_then(|()| enrol::inspect(dir))
        .map(|(_, p)| {
            let mut detail = format!(
                "{} files match their sha256 ({})",
                manifest.files.len(),
                manifest
                    .files
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(p) = &p {
                detail.push_str("; ");
                detail.push_str(&p.describe());
            }
            pending = p;
            detail
        })
        .map_err(|e| e.to_string());
    report.push("files", files);

    let gallery = parts::model_hash(dir, &manifest)
        .and_then(|hash| parts::open_gallery(dir, &manifest, &hash));
    let gallery = match gallery {
        Ok(g) => {
            report.push(
                "gallery",
                Ok(format!(
                    "{} items of {} bits, for model sha256 {}",
                    g.len(),
                    g.code_bits(),
                    bundle::to_hex(g.model_hash())
                )),
            );
            Some(g)
        }
        Err(e) => {
            report.push("gallery", Err(e.to_string()));
            None
        }
    };

    let extra = pending
        .as_ref()
        .map(Pending::unwritten_labels)
        .unwrap_or_default();
    let labels = match &gallery {
        Some(g) => skus::read(dir, g, &extra).map(|labels| {
            format!(
                "{} labelled; every one of the {} gallery items has a label",
                labels.skus.len(),
                g.len()
            )
        }),
        None => bundle::Labels::read(dir.join(bundle::LABELS_FILE))
            .map(|labels| {
                format!(
                    "{} rows (not compared with the gallery, which did not open)",
                    labels.len()
                )
            })
            .map_err(Into::into),
    };
    report.push("labels", labels.map_err(|e| e.to_string()));

    let model = match parts::load_model(dir, &manifest, runtime, infer::GpuTuning::default(), 1) {
        Ok(m) => {
            report.backend = Some(m.backend().to_string());
            report.push(
                "model",
                Ok(format!(
                    "{} loads on {} ({}): input {:?}, {} outputs",
                    manifest.model.file,
                    m.backend(),
                    m.adapter(),
                    m.input_shape(),
                    manifest.model.embedding_dim
                )),
            );
            Some(m)
        }
        Err(e) => {
            report.push("model", Err(e.to_string()));
            None
        }
    };

    let code_check = match (&manifest.selftest, model) {
        (None, _) => Err(format!(
            "{}: no [selftest] section: the model cannot be checked on this device",
            Manifest::path_in(dir).display()
        )),
        (Some(_), None) => Err("not run: the model did not load".to_owned()),
        (Some(expected), Some(mut model)) => (|| {
            let pattern = selftest_pattern(SELFTEST_SIDE);
            let mut code = vec![0u8; manifest.model.code_bits as usize / 8];
            if model.backend() == infer::Backend::Gpu {
                // As lookups run there: the frame preprocessed by the GPU's frame kernel.
                let prep = crate::appliance::frame_prep(&manifest);
                model
                    .run_rgb8_packed(
                        &prep,
                        SELFTEST_SIDE,
                        SELFTEST_SIDE,
                        pattern.as_raw(),
                        &mut code,
                    )
                    .map_err(|e| format!("running the model on the pattern: {e}"))?;
            } else {
                let mut preprocessor =
                    Preprocessor::new(manifest.preprocess.clone()).map_err(|e| e.to_string())?;
                let mut input = vec![0.0f32; preprocessor.out_len()];
                preprocessor
                    .apply_image(&pattern, &mut input)
                    .map_err(|e| e.to_string())?;
                model
                    .run_packed(1, &input, &mut code)
                    .map_err(|e| format!("running the model on the pattern: {e}"))?;
            }
            let distance = expected.check(&code).map_err(|e| {
                format!(
                    "{}: {e} (code {})",
                    dir.join(&manifest.model.file).display(),
                    bundle::to_hex(&code)
                )
            })?;
            Ok(format!(
                "pattern {} gives a code {distance} bits from the expected one (at most {} allowed)",
                expected.pattern, expected.max_hamming
            ))
        })(),
    };
    report.push("selftest-code", code_check);
    report
}
