//! Exact search: k nearest codes by (Hamming distance, item id), and range queries.

use std::collections::BinaryHeap;
use std::ops::Range;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{GalleryError, Result};
use crate::kernels::{Kernel, QUERY_TILE};
use crate::store::Gallery;

/// The largest k a query may ask for.
pub const MAX_K: usize = 1000;

/// Bytes of codes scanned between two top-K updates (per query: a block stays in L1/L2).
const SINGLE_BLOCK_BYTES: usize = 16 << 10;
/// Bytes of codes a batch reuses for all its queries while they sit in L2.
const BATCH_BLOCK_BYTES: usize = 64 << 10;
/// Parts each thread's share is cut into (see `Searcher::parts`).
const PARTS_PER_THREAD: usize = 4;
/// Rows below which splitting a query across threads costs more than it saves.
const MIN_ROWS_PER_THREAD: usize = 8192;

/// One result. Results are ordered by (distance, id), then by row for equal ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Hit {
    pub distance: u32,
    pub id: u64,
    /// Row of the item in the gallery file.
    pub row: u64,
}

/// The best `k` hits at distance <= `limit` seen so far (a bounded max-heap).
#[derive(Debug)]
struct TopK {
    k: usize,
    limit: u32,
    heap: BinaryHeap<Hit>,
}

impl TopK {
    fn new(k: usize, limit: u32) -> TopK {
        // Range queries (k = usize::MAX) grow as they find hits.
        let reserve = if k == usize::MAX { 0 } else { k };
        TopK {
            k,
            limit,
            heap: BinaryHeap::with_capacity(reserve),
        }
    }

    /// Empties the heap for a new query, keeping its allocation.
    fn reset(&mut self, k: usize, limit: u32) {
        self.k = k;
        self.limit = limit;
        self.heap.clear();
    }

    /// No hit with a larger distance can enter.
    fn threshold(&self) -> u32 {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.k => worst.distance.min(self.limit),
            _ => self.limit,
        }
    }

    fn offer(&mut self, hit: Hit) {
        if hit.distance > self.limit {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(hit);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && hit < *worst
        {
            *worst = hit;
        }
    }

    /// Offers every row of a block whose distance passes the threshold.
    fn offer_block(&mut self, kernel: Kernel, distances: &[u32], first_row: usize, ids: &[u8]) {
        // Most rows of a full top-K fail the threshold: test a group at once by its minimum
        // (a vectorised reduction), and look at single rows only in groups that pass.
        const GROUP: usize = 64;
        let mut threshold = self.threshold();
        for (g, group) in distances.chunks(GROUP).enumerate() {
            if kernel.min(group) > threshold {
                continue;
            }
            for (i, &distance) in group.iter().enumerate() {
                if distance <= threshold {
                    let row = first_row + g * GROUP + i;
                    let id = u64::from_le_bytes(ids[row * 8..row * 8 + 8].try_into().expect("8"));
                    self.offer(Hit {
                        distance,
                        id,
                        row: row as u64,
                    });
                    threshold = self.threshold();
                }
            }
        }
    }

    fn into_hits(self) -> Vec<Hit> {
        self.heap.into_vec()
    }
}

fn merge(parts: impl IntoIterator<Item = TopK>, k: usize) -> Vec<Hit> {
    let mut hits: Vec<Hit> = parts.into_iter().flat_map(TopK::into_hits).collect();
    hits.sort_unstable();
    hits.truncate(k);
    hits
}

/// Buffers for [`Searcher::knn_into`], made once by [`Searcher::knn_scratch`]: with them a query
/// allocates nothing (the appliance's hot path).
#[derive(Debug)]
pub struct KnnScratch {
    max_k: usize,
    row_words: usize,
    words: Vec<u64>,
    parts: Vec<PartScratch>,
    hits: Vec<Hit>,
}

#[derive(Debug)]
struct PartScratch {
    top: TopK,
    distances: Vec<u32>,
}

/// Runs queries against galleries with one kernel on a fixed pool of threads.
#[derive(Debug)]
pub struct Searcher {
    kernel: Kernel,
    pool: rayon::ThreadPool,
}

