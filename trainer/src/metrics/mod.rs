//! Retrieval metrics of an embedding, for its float form and its binary (sign) code.
//!
//! [`evaluate`] runs both searches and all metrics and returns a [`Report`], which serialises as
//! `{"float": {...}, "binary": {...}}`.
//!
//! # Searches
//!
//! * **Float:** cosine similarity of L2-normalised embeddings (rows are normalised here; a zero
//!   row stays zero and is at similarity 0 to everything), exact k-NN by blocked matrix products
//!   on rayon's pool, no limit on k ([`knn_cosine`]).
//! * **Binary:** the code is the sign of each value (bit `i` = bit `i % 8` of byte `i / 8`, 1 where
//!   the value is > 0; [`pack_signs`]), and the search is the appliance's own: the codes are
//!   written to a gallery file in a temporary directory and searched with
//!   [`gallery::Searcher`] ([`knn_hamming`]). Codes narrower than the gallery's 64 bits, or not a
//!   multiple of 8 bits, are padded with zero bits on both sides, which leaves every distance
//!   unchanged; codes wider than 4096 bits are an error.
//!
//! **Order and ties.** Neighbours are ordered by (similarity descending, item) for floats and by
//! (Hamming distance, item) for codes, where item is the row index of the item in the embedding
//! matrix (the gallery's item id). Equal distances are common in Hamming space; this order makes
//! every metric deterministic.
//!
//! **Depth.** Each query gets `max(max K, R)` neighbours (R below), capped by the number of items
//! it can be compared with. The gallery answers k-NN queries for k <= [`gallery::MAX_K`] (1000);
//! a query that needs more (a class of more than 1000 references, or K > 1000) is answered by the
//! gallery's range query over the whole code width, which returns every item in the same
//! (distance, item) order and is cut at the depth needed. So **no metric is capped at 1000**:
//! such queries only cost more (a sort of the whole gallery each).
//!
//! # Protocols
//!
//! * [`Protocol::SameSet`]: every item is a query against all the others; the query itself is
//!   never among its own neighbours (CUB, Cars196, SOP).
//! * [`Protocol::QueryGallery`]: the query items are searched against the gallery items and
//!   nothing is excluded (In-Shop); an item in both lists is found by itself.
//!
//! # Metrics (per search)
//!
//! * **Recall@K** (as the metric-learning literature uses it): the share of queries with at least
//!   one same-label item among their K nearest neighbours. Every query counts: a query with no
//!   same-label item in the database is a miss. K larger than the database means "all of it".
//! * **R-precision** and **MAP@R**, as pytorch-metric-learning defines them: R is the number of
//!   same-label items in the database (the query itself excluded under `SameSet`);
//!   R-precision = (same-label items in the top R) / R; MAP@R = (1/R) * sum over i <= R of
//!   P@i * rel(i). Queries with R = 0 are left out of both means; if every query has R = 0, both
//!   are 0 (as pytorch-metric-learning returns).
//! * **NMI:** k-means with k = the number of distinct labels among the queries, on the queries'
//!   L2-normalised embeddings (float) or on their sign vectors in {-1, +1} (binary): the Lloyd
//!   iterations are linfa-clustering's [`KMeans`](linfa_clustering::KMeans), started from a
//!   seeded k-means++ seeding computed here (linfa's own costs O(n k^2 d); see [`KMeansInit`]).
//!   Then the normalised mutual information between cluster ids and labels with the
//!   arithmetic-mean normalisation, which is scikit-learn's default for
//!   `normalized_mutual_info_score` ([`normalized_mutual_info`]).
//!   Under `QueryGallery` it is computed on the queries, as pytorch-metric-learning does.
//!   k-means costs O(n x classes x d) per iteration: for many classes (SOP: 11,316) it dominates
//!   the evaluation; [`EvalOptions::nmi`] turns it off. Measured on a 2-core machine, 6,000
//!   points of d = 512 in 100 classes (CUB-sized): both searches with their metrics 1-2 s, both
//!   k-means about 10 s.

