//! k-means (linfa-clustering) and normalised mutual information.

use linfa::DatasetBase;
use linfa::traits::{Fit, Predict};
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Label, MetricsError, Result, check_embeddings, check_finite, dense_classes};

/// How k-means picks its first centroids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KMeansInit {
    /// k-means++ seeding (Arthur and Vassilvitskii; scikit-learn's default, without its greedy
    /// trials), seeded by [`KMeansOptions::seed`]. It is computed here, in O(n k d) with one
    /// running minimum distance per point, and handed to linfa as its precomputed centroids:
    /// linfa's own k-means++ recomputes the distances to every chosen centroid for each new
    /// one, O(n k^2 d) (14 s for 6,000 points, 100 clusters, d = 512 on 2 cores; hours for
    /// thousands of classes).
    #[default]
    PlusPlus,
    /// k points drawn at random by linfa (its fixed seed), as faiss, and so
    /// pytorch-metric-learning, starts. Cheap, but a run that starts with two centroids in one
    /// class and none in another rarely recovers: weak for many small classes.
    RandomPoints,
}

/// Settings of the k-means behind NMI. The Lloyd iterations are linfa-clustering's `KMeans`;
/// the same data and settings always give the same clusters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KMeansOptions {
    pub init: KMeansInit,
    /// Seed of the k-means++ seeding (run `i` uses `seed + i`).
    pub seed: u64,
    /// Lloyd iterations at most per run (default 300, as scikit-learn).
    pub max_iterations: u64,
    /// Runs from different initialisations; the one of least inertia is kept (default 1).
    pub runs: usize,
    /// A run stops when the centroids move less than this (default 1e-4).
    pub tolerance: f32,
}

impl Default for KMeansOptions {
    fn default() -> KMeansOptions {
        KMeansOptions {
            init: KMeansInit::default(),
            seed: 0,
            max_iterations: 300,
            runs: 1,
            tolerance: 1e-4,
        }
    }
}

/// Cluster id (0..k) of every row of `points` (row-major, `d` values a row) by k-means.
pub fn kmeans_clusters(
    points: &[f32],
    d: usize,
    k: usize,
    options: &KMeansOptions,
) -> Result<Vec<usize>> {
    let n = check_embeddings(points, d)?;
    check_finite(points, d)?;
    if n == 0 {
        return Err(MetricsError::Empty {
            what: "points to cluster",
        });
    }
    if k == 0 || options.runs == 0 {
        return Err(MetricsError::KMeans(
            "k and the number of runs must be at least 1".into(),
        ));
    }
    if k > n {
        return Err(MetricsError::TooManyClusters { k, points: n });
    }
    if k == 1 {
        return Ok(vec![0; n]);
    }
    let records = Array2::from_shape_vec((n, d), points.to_vec()).expect("n x d values");
    let dataset = DatasetBase::from(records.view());
    let fit = |init: linfa_clustering::KMeansInit<f32>, runs: usize| {
        KMeans::params(k)
            .init_method(init)
            .n_runs(runs)
            .max_n_iterations(options.max_iterations)
            .tolerance(options.tolerance)
            .fit(&dataset)
            .map_err(|e| MetricsError::KMeans(e.to_string()))
    };
    let model = match options.init {
        KMeansInit::RandomPoints => fit(linfa_clustering::KMeansInit::Random, options.runs)?,
        KMeansInit::PlusPlus => {
            let mut best: Option<KMeans<f32, _>> = None;
            for run in 0..options.runs as u64 {
                let seeds = plus_plus_seeds(points, d, k, options.seed.wrapping_add(run));
                let centroids = Array2::from_shape_vec((k, d), seeds).expect("k x d values");
                let model = fit(linfa_clustering::KMeansInit::Precomputed(centroids), 1)?;
                if best.as_ref().is_none_or(|b| model.inertia() < b.inertia()) {
                    best = Some(model);
                }
            }
            best.expect("runs >= 1")
        }
    };
    Ok(model.predict(&records).to_vec())
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// k-means++ seeding: the first centre uniformly, each next one with probability proportional
/// to the squared distance to the nearest centre chosen so far. Returns k x d values.
fn plus_plus_seeds(points: &[f32], d: usize, k: usize, seed: u64) -> Vec<f32> {
    let n = points.len() / d;
    let row = |i: usize| &points[i * d..(i + 1) * d];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut chosen = rng.random_range(0..n);
    let mut centres = Vec::with_capacity(k * d);
    let mut nearest = vec![f32::INFINITY; n];
    for _ in 0..k {
        centres.extend_from_slice(row(chosen));
        let centre = row(chosen);
        nearest
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, m)| *m = m.min(squared_distance(row(i), centre)));
        let total: f64 = nearest.iter().map(|&m| f64::from(m)).sum();
        chosen = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            nearest
                .iter()
                .position(|&m| {
                    target -= f64::from(m);
                    target < 0.0 && m > 0.0
                })
                .unwrap_or_else(|| nearest.iter().rposition(|&m| m > 0.0).unwrap_or(0))
        } else {
            // Every point sits on a centre: further centres can only repeat one.
            rng.random_range(0..n)
        };
    }
    centres
}