impl Searcher {
    /// `threads = 0` means one per core.
    pub fn new(kernel: Kernel, threads: usize) -> Result<Searcher> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("gallery-search-{i}"))
            .build()
            .map_err(|e| GalleryError::ThreadPool(e.to_string()))?;
        Ok(Searcher { kernel, pool })
    }

    /// The best kernel, one thread per core.
    pub fn with_defaults() -> Result<Searcher> {
        Searcher::new(Kernel::best(), 0)
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Splits `rows` into one contiguous part per thread (fewer for small galleries).
    ///
    /// With more than one thread, each thread's share is cut into `PARTS_PER_THREAD` contiguous
    /// parts: a core busy with something else then steals less, and the others take its parts.
    fn parts(&self, rows: usize) -> Vec<Range<usize>> {
        let n = self.part_count(rows);
        (0..n).map(|i| part_range(rows, i, n)).collect()
    }

    fn max_parts(&self) -> usize {
        let threads = self.threads();
        if threads > 1 {
            threads * PARTS_PER_THREAD
        } else {
            1
        }
    }

    fn part_count(&self, rows: usize) -> usize {
        self.max_parts()
            .min(rows.div_ceil(MIN_ROWS_PER_THREAD))
            .max(1)
    }

    /// Buffers for queries of up to `max_k` results against galleries with `gallery`'s code
    /// width (the gallery may grow afterwards).
    pub fn knn_scratch(&self, gallery: &Gallery, max_k: usize) -> Result<KnnScratch> {
        check_k(max_k)?;
        let row_words = gallery.header().row_words();
        let block_rows = (SINGLE_BLOCK_BYTES / (row_words * 8)).max(1);
        let parts = (0..self.max_parts())
            .map(|_| PartScratch {
                top: TopK::new(max_k, u32::MAX),
                distances: vec![0; block_rows],
            })
            .collect::<Vec<_>>();
        Ok(KnnScratch {
            max_k,
            row_words,
            words: vec![0; row_words],
            hits: Vec::with_capacity(parts.len() * max_k),
            parts,
        })
    }

    /// [`Searcher::knn`] into `scratch`'s buffers: allocates nothing. The hits, ordered by
    /// (distance, id), stay valid until the next call.
    pub fn knn_into<'s>(
        &self,
        gallery: &Gallery,
        query: &[u8],
        k: usize,
        max_distance: Option<u32>,
        scratch: &'s mut KnnScratch,
    ) -> Result<&'s [Hit]> {
        check_k(k)?;
        if k > scratch.max_k {
            return Err(GalleryError::BadK(k));
        }
        if gallery.header().row_words() != scratch.row_words {
            return Err(GalleryError::BadLength {
                what: "scratch row (made for another code width)",
                expected: gallery.header().row_words(),
                actual: scratch.row_words,
            });
        }
        fill_padded_words(gallery, query, "query", &mut scratch.words)?;
        let limit = max_distance.unwrap_or(u32::MAX);
        let rows = gallery.len();
        let n = self.part_count(rows);
        let words = &scratch.words;
        let scan = |(i, part): (usize, &mut PartScratch)| {
            part.top.reset(k, limit);
            self.scan_rows(
                gallery,
                words,
                part_range(rows, i, n),
                &mut part.top,
                &mut part.distances,
            );
        };
        if n == 1 {
            scan((0, &mut scratch.parts[0]));
        } else {
            let parts = &mut scratch.parts[..n];
            self.pool
                .install(|| parts.par_iter_mut().enumerate().for_each(scan));
        }
        scratch.hits.clear();
        for part in &mut scratch.parts[..n] {
            scratch.hits.extend(part.top.heap.drain());
        }
        scratch.hits.sort_unstable();
        scratch.hits.truncate(k);
        Ok(&scratch.hits)
    }

    /// Offers rows `part` of `gallery` to `top`, a block of `distances.len()` rows at a time.
    fn scan_rows(
        &self,
        gallery: &Gallery,
        query: &[u64],
        part: Range<usize>,
        top: &mut TopK,
        distances: &mut [u32],
    ) {
        let (rows, ids) = (gallery.row_words_slice(), gallery.ids_bytes());
        let words = query.len();
        let mut start = part.start;
        while start < part.end {
            let end = (start + distances.len()).min(part.end);
            let out = &mut distances[..end - start];
            self.kernel
                .distances(query, &rows[start * words..end * words], out);
            top.offer_block(self.kernel, out, start, ids);
            start = end;
        }
    }

    /// The `k` nearest items to `query` (a code of `gallery.code_bytes()` bytes), ordered by
    /// (distance, id); with `max_distance`, only items within it.
    pub fn knn(
        &self,
        gallery: &Gallery,
        query: &[u8],
        k: usize,
        max_distance: Option<u32>,
    ) -> Result<Vec<Hit>> {
        check_k(k)?;
        let words = padded_words(gallery, query, "query")?;
        Ok(self.scan_single(gallery, &words, k, max_distance.unwrap_or(u32::MAX)))
    }

    /// Every item within `max_distance` of `query`, ordered by (distance, id).
    pub fn range(&self, gallery: &Gallery, query: &[u8], max_distance: u32) -> Result<Vec<Hit>> {
        let words = padded_words(gallery, query, "query")?;
        Ok(self.scan_single(gallery, &words, usize::MAX, max_distance))
    }

    /// [`Searcher::knn`] for many queries at once (`queries` holds them back to back). Each block
    /// of codes is read once from memory and reused for every query while it is in cache.
    pub fn knn_batch(
        &self,
        gallery: &Gallery,
        queries: &[u8],
        k: usize,
        max_distance: Option<u32>,
    ) -> Result<Vec<Vec<Hit>>> {
        check_k(k)?;
        let words = padded_words(gallery, queries, "queries")?;
        Ok(self.scan_batch(gallery, &words, k, max_distance.unwrap_or(u32::MAX)))
    }

    fn scan_single(&self, gallery: &Gallery, query: &[u64], k: usize, limit: u32) -> Vec<Hit> {
        let block_rows = (SINGLE_BLOCK_BYTES / (query.len() * 8)).max(1);
        let scan_part = |part: Range<usize>| {
            let mut top = TopK::new(k, limit);
            let mut distances = vec![0u32; block_rows];
            self.scan_rows(gallery, query, part, &mut top, &mut distances);
            top
        };
        let parts = self.parts(gallery.len());
        if parts.len() == 1 {
            return merge([scan_part(parts[0].clone())], k);
        }
        let tops: Vec<TopK> = self
            .pool
            .install(|| parts.into_par_iter().map(scan_part).collect());
        merge(tops, k)
    }

    fn scan_batch(
        &self,
        gallery: &Gallery,
        queries: &[u64],
        k: usize,
        limit: u32,
    ) -> Vec<Vec<Hit>> {
        let (rows, ids) = (gallery.row_words_slice(), gallery.ids_bytes());
        let words = gallery.header().row_words();
        let nq = queries.len() / words;
        let block_rows = (BATCH_BLOCK_BYTES / (words * 8)).max(1);
        let scan_part = |part: Range<usize>| {
            let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k, limit)).collect();
            let mut distances = vec![0u32; block_rows * QUERY_TILE];
            let mut start = part.start;
            while start < part.end {
                let end = (start + block_rows).min(part.end);
                let block = &rows[start * words..end * words];
                let n = end - start;
                for (t, tile) in queries.chunks(QUERY_TILE * words).enumerate() {
                    let tq = tile.len() / words;
                    let out = &mut distances[..tq * n];
                    self.kernel.distances_many(tile, words, block, out);
                    for (j, d) in out.chunks_exact(n).enumerate() {
                        tops[t * QUERY_TILE + j].offer_block(self.kernel, d, start, ids);
                    }
                }
                start = end;
            }
            tops
        };
        let parts = self.parts(gallery.len());
        let per_part: Vec<Vec<TopK>> = if parts.len() == 1 {
            vec![scan_part(parts[0].clone())]
        } else {
            self.pool
                .install(|| parts.into_par_iter().map(scan_part).collect())
        };
        // Transpose: per query, the tops of every part.
        let mut per_query: Vec<Vec<TopK>> = (0..nq).map(|_| Vec::new()).collect();
        for tops in per_part {
            for (q, top) in tops.into_iter().enumerate() {
                per_query[q].push(top);
            }
        }
        per_query.into_iter().map(|tops| merge(tops, k)).collect()
    }
}