mod error;
mod knn;
mod nmi;
mod scores;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

pub use error::{MetricsError, Result};
pub use knn::{knn_cosine, knn_hamming, pack_signs};
pub use nmi::{KMeansInit, KMeansOptions, kmeans_clusters, normalized_mutual_info};
pub use scores::{RetrievalScores, retrieval_scores};

/// A class label: any small copyable key (`i64`, `usize`, `u32`, ...).
pub trait Label: Copy + Eq + Hash + Send + Sync {}
impl<T: Copy + Eq + Hash + Send + Sync> Label for T {}

/// Which items are queries and which are searched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// Every item is a query against all the others (the query itself excluded).
    SameSet,
    /// Row indices of the query items and of the gallery items; nothing is excluded.
    QueryGallery {
        queries: Vec<usize>,
        gallery: Vec<usize>,
    },
}

/// One search's metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Recall@K keyed by K written in decimal ("1", "2", "4", ...).
    pub recall_at_k: BTreeMap<String, f64>,
    /// `None` where it was not asked for ([`EvalOptions::nmi`]).
    pub nmi: Option<f64>,
    pub r_precision: f64,
    pub map_at_r: f64,
}

impl Metrics {
    /// Recall@`k`, if it was computed.
    pub fn recall(&self, k: usize) -> Option<f64> {
        self.recall_at_k.get(&k.to_string()).copied()
    }
}

/// The metrics of the float embedding and of its binary code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub float: Metrics,
    pub binary: Metrics,
}

/// What [`evaluate_with`] computes beyond the retrieval metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Run k-means and report NMI (default true).
    pub nmi: bool,
    pub kmeans: KMeansOptions,
}

impl Default for EvalOptions {
    fn default() -> EvalOptions {
        EvalOptions {
            nmi: true,
            kmeans: KMeansOptions::default(),
        }
    }
}

/// All metrics of both searches, with NMI and the default k-means settings.
///
/// `embeddings` is row-major, `labels.len()` rows of `d` values; `ks` are the Recall@K depths.
pub fn evaluate<L: Label>(
    embeddings: &[f32],
    d: usize,
    labels: &[L],
    ks: &[usize],
    protocol: &Protocol,
) -> Result<Report> {
    evaluate_with(embeddings, d, labels, ks, protocol, &EvalOptions::default())
}

/// [`evaluate`] with options.
pub fn evaluate_with<L: Label>(
    embeddings: &[f32],
    d: usize,
    labels: &[L],
    ks: &[usize],
    protocol: &Protocol,
    options: &EvalOptions,
) -> Result<Report> {
    let n = check_embeddings(embeddings, d)?;
    check_finite(embeddings, d)?;
    if labels.len() != n {
        return Err(MetricsError::LengthMismatch {
            what: "labels (one per embedding row)",
            expected: n,
            actual: labels.len(),
        });
    }
    check_ks(ks)?;
    let split = Split::new(protocol, n)?;
    let classes = dense_classes(labels);
    let plan = scores::Plan::new(&split, &classes, ks);

    // The gallery first: a code width it cannot hold fails before the float search runs.
    let codes = pack_signs(embeddings, d)?;
    let hamming_index = knn::HammingIndex::new(&codes, d, &split)?;
    drop(codes);
    let binary_scores = plan.run(|chunk, depths| hamming_index.search(chunk, depths))?;
    drop(hamming_index);

    let normalised = knn::l2_normalised(embeddings, d);
    let float_index = knn::FloatIndex::new(&normalised, d, &split);
    let float_scores = plan.run(|chunk, depths| Ok(float_index.search(chunk, depths)))?;
    drop(float_index);

    let (float_nmi, binary_nmi) = if options.nmi {
        let query_labels: Vec<u32> = split.queries.iter().map(|&q| classes[q]).collect();
        let k = distinct(&query_labels);
        let float_points = gather_rows(&normalised, d, &split.queries);
        let float_clusters = kmeans_clusters(&float_points, d, k, &options.kmeans)?;
        let signs: Vec<f32> = gather_rows(embeddings, d, &split.queries)
            .iter()
            .map(|&v| if v > 0.0 { 1.0 } else { -1.0 })
            .collect();
        let binary_clusters = kmeans_clusters(&signs, d, k, &options.kmeans)?;
        (
            Some(normalized_mutual_info(&query_labels, &float_clusters)?),
            Some(normalized_mutual_info(&query_labels, &binary_clusters)?),
        )
    } else {
        (None, None)
    };

    Ok(Report {
        float: float_scores.into_metrics(float_nmi),
        binary: binary_scores.into_metrics(binary_nmi),
    })
}

