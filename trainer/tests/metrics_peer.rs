//! trainer::metrics against an independent implementation: `peers/retrieval_metrics.py`
//! (brute force in numpy, NMI from scikit-learn), on random clustered data written as .npy.
//!
//! The embeddings have exactly 16 non-zero entries of +-1 in 64 dimensions: normalised, every
//! entry is +-0.25 and every cosine is a multiple of 1/16, exact in f32 and f64 alike. Ties are
//! therefore exact and frequent on both sides, and both must break them by row; the retrieval
//! metrics must agree to rounding. NMI is compared exactly on cluster ids given to both, and
//! loosely (within 0.1) on each side's own k-means (linfa here, scikit-learn there) where the
//! classes are balanced enough for k-means to be stable.
//!
//! Needs python3 with numpy and scikit-learn (`pip install numpy scikit-learn`); without them the
//! test says so on stderr and passes.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::StdRng};
use trainer::evaluate::write_npy;
use trainer::metrics::{Protocol, Report, evaluate, normalized_mutual_info};

const D: usize = 64;
const NON_ZERO: usize = 16;

/// Writes to stderr past the test harness's capture (which takes `eprintln!`), so that a skip
/// and the numbers are seen in a passing run.
fn tell(message: &str) {
    let _ = std::io::stderr().write_all(format!("{message}\n").as_bytes());
}