fn check_k(k: usize) -> Result<()> {
    if k == 0 || k > MAX_K {
        return Err(GalleryError::BadK(k));
    }
    Ok(())
}

/// Row `i` of `n` equal parts of `rows`.
fn part_range(rows: usize, i: usize, n: usize) -> Range<usize> {
    rows * i / n..rows * (i + 1) / n
}

/// Copies codes into zero-padded rows of 64-bit words, as the gallery stores them.
fn padded_words(gallery: &Gallery, codes: &[u8], what: &'static str) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    fill_padded_words(gallery, codes, what, &mut out)?;
    Ok(out)
}

/// [`padded_words`] into `out` (resized; no allocation when it already has the capacity).
fn fill_padded_words(
    gallery: &Gallery,
    codes: &[u8],
    what: &'static str,
    out: &mut Vec<u64>,
) -> Result<()> {
    let code_bytes = gallery.code_bytes();
    if codes.is_empty() || !codes.len().is_multiple_of(code_bytes) {
        return Err(GalleryError::BadLength {
            what,
            expected: code_bytes * (codes.len() / code_bytes).max(1),
            actual: codes.len(),
        });
    }
    let words = gallery.header().row_words();
    out.clear();
    out.resize(codes.len() / code_bytes * words, 0);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(out.as_mut_slice());
    for (row, code) in bytes
        .chunks_exact_mut(words * 8)
        .zip(codes.chunks_exact(code_bytes))
    {
        row[..code_bytes].copy_from_slice(code);
    }
    Ok(())
}
