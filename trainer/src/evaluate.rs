//! Embeds a test split with a model and scores it: float embeddings by cosine, binary codes by
//! Hamming through firmware/gallery's search (the device's own code).

use std::sync::Arc;

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use npyz::WriterBuilder;

use crate::data::{Dataset, DatasetKind, Loader, LoaderOptions, Preprocess, Split};
use crate::metrics::{self, Protocol, Report};
use crate::model::EmbeddingModel;

/// Images per forward pass when embedding.
const EVAL_BATCH: usize = 32;

/// Recall@K depths of each dataset, as the field reports them.
pub fn recall_ks(kind: DatasetKind) -> &'static [usize] {
    match kind {
        DatasetKind::Sop => &[1, 10, 100, 1000],
        DatasetKind::InShop => &[1, 10, 20, 30, 40, 50],
        _ => &[1, 2, 4, 8],
    }
}

/// Embeddings of the readable images of a split, in split order.
#[derive(Clone, Debug)]
pub struct Embedded {
    /// Unit rows, `indices.len() x dim`.
    pub embeddings: Vec<f32>,
    pub dim: usize,
    pub labels: Vec<i64>,
    /// Sample indices of the rows (unreadable images are absent).
    pub indices: Vec<usize>,
}

/// Runs the model (in evaluation mode: BatchNorm on running statistics) over a split.
pub fn embed_split(
    model: &EmbeddingModel,
    split: Arc<Split>,
    preprocess: Preprocess,
    device: &Device,
) -> Result<Embedded> {
    let side = preprocess.image_size as usize;
    let dim = model.embedding_dim();
    let mut embedded = Embedded {
        embeddings: Vec::new(),
        dim,
        labels: Vec::new(),
        indices: Vec::new(),
    };
    let loader = Loader::eval(split, preprocess, EVAL_BATCH, LoaderOptions::default())?;
    for batch in loader {
        let n = batch.len();
        let images =
            Tensor::<4>::from_data(TensorData::new(batch.images, [n, 3, side, side]), device);
        let rows: Vec<f32> = model
            .forward(images)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|error| anyhow::anyhow!("reading embeddings back: {error:?}"))?;
        embedded.embeddings.extend_from_slice(&rows);
        embedded
            .labels
            .extend(batch.labels.iter().map(|&label| label as i64));
        embedded.indices.extend_from_slice(&batch.indices);
    }
    Ok(embedded)
}

/// The retrieval protocol of a dataset over the rows actually embedded.
pub fn protocol(dataset: &Dataset, embedded: &Embedded) -> Protocol {
    match &dataset.query_gallery {
        None => Protocol::SameSet,
        Some(query_gallery) => {
            // Sample index -> row, for images that were readable.
            let mut row_of = vec![usize::MAX; dataset.test.len()];
            for (row, &index) in embedded.indices.iter().enumerate() {
                row_of[index] = row;
            }
            let rows = |indices: &[usize]| -> Vec<usize> {
                indices
                    .iter()
                    .map(|&i| row_of[i])
                    .filter(|&row| row != usize::MAX)
                    .collect()
            };
            Protocol::QueryGallery {
                queries: rows(&query_gallery.queries),
                gallery: rows(&query_gallery.gallery),
            }
        }
    }
}

/// Embeds the test split and computes every metric, float and binary.
pub fn evaluate_model(
    model: &EmbeddingModel,
    dataset: &Dataset,
    preprocess: Preprocess,
    kind: DatasetKind,
    device: &Device,
) -> Result<(Report, Embedded)> {
    let embedded = embed_split(model, Arc::new(dataset.test.clone()), preprocess, device)?;
    let report = metrics::evaluate(
        &embedded.embeddings,
        embedded.dim,
        &embedded.labels,
        recall_ks(kind),
        &protocol(dataset, &embedded),
    )
    .context("computing the metrics")?;
    Ok((report, embedded))
}

/// Writes embeddings.npy (float32, n x d), codes.npy (uint8, n x d/8, gallery bit order) and
/// labels.npy (int64), rows in the order of the evaluated images.
pub fn dump(dir: &std::path::Path, embedded: &Embedded) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let n = embedded.labels.len() as u64;
    let codes = metrics::pack_signs(&embedded.embeddings, embedded.dim)?;
    write_npy(
        &dir.join("embeddings.npy"),
        &[n, embedded.dim as u64],
        &embedded.embeddings,
    )?;
    write_npy(
        &dir.join("codes.npy"),
        &[n, embedded.dim.div_ceil(8) as u64],
        &codes,
    )?;
    write_npy(&dir.join("labels.npy"), &[n], &embedded.labels)?;
    Ok(())
}

/// Writes `values` as a C-order .npy array of `shape` (what numpy and faiss read).
pub fn write_npy<T: npyz::AutoSerialize + Copy>(
    path: &std::path::Path,
    shape: &[u64],
    values: &[T],
) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .with_context(|| format!("writing {}", path.display()))?;
    writer
        .extend(values.iter().copied())
        .with_context(|| format!("writing {}", path.display()))?;
    writer
        .finish()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
