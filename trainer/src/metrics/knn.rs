//! Exact k-NN: cosine on float embeddings, Hamming on sign codes through the gallery's search.

use std::cmp::Ordering;
use std::ops::Range;

use gallery::{Gallery, MAX_CODE_BITS, MAX_K, MIN_CODE_BITS, Searcher};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Axis, s};
use rayon::prelude::*;

use super::{MetricsError, Protocol, Result, Split, check_embeddings, check_finite};

/// Queries multiplied against the database at once (one task of the pool).
const QUERY_BLOCK: usize = 64;
/// Database rows per matrix product: a block of similarities stays in cache.
const DATABASE_BLOCK: usize = 2048;

/// Packs the sign of each value into bits, row by row: `ceil(d / 8)` bytes a row, bit `i` of a
/// row is bit `i % 8` of byte `i / 8`, 1 where the value is > 0 (0 for zero, negative and NaN).
/// This is the gallery's bit order.
pub fn pack_signs(embeddings: &[f32], d: usize) -> Result<Vec<u8>> {
    let n = check_embeddings(embeddings, d)?;
    let row_bytes = d.div_ceil(8);
    let mut codes = vec![0u8; n * row_bytes];
    codes
        .par_chunks_exact_mut(row_bytes)
        .zip(embeddings.par_chunks_exact(d))
        .for_each(|(code, row)| {
            for (i, &v) in row.iter().enumerate() {
                if v > 0.0 {
                    code[i / 8] |= 1 << (i % 8);
                }
            }
        });
    Ok(codes)
}

/// The `k` nearest items of every query by cosine similarity, as row indices, nearest first,
/// ties by row index ascending; the query itself is left out under [`Protocol::SameSet`].
/// Rows are L2-normalised here. A list is shorter than `k` only where fewer items exist.
pub fn knn_cosine(
    embeddings: &[f32],
    d: usize,
    protocol: &Protocol,
    k: usize,
) -> Result<Vec<Vec<usize>>> {
    let n = check_embeddings(embeddings, d)?;
    check_finite(embeddings, d)?;
    if k == 0 {
        return Err(MetricsError::ZeroK);
    }
    let split = Split::new(protocol, n)?;
    let normalised = l2_normalised(embeddings, d);
    let index = FloatIndex::new(&normalised, d, &split);
    let depths = vec![k.min(split.available()); split.queries.len()];
    Ok(index.search(0..split.queries.len(), &depths))
}

/// The `k` nearest codes of every query by Hamming distance, searched by
/// [`gallery::Searcher`], as row indices, nearest first, ties by row index ascending; the query
/// itself is left out under [`Protocol::SameSet`].
///
/// `codes` holds one code of `bits` bits per row, `ceil(bits / 8)` bytes each, in the gallery's
/// bit order (as [`pack_signs`] writes them); bits past `bits` in the last byte are ignored.
/// A list is shorter than `k` only where fewer items exist; k above [`gallery::MAX_K`] is served
/// by range queries (see the module documentation).
pub fn knn_hamming(
    codes: &[u8],
    bits: usize,
    protocol: &Protocol,
    k: usize,
) -> Result<Vec<Vec<usize>>> {
    if bits == 0 {
        return Err(MetricsError::ZeroDimension);
    }
    let row_bytes = bits.div_ceil(8);
    if !codes.len().is_multiple_of(row_bytes) {
        return Err(MetricsError::Ragged {
            what: "codes (bytes)",
            len: codes.len(),
            d: row_bytes,
        });
    }
    if k == 0 {
        return Err(MetricsError::ZeroK);
    }
    let split = Split::new(protocol, codes.len() / row_bytes)?;
    let index = HammingIndex::new(codes, bits, &split)?;
    let depths = vec![k.min(split.available()); split.queries.len()];
    index.search(0..split.queries.len(), &depths)
}

/// Each row divided by its L2 norm; a zero row stays zero.
pub(crate) fn l2_normalised(embeddings: &[f32], d: usize) -> Vec<f32> {
    let mut out = embeddings.to_vec();
    out.par_chunks_exact_mut(d).for_each(|row| {
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for v in row.iter_mut() {
                *v = (f64::from(*v) / norm) as f32;
            }
        }
    });
    out
}