/// Why the peer cannot run here, if it cannot.
fn peer_missing() -> Option<String> {
    match Command::new("python3")
        .args(["-c", "import numpy, sklearn"])
        .output()
    {
        Err(e) => Some(format!("python3 could not be started: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "python3 lacks numpy or scikit-learn ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Ok(_) => None,
    }
}

/// A vector with `NON_ZERO` entries of +-1.
fn random_pattern(rng: &mut StdRng) -> Vec<f32> {
    let mut v = vec![0.0; D];
    let mut positions: Vec<usize> = (0..D).collect();
    positions.shuffle(rng);
    for &p in &positions[..NON_ZERO] {
        v[p] = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    }
    v
}

/// The class pattern with a few entries moved or flipped (still `NON_ZERO` of +-1).
fn member(rng: &mut StdRng, centre: &[f32]) -> Vec<f32> {
    let mut v = centre.to_vec();
    for _ in 0..rng.random_range(0..=5) {
        let non_zero: Vec<usize> = (0..D).filter(|&j| v[j] != 0.0).collect();
        let zero: Vec<usize> = (0..D).filter(|&j| v[j] == 0.0).collect();
        let from = non_zero[rng.random_range(0..non_zero.len())];
        if rng.random_bool(0.5) {
            v[from] = -v[from];
        } else {
            let to = zero[rng.random_range(0..zero.len())];
            v[to] = v[from];
            v[from] = 0.0;
        }
    }
    v
}

/// Classes of the given sizes, rows shuffled.
fn clustered(rng: &mut StdRng, sizes: &[usize]) -> (Vec<f32>, Vec<i64>) {
    let mut rows: Vec<(Vec<f32>, i64)> = Vec::new();
    for (class, &size) in sizes.iter().enumerate() {
        let centre = random_pattern(rng);
        for _ in 0..size {
            rows.push((member(rng, &centre), 100 + class as i64));
        }
    }
    rows.shuffle(rng);
    let labels = rows.iter().map(|r| r.1).collect();
    (rows.into_iter().flat_map(|r| r.0).collect(), labels)
}

/// Cluster ids that mostly follow the labels: 25% of the items moved to a random cluster.
fn noisy_clusters(rng: &mut StdRng, labels: &[i64]) -> Vec<i64> {
    labels
        .iter()
        .map(|&l| {
            if rng.random_bool(0.25) {
                rng.random_range(0..12)
            } else {
                l % 12
            }
        })
        .collect()
}

fn run_peer(dir: &Path, ks: &[usize]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/retrieval_metrics.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .args(ks.iter().map(|k| k.to_string()))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the peer prints JSON")
}

fn compare(
    name: &str,
    embeddings: &[f32],
    labels: &[i64],
    ks: &[usize],
    protocol: &Protocol,
    rng: &mut StdRng,
    kmeans_comparable: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let n = labels.len();
    write_npy(
        &dir.path().join("embeddings.npy"),
        &[n as u64, D as u64],
        embeddings,
    )
    .unwrap();
    write_npy(&dir.path().join("labels.npy"), &[n as u64], labels).unwrap();
    let clusters = noisy_clusters(rng, labels);
    write_npy(&dir.path().join("clusters.npy"), &[n as u64], &clusters).unwrap();
    if let Protocol::QueryGallery { queries, gallery } = protocol {
        let as_i64 = |v: &[usize]| v.iter().map(|&i| i as i64).collect::<Vec<_>>();
        write_npy(
            &dir.path().join("queries.npy"),
            &[queries.len() as u64],
            &as_i64(queries),
        )
        .unwrap();
        write_npy(
            &dir.path().join("gallery.npy"),
            &[gallery.len() as u64],
            &as_i64(gallery),
        )
        .unwrap();
    }
    let peer = run_peer(dir.path(), ks);
    let ours: Report = evaluate(embeddings, D, labels, ks, protocol).unwrap();

    let nmi = normalized_mutual_info(labels, &clusters).unwrap();
    let peer_nmi = peer["nmi_of_given_clusters"].as_f64().unwrap();
    assert!(
        (nmi - peer_nmi).abs() < 1e-9,
        "{name}: NMI of given clusters {nmi} vs scikit-learn {peer_nmi}"
    );

    for (side, m) in [("float", &ours.float), ("binary", &ours.binary)] {
        let p = &peer[side];
        for &k in ks {
            let (a, b) = (
                m.recall(k).unwrap(),
                p["recall_at_k"][k.to_string()].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-9, "{name} {side} R@{k}: {a} vs peer {b}");
        }
        for (key, a) in [("r_precision", m.r_precision), ("map_at_r", m.map_at_r)] {
            let b = p[key].as_f64().unwrap();
            assert!((a - b).abs() < 1e-9, "{name} {side} {key}: {a} vs peer {b}");
        }
        let (a, b) = (m.nmi.unwrap(), p["kmeans_nmi"].as_f64().unwrap());
        assert!(
            !kmeans_comparable || (a - b).abs() < 0.1,
            "{name} {side} k-means NMI: {a} (linfa) vs {b} (scikit-learn)"
        );
        tell(&format!(
            "{name} {side}: R@{} {:.4}, MAP@R {:.4}, R-precision {:.4}, NMI {a:.4} (scikit-learn's k-means: {b:.4})",
            ks[0],
            m.recall(ks[0]).unwrap(),
            m.map_at_r,
            m.r_precision
        ));
    }
}

#[test]
fn metrics_agree_with_the_numpy_sklearn_peer() {
    if let Some(why) = peer_missing() {
        tell(&format!(
            "SKIPPED metrics_agree_with_the_numpy_sklearn_peer: {why}"
        ));
        return;
    }
    let mut rng = StdRng::seed_from_u64(20261104);

    // CUB/Cars style: one set, the query excluded; classes of 1 to 24 items (lone queries too).
    let sizes: Vec<usize> = (0..40).map(|c| 1 + (c * 7) % 24).collect();
    let (e, labels) = clustered(&mut rng, &sizes);
    compare(
        "same set",
        &e,
        &labels,
        &[1, 2, 4, 8, 16, 100],
        &Protocol::SameSet,
        &mut rng,
        true,
    );

    // In-Shop style: each class's items split between queries and gallery, and a few classes
    // with queries only.
    let sizes: Vec<usize> = (0..30).map(|c| 2 + (c * 5) % 9).collect();
    let (e, labels) = clustered(&mut rng, &sizes);
    let (mut queries, mut gallery) = (Vec::new(), Vec::new());
    for (row, &label) in labels.iter().enumerate() {
        if label >= 127 || rng.random_bool(0.5) {
            queries.push(row);
        } else {
            gallery.push(row);
        }
    }
    compare(
        "query/gallery",
        &e,
        &labels,
        &[1, 10, 20, 30, 40, 50],
        &Protocol::QueryGallery { queries, gallery },
        &mut rng,
        true,
    );

    // A class of 1050 items: R = 1049 > the gallery's k limit (1000), served by range queries.
    // k-means on such unbalanced classes splits the big one differently from run to run and
    // from library to library: its NMI is only printed.
    let (e, labels) = clustered(&mut rng, &[1050, 30, 20, 5]);
    compare(
        "large class",
        &e,
        &labels,
        &[1, 10, 1000],
        &Protocol::SameSet,
        &mut rng,
        false,
    );
}