/// Normalised mutual information between two labellings of the same items, with the
/// arithmetic-mean normalisation: MI(U, V) / ((H(U) + H(V)) / 2), as scikit-learn's
/// `normalized_mutual_info_score` computes it by default, including its limit cases: two
/// labellings that both put everything in one group score 1, and MI = 0 scores 0.
pub fn normalized_mutual_info<A: Label, B: Label>(labels: &[A], clusters: &[B]) -> Result<f64> {
    if labels.len() != clusters.len() {
        return Err(MetricsError::LengthMismatch {
            what: "cluster ids (one per label)",
            expected: labels.len(),
            actual: clusters.len(),
        });
    }
    if labels.is_empty() {
        return Err(MetricsError::Empty { what: "labels" });
    }
    let (u, v) = (dense_classes(labels), dense_classes(clusters));
    let count = |ids: &[u32]| {
        let mut counts = vec![0u64; ids.iter().map(|&i| i as usize + 1).max().unwrap_or(0)];
        for &i in ids {
            counts[i as usize] += 1;
        }
        counts
    };
    let (a, b) = (count(&u), count(&v));
    if a.len() == 1 && b.len() == 1 {
        return Ok(1.0);
    }
    // The contingency table's non-zero cells, from the sorted (label, cluster) pairs.
    let mut pairs: Vec<(u32, u32)> = u.iter().copied().zip(v.iter().copied()).collect();
    pairs.sort_unstable();
    let n = labels.len() as f64;
    let mut mi = 0.0;
    let mut start = 0;
    while start < pairs.len() {
        let end = start + pairs[start..].partition_point(|p| *p == pairs[start]);
        let nij = (end - start) as f64;
        let (i, j) = pairs[start];
        let (ai, bj) = (a[i as usize] as f64, b[j as usize] as f64);
        mi += nij / n * (n * nij / (ai * bj)).ln();
        start = end;
    }
    let mi = mi.max(0.0);
    if mi == 0.0 {
        return Ok(0.0);
    }
    let entropy = |counts: &[u64]| -> f64 {
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.ln()
            })
            .sum()
    };
    let normaliser = ((entropy(&a) + entropy(&b)) / 2.0).max(f64::EPSILON);
    Ok(mi / normaliser)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_clustering_is_one_whatever_the_ids() {
        let labels = [10i64, 10, 20, 20, 30, 30];
        let clusters = [2usize, 2, 0, 0, 1, 1];
        let nmi = normalized_mutual_info(&labels, &clusters).unwrap();
        assert!((nmi - 1.0).abs() < 1e-12, "{nmi}");
    }

    #[test]
    fn known_value_from_the_contingency_table() {
        // labels:   0 0 0 1 1 1
        // clusters: 0 0 1 1 1 1
        // Contingency (rows labels, columns clusters): [[2, 1], [0, 3]]; N = 6,
        // row sums a = (3, 3), column sums b = (2, 4).
        // MI = 2/6 ln(6*2/(3*2)) + 1/6 ln(6*1/(3*4)) + 3/6 ln(6*3/(3*4))
        //    = (1/3) ln 2 - (1/6) ln 2 + (1/2) ln(3/2)
        // H(labels) = ln 2; H(clusters) = -(1/3) ln(1/3) - (2/3) ln(2/3)
        // NMI = MI / ((H(labels) + H(clusters)) / 2) = 0.478703971385680 (scikit-learn agrees).
        let ln = f64::ln;
        let mi = ln(2.0) / 3.0 - ln(2.0) / 6.0 + ln(1.5) / 2.0;
        let hu = ln(2.0);
        let hv = -(1.0 / 3.0) * ln(1.0 / 3.0) - (2.0 / 3.0) * ln(2.0 / 3.0);
        let expected = mi / ((hu + hv) / 2.0);
        assert!((expected - 0.478_703_971_385_680).abs() < 1e-12);
        let got = normalized_mutual_info(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 1, 1]).unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        // Symmetric.
        let got = normalized_mutual_info(&[0, 0, 1, 1, 1, 1], &[0, 0, 0, 1, 1, 1]).unwrap();
        assert!((got - expected).abs() < 1e-12);
    }

    #[test]
    fn limit_cases_as_scikit_learn() {
        // Both one group: 1. One group against several: MI = 0, so 0.
        assert_eq!(normalized_mutual_info(&[5, 5, 5], &[1, 1, 1]).unwrap(), 1.0);
        assert_eq!(normalized_mutual_info(&[5, 5, 5], &[0, 1, 2]).unwrap(), 0.0);
        // Independent: labels (0, 0, 1, 1) vs clusters (0, 1, 0, 1) share nothing.
        assert_eq!(
            normalized_mutual_info(&[0, 0, 1, 1], &[0, 1, 0, 1]).unwrap(),
            0.0
        );
        let empty: [u8; 0] = [];
        assert!(matches!(
            normalized_mutual_info(&empty, &empty),
            Err(MetricsError::Empty { .. })
        ));
        assert!(matches!(
            normalized_mutual_info(&[1, 2], &[1]),
            Err(MetricsError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn kmeans_finds_separated_clusters_and_is_seeded() {
        // Three tight groups far apart in 3-d: k-means must recover them exactly.
        let centres = [[10.0f32, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]];
        let mut points = Vec::new();
        let mut labels = Vec::new();
        for i in 0..30 {
            let c = i % 3;
            let jitter = (i as f32 * 0.37).sin() * 0.1;
            points.extend(centres[c].iter().map(|v| v + jitter));
            labels.push(c);
        }
        // k-means++ spreads the first centroids over the three groups; random points need a few
        // runs to draw one from each group (a run that starts with two in one group stays there).
        let plus_plus = KMeansOptions::default();
        let random_runs = KMeansOptions {
            init: KMeansInit::RandomPoints,
            runs: 10,
            ..KMeansOptions::default()
        };
        for options in [&plus_plus, &random_runs] {
            let clusters = kmeans_clusters(&points, 3, 3, options).unwrap();
            let nmi = normalized_mutual_info(&labels, &clusters).unwrap();
            assert!((nmi - 1.0).abs() < 1e-12, "{options:?}: {nmi}");
            assert_eq!(kmeans_clusters(&points, 3, 3, options).unwrap(), clusters);
        }
        let options = KMeansOptions::default();
        assert!(matches!(
            kmeans_clusters(&points, 3, 31, &options),
            Err(MetricsError::TooManyClusters { k: 31, points: 30 })
        ));
        assert!(matches!(
            kmeans_clusters(&points, 3, 0, &options),
            Err(MetricsError::KMeans(_))
        ));
        assert!(matches!(
            kmeans_clusters(&[], 3, 1, &options),
            Err(MetricsError::Empty { .. })
        ));
        let no_runs = KMeansOptions {
            runs: 0,
            ..KMeansOptions::default()
        };
        assert!(matches!(
            kmeans_clusters(&points, 3, 3, &no_runs),
            Err(MetricsError::KMeans(_))
        ));
    }
}