/// Nearest first: higher similarity, then lower row index.
fn nearest_first(a: &(f32, usize), b: &(f32, usize)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// The best `k` (similarity, row) pairs offered so far.
struct TopK {
    k: usize,
    candidates: Vec<(f32, usize)>,
    /// No pair below it can enter.
    threshold: f32,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            candidates: Vec::new(),
            threshold: f32::NEG_INFINITY,
        }
    }

    fn offer(&mut self, similarity: f32, row: usize) {
        if similarity >= self.threshold {
            // + 0.0 turns -0.0 into 0.0: total_cmp would order them, the tie rule must.
            self.candidates.push((similarity + 0.0, row));
            if self.candidates.len() >= 2 * self.k + 256 {
                self.prune();
            }
        }
    }

    fn prune(&mut self) {
        if self.candidates.len() > self.k {
            self.candidates
                .select_nth_unstable_by(self.k - 1, nearest_first);
            self.candidates.truncate(self.k);
            self.threshold = self.candidates[self.k - 1].0;
        }
    }

    fn into_sorted_rows(mut self) -> Vec<usize> {
        self.candidates.sort_unstable_by(nearest_first);
        self.candidates.truncate(self.k);
        self.candidates.into_iter().map(|(_, row)| row).collect()
    }
}

/// Normalised database (and query) rows, for exact cosine k-NN.
pub(crate) struct FloatIndex {
    database: Array2<f32>,
    database_rows: Vec<usize>,
    /// `None` under SameSet: the queries are the database.
    queries: Option<Array2<f32>>,
    query_rows: Vec<usize>,
    same_set: bool,
}

fn gather(matrix: &[f32], d: usize, rows: &[usize]) -> Array2<f32> {
    let data: Vec<f32> = rows
        .iter()
        .flat_map(|&r| &matrix[r * d..(r + 1) * d])
        .copied()
        .collect();
    Array2::from_shape_vec((rows.len(), d), data).expect("rows x d values")
}

impl FloatIndex {
    /// `normalised`: every embedding row, L2-normalised.
    pub fn new(normalised: &[f32], d: usize, split: &Split) -> FloatIndex {
        FloatIndex {
            database: gather(normalised, d, &split.database),
            database_rows: split.database.clone(),
            queries: (!split.same_set).then(|| gather(normalised, d, &split.queries)),
            query_rows: split.queries.clone(),
            same_set: split.same_set,
        }
    }

    /// For the queries at `positions` of the query list: their `depths[i]` nearest database rows.
    pub fn search(&self, positions: Range<usize>, depths: &[usize]) -> Vec<Vec<usize>> {
        let queries = self.queries.as_ref().unwrap_or(&self.database);
        let positions: Vec<usize> = positions.collect();
        let blocks: Vec<Vec<Vec<usize>>> = positions
            .par_chunks(QUERY_BLOCK)
            .zip(depths.par_chunks(QUERY_BLOCK))
            .map(|(block, depths)| self.search_block(queries.view(), block, depths))
            .collect();
        blocks.into_iter().flatten().collect()
    }

    fn search_block(
        &self,
        queries: ArrayView2<'_, f32>,
        positions: &[usize],
        depths: &[usize],
    ) -> Vec<Vec<usize>> {
        let n = self.database.nrows();
        let own = usize::from(self.same_set);
        let mut tops: Vec<TopK> = depths
            .iter()
            .map(|&d| TopK::new(if d == 0 { 0 } else { (d + own).min(n) }))
            .collect();
        if tops.iter().any(|t| t.k > 0) {
            let block = queries.select(Axis(0), positions);
            let mut similarities = Array2::<f32>::zeros((positions.len(), DATABASE_BLOCK.min(n)));
            for start in (0..n).step_by(DATABASE_BLOCK) {
                let end = (start + DATABASE_BLOCK).min(n);
                let rows = self.database.slice(s![start..end, ..]);
                let mut out = similarities.slice_mut(s![.., ..end - start]);
                general_mat_mul(1.0, &block, &rows.t(), 0.0, &mut out);
                for (top, sims) in tops.iter_mut().zip(out.rows()) {
                    if top.k == 0 {
                        continue;
                    }
                    for (j, &sim) in sims.iter().enumerate() {
                        top.offer(sim, self.database_rows[start + j]);
                    }
                }
            }
        }
        tops.into_iter()
            .zip(positions.iter().zip(depths))
            .map(|(top, (&position, &depth))| {
                let query_row = self.query_rows[position];
                let mut rows = top.into_sorted_rows();
                if self.same_set {
                    rows.retain(|&r| r != query_row);
                }
                rows.truncate(depth);
                rows
            })
            .collect()
    }
}

