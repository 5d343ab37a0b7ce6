//! The gallery's exact search against the peer, faiss IndexBinaryFlat, on the same codes:
//! same distances, same ids under the (distance, id) order. faiss is installed by .ci/run
//! (pip: faiss-cpu, numpy); it is never a dependency of the product.

use std::path::Path;
use std::process::Command;

use gallery::{Gallery, Kernel, Searcher};
use npyz::WriterBuilder;
use rand::{Rng, SeedableRng, rngs::StdRng};

const ITEMS: usize = 20_000;
const QUERIES: usize = 24;
const K: usize = 100;

fn write_u8(path: &Path, rows: usize, cols: usize, data: &[u8]) {
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[rows as u64, cols as u64])
        .writer(std::io::BufWriter::new(
            std::fs::File::create(path).unwrap(),
        ))
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn read<T: npyz::Deserialize>(path: &Path) -> Vec<T> {
    npyz::NpyFile::new(std::fs::File::open(path).unwrap())
        .unwrap()
        .into_vec()
        .unwrap()
}

fn random(rng: &mut StdRng, n: usize, bytes: usize) -> Vec<u8> {
    (0..n * bytes).map(|_| rng.random()).collect()
}

/// Codes near 8 centres with 2% of bits flipped: distances crowd together and ties are common.
fn clustered(rng: &mut StdRng, n: usize, bytes: usize) -> Vec<u8> {
    let centres = random(rng, 8, bytes);
    (0..n)
        .flat_map(|_| {
            let c = rng.random_range(0..8);
            let mut code = centres[c * bytes..(c + 1) * bytes].to_vec();
            for b in code.iter_mut() {
                for bit in 0..8 {
                    if rng.random_ratio(1, 50) {
                        *b ^= 1 << bit;
                    }
                }
            }
            code
        })
        .collect()
}

fn faiss_knn(dir: &Path) -> (Vec<i32>, Vec<i64>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/faiss_knn.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .arg(K.to_string())
        .output()
        .expect("python3 must be installed to run the faiss peer");
    assert!(
        out.status.success(),
        "the faiss peer failed (it needs `pip install faiss-cpu numpy`, which .ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        read(&dir.join("faiss_D.npy")),
        read(&dir.join("faiss_I.npy")),
    )
}

#[test]
fn identical_to_faiss_on_random_and_clustered_codes() {
    let mut ties_at_boundary = 0;
    for bits in [256u32, 512, 768, 2048] {
        for kind in ["random", "clustered"] {
            let dir = tempfile::tempdir().unwrap();
            let bytes = bits as usize / 8;
            let mut rng = StdRng::seed_from_u64(bits as u64);
            let make = if kind == "random" { random } else { clustered };
            let codes = make(&mut rng, ITEMS, bytes);
            let queries = make(&mut rng, QUERIES, bytes);
            write_u8(&dir.path().join("codes.npy"), ITEMS, bytes, &codes);
            write_u8(&dir.path().join("queries.npy"), QUERIES, bytes, &queries);
            let (fd, fi) = faiss_knn(dir.path());
            let ids: Vec<u64> = (0..ITEMS as u64).collect();
            let g = Gallery::create(dir.path().join("g.gal"), bits, [0; 32], &codes, &ids).unwrap();
            for kernel in Kernel::available() {
                let s = Searcher::new(kernel, 2).unwrap();
                let batch = s.knn_batch(&g, &queries, K, None).unwrap();
                for (q, query) in queries.chunks(bytes).enumerate() {
                    let ours = s.knn(&g, query, K, None).unwrap();
                    assert_eq!(ours, batch[q], "single vs batch, {bits} bits {kind} q{q}");
                    let ours: Vec<(i32, i64)> = ours
                        .iter()
                        .map(|h| (h.distance as i32, h.id as i64))
                        .collect();
                    let theirs: Vec<(i32, i64)> =
                        (0..K).map(|j| (fd[q * K + j], fi[q * K + j])).collect();
                    assert_eq!(
                        ours,
                        theirs,
                        "{} vs faiss: {bits} bits, {kind} codes, query {q}",
                        kernel.name()
                    );
                    if theirs[K - 1].0 == theirs[K - 2].0 {
                        ties_at_boundary += 1;
                    }
                }
            }
        }
    }
    // The clustered cases must really exercise the tie order at the k-th place.
    assert!(
        ties_at_boundary > 0,
        "no ties at the k-th place: the test lost its point"
    );
    println!("faiss parity: {ties_at_boundary} query results with a tie at the k-th place");
}
