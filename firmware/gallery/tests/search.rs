//! Exact search against a brute-force reference, on every kernel and thread count.

use gallery::{Gallery, GalleryError, Hit, Kernel, MAX_K, Searcher};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn hamming(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Every row by (distance, id, row): the definition the search must reproduce.
fn reference(g: &Gallery, query: &[u8]) -> Vec<Hit> {
    let mut all: Vec<Hit> = (0..g.len())
        .map(|row| Hit {
            distance: hamming(g.code(row), query),
            id: g.id(row),
            row: row as u64,
        })
        .collect();
    all.sort();
    all
}

/// Codes near a few centres: many equal distances, so ties decide the order.
fn clustered(rng: &mut StdRng, n: usize, bytes: usize) -> Vec<u8> {
    let centres: Vec<Vec<u8>> = (0..4)
        .map(|_| (0..bytes).map(|_| rng.random()).collect())
        .collect();
    (0..n)
        .flat_map(|_| {
            let c = &centres[rng.random_range(0..centres.len())];
            let mut code = c.clone();
            for _ in 0..3 {
                let bit = rng.random_range(0..bytes * 8);
                code[bit / 8] ^= 1 << (bit % 8);
            }
            code
        })
        .collect()
}

struct Case {
    _dir: tempfile::TempDir,
    gallery: Gallery,
    queries: Vec<u8>,
}

fn case(n: usize, bits: u32, seed: u64) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let bytes = bits as usize / 8;
    let codes = clustered(&mut rng, n, bytes);
    // Ids out of row order, with duplicates (several shots of one item).
    let ids: Vec<u64> = (0..n as u64)
        .map(|i| (i * 7919) % (n as u64 / 2 + 1))
        .collect();
    let gallery = Gallery::create(dir.path().join("g.gal"), bits, [0; 32], &codes, &ids).unwrap();
    let mut queries = clustered(&mut rng, 9, bytes);
    queries.extend_from_slice(&codes[..bytes]); // an exact member: distance 0
    Case {
        _dir: dir,
        gallery,
        queries,
    }
}

fn searchers() -> Vec<Searcher> {
    let mut out = Vec::new();
    for kernel in Kernel::available() {
        for threads in [1, 2, 3] {
            out.push(Searcher::new(kernel, threads).unwrap());
        }
    }
    out
}

#[test]
fn knn_equals_brute_force_on_every_kernel() {
    // Sizes above the per-thread minimum so that queries really split across threads.
    for (n, bits) in [(20_000, 256), (17_001, 2048), (9_000, 72), (30_000, 512)] {
        let c = case(n, bits, n as u64 + bits as u64);
        let g = &c.gallery;
        let cb = g.code_bytes();
        for s in searchers() {
            for k in [1, 10, 100, 1000] {
                let batch = s.knn_batch(g, &c.queries, k, None).unwrap();
                let mut scratch = s.knn_scratch(g, k).unwrap();
                for (qi, q) in c.queries.chunks(cb).enumerate() {
                    let want: Vec<Hit> = reference(g, q).into_iter().take(k).collect();
                    let got = s.knn(g, q, k, None).unwrap();
                    let what = format!(
                        "{} x{} n={n} bits={bits} k={k} q={qi}",
                        s.kernel().name(),
                        s.threads()
                    );
                    assert_eq!(got, want, "single {what}");
                    assert_eq!(batch[qi], want, "batch {what}");
                    let into = s.knn_into(g, q, k, None, &mut scratch).unwrap();
                    assert_eq!(into, want.as_slice(), "into {what}");
                }
            }
        }
    }
}

#[test]
fn range_and_max_distance_equal_brute_force() {
    let c = case(12_000, 256, 5);
    let g = &c.gallery;
    for s in searchers() {
        for q in c.queries.chunks(g.code_bytes()) {
            let all = reference(g, q);
            for r in [0, 3, 6, 40, 256] {
                let within: Vec<Hit> = all.iter().copied().filter(|h| h.distance <= r).collect();
                assert_eq!(s.range(g, q, r).unwrap(), within, "range {r}");
                let top: Vec<Hit> = within.iter().copied().take(5).collect();
                assert_eq!(s.knn(g, q, 5, Some(r)).unwrap(), top, "knn within {r}");
            }
        }
    }
}

#[test]
fn small_galleries_and_large_k() {
    let c = case(7, 64, 9);
    let s = Searcher::with_defaults().unwrap();
    let q = &c.queries[..8];
    let got = s.knn(&c.gallery, q, 1000, None).unwrap();
    assert_eq!(
        got,
        reference(&c.gallery, q),
        "k above the gallery size returns everything"
    );
    let dir = tempfile::tempdir().unwrap();
    let empty = Gallery::create(dir.path().join("e.gal"), 64, [0; 32], &[], &[]).unwrap();
    assert!(s.knn(&empty, q, 3, None).unwrap().is_empty());
    assert!(s.knn_batch(&empty, q, 3, None).unwrap()[0].is_empty());
}

#[test]
fn bad_requests_are_errors() {
    let c = case(100, 128, 3);
    let s = Searcher::with_defaults().unwrap();
    let q = &c.queries[..16];
    for k in [0, MAX_K + 1] {
        let err = s.knn(&c.gallery, q, k, None).unwrap_err();
        assert!(matches!(err, GalleryError::BadK(_)), "{err}");
    }
    let err = s.knn(&c.gallery, &q[..15], 1, None).unwrap_err();
    assert!(matches!(err, GalleryError::BadLength { .. }), "{err}");
    let err = s
        .knn_batch(&c.gallery, &c.queries[..17], 1, None)
        .unwrap_err();
    assert!(matches!(err, GalleryError::BadLength { .. }), "{err}");
}

#[test]
fn results_follow_appends() {
    let mut c = case(10_000, 256, 11);
    let s = Searcher::new(Kernel::best(), 2).unwrap();
    let q = c.queries[..32].to_vec();
    // Append the query itself under a small id: it must come first, at distance 0.
    c.gallery.append(&q, &[0]).unwrap();
    let hits = s.knn(&c.gallery, &q, 3, None).unwrap();
    assert_eq!((hits[0].distance, hits[0].id), (0, 0));
    assert_eq!(hits, reference(&c.gallery, &q)[..3]);
}