/// The width the gallery stores a code of `bits` bits in (zero bits pad it).
fn gallery_bits(bits: usize) -> Result<u32> {
    let padded = bits.div_ceil(8) * 8;
    if padded > MAX_CODE_BITS as usize {
        return Err(MetricsError::CodeTooWide { bits });
    }
    Ok((padded as u32).max(MIN_CODE_BITS))
}

/// The database codes in a temporary gallery file, and the query codes padded to its width.
pub(crate) struct HammingIndex {
    gallery: Gallery,
    searcher: Searcher,
    /// Query codes back to back, `gallery.code_bytes()` each.
    queries: Vec<u8>,
    query_rows: Vec<usize>,
    code_bits: u32,
    same_set: bool,
    // Dropped last: removes the gallery file.
    _dir: tempfile::TempDir,
}

impl HammingIndex {
    /// `codes`: every row's code of `bits` bits, `ceil(bits / 8)` bytes each.
    pub fn new(codes: &[u8], bits: usize, split: &Split) -> Result<HammingIndex> {
        let code_bits = gallery_bits(bits)?;
        let code_bytes = code_bits as usize / 8;
        let row_bytes = bits.div_ceil(8);
        // Bits past `bits` in the last byte must be zero on both sides.
        let last_mask: u8 = match bits % 8 {
            0 => 0xff,
            r => (1u8 << r) - 1,
        };
        let padded = |rows: &[usize]| -> Vec<u8> {
            let mut out = vec![0u8; rows.len() * code_bytes];
            for (dst, &r) in out.chunks_exact_mut(code_bytes).zip(rows) {
                dst[..row_bytes].copy_from_slice(&codes[r * row_bytes..(r + 1) * row_bytes]);
                dst[row_bytes - 1] &= last_mask;
            }
            out
        };
        let ids: Vec<u64> = split.database.iter().map(|&r| r as u64).collect();
        let dir = tempfile::Builder::new()
            .prefix("trainer-eval-")
            .tempdir()
            .map_err(MetricsError::TempDir)?;
        let gallery = Gallery::create(
            dir.path().join("evaluation.gal"),
            code_bits,
            [0; 32],
            &padded(&split.database),
            &ids,
        )?;
        Ok(HammingIndex {
            gallery,
            searcher: Searcher::with_defaults()?,
            queries: padded(&split.queries),
            query_rows: split.queries.clone(),
            code_bits,
            same_set: split.same_set,
            _dir: dir,
        })
    }

    fn query(&self, position: usize) -> &[u8] {
        let code_bytes = self.gallery.code_bytes();
        &self.queries[position * code_bytes..(position + 1) * code_bytes]
    }

    /// For the queries at `positions` of the query list: their `depths[i]` nearest database rows.
    ///
    /// Queries that need at most [`MAX_K`] items (the query itself included under SameSet) go
    /// through one `knn_batch`; the others through a `range` query over the whole code width,
    /// which lists every item in (distance, id) order.
    pub fn search(&self, positions: Range<usize>, depths: &[usize]) -> Result<Vec<Vec<usize>>> {
        let n = self.gallery.len();
        let own = usize::from(self.same_set);
        let wanted: Vec<usize> = depths
            .iter()
            .map(|&d| if d == 0 { 0 } else { (d + own).min(n) })
            .collect();
        let mut lists: Vec<Vec<usize>> = vec![Vec::new(); depths.len()];

        let batch: Vec<usize> = (0..depths.len())
            .filter(|&i| wanted[i] > 0 && wanted[i] <= MAX_K)
            .collect();
        if let Some(k) = batch.iter().map(|&i| wanted[i]).max() {
            let codes: Vec<u8> = batch
                .iter()
                .flat_map(|&i| self.query(positions.start + i))
                .copied()
                .collect();
            let hits = self.searcher.knn_batch(&self.gallery, &codes, k, None)?;
            for (&i, hits) in batch.iter().zip(hits) {
                lists[i] = self.finish(positions.start + i, hits, depths[i]);
            }
        }
        for i in (0..depths.len()).filter(|&i| wanted[i] > MAX_K) {
            let position = positions.start + i;
            let hits = self
                .searcher
                .range(&self.gallery, self.query(position), self.code_bits)?;
            lists[i] = self.finish(position, hits, depths[i]);
        }
        Ok(lists)
    }