/// Queries and database as row indices, checked.
#[derive(Debug)]
pub(crate) struct Split {
    pub queries: Vec<usize>,
    pub database: Vec<usize>,
    /// Queries are the database (`SameSet`): query `i` is database item `i` and is excluded.
    pub same_set: bool,
}

impl Split {
    pub fn new(protocol: &Protocol, n: usize) -> Result<Split> {
        match protocol {
            Protocol::SameSet => {
                if n == 0 {
                    return Err(MetricsError::Empty { what: "embeddings" });
                }
                Ok(Split {
                    queries: (0..n).collect(),
                    database: (0..n).collect(),
                    same_set: true,
                })
            }
            Protocol::QueryGallery { queries, gallery } => {
                check_indices("queries", queries, n)?;
                check_indices("gallery", gallery, n)?;
                Ok(Split {
                    queries: queries.clone(),
                    database: gallery.clone(),
                    same_set: false,
                })
            }
        }
    }

    /// Items a query can be compared with.
    pub fn available(&self) -> usize {
        self.database.len() - usize::from(self.same_set)
    }
}

fn check_indices(what: &'static str, indices: &[usize], n: usize) -> Result<()> {
    if indices.is_empty() {
        return Err(MetricsError::Empty { what });
    }
    let mut seen = vec![false; n];
    for &index in indices {
        match seen.get_mut(index) {
            None => {
                return Err(MetricsError::IndexOutOfRange {
                    what,
                    index,
                    len: n,
                });
            }
            Some(true) => return Err(MetricsError::DuplicateIndex { what, index }),
            Some(s) => *s = true,
        }
    }
    Ok(())
}

/// Rows in `embeddings`, or an error for d = 0 or a partial row.
fn check_embeddings(embeddings: &[f32], d: usize) -> Result<usize> {
    if d == 0 {
        return Err(MetricsError::ZeroDimension);
    }
    if !embeddings.len().is_multiple_of(d) {
        return Err(MetricsError::Ragged {
            what: "embeddings",
            len: embeddings.len(),
            d,
        });
    }
    Ok(embeddings.len() / d)
}

fn check_finite(embeddings: &[f32], d: usize) -> Result<()> {
    match embeddings.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(MetricsError::NonFinite {
            row: i / d,
            column: i % d,
        }),
        None => Ok(()),
    }
}

fn check_ks(ks: &[usize]) -> Result<()> {
    if ks.contains(&0) {
        return Err(MetricsError::ZeroK);
    }
    Ok(())
}

/// Labels as dense class numbers 0.. in order of first appearance.
pub(crate) fn dense_classes<L: Label>(labels: &[L]) -> Vec<u32> {
    let mut ids: HashMap<L, u32> = HashMap::new();
    labels
        .iter()
        .map(|l| {
            let next = ids.len() as u32;
            *ids.entry(*l).or_insert(next)
        })
        .collect()
}

fn distinct(classes: &[u32]) -> usize {
    let mut sorted = classes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.len()
}

fn gather_rows(matrix: &[f32], d: usize, rows: &[usize]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&r| &matrix[r * d..(r + 1) * d])
        .copied()
        .collect()
}