    fn finish(&self, position: usize, hits: Vec<gallery::Hit>, depth: usize) -> Vec<usize> {
        let query_row = self.query_rows[position];
        hits.into_iter()
            .map(|h| h.id as usize)
            .filter(|&row| !(self.same_set && row == query_row))
            .take(depth)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qg(queries: &[usize], gallery: &[usize]) -> Protocol {
        Protocol::QueryGallery {
            queries: queries.to_vec(),
            gallery: gallery.to_vec(),
        }
    }

    #[test]
    fn pack_signs_bit_order() {
        // Bit i = bit i % 8 of byte i / 8, 1 where > 0; 0.0 and -0.0 are 0.
        let row = [1.0, -1.0, 0.0, 2.0, -0.0, 0.5, -3.0, 0.1, 7.0, -7.0];
        assert_eq!(
            pack_signs(&row, 10).unwrap(),
            vec![0b1010_1001, 0b0000_0001]
        );
        assert!(pack_signs(&[], 4).unwrap().is_empty());
        assert!(matches!(
            pack_signs(&[1.0; 5], 2),
            Err(MetricsError::Ragged { .. })
        ));
        assert!(matches!(
            pack_signs(&[1.0], 0),
            Err(MetricsError::ZeroDimension)
        ));
    }

    /// Codes of 8 bits (padded to the gallery's 64 here), one byte a row.
    #[test]
    fn hamming_ties_are_ordered_by_row() {
        // Query row 0 = 0b0000_0000. Distances: row1 1, row2 1, row3 0, row4 2, row5 1.
        // Order (distance, row): 3 (0), 1 (1), 2 (1), 5 (1), 4 (2).
        let codes = [
            0b0000_0000,
            0b0000_0001,
            0b1000_0000,
            0,
            0b0001_0001,
            0b0100_0000,
        ];
        let got = knn_hamming(&codes, 8, &Protocol::SameSet, 5).unwrap();
        assert_eq!(got[0], vec![3, 1, 2, 5, 4]);
        // Query row 3 is identical to row 0: tie at 0 broken by row, itself excluded.
        assert_eq!(got[3], vec![0, 1, 2, 5, 4]);
        // k = 3 cuts inside the tie at distance 1, keeping the lowest rows.
        let got = knn_hamming(&codes, 8, &Protocol::SameSet, 3).unwrap();
        assert_eq!(got[0], vec![3, 1, 2]);
    }

    #[test]
    fn hamming_ignores_bits_past_the_width() {
        // 4-bit codes; the high nibble is garbage and must not count.
        // Low nibbles: row0 0000, row1 0001 (distance 1), row2 0011 (distance 2). With the high
        // nibbles counted, row1 would be at 5 and row2 at 2.
        let codes = [0b1111_0000, 0b0000_0001, 0b1111_0011];
        let got = knn_hamming(&codes, 4, &Protocol::SameSet, 2).unwrap();
        assert_eq!(got[0], vec![1, 2]);
    }

    #[test]
    fn hamming_query_gallery_keeps_overlap_and_uses_row_ids() {
        // Gallery rows listed out of order: ties still break by row index, not list position.
        let codes = [0b0000_0000u8, 0b0000_0011, 0b0000_0001, 0b0000_0010];
        let got = knn_hamming(&codes, 8, &qg(&[0], &[3, 0, 2, 1]), 4).unwrap();
        // Distances from row 0: row0 0, row1 2, row2 1, row3 1. Nothing excluded.
        assert_eq!(got, vec![vec![0, 2, 3, 1]]);
    }

    #[test]
    fn hamming_beyond_max_k_uses_range_queries() {
        // 1203 codes of 64 bits: row r holds r's bits; k = 1202 > MAX_K.
        let n = 1203usize;
        let codes: Vec<u8> = (0..n).flat_map(|r| (r as u64).to_le_bytes()).collect();
        let got = knn_hamming(&codes, 64, &Protocol::SameSet, n).unwrap();
        // Every list holds all other rows, in (popcount(r ^ q), r) order.
        for q in [0usize, 5, 1000, 1202] {
            let mut expected: Vec<usize> = (0..n).filter(|&r| r != q).collect();
            expected.sort_by_key(|&r| ((r ^ q).count_ones(), r));
            assert_eq!(got[q], expected, "query {q}");
        }
        // k = 1000 exactly goes through knn_batch (1001 with the query): same lists, cut.
        let cut = knn_hamming(&codes, 64, &Protocol::SameSet, 999).unwrap();
        assert_eq!(cut[5][..], got[5][..999]);
    }

    #[test]
    fn hamming_bad_input() {
        assert!(matches!(
            knn_hamming(&[1, 2, 3], 16, &Protocol::SameSet, 1),
            Err(MetricsError::Ragged { .. })
        ));
        assert!(matches!(
            knn_hamming(&[], 8, &Protocol::SameSet, 1),
            Err(MetricsError::Empty { .. })
        ));
        assert!(matches!(
            knn_hamming(&[0; 4], 8, &Protocol::SameSet, 0),
            Err(MetricsError::ZeroK)
        ));
        assert!(matches!(
            knn_hamming(&vec![0; 520 * 2], 4160, &Protocol::SameSet, 1),
            Err(MetricsError::CodeTooWide { bits: 4160 })
        ));
        assert!(matches!(
            knn_hamming(&[0; 4], 8, &qg(&[0], &[4]), 1),
            Err(MetricsError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            knn_hamming(&[0; 4], 8, &qg(&[0], &[1, 1]), 1),
            Err(MetricsError::DuplicateIndex { .. })
        ));
        assert!(matches!(
            knn_hamming(&[0; 4], 8, &qg(&[], &[1]), 1),
            Err(MetricsError::Empty { .. })
        ));
        // k above the database: every other item, no error.
        assert_eq!(
            knn_hamming(&[0; 3], 8, &Protocol::SameSet, 50).unwrap(),
            vec![vec![1, 2], vec![0, 2], vec![0, 1]]
        );
        // A single item: nothing to find.
        assert_eq!(
            knn_hamming(&[7], 8, &Protocol::SameSet, 1).unwrap(),
            vec![Vec::<usize>::new()]
        );
    }

    #[test]
    fn cosine_order_and_ties() {
        // 2-d rows; norms differ, cosine does not see them.
        let e = [
            1.0, 0.0, // 0
            0.0, 2.0, // 1: cos to 0 = 0
            3.0, 0.0, // 2: same direction as 0
            1.0, 1.0, // 3: cos to 0 = 0.707
            0.0, 5.0, // 4: same as 1
            -1.0, 0.0, // 5: opposite
        ];
        let got = knn_cosine(&e, 2, &Protocol::SameSet, 5).unwrap();
        assert_eq!(got[0], vec![2, 3, 1, 4, 5]);
        // Query 1: 4 (cos 1), 3 (0.707), then 0, 2, 5 tied at cos 0, by row.
        assert_eq!(got[1], vec![4, 3, 0, 2, 5]);
        // Query 2 is identical in direction to 0: the tie at cos 1 is broken by row, self out.
        assert_eq!(got[2], vec![0, 3, 1, 4, 5]);
    }

    #[test]
    fn cosine_zero_rows_and_query_gallery() {
        // Row 2 is zero: similarity 0 to everything, still ordered by row.
        let e = [1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let got = knn_cosine(&e, 2, &qg(&[2, 0], &[3, 1, 0]), 3).unwrap();
        assert_eq!(got[0], vec![0, 1, 3]);
        assert_eq!(got[1], vec![0, 3, 1]);
        assert!(matches!(
            knn_cosine(&[f32::NAN, 0.0], 2, &Protocol::SameSet, 1),
            Err(MetricsError::NonFinite { row: 0, column: 0 })
        ));
    }

    #[test]
    fn cosine_matches_brute_force_across_blocks() {
        // More rows than one database block and one query block.
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let (n, d, k) = (DATABASE_BLOCK + 300, 12, 40);
        let mut rng = StdRng::seed_from_u64(7);
        // Values in a coarse grid make exact ties (duplicate rows) frequent.
        let e: Vec<f32> = (0..n * d)
            .map(|_| rng.random_range(-2i32..=2) as f32)
            .collect();
        let got = knn_cosine(&e, d, &Protocol::SameSet, k).unwrap();
        let normalised = l2_normalised(&e, d);
        let dot = |a: usize, b: usize| -> f64 {
            (0..d)
                .map(|j| f64::from(normalised[a * d + j]) * f64::from(normalised[b * d + j]))
                .sum()
        };
        for q in (0..n).step_by(97) {
            let sims: Vec<f64> = (0..n).map(|r| dot(q, r)).collect();
            let list = &got[q];
            assert_eq!(list.len(), k);
            assert!(!list.contains(&q));
            // Non-increasing similarity (f32 products: a tolerance), and nothing left out is
            // clearly better than the last one kept.
            for w in list.windows(2) {
                assert!(sims[w[0]] >= sims[w[1]] - 1e-5);
            }
            let last = sims[list[k - 1]];
            for r in (0..n).filter(|r| *r != q && !list.contains(r)) {
                assert!(sims[r] <= last + 1e-5, "query {q}: row {r} left out");
            }
        }
    }
}
